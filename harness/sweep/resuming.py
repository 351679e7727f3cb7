"""Resuming: the checkpoints a sweep continues. Before cohorts are made, the headers of the
checkpoints in the grid's checkpoint folders are read; a checkpoint of this store and
experiment whose points are all still to run becomes a cohort of its own, as it was written
(whatever ``max_cohort`` or the number of workers now), which continues from it. Every other
checkpoint of the grid's points is reported in one line and kept, except those that can never
apply: one that cannot be read, one whose points a further checkpoint holds, and one whose
points are all recorded FINISHED (removed silently). Those of other stores, experiments and
grids are left alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness import checkpoints
from harness.checkpoints import CheckpointError, Header
from harness.sweep.cohorts import Cohort, pinned_gpu
from harness.sweep.points import Point


def folders(points: Sequence[Point], uri: str) -> dict[Path, str | None]:
    """The checkpoint folders of the points that checkpoint (``trainer.checkpoint_every`` >
    0), each with its ``trainer.checkpoint_dir`` as given."""
    found: dict[Path, str | None] = {}
    for point in points:
        trainer, experiment = point.spec.trainer, point.spec.tracking.experiment
        if trainer.checkpoint_every > 0:
            path = checkpoints.folder(uri, experiment, trainer.checkpoint_dir)
            found.setdefault(path, trainer.checkpoint_dir)
    return found


def check_folders(points: Sequence[Point], uri: str) -> None:
    """Refuse a checkpoint folder this process cannot write (ConfigError), before training."""
    for path, given in folders(points, uri).items():
        checkpoints.check_folder(path, given)


def resumed_cohorts(
    points: Sequence[Point], todo: Sequence[int], finished: set[str], uri: str
) -> tuple[list[Cohort], list[int], list[str]]:
    """The cohorts that resume checkpoints, the positions left to group into cohorts, and a
    line for each checkpoint of the grid's points that is not used (see the module).
    ``finished``: the fingerprints the store holds FINISHED runs of."""
    experiment = points[0].spec.tracking.experiment
    todo_at = {points[position].fingerprint: position for position in todo}
    in_grid = {point.fingerprint for point in points}
    candidates, lines = [], []
    for folder in folders(points, uri):
        checkpoints.remove_partials(folder)
        for path, header in checkpoints.headers(folder):
            verdict, remove = _verdict(header, uri, experiment, set(todo_at), in_grid, finished)
            if verdict == RESUME:
                candidates.append((path, header))
            elif verdict:
                readable = isinstance(header, Header)
                name = header.describe(path) if readable else f"checkpoint {path.name}"
                lines.append(f"{name} not used: {verdict}")
            if remove:
                path.unlink(missing_ok=True)
    cohorts, taken = _take(points, candidates, todo_at, lines)
    rest = [position for position in todo if points[position].fingerprint not in taken]
    return cohorts, rest, lines


RESUME = "resume"


def _verdict(
    header: Header | CheckpointError,
    uri: str,
    experiment: str,
    to_run: set[str],
    in_grid: set[str],
    finished: set[str],
) -> tuple[str, bool]:
    """What becomes of a checkpoint: (``RESUME``, False); ("", remove?) unsaid; or (why it
    is not used, remove?)."""
    if isinstance(header, CheckpointError):
        return f"{header}; removed", True
    prints = set(header.fingerprints)
    if header.store != uri or header.experiment != experiment or not prints & in_grid:
        return "", False  # another store's, experiment's or grid's
    same_code = header.code == checkpoints.code_version()
    if same_code and prints <= to_run:
        return RESUME, False
    if prints <= finished:
        return "", True  # its points are all recorded: done with
    if not same_code:
        return f"written by another harness ({header.code}); its points start over", False
    running = len(prints - to_run - finished)
    elsewhere = f", {running} running elsewhere or not in this grid" if running else ""
    return (
        f"only {len(prints & to_run)} of its points are to run{elsewhere}; they start over",
        False,
    )


def _take(points, candidates: list[tuple[Path, Header]], todo_at: dict[str, int], lines):
    """One cohort per candidate, the furthest first; a point resumes one checkpoint."""
    cohorts, taken = [], set()
    for path, header in sorted(candidates, key=lambda c: -c[1].step / c[1].total_steps):
        if taken & set(header.fingerprints):
            lines.append(f"{header.describe(path)} removed: a further one holds its points")
            path.unlink(missing_ok=True)
            continue
        taken |= set(header.fingerprints)
        positions = [todo_at[fingerprint] for fingerprint in header.fingerprints]
        cohorts.append(Cohort(positions, pinned_gpu(points[positions[0]].spec), str(path)))
    return cohorts, taken
