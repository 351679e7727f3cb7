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
   split further to fit the memory budget and to give every worker work); a point of a
   module with buffers or random layers trains alone. Open the sweep's parent run, the
   same one when an interrupted sweep is run again;
4. train the cohorts on the workers: each point is still its own MLflow run, with the params,
   metrics and tags it has when trained alone. A cohort that raises has its points recorded
   FAILED; a run that diverges is a result like any other; neither stops the sweep;
5. mark runs of workers that died, close the parent run and print the summary; return a
   JobReturn per point: COMPLETED with the run's objective (``harness.objectives``: what a
   tuning sweeper reads), FAILED with the error of a run that failed. Interrupted (Ctrl-C,
   SIGTERM), it exits with status 130; the harness's sweeper exits with 1 when a run FAILED
   (Optuna's counts it a failed trial and goes on).

A sweeper that launches several batches (the harness's search, Optuna's) passes the same
``Session`` to each: all its batches record under one parent run.

Each job still gets its output folder (``hydra.sweep.dir``/``hydra.sweep.subdir``) with its
config and overrides; Hydra's job callbacks and per-job logging are not run.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from harness import (
    checkpoints,
    compose,
    devices,
    executors,
    objectives,
    owners,
    pool,
    records,
    stopping,
)
from harness.config import ConfigError
from harness.progress import Progress
from harness.records import SECONDS_PREFIX, Status, Tag
from harness.sweep import resuming
from harness.sweep.cohorts import Cohort, alone_notes, make_cohorts, plan_slots
from harness.sweep.planning import plan, sweep_id
from harness.sweep.points import Point, compose_points
from harness.sweep.settings import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    WORKER_MODULES,
    LauncherSettings,
)
from harness.sweep.summary import Outcome, Timing, counts, parent_params, summary
from harness.sweep.work import CohortWork, Job

# Ctrl-C; timeout, systemd, docker stop; SLURM's warning before a time limit or preemption
STOP_SIGNALS = stopping.STOP_SIGNALS


def run_cohorts(
    points: Sequence[Point],
    cohorts: Sequence[Cohort],
    executor,
    work: CohortWork,
    progress: Progress,
    timing: Timing,
) -> tuple[dict[int, Outcome], bool, float]:
    """Train the cohorts through the executor with ``work``; returns the outcomes by position,
    whether the sweep was interrupted and when (``time.monotonic``) the last cohort reported.
    The workers' time is added to ``timing``."""
    outcomes: dict[int, Outcome] = {}
    last = time.monotonic()

    def on_event(kind: str, number: int, payload) -> None:
        nonlocal last
        last = time.monotonic()
        positions = cohorts[number].positions
        if kind == "done":
            found = dict(zip(positions, payload.outcomes, strict=True))
            timing.train += payload.train_seconds
            timing.checkpoint += payload.checkpoint_seconds
            timing.track += payload.track_seconds
        elif kind == "interrupted":
            found = {p: Outcome("killed", error="interrupted") for p in positions}
        else:  # lost: the worker or job died
            found = dict.fromkeys(positions, Outcome("failed", error=payload))
        for position, found_outcome in found.items():
            outcomes[position] = found_outcome
            progress.update(found_outcome.status, points[position].name)

    previous = {s: signal.signal(s, stopping.interrupt_once) for s in STOP_SIGNALS}
    try:
        items = {
            number: Job([points[p] for p in cohort.positions], checkpointing(points, cohort, work))
            for number, cohort in enumerate(cohorts)
        }
        pins = {n: int(c.gpu) for n, c in enumerate(cohorts) if c.gpu is not None}
        if items:
            executor.run(work, items, on_event, pins)
    except KeyboardInterrupt:  # the signals stay ignored: the summary is written whole
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        return outcomes, True, last
    finally:
        progress.close()
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    return outcomes, False, last


def checkpointing(
    points: Sequence[Point], cohort: Cohort, work: CohortWork
) -> checkpoints.Checkpointing | None:
    """The cohort's checkpoints: where and how often (its points' ``trainer`` settings; None
    when ``checkpoint_every`` is 0), and the checkpoint it resumes, if any."""
    spec = points[cohort.positions[0]].spec
    trainer, experiment = spec.trainer, spec.tracking.experiment
    if trainer.checkpoint_every == 0:
        return None
    return checkpoints.Checkpointing(
        checkpoints.folder(work.uri, experiment, trainer.checkpoint_dir),
        trainer.checkpoint_every,
        work.uri,
        experiment,
        Path(cohort.checkpoint) if cohort.checkpoint else None,
    )


def settle(
    points: Sequence[Point],
    outcomes: dict[int, Outcome],
    ledger: records.Ledger,
    known: set[str],
    parent: str,
    interrupted: bool,
) -> None:
    """Make the store and the outcomes agree once every worker or job has ended. A run this
    sweep made (its parent run is ``parent``; ``known``: the runs there were before) that is
    still RUNNING was cut short: it ends KILLED when the sweep was interrupted or its point
    reported killed, else FAILED (its worker or job died), only if it is still RUNNING then.
    Each point with such a run then counts as its run says (a point reported lost whose run
    was written to the end counts as that run), and a point another sweep held (also one of
    a cohort cut short that made no run of it) counts as that sweep's run ended, or as
    skipped while it runs."""
    grid_runs = ledger.grid_runs()
    by_id = {record.run_id: record for record in grid_runs}
    ours, others = {}, {}
    for record in grid_runs:  # newest first
        if record.run_id not in known:
            mine = record.parent == parent
            (ours if mine else others).setdefault(record.fingerprint, record)
    for position, point in enumerate(points):
        outcome = outcomes.get(position)
        record = ours.get(point.fingerprint)
        if record is not None and (outcome is None or outcome.trained):
            record = end_cut_short(record, outcome, ledger, interrupted)
            outcomes[position] = counted(record, outcome, trained=True)
            continue
        if outcome is None or outcome.status not in ("skipped", "killed", "failed"):
            continue
        held = by_id.get(outcome.run_id) if outcome.status == "skipped" else None
        if outcome.status != "skipped" and outcome.trained:  # a cohort cut short: a held point?
            held = others.get(point.fingerprint)
        if held is not None and held.status != Status.RUNNING:
            outcomes[position] = counted(held, outcome, trained=False)
        elif held is not None:
            why = "another sweep is running it"
            outcomes[position] = Outcome("skipped", held.run_id, why, trained=False)


def end_cut_short(
    record: records.RunRecord, outcome: Outcome | None, ledger: records.Ledger, interrupted: bool
) -> records.RunRecord:
    """End a run of this sweep left RUNNING (see ``settle``); returns its record as it ends
    (another process may have ended it first: then as that one did)."""
    if record.status != Status.RUNNING:
        return record
    killed = interrupted or (outcome is not None and outcome.status == "killed")
    status = Status.KILLED if killed else Status.FAILED
    why = (
        outcome.error
        if outcome is not None and outcome.error
        else ("interrupted" if killed else "its worker process died")
    )
    if ledger.mark(record.run_id, status, why):
        return replace(record, status=status, error=why)
    return ledger.record(record.run_id)


def counted(record: records.RunRecord, outcome: Outcome | None, trained: bool) -> Outcome:
    """A point's outcome as its run ``record`` says (the reported ``outcome``, if any, gives
    the time, a fuller error and the objective)."""
    status = {
        Status.FINISHED: "diverged" if record.diverged else "finished",
        Status.FAILED: "failed",
        Status.KILLED: "killed",
    }.get(record.status, "failed")
    reported = outcome if outcome is not None and outcome.status == status else None
    error = reported.error if reported is not None else record.error
    seconds = outcome.seconds if outcome is not None else 0.0
    objective = reported.objective if reported is not None else None
    return Outcome(status, record.run_id, error, seconds, trained, objective)


def prepare(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    root: DictConfig,
    hydra_context,
    settings: LauncherSettings,
    timing: Timing,
    split: bool = False,
) -> tuple[list[Point], records.Ledger]:
    """Check the settings, compose and validate the grid (``split``: a large one in two
    processes at once, see ``compose_points``) and open its experiment; returns the points
    and the ledger; raises ConfigError."""
    executors.check(settings)
    if len(job_overrides) > settings.max_points:
        allowed = (
            f"at most hydra.launcher.max_points={settings.max_points} points (each is composed "
            "and held, about 15 KB); raise max_points to run a larger grid"
        )
        raise ConfigError("grid", f"{len(job_overrides)} points", allowed)
    composer = compose.Composer(hydra_context.config_loader, root)
    points = compose_points(job_overrides, initial_job_idx, composer, timing, split)
    for tags in {json.dumps(p.spec.tracking.tags, sort_keys=True) for p in points}:
        records.check_tags(json.loads(tags))
    target = points[0].spec.tracking
    uri = records.resolve_uri(target.uri)
    records.check_uri(uri)
    resuming.check_folders(points, uri)
    executors.check_store(settings.executor, settings.slurm, settings.ray, uri)
    return points, records.Ledger(uri, target.experiment)


@dataclass
class Session:
    """What the launches of one multirun share (a sweeper such as the harness's search or
    Optuna's launches several batches): one parent run, opened by the first launch under its
    sweep identity and reopened by each later one, and the points and outcomes of every batch
    so far, which each launch records on the parent run as it closes it."""

    identity: str = ""
    points: list[Point] = field(default_factory=list)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    started: float = field(default_factory=time.monotonic)


def objectives_of(
    points: Sequence[Point],
    outcomes: dict[int, Outcome],
    recorded: Sequence[records.RunRecord],
    ledger: records.Ledger,
) -> None:
    """Give each finished or diverged point that was not trained here (recorded earlier, or
    by another sweep) its objective from its run's record, and a duplicate of another point
    of the batch that point's objective."""
    by_id = {record.run_id: record for record in recorded}
    for position, outcome in outcomes.items():
        if outcome.objective is None and outcome.status in ("finished", "diverged"):
            record = by_id.get(outcome.run_id) or ledger.record(outcome.run_id)
            metric = points[position].objective
            value = objectives.value(metric, record.finals, record.diverged)
            outcomes[position] = replace(outcome, objective=value)
    found = {
        points[position].fingerprint: outcome.objective
        for position, outcome in outcomes.items()
        if outcome.objective is not None
    }
    for position, outcome in outcomes.items():
        if outcome.objective is None and points[position].fingerprint in found:
            outcomes[position] = replace(outcome, objective=found[points[position].fingerprint])


def job_return(point: Point, outcome: Outcome) -> JobReturn:
    """The point's job as Hydra's sweepers read it: COMPLETED with the run's objective (None
    for a point another sweep holds), or FAILED with its error."""
    if outcome.status in ("failed", "killed"):
        error = RuntimeError(f"grid point #{point.index} {point.name}: {outcome.error}")
        return JobReturn(list(point.overrides), status=JobStatus.FAILED, _return_value=error)
    return JobReturn(
        list(point.overrides), status=JobStatus.COMPLETED, _return_value=outcome.objective
    )


def launch(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    root: DictConfig,
    hydra_context,
    settings: LauncherSettings,
    session: Session | None = None,
) -> list[JobReturn]:
    """Run the grid (or one batch of a multirun's ``session``); see the module's docstring.
    Returns a JobReturn per point (``job_return``); exits through SystemExit on bad input
    (2) or when interrupted (130)."""
    session = session if session is not None else Session()
    started = time.monotonic()
    timing = session.timing
    if not session.points:
        timing.startup = owners.process_age()
    pool.start_server(WORKER_MODULES)  # gets ready while the grid is composed
    composing = timing.compose + timing.validate
    try:
        first = not session.points  # nothing computed with torch here yet
        points, ledger = prepare(
            job_overrides, initial_job_idx, root, hydra_context, settings, timing, first
        )
        kind, slurm, ray = settings.executor, settings.slurm, settings.ray
        planned_ms = int(1000 * time.time())
        recorded = ledger.grid_runs()
        plan_ = plan(points, recorded, settings.force, owners.is_alive)
        redone = {r.run_id for r in recorded if r.status == Status.FINISHED and settings.force}
        claim = records.Claim(planned_ms, frozenset(redone))
        for record in plan_.stale:
            why = "left RUNNING by a process that died; redone"
            ledger.mark(record.run_id, Status.KILLED, why)
        study = root.hydra.runtime.choices.get("experiment") or points[0].spec.tracking.experiment
        identity = session.identity or sweep_id(points, settings.force)
        slots = plan_slots(points, devices.gpu_ids(), settings.n_jobs)
        at_once = executors.parallel_cohorts(kind, slots.count)
        finished = {r.fingerprint for r in recorded if r.status == Status.FINISHED}
        resumed, rest, resume_notes = resuming.resumed_cohorts(
            points, plan_.todo, finished, ledger.uri
        )
        cohorts = resumed + make_cohorts(points, rest, settings.max_cohort, at_once)
        folder = Path(str(root.hydra.sweep.dir)).absolute() / ".submitit"
        executor = cohorts and executors.build(kind, slots, slurm, ray, folder)
        name, params = f"{study}-sweep-{identity[:8]}", parent_params(points, root, settings)
        parent = ledger.open_sweep(identity, name, params, {Tag.STUDY: study})
        session.identity = identity
        spent = time.monotonic() - started - (timing.compose + timing.validate - composing)
        timing.prepare += spent
    except ConfigError as error:
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
        print(f"error: {error}{notes}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        print("interrupted while preparing the sweep: no run was started", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    where = executors.describe(kind, slots, slurm, ray)
    print(
        f"sweep {study!r}: {len(points)} points, {len(plan_.skipped)} skipped "
        f"(already recorded or duplicates), {len(plan_.todo)} to run in {len(cohorts)} "
        f"cohort(s) on {where}; store {ledger.uri}, experiment "
        f"{points[0].spec.tracking.experiment!r}, parent run {parent}",
        flush=True,
    )
    for note in alone_notes(points, plan_.todo):
        print(note, flush=True)
    if resumed:
        count = sum(len(cohort.positions) for cohort in resumed)
        print(f"resuming {len(resumed)} cohort(s) of {count} point(s) from checkpoints", flush=True)
    for note in resume_notes:
        print(f"note: {note}", flush=True)
    tags = {Tag.PARENT: parent, Tag.SWEEP_ID: identity}
    local = kind == "local"
    work = CohortWork(
        ledger.uri,
        tags,
        executors.threads(kind, slots.count, slurm, ray),
        settings.memory_fraction,
        slots.count if local else 1,
        root.hydra.output_subdir,
        claim,
        background=kind != "ray",
    )
    outcomes, interrupted, last_report = run_cohorts(
        points, cohorts, executor, work, Progress(len(plan_.todo)), timing
    )
    outcomes.update(plan_.skipped)

    settle(points, outcomes, ledger, {r.run_id for r in recorded}, parent, interrupted)
    objectives_of(points, outcomes, recorded, ledger)
    offset = len(session.points)
    session.points += points
    session.outcomes.update({offset + i: o for i, o in outcomes.items()})
    close(session, ledger, parent, study, interrupted, last_report)
    ledger.close()
    if interrupted:
        raise SystemExit(EXIT_INTERRUPTED)
    return [job_return(p, outcomes[i]) for i, p in enumerate(points)]


def close(
    session: Session,
    ledger: records.Ledger,
    parent: str,
    study: str,
    interrupted: bool,
    last_report: float,
) -> None:
    """End the parent run with what every batch so far holds: its status (KILLED when
    interrupted, FAILED when a run failed), the points per outcome, the times and the summary
    table, which is printed too. ``last_report``: when the batch's last cohort reported
    (``time.monotonic``), where the batch's ``exit`` time starts."""
    points, outcomes, timing = session.points, session.outcomes, session.timing
    timing.exit += time.monotonic() - last_report
    failed = any(o.status == "failed" for o in outcomes.values())
    status = Status.KILLED if interrupted else Status.FAILED if failed else Status.FINISHED
    elapsed = time.monotonic() - session.started
    title = (
        f"Sweep {session.identity} of study {study!r} ({status.lower()}): {len(points)} "
        f"points in {elapsed:.1f} s"
    )
    timing.total = elapsed + timing.startup
    table = summary(title, points, outcomes) + "\n\n" + timing.line()
    tallies = counts(list(outcomes.values()), len(points))
    ledger.close_sweep(
        parent, status, tallies, {f"{SECONDS_PREFIX}{k}": v for k, v in vars(timing).items()}, table
    )
    print(table, flush=True)
