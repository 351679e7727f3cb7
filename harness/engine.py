"""The engine: trains a cohort of R runs that share a structure as one batch.

Runs of a cohort share the data, model, loss, optimizer rule, schedule type and trainer shape;
each has its own seed, initial parameters and hyperparameter values. Parameters are one tensor
(R, P). Each run draws its initial parameters and its batch order from its own generators,
seeded from its seed alone, so its numbers do not depend on who else is in the cohort. A model
that ``trains_alone`` (a module with buffers or random layers) trains cohorts of one, its
random layers seeded from the run's seed (``model.seeded``). Here: the plan of a cohort's
training (updates, log and evaluation points), what runs share, memory estimates, and the
set-up of a cohort's training; the training loop itself is ``harness.loop``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch

from harness import checkpoints, devices, registry, schedules, stopping, torch_optim
from harness import problem as problem_module
from harness.config import RunConfig, as_dict, hyperparameters
from harness.loop import Curves, Loop, derive_seed, steps_or_none
from harness.problem import Problem

DTYPES = {"float32": torch.float32, "float64": torch.float64}
TARGET_LOG_POINTS = 250


@dataclass
class RunResult:
    """One run's record: curves as metric -> (steps, values), and what happened."""

    curves: dict[str, tuple[list[int], list[float]]]
    seconds_at: dict[int, float]
    diverged_step: int | None
    final_params: torch.Tensor
    seconds: float
    plan: Plan
    device: str
    device_name: str
    cohort_size: int
    resumed_step: int | None = None  # the checkpoint's update it continued from
    resumed_seconds: float = 0.0  # of ``seconds``, those before that update (earlier attempts)
    checkpoint_seconds: float = 0.0  # of ``seconds``, the cohort's writing checkpoints

    @property
    def diverged(self) -> bool:
        return self.diverged_step is not None

    def final(self, metric: str) -> float | None:
        values = self.curves.get(metric, ((), ()))[1]
        return values[-1] if values else None


@dataclass(frozen=True)
class Plan:
    """The trainer's shape: how many updates, batches, and when to log and evaluate."""

    total_steps: int
    steps_per_epoch: int
    batch_size: int | None
    log_steps: frozenset[int] = field(repr=False)
    eval_steps: frozenset[int] = field(repr=False)


def make_plan(spec: RunConfig, train_size: int) -> Plan:
    """Updates in total and per epoch; log and evaluation steps (both hold 0 and the end)."""
    trainer = spec.trainer
    batch = trainer.batch_size
    per_epoch = math.ceil(train_size / batch) if batch else 1
    total = trainer.steps if trainer.steps is not None else trainer.epochs * per_epoch
    log_every = spec.tracking.log_every or math.ceil(total / TARGET_LOG_POINTS)
    by_epoch = per_epoch if trainer.epochs is not None else log_every
    eval_every = trainer.eval_every or by_epoch
    log_steps = frozenset(range(0, total, log_every)) | {total}
    eval_steps = frozenset(range(0, total, eval_every)) | {total}
    return Plan(total, per_epoch, batch, log_steps, eval_steps)


def cohort_key(spec: RunConfig) -> str:
    """What runs must share to train together: everything but the seed, the model's init,
    the numeric optimizer and schedule values (a user rule's ``hp`` and a torch optimizer's
    numeric ``kwargs`` among them), the run name, tracking and the objective."""
    tree = as_dict(spec)
    for key in ("seed", "run_name", "tracking", "objective"):
        tree.pop(key)
    tree["model"].pop("init")
    for group in ("optimizer", "schedule"):
        for name in hyperparameters(getattr(spec, group)):
            tree[group].pop(name, None)
            tree[group].get("hp", {}).pop(name, None)
    kwargs = tree["optimizer"].get("kwargs", {})
    for name in [name for name, value in kwargs.items() if torch_optim.per_run(value)]:
        kwargs.pop(name)
    return repr(sorted((k, repr(v)) for k, v in tree.items()))


def run_bytes(spec: RunConfig, problem: Problem) -> int:
    """An estimate of the memory one run adds to a cohort: its parameters with the rule's state,
    gradient and update (12 P values), and the activations of a forward pass through the
    largest batch the run evaluates (3 N A values: the outputs, the loss terms and what
    autograd keeps; N examples, A values per example). A model that evaluates in passes of a
    bounded size (a module) holds at most its training batch per run."""
    itemsize = DTYPES[spec.trainer.dtype].itemsize
    examples = max(problem.data.sizes.values(), default=1)
    if problem.model.eval_batch(1) is not None:  # evaluates in passes: a training batch
        examples = spec.trainer.batch_size or problem.data.sizes["train"]
    return itemsize * (12 * problem.model.size + 3 * examples * problem.model.activations)


def split_for_memory(runs: int, per_run: int, budget: int) -> list[int]:
    """Sizes of the pieces a cohort of ``runs`` is trained in so that each fits ``budget``
    bytes (pieces as equal as can be; at least one run each)."""
    pieces = max(1, math.ceil(runs * per_run / max(budget, 1)))
    pieces = min(pieces, runs)
    return [runs // pieces + (index < runs % pieces) for index in range(pieces)]


def stack_hyperparameters(configs: list, device: torch.device, dtype: torch.dtype):
    """Each numeric field of the configs as a tensor (R, 1), one row per run."""
    rows = [hyperparameters(c) for c in configs]
    return {
        name: torch.tensor([[row[name]] for row in rows], device=device, dtype=dtype)
        for name in rows[0]
    }


def learning_rate_keys(specs: list[RunConfig], schedule) -> list:
    """One key per run; runs with equal keys have equal learning rates at every step: the same
    ``lr`` and schedule values, on a schedule that does not follow each run's own loss."""
    if schedule.follows_loss:
        return list(range(len(specs)))
    return [
        (getattr(s.optimizer, "lr", None), sorted(hyperparameters(s.schedule).items()))
        for s in specs
    ]


def initial_parameters(specs: list[RunConfig], model) -> torch.Tensor:
    """theta_0 (R, P): ``model.init`` where given, else drawn from the run's own generator."""
    rows = []
    for spec in specs:
        if spec.model.init is not None:
            rows.append(torch.tensor(spec.model.init, dtype=torch.float64))
        else:
            generator = torch.Generator().manual_seed(derive_seed(spec.seed, "init"))
            rows.append(model.init(generator))
    return torch.stack(rows)


def check_cohort(specs: list[RunConfig]) -> None:
    """Raise ValueError unless all runs share one structure (see :func:`cohort_key`)."""
    keys = {cohort_key(spec) for spec in specs}
    if len(keys) != 1:
        raise ValueError(
            "the runs of a cohort must share everything but seeds, inits and "
            "numeric optimizer or schedule values"
        )


def train_cohort(
    specs: list[RunConfig],
    problem: Problem | None = None,
    sink=None,
    checkpointer: checkpoints.Checkpointer | None = None,
    resume: dict | None = None,
) -> list[RunResult]:
    """Train every run of ``specs`` (one structure) together; one result per run, in order.

    ``sink(chunks, seconds_at)``, if given, receives the curves while training goes on, every
    ``loop.FLUSH_EVERY`` log points and at the end (see ``loop.Curves``). A ``checkpointer`` (see
    ``harness.checkpoints``) gets the cohort's whole state between two updates every
    ``checkpointer.every`` seconds of training, and when a stop signal arrives (then training
    stops with KeyboardInterrupt). ``resume``: such a state, from which training continues
    (its curves so far go to the sink first); its runs' numbers are those of an
    uninterrupted cohort's."""
    check_cohort(specs)
    first = specs[0]
    device = devices.resolve(first.trainer.device, first.trainer.dtype)
    dtype = DTYPES[first.trainer.dtype]
    if torch.are_deterministic_algorithms_enabled() != first.trainer.deterministic:
        # only on a change: the call imports torch's compiler configuration (about 1 s)
        torch.use_deterministic_algorithms(first.trainer.deterministic)
    problem = (problem or problem_module.build(first)).on(device, dtype)
    if problem.model.trains_alone and len(specs) > 1:
        raise ValueError("this model has buffers or random layers: its runs train one at a time")
    plan = make_plan(first, problem.data.sizes["train"])
    configs = [s.optimizer for s in specs]
    hp = stack_hyperparameters(configs, device, dtype)
    base_lr = hp.get("lr")
    theta = initial_parameters(specs, problem.model).to(device, dtype)
    schedule_hp = stack_hyperparameters([s.schedule for s in specs], device, dtype)
    schedule = schedules.build(first.schedule.name, schedule_hp, plan.total_steps, theta[:, :1])
    rule = registry.OPTIONS["optimizer"][first.optimizer.name].build(
        configs, problem.model.shapes, learning_rate_keys(specs, schedule)
    )
    monitor = getattr(first.schedule, "monitor", "train")
    loop = Loop(
        problem,
        plan,
        rule,
        hp,
        base_lr,
        schedule,
        monitor,
        first.trainer,
        [s.seed for s in specs],
        device,
    )
    curves = Curves(len(specs), sink)
    with problem.model.seeded(derive_seed(first.seed, "model")):
        state, resume = loop.begin(theta, curves, resume, checkpointer)
        resumed_step = state.step if resume is not None else None
        resumed_seconds = resume["curves"]["seconds"] if resume is not None else 0.0
        with stopping.deferred() if checkpointer is not None else contextlib.nullcontext():
            diverged_at, theta = loop.run(state, curves, checkpointer)
    diverged_steps = steps_or_none(diverged_at)
    curves.take(diverged_steps)
    seconds = time.perf_counter() - curves.start
    device_name = devices.describe(device)
    return [
        RunResult(
            run_curves,
            curves.seconds_at,
            stop,
            theta[index].detach().cpu(),
            seconds,
            plan,
            devices.label(device),
            device_name,
            len(specs),
            resumed_step,
            resumed_seconds,
            checkpointer.seconds if checkpointer is not None else 0.0,
        )
        for index, (run_curves, stop) in enumerate(zip(curves.per_run, diverged_steps, strict=True))
    ]
