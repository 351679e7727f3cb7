"""A sweep: every grid point of a Hydra multirun validated up front, resumed by fingerprint, run
on worker processes with failures isolated, and summed up.

``launch`` (called by the harness launcher with the grid's job overrides) works in five steps:

1. compose and validate every point (spec, data, optimizer, device, store): a bad value stops
   the sweep before any run exists, with exit status 2;
2. open the study's experiment once (creating the database schema before any worker starts),
   read the runs it holds, and plan: a point whose fingerprint has a FINISHED run is skipped
   (unless ``force``), a run that a dead process left RUNNING is marked KILLED and its point
   redone, a point RUNNING in a live process elsewhere is left to it;
3. open the sweep's parent run, the same one when an interrupted sweep is run again;
4. run the points left on ``n_jobs`` workers: a point that raises is recorded FAILED, one
   that diverges is a result like any other, and neither stops the sweep;
5. mark runs of workers that died, close the parent run and print the summary. The exit status
   is 1 when a run FAILED, 130 when interrupted (Ctrl-C, SIGTERM), else the sweep returns.

``python -m harness.sweep <study> [overrides]`` runs a study from ``experiments/``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from harness import config, devices, optim, pool, studies, tracking, train
from harness import problem as problem_module
from harness.config import ConfigError, RunConfig
from harness.problem import Problem
from harness.progress import Progress

RESULTS = ("finished", "diverged")
EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BAD_INPUT = 1, 130, 2


@dataclass
class Point:
    """One grid point: its Hydra job number and overrides, its composed config (with the
    ``hydra`` node, for the job's output folder) and its validated spec."""

    index: int
    overrides: tuple[str, ...]
    config: DictConfig
    spec: RunConfig
    fingerprint: str
    name: str


@dataclass
class Outcome:
    """What became of a point: finished | diverged | failed | killed | skipped."""

    status: str
    run_id: str | None = None
    error: str = ""
    seconds: float = 0.0


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


def task_config(sweep_config: DictConfig) -> DictConfig:
    """The run's config: the composed config without Hydra's node."""
    cfg = copy.deepcopy(sweep_config)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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
    compose: Callable[[list[str]], DictConfig],
) -> list[Point]:
    """Compose and validate every job; raises ConfigError naming the first bad point."""
    checker, points, axes = Checker(), [], varying_keys(job_overrides)
    for offset, overrides in enumerate(job_overrides):
        index = initial_job_idx + offset
        sweep_config = compose(list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = index
            sweep_config.hydra.job.num = index
        try:
            spec = config.to_spec(task_config(sweep_config))
            checker.check(spec)
        except ConfigError as error:
            error.add_note(f"in grid point #{index}: {' '.join(overrides)}")
            raise
        name = point_name(spec, overrides, axes)
        points.append(
            Point(index, tuple(overrides), sweep_config, spec, config.fingerprint(spec), name)
        )
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


# ----------------------------------------------------------------------------- running


class PointWork:
    """A worker's job: train and record points, each inside Hydra's ``run_job`` (its output
    folder, logging and saved config), all through one store opened on first use. Pickled
    into each worker; problems are built there, once each. Each worker uses ``threads``
    CPU threads, so that the workers together do not oversubscribe the cores."""

    def __init__(self, hydra_context, tags: dict[str, str], threads: int):
        self.hydra_context, self.tags, self.threads = hydra_context, tags, threads
        self.problems: dict[str, Problem] = {}
        self.store: tracking.Store | None = None

    def run(self, point: Point) -> Outcome:
        setup_globals()  # Hydra's resolvers (${now:...}, ${hydra:...}) in this process
        torch.set_num_threads(self.threads)
        returned = run_job(
            hydra_context=self.hydra_context,
            task_function=lambda cfg: self.train(point),
            config=point.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        if returned.status == JobStatus.COMPLETED:
            return returned.return_value
        error = returned._return_value
        return Outcome("failed", error=f"{type(error).__name__}: {error}")

    def train(self, point: Point) -> Outcome:
        spec = point.spec
        key = Checker.problem_key(spec)
        if key not in self.problems:
            self.problems[key] = problem_module.build(spec)
        if self.store is None:
            self.store = tracking.open_store(spec.tracking)
        tags = {**self.tags, tracking.OWNER_TAG: pool.owner_token()}
        started = time.monotonic()
        try:
            run_id, result = train.train_and_record(
                spec, self.problems[key], self.store, tags, point.name
            )
        except Exception as error:  # recorded FAILED by train_and_record
            seconds = time.monotonic() - started
            return Outcome("failed", None, f"{type(error).__name__}: {error}", seconds)
        status = "diverged" if result.diverged else "finished"
        return Outcome(status, run_id, seconds=result.seconds)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def run_points(points, plan_, n_jobs, work, progress) -> tuple[dict[int, Outcome], bool]:
    """Run the plan's points on ``n_jobs`` workers; returns the outcomes by position and
    whether the sweep was interrupted."""
    outcomes: dict[int, Outcome] = {}

    def on_event(kind: str, position: int, payload) -> None:
        if kind == "started":
            return
        if kind == "done":
            outcomes[position] = payload
        elif kind == "interrupted":
            outcomes[position] = Outcome("killed", error="interrupted")
        elif kind == "lost":
            outcomes[position] = Outcome("failed", error=f"worker died (exit code {payload})")
        progress.update(outcomes[position].status, points[position].name)

    previous = signal.signal(signal.SIGTERM, train._interrupt)
    try:
        todo = {position: points[position] for position in plan_.todo}
        pool.Pool(min(n_jobs, max(len(todo), 1)), work).run(todo, on_event)
        return outcomes, False
    except KeyboardInterrupt:
        return outcomes, True
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()


def settle(points, outcomes: dict[int, Outcome], ledger: tracking.Ledger, known: set[str]):
    """Make the store and the outcomes agree after the workers are gone: runs a dead worker
    left RUNNING are marked FAILED, and a point reported killed or lost whose run was in fact
    written to the end (the signal came as it finished) counts as its run says."""
    new = [r for r in ledger.grid_runs() if r.run_id not in known]
    for record in new:
        if record.status == "RUNNING" and not pool.is_alive(record.owner):
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


def parent_params(points: Sequence[Point], root: DictConfig, n_jobs: int) -> dict[str, str]:
    declared = root.hydra.sweeper.get("params")
    grid = OmegaConf.to_container(declared) if declared else {}
    params = {f"grid.{key.lstrip('+~')}": str(values)[:6000] for key, values in grid.items()}
    params["overrides"] = " ".join(root.hydra.overrides.task)[:6000]
    params.update({"points": str(len(points)), "n_jobs": str(n_jobs)})
    return params


def prepare(job_overrides, initial_job_idx, root: DictConfig, hydra_context, n_jobs: int):
    """Compose and validate the grid and open its experiment; raises ConfigError."""
    if n_jobs < 1:
        raise ConfigError("hydra.launcher.n_jobs", n_jobs, "expected an integer >= 1")
    compose = functools.partial(hydra_context.config_loader.load_sweep_config, root)
    points = compose_points(job_overrides, initial_job_idx, compose)
    target = points[0].spec.tracking
    uri = tracking.resolve_uri(target.uri)
    tracking.check_uri(uri)
    return points, tracking.Ledger(uri, target.experiment)


def launch(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    root: DictConfig,
    hydra_context,
    n_jobs: int,
    force: bool,
) -> list[JobReturn]:
    """Run the grid; see the module's docstring. Exits through SystemExit unless all went well."""
    started = time.monotonic()
    pool.start_server(["harness.train"])  # gets ready while the grid is composed
    try:
        points, ledger = prepare(job_overrides, initial_job_idx, root, hydra_context, n_jobs)
        records = ledger.grid_runs()
        plan_ = plan(points, records, force, pool.is_alive)
        for record in plan_.stale:
            ledger.mark(record.run_id, "KILLED", "left RUNNING by a process that died; redone")
        study = root.hydra.runtime.choices.get("experiment") or points[0].spec.tracking.experiment
        identity = sweep_id(points, force)
        name, params = f"{study}-sweep-{identity[:8]}", parent_params(points, root, n_jobs)
        parent = ledger.open_sweep(identity, name, params, {"study": study})
    except ConfigError as error:
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
        print(f"error: {error}{notes}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        print("interrupted while preparing the sweep: no run was started", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    print(
        f"sweep {study!r}: {len(points)} points, {len(plan_.skipped)} skipped "
        f"(already recorded or duplicates), {len(plan_.todo)} to run on {n_jobs} worker(s); "
        f"store {ledger.uri}, experiment {points[0].spec.tracking.experiment!r}, "
        f"parent run {parent}",
        flush=True,
    )
    tags = {tracking.PARENT_TAG: parent, tracking.SWEEP_TAG: identity}
    threads = max(1, len(os.sched_getaffinity(0)) // n_jobs)
    work = PointWork(hydra_context, tags, threads)
    outcomes, interrupted = run_points(points, plan_, n_jobs, work, Progress(len(plan_.todo)))
    outcomes.update(plan_.skipped)

    settle(points, outcomes, ledger, known={r.run_id for r in records})
    failed = any(o.status == "failed" for o in outcomes.values())
    status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"
    title = (
        f"Sweep {identity} of study {study!r} ({status.lower()}): {len(points)} points in "
        f"{time.monotonic() - started:.1f} s"
    )
    table = summary(title, points, outcomes)
    ledger.close_sweep(parent, status, counts(list(outcomes.values()), len(points)), table)
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
