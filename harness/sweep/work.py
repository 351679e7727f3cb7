"""A worker's job: train cohorts of grid points, each point recorded as its own MLflow run.
Pickled into each local worker, cluster job or Ray task."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from harness import config, devices, engine, objectives, records, train
from harness import problem as problem_module
from harness.problem import Problem
from harness.sweep.points import Checker, Point
from harness.sweep.summary import Outcome


@dataclass
class CohortReport:
    """What a worker reports for a cohort: an outcome per point, and its time."""

    outcomes: list[Outcome]
    train_seconds: float
    track_seconds: float


def write_job_dir(point: Point, output_subdir: str | None) -> None:
    """The job's output folder, with Hydra's ``<output_subdir>/config.yaml`` (the job's config)
    and ``overrides.yaml``; the sweep's Hydra config is the sweep folder's multirun.yaml."""
    point.job_dir.mkdir(parents=True, exist_ok=True)
    if output_subdir is None:
        return
    saved = point.job_dir / output_subdir
    saved.mkdir(exist_ok=True)
    (saved / "config.yaml").write_text(point.config_yaml)
    (saved / "overrides.yaml").write_text(config.yaml_text(list(point.overrides)))


class CohortWork:
    """A worker's job: train cohorts, each run recorded in MLflow as its own run, all through
    one store (``uri``, resolved once by the sweep: a job elsewhere may not see the sweep's
    environment) opened on first use. Pickled into each worker; problems are built there, once
    each. A cohort larger than the memory budget (``memory_fraction`` of the free memory of
    the worker's device, shared by ``sharing`` workers on the host's memory) trains in pieces.
    Each worker uses ``threads`` CPU threads, so that the workers do not oversubscribe the
    cores. Each cohort's runs are claims on their grid points (``claim``, see
    ``records.Claim``), so that a point another sweep holds is skipped. ``background``: the store
    writes from a forked process (not in a Ray worker, whose threads make forking unsafe)."""

    def __init__(
        self,
        uri: str,
        tags: dict[str, str],
        threads: int,
        memory_fraction: float,
        sharing: int,
        output_subdir: str | None,
        claim: records.Claim,
        background: bool = True,
    ):
        self.uri, self.tags, self.threads, self.output_subdir = uri, tags, threads, output_subdir
        self.claim = claim
        self.memory_fraction, self.sharing, self.background = memory_fraction, sharing, background
        self.problems: dict[str, Problem] = {}
        self.store: records.Store | None = None

    def run(self, points: list[Point]) -> CohortReport:
        started = time.perf_counter()
        torch.set_num_threads(self.threads)
        for point in points:
            write_job_dir(point, self.output_subdir)
        spec = points[0].spec
        key = Checker.problem_key(spec)
        if key not in self.problems:
            self.problems[key] = problem_module.build(spec)
        if self.store is None:
            self.store = records.open_store(
                spec.tracking, self.background, self.uri, source="harness.sweep", quiet=True
            )
        device = devices.resolve(spec.trainer.device, spec.trainer.dtype)
        fraction = self.memory_fraction / (1 if device.type == "cuda" else self.sharing)
        budget = devices.memory_budget(device, fraction)
        sizes = engine.split_for_memory(
            len(points), engine.run_bytes(spec, self.problems[key]), budget
        )
        outcomes, start, train_seconds = [], 0, 0.0
        for size in sizes:
            found, seconds = self.train(points[start : start + size], self.problems[key])
            outcomes, start, train_seconds = outcomes + found, start + size, train_seconds + seconds
        track_seconds = time.perf_counter() - started - train_seconds
        return CohortReport(outcomes, train_seconds, track_seconds)

    def train(self, points: list[Point], problem: Problem) -> tuple[list[Outcome], float]:
        """Train and record ``points`` as one cohort: their outcomes and the engine's time."""
        started = time.monotonic()
        try:
            recorded = train.record_cohort(
                [p.spec for p in points],
                problem,
                self.store,
                [p.name for p in points],
                self.tags,
                self.claim,
            )
        except Exception as error:  # recorded FAILED by record_cohort
            seconds = time.monotonic() - started
            failed = Outcome("failed", None, f"{type(error).__name__}: {error}", seconds)
            return [failed] * len(points), seconds
        seconds = next((result.seconds for _, result in recorded if result is not None), 0.0)
        pairs = zip(recorded, points, strict=True)
        return [outcome(r, result, point.objective) for (r, result), point in pairs], seconds

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def outcome(recorded: records.Recorded, result: engine.RunResult | None, metric: str) -> Outcome:
    """A trained point's outcome; its objective is the final value of ``metric``."""
    if recorded.held:
        why = "another sweep ran it at the same time"
        return Outcome("skipped", recorded.run_id, why, trained=False)
    if recorded.error is not None:
        return Outcome("failed", recorded.run_id, recorded.error, result.seconds)
    status = "diverged" if result.diverged else "finished"
    value = objectives.of_run(metric, result)
    return Outcome(status, recorded.run_id, seconds=result.seconds, objective=value)
