"""A worker's job: train cohorts of grid points, each point recorded as its own MLflow run.
Pickled into each local worker, cluster job or Ray task."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from harness import checkpoints, config, devices, engine, objectives, records, train
from harness import problem as problem_module
from harness.problem import Problem
from harness.sweep.points import Checker, Point
from harness.sweep.summary import Outcome


@dataclass
class CohortReport:
    """What a worker reports for a cohort: an outcome per point, and its time (of the
    training time, ``checkpoint_seconds`` went to writing checkpoints)."""

    outcomes: list[Outcome]
    train_seconds: float
    track_seconds: float
    checkpoint_seconds: float = 0.0


@dataclass
class Job:
    """A cohort to train: its points, and its checkpoints (None: none; ``resume`` set: the
    cohort continues that checkpoint, so it trains as one piece, as it was written)."""

    points: list[Point]
    checkpointing: checkpoints.Checkpointing | None = None


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

    def run(self, job: Job) -> CohortReport:
        started = time.perf_counter()
        points, checkpointing = job.points, job.checkpointing
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
        if checkpointing is not None and checkpointing.resume is not None and len(sizes) > 1:
            checkpoints.say(
                f"checkpoint {checkpointing.resume.name} not used: its {len(points)} runs no "
                f"longer fit the memory budget (they train in {len(sizes)} pieces) and start over"
            )
            checkpointing = replace(checkpointing, resume=None)
        report = CohortReport([], 0.0, 0.0)
        start = 0
        for size in sizes:
            piece = points[start : start + size]
            found = self.train(piece, self.problems[key], checkpointing, report)
            report.outcomes, start = report.outcomes + found, start + size
            if checkpointing is not None:  # a resumed checkpoint is the first piece's
                checkpointing = replace(checkpointing, resume=None)
        report.track_seconds = time.perf_counter() - started - report.train_seconds
        return report

    def train(
        self,
        points: list[Point],
        problem: Problem,
        checkpointing: checkpoints.Checkpointing | None,
        report: CohortReport,
    ) -> list[Outcome]:
        """Train and record ``points`` as one cohort: their outcomes; the engine's time (and
        of that, the checkpoints') is added to ``report``."""
        started = time.monotonic()
        try:
            recorded = train.record_cohort(
                [p.spec for p in points],
                problem,
                self.store,
                [p.name for p in points],
                self.tags,
                self.claim,
                checkpointing,
            )
        except Exception as error:  # recorded FAILED by record_cohort
            seconds = time.monotonic() - started
            report.train_seconds += seconds
            failed = Outcome("failed", None, f"{type(error).__name__}: {error}", seconds)
            return [failed] * len(points)
        result = next((result for _, result in recorded if result is not None), None)
        if result is not None:
            report.train_seconds += result.seconds - result.resumed_seconds
            report.checkpoint_seconds += result.checkpoint_seconds
        pairs = zip(recorded, points, strict=True)
        return [outcome(r, result, point.objective) for (r, result), point in pairs]

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
