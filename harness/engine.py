"""The engine: trains a cohort of R runs that share a structure as one batch.

Runs of a cohort share the data, model, loss, optimizer rule, schedule type and trainer shape;
each has its own seed, initial parameters and hyperparameter values. Parameters are one tensor
(R, P). Each run draws its initial parameters and its batch order from its own generators,
seeded from its seed alone, so its numbers do not depend on who else is in the cohort. A model
that ``trains_alone`` (a module with buffers or random layers) trains cohorts of one, its
random layers seeded from the run's seed (``model.seeded``).

Per update ``s`` (from 0): take the batch, evaluate the loss and its gradient at the rule's
point, mark runs whose loss is not finite or above ``divergence_factor`` times their initial
loss as diverged (their parameters freeze and their curves end there), and apply the rule's
update with learning rate ``lr * schedule.factor(s)``. Curves are kept on the device and
copied back in chunks (see :class:`Curves`).

Curves (step = number of updates done). At evaluation points, on whole splits: ``train_loss``,
``val_loss``, ``test_loss`` and, when classifying, ``train_accuracy``, ``val_accuracy``,
``test_accuracy``. At log points: ``lr`` (of the update taken at that step; the line search's
chosen step; a constant one at the first and last log point only), ``phi0``/``phi1`` for
two-parameter models, and with mini-batches
``batch_loss``, the mean mini-batch loss of the updates since the previous log point.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from harness import checkpoints, devices, registry, schedules, stopping, torch_optim
from harness import problem as problem_module
from harness.config import RunConfig, as_dict, hyperparameters
from harness.problem import Problem

DTYPES = {"float32": torch.float32, "float64": torch.float64}
TARGET_LOG_POINTS = 250
FLUSH_EVERY = 32  # log points between hand-overs of curves to a sink


def _steps_or_none(diverged_at: torch.Tensor) -> list[int | None]:
    return [None if s < 0 else s for s in diverged_at.cpu().tolist()]


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


def derive_seed(seed: int, purpose: str) -> int:
    """A 60-bit seed from the run's seed and what it is for ("init", "batches")."""
    return int(hashlib.sha256(f"{seed}/{purpose}".encode()).hexdigest()[:15], 16)


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


class BatchOrder:
    """Mini-batch indices (R, B) per update: each epoch is one pass through a permutation
    drawn from the run's own generator (a new one each epoch when ``reshuffle``); the last
    batch of an epoch holds what is left, so every index is used once per epoch."""

    def __init__(self, seeds: list[int], size: int, batch: int, reshuffle: bool, device):
        self.generators = [torch.Generator().manual_seed(derive_seed(s, "batches")) for s in seeds]
        self.size, self.batch, self.reshuffle, self.device = size, batch, reshuffle, device
        self.per_epoch = math.ceil(size / batch)
        self.order: torch.Tensor | None = None

    def state(self) -> dict:
        return {"generators": [g.get_state() for g in self.generators], "order": self.order}

    def restore(self, state: dict) -> None:
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved.cpu())
        self.order = state["order"]

    def indices(self, step: int) -> torch.Tensor:
        position = step % self.per_epoch
        if position == 0 and (self.order is None or self.reshuffle):
            perms = [torch.randperm(self.size, generator=g) for g in self.generators]
            self.order = torch.stack(perms).to(self.device)
        return self.order[:, position * self.batch : (position + 1) * self.batch]


def value_and_grad(problem: Problem, point: torch.Tensor, x, y):
    """Per-run loss (R,) at ``point`` and its gradient (R, P); runs are independent, so the
    gradient of the summed loss is each run's own gradient. The gradient is taken with respect
    to the model's parameter pieces, then flattened back. A lone run drops the run dimension
    (``x`` (N, D), ``y`` (N,)), so its graph is that of a plain PyTorch model."""
    runs, flat = len(point), point.detach()
    pieces = [
        piece.requires_grad_(True) for piece in problem.model.split(flat[0] if runs == 1 else flat)
    ]
    loss = problem.loss_of_pieces(pieces, x, y)
    grads = torch.autograd.grad(loss.sum(), pieces)
    flat = [g.reshape(runs, -1) for g in grads]
    return loss.detach().reshape(runs), flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)


class Curves:
    """Curves kept on the device as lists of (R,) tensors until ``take`` copies the new points
    to the host: per run, cut after the run's divergence step, kept for the results and handed
    to ``sink(chunks, seconds_at)`` (one ``{metric: (steps, values)}`` per run) if given."""

    def __init__(self, runs: int, sink=None) -> None:
        self.steps: dict[str, list[int]] = defaultdict(list)
        self.values: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.seconds_at: dict[int, float] = {}
        self.per_run: list[dict[str, tuple[list[int], list[float]]]] = [{} for _ in range(runs)]
        self.sink = sink
        self.start = time.perf_counter()

    def state(self) -> dict:
        """What a checkpoint keeps: the curves on the host so far (``take`` first), their
        times and the training time."""
        elapsed = time.perf_counter() - self.start
        return {"per_run": self.per_run, "seconds_at": self.seconds_at, "seconds": elapsed}

    def restore(self, state: dict) -> None:
        """Continue from ``state``: the curves so far are handed to the sink at once (a
        resumed run's record holds them from step 0) and the clock goes on from its time."""
        self.per_run, self.seconds_at = state["per_run"], state["seconds_at"]
        self.start = time.perf_counter() - state["seconds"]
        if self.sink is not None:
            copies = [
                {name: (list(steps), list(values)) for name, (steps, values) in run.items()}
                for run in self.per_run
            ]
            self.sink(copies, dict(self.seconds_at))

    def add(self, step: int, metrics: dict[str, torch.Tensor]) -> None:
        self.seconds_at.setdefault(step, time.perf_counter() - self.start)
        for name, value in metrics.items():
            self.steps[name].append(step)
            self.values[name].append(value.detach().reshape(-1))

    def take(self, diverged_steps: list[int | None]) -> None:
        """Move the points added since the last take to the host (one copy per metric)."""
        chunks: list[dict] = [{} for _ in diverged_steps]
        steps_seen: set[int] = set()
        for name, values in self.values.items():
            if not values:
                continue
            table = torch.stack(values).T.cpu().tolist()
            for index, stop in enumerate(diverged_steps):
                kept = [
                    (s, v)
                    for s, v in zip(self.steps[name], table[index], strict=True)
                    if stop is None or s <= stop
                ]
                if kept:
                    chunks[index][name] = ([s for s, _ in kept], [v for _, v in kept])
                    steps_seen.update(chunks[index][name][0])
                    old_steps, old_values = self.per_run[index].setdefault(name, ([], []))
                    old_steps.extend(chunks[index][name][0])
                    old_values.extend(chunks[index][name][1])
            values.clear()
            self.steps[name].clear()
        if self.sink is not None:
            self.sink(chunks, {step: self.seconds_at[step] for step in steps_seen})


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
    ``FLUSH_EVERY`` log points and at the end (see :class:`Curves`). A ``checkpointer`` (see
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
    loop = _Loop(
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
    resumed_step = resume["state"].step if resume is not None else None
    resumed_seconds = resume["curves"]["seconds"] if resume is not None else 0.0
    with problem.model.seeded(derive_seed(first.seed, "model")):
        if resume is not None:
            if resume["theta"].shape != theta.shape:
                raise checkpoints.CheckpointError(
                    f"its parameters are {tuple(resume['theta'].shape)}, this cohort's "
                    f"{tuple(theta.shape)}"
                )
            state = loop.restore(resume, curves)
            if checkpointer is not None:  # at once: the checkpoint names this cohort's runs
                seconds = resume["curves"]["seconds"]
                checkpointer.save(loop.snapshot(state, curves), state.step, seconds)
        else:
            state = loop.start(theta)
        with stopping.deferred() if checkpointer is not None else contextlib.nullcontext():
            diverged_at, theta = loop.run(state, curves, checkpointer)
    diverged_steps = _steps_or_none(diverged_at)
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


@dataclass
class LoopState:
    """What changes from one update to the next, at the start of update ``step``: the
    parameters, the rule's state, which runs are still healthy (and for how many updates
    they were), the mini-batch losses since the last log point, the log points so far and the
    divergence limit per run."""

    step: int
    theta: torch.Tensor
    rule: Any
    active: torch.Tensor
    healthy_steps: torch.Tensor
    batch_losses: torch.Tensor
    batches_since_log: int
    logged: int
    limit: torch.Tensor | None


class _Loop:
    """The training loop of one cohort (see the module docstring)."""

    def __init__(self, problem, plan, rule, hp, base_lr, schedule, monitor, trainer, seeds, device):
        self.problem, self.plan, self.rule, self.hp = problem, plan, rule, hp
        self.base_lr, self.schedule, self.monitor = base_lr, schedule, monitor
        self.trainer = trainer
        self.batches = (
            BatchOrder(
                seeds, problem.data.sizes["train"], plan.batch_size, trainer.reshuffle, device
            )
            if plan.batch_size
            else None
        )
        self.two_parameters = problem.model.size == 2
        # a constant learning rate is logged at the first and last log step only
        self.lr_varies = rule.step_size is not None or type(schedule) is not schedules.Constant
        self.last_log_step = max(plan.log_steps - {plan.total_steps})
        self.reuse_loss = plan.batch_size is None and rule.lookahead is None

    def batch(self, step: int):
        data = self.problem.data
        if self.batches is None:
            return data.x_train, data.y_train
        index = self.batches.indices(step)
        if len(index) == 1:  # a lone run trains without the run dimension
            index = index[0]
        return data.x_train[index], data.y_train[index]

    def learning_rate(self, step: int, like: torch.Tensor) -> torch.Tensor:
        base = self.base_lr if self.base_lr is not None else torch.ones_like(like[:, :1])
        if type(self.schedule) is schedules.Constant:
            return base
        return base * self.schedule.factor(step)

    def evaluate(self, curves: Curves, step: int, theta, train_loss=None) -> None:
        """Loss (and accuracy) on every split; feeds the schedule its monitored loss.
        ``train_loss``, when given, is the training loss at ``theta`` already computed."""
        with torch.no_grad():
            parts = {
                part: self.problem.evaluate(
                    theta, part, skip_loss=part == "train" and train_loss is not None
                )
                for part in ("train", "val", "test")
            }
        if train_loss is not None:
            parts["train"]["loss"] = train_loss
        curves.add(
            step,
            {
                f"{part}_{name}": value
                for part, metrics in parts.items()
                for name, value in metrics.items()
            },
        )
        self.schedule.observe(parts[self.monitor]["loss"])

    def start(self, theta: torch.Tensor) -> LoopState:
        """The state before the first update; the divergence limit is relative to the initial
        loss, and never below the factor itself."""
        with torch.no_grad():
            initial = self.problem.evaluate(theta, "train")["loss"]
        factor, limit = self.trainer.divergence_factor, None
        if factor is not None:
            limit = initial.abs().clamp(min=1.0) * factor
            limit = torch.where(torch.isfinite(limit), limit, torch.finfo(limit.dtype).max)
        return LoopState(
            step=0,
            theta=theta,
            rule=self.rule.init(theta),
            active=torch.ones_like(initial, dtype=torch.bool),
            healthy_steps=torch.zeros_like(initial, dtype=torch.long),
            batch_losses=torch.zeros_like(initial),
            batches_since_log=0,
            logged=0,
            limit=limit,
        )

    def snapshot(self, state: LoopState, curves: Curves) -> dict:
        """The cohort's whole training state (a checkpoint's content): the loop's, the
        schedule's, the batch order's, the model's and the curves so far."""
        curves.take(_steps_or_none(torch.where(state.active, -1, state.healthy_steps)))
        return {
            "state": state,
            "theta": state.theta,
            "schedule": dict(vars(self.schedule)),
            "batches": self.batches.state() if self.batches is not None else None,
            "model": self.problem.model.training_state(),
            "curves": curves.state(),
        }

    def restore(self, saved: dict, curves: Curves) -> LoopState:
        """The loop's state from a ``snapshot``; the others' are set from it."""
        vars(self.schedule).update(saved["schedule"])
        if self.batches is not None:
            self.batches.restore(saved["batches"])
        self.problem.model.restore(saved["model"])
        curves.restore(saved["curves"])
        state = saved["state"]
        if self.rule.reloaded is not None:
            state.rule = self.rule.reloaded(state.rule)
        return state

    def run(self, state: LoopState, curves: Curves, checkpointer=None):
        """Train from ``state``; returns each run's divergence step (-1: none) and the final
        parameters. With a ``checkpointer``, the state is saved between updates when due and
        when a stop signal is waiting, which is then raised."""
        problem, plan, rule, hp = self.problem, self.plan, self.rule, self.hp

        def healthy(loss: torch.Tensor) -> torch.Tensor:
            limit = state.limit
            return torch.isfinite(loss) if limit is None else loss <= limit  # False for NaN

        for step in range(state.step, plan.total_steps):
            state.step = step
            if checkpointer is not None:
                training_seconds = time.perf_counter() - curves.start
                if stopping.requested() or checkpointer.due(training_seconds):
                    checkpointer.save(self.snapshot(state, curves), step, training_seconds)
            stopping.check()
            theta = state.theta
            x, y = self.batch(step)
            if self.reuse_loss:  # full batch at theta: this loss is also the training loss
                loss, grad = value_and_grad(problem, theta, x, y)
            if step in plan.eval_steps:  # before the learning rate, which a plateau may cut
                self.evaluate(curves, step, theta, loss if self.reuse_loss else None)
            lr = self.learning_rate(step, theta)
            if not self.reuse_loss:
                point = rule.lookahead(theta, state.rule, hp, lr) if rule.lookahead else theta
                loss, grad = value_and_grad(problem, point, x, y)
            state.active = state.active & healthy(loss)
            state.healthy_steps += state.active
            # theta never requires grad, so the update records no graph
            loss_at = functools.partial(problem.loss, x=x, y=y)
            delta, state.rule = rule.update(grad, state.rule, theta, hp, lr, loss_at)
            theta_next = torch.where(state.active.unsqueeze(1), theta + delta, theta)
            if self.batches is not None:
                state.batch_losses = state.batch_losses + loss
                state.batches_since_log += 1
            if step in plan.log_steps:
                self.log(step, state, curves, theta, lr)
                if not bool(state.active.any()):
                    break
            state.theta = theta_next
        else:
            state.step = end = plan.total_steps
            theta = state.theta
            with torch.no_grad():
                final = problem.evaluate(theta, "train")["loss"]
            state.active = state.active & healthy(final)  # the last update may diverge too
            metrics = {"phi0": theta[:, 0], "phi1": theta[:, 1]} if self.two_parameters else {}
            if state.batches_since_log:
                metrics["batch_loss"] = state.batch_losses / state.batches_since_log
            curves.add(end, metrics)
            self.evaluate(curves, end, theta, final)
        return torch.where(state.active, -1, state.healthy_steps), state.theta

    def log(self, step: int, state: LoopState, curves: Curves, theta, lr) -> None:
        """The log point ``step``: the learning rate (when it varies, or at the first and last
        log point), the two parameters, the mean mini-batch loss since the last log point;
        the curves go to the sink every ``FLUSH_EVERY`` log points."""
        metrics = {}
        if self.lr_varies or step in (0, self.last_log_step):
            metrics["lr"] = self.rule.step_size(state.rule, lr) if self.rule.step_size else lr
        if self.two_parameters:
            metrics.update(phi0=theta[:, 0], phi1=theta[:, 1])
        if self.batches is not None:
            metrics["batch_loss"] = state.batch_losses / state.batches_since_log
            state.batch_losses = torch.zeros_like(state.batch_losses)
            state.batches_since_log = 0
        curves.add(step, metrics)
        state.logged += 1
        if curves.sink is not None and state.logged % FLUSH_EVERY == 0:
            curves.take(_steps_or_none(torch.where(state.active, -1, state.healthy_steps)))
