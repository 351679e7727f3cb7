"""Cohorts and slots: the points to run grouped into batches that train together, and the
workers (one per GPU, else CPU workers) that train them. Pure functions, tested without a
process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness import devices, engine
from harness.config import RunConfig
from harness.sweep.points import Point


@dataclass
class Cohort:
    """Points (positions in the point list) that train together as one batch; ``gpu`` is the
    index of the GPU they must run on (a device named ``cuda:N``), None for any slot;
    ``checkpoint``: the checkpoint it resumes (see ``harness.sweep.resuming``), if any."""

    positions: list[int]
    gpu: str | None = None
    checkpoint: str | None = None


def group_key(point: Point) -> str:
    """Points with the same key can train as one cohort (see ``engine.cohort_key``); a point
    that trains alone (a module with buffers or random layers)
    gets a key of its own."""
    if point.alone:
        return f"alone:{id(point)}"
    return engine.cohort_key(point.spec)


def alone_notes(points: Sequence[Point], todo: Sequence[int]) -> list[str]:
    """One line per reason some points to run train one at a time, with how many do."""
    reasons: dict[str, int] = {}
    for position in todo:
        if points[position].alone:
            reasons[points[position].alone] = reasons.get(points[position].alone, 0) + 1
    return [
        f"note: {count} point(s) train one run at a time, not in cohorts: {reason}"
        for reason, count in reasons.items()
    ]


def pinned_gpu(spec: RunConfig) -> str | None:
    """The GPU index a point names (``trainer.device=cuda:N``), else None."""
    device = spec.trainer.device
    return device.partition(":")[2] or None if device.startswith("cuda") else None


def make_cohorts(
    points: Sequence[Point], todo: Sequence[int], max_runs: int, workers: int
) -> list[Cohort]:
    """Group the points to run into cohorts of at most ``max_runs`` (in grid order), then
    split the largest until every worker has one (so no worker idles while one trains a
    large cohort alone)."""
    groups: dict[tuple, list[int]] = {}
    for position in todo:
        point = points[position]
        groups.setdefault((group_key(point), pinned_gpu(point.spec)), []).append(position)
    cohorts = [
        Cohort(positions[start : start + max_runs], gpu)
        for (_, gpu), positions in groups.items()
        for start in range(0, len(positions), max_runs)
    ]
    while len(cohorts) < workers:
        largest = max(cohorts, key=lambda c: len(c.positions), default=None)
        if largest is None or len(largest.positions) < 2:
            break
        half = len(largest.positions) // 2
        cohorts.remove(largest)
        cohorts += [
            Cohort(largest.positions[:half], largest.gpu),
            Cohort(largest.positions[half:], largest.gpu),
        ]
    return cohorts


@dataclass(frozen=True)
class Slots:
    """The sweep's workers: one per GPU (``gpus``, their ``CUDA_VISIBLE_DEVICES`` names; slot
    N owns ``cuda:N``) where the points train on CUDA, else ``cpu_workers`` on the CPU."""

    gpus: tuple[str, ...]
    cpu_workers: int

    @property
    def count(self) -> int:
        return len(self.gpus) or self.cpu_workers

    def environments(self) -> list[dict[str, str]]:
        gpus = [devices.slot_environment(index, name) for index, name in enumerate(self.gpus)]
        return gpus or [{}] * self.cpu_workers


def plan_slots(points: Sequence[Point], gpus: Sequence[str], n_jobs: int) -> Slots:
    """GPU slots when some point trains on CUDA (``auto`` or ``cuda[:N]``) and GPUs exist."""
    on_cuda = any(p.spec.trainer.device in ("auto", "cuda") or pinned_gpu(p.spec) for p in points)
    return Slots(tuple(gpus), n_jobs) if gpus and on_cuda else Slots((), n_jobs)
