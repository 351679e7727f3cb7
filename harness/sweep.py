"""A sweep: every grid point of a Hydra multirun validated up front, resumed by fingerprint,
trained in batched cohorts on worker processes (one per GPU where there are GPUs) with failures
isolated, and summed up.

``launch`` (called by the harness launcher with the grid's job overrides) works in five steps:

1. compose (once per combination of config-group choices, see ``harness.compose``) and
   validate every point (spec, data, optimizer, device, store): a bad value stops the sweep
   before any run exists, with exit status 2;
2. open the study's experiment once (creating the database schema before any worker starts),
   read the runs it holds, and plan: a point whose fingerprint has a FINISHED run is skipped
   (unless ``force``), a run that a dead process left RUNNING is marked KILLED and its point
   redone, a point RUNNING in a live process elsewhere is left to it;
3. group the points to run into cohorts: points that share dataset, model, loss, optimizer
   rule, schedule type and trainer shape train as one batch (at most ``max_cohort`` runs,
   split further to fit the memory budget and to give every worker work); a point whose
   optimizer is a torch.optim pass-through trains alone. Open the sweep's parent run, the
   same one when an interrupted sweep is run again;
4. train the cohorts on the workers: each point is still its own MLflow run, with the params,
   metrics and tags it has when trained alone. A cohort that raises has its points recorded
   FAILED; a run that diverges is a result like any other; neither stops the sweep;
5. mark runs of workers that died, close the parent run and print the summary. The exit status
   is 1 when a run FAILED, 130 when interrupted (Ctrl-C, SIGTERM), else the sweep returns.

Each job still gets its output folder (``hydra.sweep.dir``/``hydra.sweep.subdir``) with its
config and overrides; Hydra's job callbacks and per-job logging are not run.

``python -m harness.sweep <study> [overrides]`` runs a study from ``experiments/``.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from harness import (
    compose,
    config,
    devices,
    engine,
    executors,
    optim,
    pool,
    studies,
    tracking,
    train,
)
from harness import problem as problem_module
from harness.config import ConfigError, RunConfig
from harness.problem import Problem
from harness.progress import Progress

RESULTS = ("finished", "diverged")
EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BAD_INPUT = 1, 130, 2


@dataclass
class Point:
    """One grid point: its Hydra job number and overrides, its composed config (without the
    ``hydra`` node, unresolved, as YAML), its job's output folder and its validated spec."""

    index: int
    overrides: tuple[str, ...]
    config_yaml: str
    job_dir: Path
    spec: RunConfig
    fingerprint: str
    name: str


@dataclass
class Cohort:
    """Points (positions in the point list) that train together as one batch; ``gpu`` is the
    index of the GPU they must run on (a device named ``cuda:N``), None for any slot."""

    positions: list[int]
    gpu: str | None = None


@dataclass
class Outcome:
    """What became of a point: finished | diverged | failed | killed | skipped."""

    status: str
    run_id: str | None = None
    error: str = ""
    seconds: float = 0.0


@dataclass
class Timing:
    """Where a sweep's time went, in seconds: ``startup`` (imports and Hydra's start until the
    launcher runs), ``compose`` (the jobs' configs and folders), ``validate`` (specs, data,
    devices), ``prepare`` (reading the store, planning, the parent run), and summed over the
    workers ``train`` (the engine) and ``track`` (MLflow writes that training did not hide,
    with the job folders), then ``total`` (the sweep process's wall time)."""

    startup: float = 0.0
    compose: float = 0.0
    validate: float = 0.0
    prepare: float = 0.0
    train: float = 0.0
    track: float = 0.0
    total: float = 0.0

    def line(self) -> str:
        return "time: " + ", ".join(f"{k} {v:.2f} s" for k, v in vars(self).items())


@dataclass
class CohortReport:
    """What a worker reports for a cohort: an outcome per point, and its time."""

    outcomes: list[Outcome]
    train_seconds: float
    track_seconds: float


@dataclass
class Plan:
    todo: list[int]  # indexes (into the point list) to run
    skipped: dict[int, Outcome]
    stale: list[tracking.RunRecord]  # RUNNING runs of dead processes


# ----------------------------------------------------------------------------- validation


def varying_keys(job_overrides: Sequence[Sequence[str]]) -> set[str]:
    """The override keys whose values differ between jobs: the grid's axes."""
    values: dict[str, set[str]] = {}
    for overrides in job_overrides:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return {key for key, seen in values.items() if len(seen) > 1}


def point_name(spec: RunConfig, overrides: Sequence[str], axes: set[str]) -> str:
    """``run_name`` if set, else the job's values on the grid's axes (``optimizer=sgd seed=1``),
    else the usual optimizer-model-dataset-lr-seed name."""
    if spec.run_name:
        return spec.run_name
    picks = [o for o in overrides if o.partition("=")[0] in axes]
    return " ".join(picks) or train.run_name(spec)


class Checker:
    """Validates points, loading each distinct problem's data once."""

    def __init__(self):
        self.problems: dict[str, Problem] = {}
        self.devices: set[tuple[str, str]] = set()

    @staticmethod
    def problem_key(spec: RunConfig) -> str:
        """The identity of the point's problem: its dataset, model and loss configs."""
        tree = config.as_dict(spec)
        parts = {k: tree[k] for k in ("dataset", "model", "loss")}
        return json.dumps(parts, sort_keys=True, default=str)

    def check(self, spec: RunConfig) -> None:
        key = self.problem_key(spec)
        if key not in self.problems:
            self.problems[key] = problem_module.build(spec)
        else:  # the data fits; the batch size and budget may not
            problem_module.build(spec, self.problems[key].data)
        optim.build(spec.optimizer)
        device = (spec.trainer.device, spec.trainer.dtype)
        if device not in self.devices:
            devices.resolve(*device)
            self.devices.add(device)


def compose_points(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    composer: compose.Composer,
    timing: Timing,
) -> list[Point]:
    """Compose and validate every job; raises ConfigError naming the first bad point."""
    checker, points, axes = Checker(), [], varying_keys(job_overrides)
    started = time.perf_counter()
    jobs = composer.jobs(job_overrides, initial_job_idx)
    job_dirs = [composer.job_dir(job).absolute() for job in jobs]  # the same on every node
    timing.compose = time.perf_counter() - started
    for job, job_dir in zip(jobs, job_dirs, strict=True):
        try:
            spec = config.to_spec(job.task)
            checker.check(spec)
        except ConfigError as error:
            error.add_note(f"in grid point #{job.index}: {' '.join(job.overrides)}")
            raise
        name = point_name(spec, job.overrides, axes)
        points.append(
            Point(
                job.index,
                tuple(job.overrides),
                config.yaml_text(OmegaConf.to_container(job.task)),
                job_dir,
                spec,
                config.fingerprint(spec),
                name,
            )
        )
    timing.validate = time.perf_counter() - started - timing.compose
    targets = {(p.spec.tracking.uri, p.spec.tracking.experiment) for p in points}
    if len(targets) > 1:
        raise ConfigError(
            "tracking.experiment", sorted(map(str, targets)), "a sweep writes to one experiment"
        )
    return points


# ----------------------------------------------------------------------------- planning


def plan(
    points: Sequence[Point],
    records: Sequence[tracking.RunRecord],
    force: bool,
    alive: Callable[[str], bool],
) -> Plan:
    """Decide which points run. Points are matched to runs by fingerprint."""
    by_fingerprint: dict[str, list[tracking.RunRecord]] = {}
    for record in records:
        by_fingerprint.setdefault(record.fingerprint, []).append(record)
    stale = [r for r in records if r.status == "RUNNING" and not alive(r.owner)]
    todo, skipped, seen = [], {}, {}
    for position, point in enumerate(points):
        runs = by_fingerprint.get(point.fingerprint, [])
        finished = [r for r in runs if r.status == "FINISHED"]
        running = [r for r in runs if r.status == "RUNNING" and alive(r.owner)]
        if point.fingerprint in seen:
            why = f"the same run as grid point #{seen[point.fingerprint]}"
            skipped[position] = Outcome("skipped", error=why)
        elif running:
            why = f"running in another process ({running[0].owner})"
            skipped[position] = Outcome("skipped", running[0].run_id, why)
        elif finished and not force:
            skipped[position] = Outcome("skipped", finished[-1].run_id, "already recorded")
        else:
            todo.append(position)
        seen.setdefault(point.fingerprint, point.index)
    return Plan(todo, skipped, stale)


def sweep_id(points: Sequence[Point], force: bool) -> str:
    """The sweep's identity: its experiment and the set of its points' fingerprints, so that
    running an interrupted sweep again continues it. A forced sweep is a new one."""
    experiment = points[0].spec.tracking.experiment
    content = json.dumps([experiment, sorted({p.fingerprint for p in points})])
    if force:
        content += f"@{time.time_ns()}"
    return hashlib.sha256(content.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- cohorts


def group_key(spec: RunConfig) -> str:
    """Points with the same key can train as one cohort (see ``engine.cohort_key``); a point
    whose optimizer trains alone (torch.optim pass-through) gets a key of its own."""
    if optim.trains_alone(spec.optimizer):
        return f"alone:{id(spec)}"
    return engine.cohort_key(spec)


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
        spec = points[position].spec
        groups.setdefault((group_key(spec), pinned_gpu(spec)), []).append(position)
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


# ----------------------------------------------------------------------------- running


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
    cores. ``background``: the store writes from a forked process (not in a Ray worker, whose
    threads make forking unsafe)."""

    def __init__(
        self,
        uri: str,
        tags: dict[str, str],
        threads: int,
        memory_fraction: float,
        sharing: int,
        output_subdir: str | None,
        background: bool = True,
    ):
        self.uri, self.tags, self.threads, self.output_subdir = uri, tags, threads, output_subdir
        self.memory_fraction, self.sharing, self.background = memory_fraction, sharing, background
        self.problems: dict[str, Problem] = {}
        self.store: tracking.Store | None = None

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
            self.store = tracking.open_store(spec.tracking, self.background, self.uri)
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
        tags = {**self.tags, tracking.OWNER_TAG: pool.owner_token()}
        started = time.monotonic()
        try:
            records = train.record_cohort(
                [p.spec for p in points], problem, self.store, [p.name for p in points], tags
            )
        except Exception as error:  # recorded FAILED by record_cohort
            seconds = time.monotonic() - started
            failed = Outcome("failed", None, f"{type(error).__name__}: {error}", seconds)
            return [failed] * len(points), seconds
        return [outcome(r, result) for r, result in records], records[0][1].seconds

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def outcome(recorded: tracking.Recorded, result: engine.RunResult) -> Outcome:
    if recorded.error is not None:
        return Outcome("failed", recorded.run_id, recorded.error, result.seconds)
    status = "diverged" if result.diverged else "finished"
    return Outcome(status, recorded.run_id, seconds=result.seconds)


def run_cohorts(points, cohorts, executor, work, progress, timing: Timing) -> tuple[dict, bool]:
    """Train the cohorts through the executor with ``work``; returns the outcomes by position
    and whether the sweep was interrupted. The workers' time is added to ``timing``."""
    outcomes: dict[int, Outcome] = {}

    def on_event(kind: str, number: int, payload) -> None:
        positions = cohorts[number].positions
        if kind == "done":
            found = dict(zip(positions, payload.outcomes, strict=True))
            timing.train += payload.train_seconds
            timing.track += payload.track_seconds
        elif kind == "interrupted":
            found = {p: Outcome("killed", error="interrupted") for p in positions}
        else:  # lost: the worker or job died
            found = dict.fromkeys(positions, Outcome("failed", error=payload))
        for position, found_outcome in found.items():
            outcomes[position] = found_outcome
            progress.update(found_outcome.status, points[position].name)

    previous = signal.signal(signal.SIGTERM, train._interrupt)
    try:
        items = {
            number: [points[p] for p in cohort.positions] for number, cohort in enumerate(cohorts)
        }
        pins = {n: int(c.gpu) for n, c in enumerate(cohorts) if c.gpu is not None}
        if items:
            executor.run(work, items, on_event, pins)
        return outcomes, False
    except KeyboardInterrupt:
        return outcomes, True
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()


def settle(points, outcomes: dict[int, Outcome], ledger: tracking.Ledger, known: set, sweep: str):
    """Make the store and the outcomes agree once every worker or job has ended: a run left
    RUNNING by a dead process, or by a job of this sweep (``sweep``: its id) that was lost or
    interrupted (it may have run on another machine), is marked FAILED (KILLED when
    interrupted), and a point
    reported killed or lost whose run was in fact written to the end (the signal came as it
    finished) counts as its run says."""
    ended = {
        points[position].fingerprint: outcome
        for position, outcome in outcomes.items()
        if outcome.status in ("killed", "failed")
    }
    new = [r for r in ledger.grid_runs() if r.run_id not in known]
    for record in new:
        if record.status != "RUNNING":
            continue
        outcome = ended.get(record.fingerprint) if record.sweep == sweep else None
        if outcome is not None:
            status = "KILLED" if outcome.status == "killed" else "FAILED"
            ledger.mark(record.run_id, status, outcome.error)
        elif not pool.is_alive(record.owner):
            ledger.mark(record.run_id, "FAILED", "its worker process died")
    finished = {r.fingerprint: r for r in new if r.status == "FINISHED"}
    for position, outcome in outcomes.items():
        record = finished.get(points[position].fingerprint)
        if outcome.status in ("killed", "failed") and record is not None:
            status = "diverged" if record.diverged else "finished"
            outcomes[position] = Outcome(status, record.run_id, seconds=outcome.seconds)


# ----------------------------------------------------------------------------- summary


def counts(outcomes: Sequence[Outcome], total: int) -> dict[str, int]:
    """Points per status; points never reached count as ``not_run``."""
    statuses = ("finished", "diverged", "failed", "killed", "skipped")
    found = {status: sum(o.status == status for o in outcomes) for status in statuses}
    found["not_run"] = total - len(outcomes)
    return found


def summary(title: str, points: Sequence[Point], outcomes: dict[int, Outcome]) -> str:
    """The summary table, then each failure with its error (Markdown, as the parent run's
    description shows it)."""
    tally = counts(list(outcomes.values()), len(points))
    lines = [title, "", "| outcome | runs |", "|---|---:|"]
    shown = [(s, n) for s, n in tally.items() if n or s not in ("killed", "not_run")]
    lines += [f"| {status} | {n} |" for status, n in shown]
    failures = [(p, outcomes[i]) for i, p in enumerate(points) if i in outcomes]
    failures = [(p, o) for p, o in failures if o.status in ("failed", "killed")]
    if failures:
        lines += ["", "| point | outcome | error |", "|---|---|---|"]
        lines += [
            f"| #{p.index} {p.name} | {o.status} | {o.error.splitlines()[0][:300]} |"
            for p, o in failures
        ]
    return "\n".join(lines)


def parent_params(points: Sequence[Point], root: DictConfig, options) -> dict[str, str]:
    declared = root.hydra.sweeper.get("params")
    grid = OmegaConf.to_container(declared) if declared else {}
    params = {f"grid.{key.lstrip('+~')}": str(values)[:6000] for key, values in grid.items()}
    params["overrides"] = " ".join(root.hydra.overrides.task)[:6000]
    params.update({"points": str(len(points)), "n_jobs": str(options.n_jobs)})
    params.update({"max_cohort": str(options.max_cohort)})
    return params


@dataclass(frozen=True)
class Options:
    """The launcher's settings (``hydra.launcher.*``)."""

    n_jobs: int = 1  # CPU workers; where points train on CUDA, one worker per GPU instead
    force: bool = False  # rerun points already recorded
    max_cohort: int = 1000  # most runs trained as one batch; 1 trains one job at a time
    memory_fraction: float = 0.5  # of the free memory a worker's cohorts may take
    executor: str = "local"  # local | slurm | ray (see harness.executors)
    slurm: dict = field(default_factory=dict)  # executors.SlurmSettings
    ray: dict = field(default_factory=dict)  # executors.RaySettings

    def check(self) -> tuple[executors.SlurmSettings, executors.RaySettings]:
        """Validate the settings; returns the cluster executors' settings."""
        if self.n_jobs < 1:
            raise ConfigError("hydra.launcher.n_jobs", self.n_jobs, "expected an integer >= 1")
        if self.max_cohort < 1:
            raise ConfigError(
                "hydra.launcher.max_cohort", self.max_cohort, "expected an integer >= 1"
            )
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError(
                "hydra.launcher.memory_fraction",
                self.memory_fraction,
                "expected a number in (0, 1]",
            )
        return executors.check(self.executor, dict(self.slurm), dict(self.ray))


def prepare(
    job_overrides, initial_job_idx, root: DictConfig, hydra_context, options: Options, timing
):
    """Compose and validate the grid and open its experiment; returns the points, the ledger
    and the cluster executors' settings; raises ConfigError."""
    slurm, ray = options.check()
    composer = compose.Composer(hydra_context.config_loader, root)
    points = compose_points(job_overrides, initial_job_idx, composer, timing)
    target = points[0].spec.tracking
    uri = tracking.resolve_uri(target.uri)
    tracking.check_uri(uri)
    executors.check_store(options.executor, slurm, ray, uri)
    return points, tracking.Ledger(uri, target.experiment), slurm, ray


def launch(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    root: DictConfig,
    hydra_context,
    options: Options,
) -> list[JobReturn]:
    """Run the grid; see the module's docstring. Exits through SystemExit unless all went well."""
    started = time.monotonic()
    timing = Timing(startup=pool.process_age())
    pool.start_server(["harness.train"])  # gets ready while the grid is composed
    try:
        points, ledger, slurm, ray = prepare(
            job_overrides, initial_job_idx, root, hydra_context, options, timing
        )
        records = ledger.grid_runs()
        plan_ = plan(points, records, options.force, pool.is_alive)
        for record in plan_.stale:
            ledger.mark(record.run_id, "KILLED", "left RUNNING by a process that died; redone")
        study = root.hydra.runtime.choices.get("experiment") or points[0].spec.tracking.experiment
        identity = sweep_id(points, options.force)
        slots = plan_slots(points, devices.gpu_ids(), options.n_jobs)
        at_once = executors.parallel_cohorts(options.executor, slots.count)
        cohorts = make_cohorts(points, plan_.todo, options.max_cohort, at_once)
        folder = Path(str(root.hydra.sweep.dir)).absolute() / ".submitit"
        executor = cohorts and executors.build(options.executor, slots, slurm, ray, folder)
        name, params = f"{study}-sweep-{identity[:8]}", parent_params(points, root, options)
        parent = ledger.open_sweep(identity, name, params, {"study": study})
        timing.prepare = time.monotonic() - started - timing.compose - timing.validate
    except ConfigError as error:
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
        print(f"error: {error}{notes}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        print("interrupted while preparing the sweep: no run was started", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    where = executors.describe(options.executor, slots, slurm, ray)
    print(
        f"sweep {study!r}: {len(points)} points, {len(plan_.skipped)} skipped "
        f"(already recorded or duplicates), {len(plan_.todo)} to run in {len(cohorts)} "
        f"cohort(s) on {where}; store {ledger.uri}, experiment "
        f"{points[0].spec.tracking.experiment!r}, parent run {parent}",
        flush=True,
    )
    tags = {tracking.PARENT_TAG: parent, tracking.SWEEP_TAG: identity}
    local = options.executor == "local"
    work = CohortWork(
        ledger.uri,
        tags,
        executors.threads(options.executor, slots.count, slurm, ray),
        options.memory_fraction,
        slots.count if local else 1,
        root.hydra.output_subdir,
        background=options.executor != "ray",
    )
    outcomes, interrupted = run_cohorts(
        points, cohorts, executor, work, Progress(len(plan_.todo)), timing
    )
    outcomes.update(plan_.skipped)

    settle(points, outcomes, ledger, {r.run_id for r in records}, identity)
    failed = any(o.status == "failed" for o in outcomes.values())
    status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"
    title = (
        f"Sweep {identity} of study {study!r} ({status.lower()}): {len(points)} points in "
        f"{time.monotonic() - started:.1f} s"
    )
    timing.total = time.monotonic() - started + timing.startup
    table = summary(title, points, outcomes) + "\n\n" + timing.line()
    tallies = counts(list(outcomes.values()), len(points))
    ledger.close_sweep(
        parent, status, tallies, {f"seconds_{k}": v for k, v in vars(timing).items()}, table
    )
    print(table, flush=True)
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    if failed:
        raise SystemExit(EXIT_FAILED)
    return [
        JobReturn(overrides=list(p.overrides), status=JobStatus.COMPLETED, _return_value=o)
        for p, o in zip(points, (outcomes[i] for i in range(len(points))), strict=True)
    ]


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m harness.sweep [study] [overrides]``: run a study (default ``lecture``) as a
    Hydra multirun through the harness launcher; ``--list`` prints the studies.
    ``force=true`` reruns points already recorded; ``hydra.launcher.n_jobs=N`` sets workers."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--list"]:
        for name, question in studies.available().items():
            print(f"{name:16} {question}")
        return
    study = args.pop(0) if args and "=" not in args[0] else studies.DEFAULT
    try:
        studies.check(study)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    args = [f"hydra.launcher.{a}" if a.startswith("force=") else a for a in args]
    old_argv = sys.argv
    sys.argv = ["harness.sweep", "--multirun", f"+experiment={study}", *args]
    try:
        train.main()
    except KeyboardInterrupt:  # while Hydra composes the grid, before the launcher runs
        print("interrupted while composing the grid: no run was started", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        sys.argv = old_argv


if __name__ == "__main__":
    main()
