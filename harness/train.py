"""``python -m harness.train [overrides]``: train one configuration and record it in MLflow.

Everything is validated before any MLflow run is created: the composed config (types, ranges,
combinations), the data (files, splits, batch size), the optimizer, the device and the tracking
store. A bad value prints one ``error:`` line naming the key, the value and what is allowed,
and exits with status 2.
"""

from __future__ import annotations

import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import harness.registry  # noqa: F401  (registers every option's schema before Hydra composes)
from harness import checkpoints, config, devices, engine, objectives, records, stopping
from harness import problem as problem_module
from harness.config import ConfigError, RunConfig
from harness.paths import CONFIG_DIR
from harness.problem import Problem


def prepare(cfg: DictConfig) -> tuple[RunConfig, Problem, records.Store]:
    """Validate everything a run needs and open its store; raises ConfigError."""
    spec = config.to_spec(cfg)
    problem = problem_module.build(spec)
    problem.objective(spec.objective)
    devices.resolve(spec.trainer.device, spec.trainer.dtype)
    records.check_tags(spec.tracking.tags)
    store = records.open_store(spec.tracking)
    return spec, problem, store


def run_name(spec: RunConfig) -> str:
    """``run_name`` if set, else optimizer-model-dataset-lr-seed (a module model by its class
    name)."""
    if spec.run_name:
        return spec.run_name
    lr = getattr(spec.optimizer, "lr", None)
    rate = f"-lr{lr:g}" if lr is not None else ""
    model = getattr(spec.model, "target", "").rpartition(".")[2] or spec.model.name
    return f"{spec.optimizer.name}-{model}-{spec.dataset.name}{rate}-seed{spec.seed}"


def record_cohort(
    specs: list[RunConfig],
    problem: Problem,
    store: records.Store,
    names: list[str],
    tags: dict[str, str] | None = None,
    claim: records.Claim | None = None,
    checkpointing: checkpoints.Checkpointing | None = None,
) -> list[tuple[records.Recorded, engine.RunResult | None]]:
    """Train ``specs`` (one structure) as one cohort, each run in an MLflow run of its own
    (named ``names[i]``, with ``tags`` besides the usual ones and the data set's splits as
    its dataset inputs), handing curves to the store as they come. With a ``claim`` the runs
    are claims on their grid points: a point that another attempt holds is not trained (its
    Recorded is ``held``, its result None). With ``checkpointing`` (a sweep's, with a claim)
    the cohort is checkpointed as it trains, and resumes the checkpoint it names. An
    exception marks every run FAILED (KILLED on Ctrl-C) and propagates."""
    plan = engine.make_plan(specs[0], problem.data.sizes["train"])
    derived = {f"data.n_{part}": size for part, size in problem.data.sizes.items()}
    derived.update(
        {"data.steps_per_epoch": plan.steps_per_epoch, "data.total_steps": plan.total_steps}
    )
    data = problem.data
    run_tags = {records.Tag.SPLIT_DIGEST: data.split_digest, **(tags or {})}
    source = config.as_dict(specs[0])["dataset"]
    claims = store.start_runs(
        specs,
        names,
        [records.run_params(spec, derived) for spec in specs],
        [{**spec.tracking.tags, **run_tags} for spec in specs],
        records.dataset_inputs(data.name, data.split_digest, data.sizes, source),
        claim,
    )
    mine = [i for i, claim in enumerate(claims) if isinstance(claim, str)]
    handles = [claims[i] for i in mine]
    done = iter(train_runs([specs[i] for i in mine], problem, store, handles, checkpointing))
    return [
        next(done) if isinstance(claim, str) else (records.Recorded(claim.run_id, held=True), None)
        for claim in claims
    ]


def train_runs(
    specs: list[RunConfig],
    problem: Problem,
    store: records.Store,
    handles: list[str],
    checkpointing: checkpoints.Checkpointing | None = None,
) -> list[tuple[records.Recorded, engine.RunResult]]:
    """Train the started runs ``handles`` as one cohort and finish their records; an
    exception marks them FAILED (KILLED on Ctrl-C) and propagates. With ``checkpointing``
    the cohort is checkpointed and resumes the checkpoint it names, if it applies; once
    every run is recorded FINISHED its checkpoints are removed and the runs it replaces are
    deleted. An error removes them too (its cohort starts over), except an interrupt, a lack
    of memory and a failed write to the store, after which a rerun resumes."""
    if not handles:
        return []

    def sink(chunks, seconds_at):
        store.log_curves(handles, chunks, seconds_at)

    cohort = None
    try:
        if checkpointing is not None:
            cohort = open_checkpoints(checkpointing, specs, problem, store, handles)
        checkpointer = cohort.checkpointer if cohort is not None else None
        resume = cohort.state if cohort is not None else None
        results = engine.train_cohort(specs, problem, sink, checkpointer, resume)
    except BaseException as error:
        if cohort is not None and not isinstance(
            error, (*checkpoints.KEPT_ON, records.TrackingError)
        ):
            cohort.remove()
        try:
            store.fail_runs(handles, error)
        except records.TrackingError as tracking_error:
            error.add_note(f"recording this failure in MLflow failed too: {tracking_error}")
        raise
    replaced = cohort.replaced if cohort is not None else None
    recorded = store.finish_runs(handles, results, replaced)
    if cohort is not None and all(r.error is None for r in recorded):
        cohort.remove()
        try:
            store.delete_runs([run_id for runs in cohort.replaced for run_id in runs])
        except records.TrackingError as error:  # the new runs are whole: say so and go on
            checkpoints.say(f"warning: the runs that resumed runs replace stay: {error}")
    return list(zip(recorded, results, strict=True))


def open_checkpoints(
    checkpointing: checkpoints.Checkpointing,
    specs: list[RunConfig],
    problem: Problem,
    store: records.Store,
    handles: list[str],
) -> checkpoints.CohortCheckpoints:
    """The checkpoints of the cohort of ``specs``, whose runs ``handles`` were claimed."""
    first = specs[0]
    return checkpointing.open(
        [config.fingerprint(spec) for spec in specs],
        [store.run_ids[handle] for handle in handles],
        engine.make_plan(first, problem.data.sizes["train"]).total_steps,
        problem.data.split_digest,
        checkpoints.user_code(first),
        devices.resolve(first.trainer.device, first.trainer.dtype),
    )


def train_and_record(spec: RunConfig, problem: Problem, store: records.Store):
    """Train one run and record it; returns its MLflow run id and result. Raises
    TrackingError when its record could not be written."""
    ((recorded, result),) = record_cohort([spec], problem, store, [run_name(spec)])
    if recorded.error is not None:
        raise records.TrackingError(recorded.error)
    return recorded.run_id, result


def objective(spec: RunConfig, problem: Problem, result: engine.RunResult) -> float:
    """The run's objective (see ``harness.objectives``): what a tuning sweeper receives."""
    return objectives.of_run(problem.objective(spec.objective), result)


def run(cfg: DictConfig) -> float:
    """The task: validate ``cfg``, train it and record it, print one line on the outcome and
    return its objective (see ``harness.objectives``), which a tuning sweeper such as
    Optuna's reads. A bad value exits with status 2, a run whose record could not be written
    with 1; as a job of a multirun (Hydra's basic launcher) both raise instead, so that the
    job fails alone and the sweeper goes on."""
    signal.signal(signal.SIGTERM, stopping.interrupt)  # a run stopped by TERM is recorded KILLED
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        spec, problem, store = prepare(cfg)
    except ConfigError as error:
        if in_multirun:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    try:
        run_id, result = train_and_record(spec, problem, store)
    except records.TrackingError as error:  # its run is ended FAILED where it was created
        if in_multirun:
            raise
        print(f"error: recording the run in MLflow failed: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        store.close()
    outcome = f"diverged at step {result.diverged_step}" if result.diverged else "finished"
    summary = [f"train_loss {result.final('train_loss'):.6g}"]
    summary += [
        f"{name} {result.final(name):.4g}"
        for name in ("val_loss", "test_loss", "test_accuracy")
        if result.final(name) is not None
    ]
    print(
        f"run {run_id} ({run_name(spec)}) {outcome} in {result.seconds:.2f} s: "
        f"{', '.join(summary)}; stored in {store.uri}, experiment {spec.tracking.experiment!r}"
    )
    return objective(spec, problem, result)


main = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(run)


if __name__ == "__main__":
    from harness.exits import run_and_exit
    from harness.sweep.settings import start_workers_early

    start_workers_early(sys.argv[1:])
    run_and_exit(main)
