"""What a sweep reports: each point's outcome, where the time went, the counts per outcome
and the summary table (the parent run's description and the last lines printed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from harness.sweep.points import Point
    from harness.sweep.settings import LauncherSettings


@dataclass
class Outcome:
    """What became of a point: finished | diverged | failed | killed | skipped (a duplicate,
    or a point another sweep holds). ``trained``: by this sweep (False for a point recorded
    earlier or by another sweep, which counts by its record). ``objective``: the run's
    objective (``harness.objectives``), None where it has none (failed, killed, held)."""

    status: str
    run_id: str | None = None
    error: str = ""
    seconds: float = 0.0
    trained: bool = True
    objective: float | None = None


@dataclass
class Timing:
    """Where a sweep's time went, in seconds: ``startup`` (imports and Hydra's start until the
    launcher runs), ``compose`` (the jobs' configs and folders), ``validate`` (specs, data,
    devices), ``prepare`` (reading the store, planning, the parent run), summed over the
    workers ``train`` (the engine), ``checkpoint`` (of ``train``, writing checkpoints) and
    ``track`` (MLflow writes that training did not hide,
    with the job folders), ``exit`` (from the last cohort's report to the summary: the workers
    and their writers stopping, the records settled), then ``total``
    (the sweep process's wall time until the summary)."""

    startup: float = 0.0
    compose: float = 0.0
    validate: float = 0.0
    prepare: float = 0.0
    train: float = 0.0
    checkpoint: float = 0.0
    track: float = 0.0
    exit: float = 0.0
    total: float = 0.0

    def line(self) -> str:
        return "time: " + ", ".join(f"{k} {v:.2f} s" for k, v in vars(self).items())


STATUSES = ("finished", "diverged", "failed", "killed", "skipped")


def counts(outcomes: Sequence[Outcome], total: int) -> dict[str, int]:
    """What the grid holds: points per status, those recorded earlier or by another sweep
    included; points never reached count as ``not_run``. Then ``trained``: the points this
    sweep trained."""
    found = {status: sum(o.status == status for o in outcomes) for status in STATUSES}
    found["not_run"] = total - len(outcomes)
    found["trained"] = sum(o.trained and o.status != "skipped" for o in outcomes)
    return found


def summary(title: str, points: Sequence[Point], outcomes: dict[int, Outcome]) -> str:
    """The summary table of what the grid holds, the number this sweep trained, then each
    failure with its error (Markdown, as the parent run's description shows it)."""
    tally = counts(list(outcomes.values()), len(points))
    trained = tally.pop("trained")
    lines = [title, "", "| outcome | runs |", "|---|---:|"]
    shown = [(s, n) for s, n in tally.items() if n or s not in ("killed", "not_run")]
    lines += [f"| {status} | {n} |" for status, n in shown]
    others = " (the others: recorded earlier, by another sweep, or duplicates)"
    lines += ["", f"trained by this sweep: {trained} of {len(points)} points"]
    lines[-1] += others if trained < len(points) else ""
    failures = [(p, outcomes[i]) for i, p in enumerate(points) if i in outcomes]
    failures = [(p, o) for p, o in failures if o.status in ("failed", "killed")]
    if failures:
        lines += ["", "| point | outcome | error |", "|---|---|---|"]
        lines += [
            f"| #{p.index} {p.name} | {o.status} | {o.error.splitlines()[0][:300]} |"
            for p, o in failures
        ]
    return "\n".join(lines)


def parent_params(
    points: Sequence[Point], root: DictConfig, settings: LauncherSettings
) -> dict[str, str]:
    """The parent run's params: the grid's declared axes, the command line's overrides, the
    number of points and the launcher's main settings."""
    declared = root.hydra.sweeper.get("params")
    grid = OmegaConf.to_container(declared) if declared else {}
    params = {f"grid.{key.lstrip('+~')}": str(values)[:6000] for key, values in grid.items()}
    params["overrides"] = " ".join(root.hydra.overrides.task)[:6000]
    params.update({"points": str(len(points)), "n_jobs": str(settings.n_jobs)})
    params.update({"max_cohort": str(settings.max_cohort)})
    return params
