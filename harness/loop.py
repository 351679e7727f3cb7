"""The training loop of one cohort (set up by ``engine.train_cohort``), and what it keeps.

Per update ``s`` (from 0): take the batch, evaluate the loss and its gradient at the rule's
point, mark runs whose loss is not finite or above ``divergence_factor`` times their initial
loss as diverged (their parameters freeze and their curves end there), and apply the rule's
update with learning rate ``lr * schedule.factor(s)``. Curves are kept on the device and
copied back in chunks (see :class:`Curves`). Between two updates the loop's whole state
(``LoopState`` with the schedule's, the batch order's, the model's and the curves') can be
taken as a checkpoint (``Loop.snapshot``) and training resumed from it (``Loop.begin``).

Curves (step = number of updates done). At evaluation points, on whole splits: ``train_loss``,
``val_loss``, ``test_loss`` and, when classifying, ``train_accuracy``, ``val_accuracy``,
``test_accuracy``. At log points: ``lr`` (of the update taken at that step; the line search's
chosen step; a constant one at the first and last log point only), ``phi0``/``phi1`` for
two-parameter models, and with mini-batches
``batch_loss``, the mean mini-batch loss of the updates since the previous log point.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from harness import checkpoints, schedules, stopping
from harness.problem import Problem

FLUSH_EVERY = 32  # log points between hand-overs of curves to a sink


def steps_or_none(diverged_at: torch.Tensor) -> list[int | None]:
    return [None if s < 0 else s for s in diverged_at.cpu().tolist()]


def derive_seed(seed: int, purpose: str) -> int:
    """A 60-bit seed from the run's seed and what it is for ("init", "batches")."""
    return int(hashlib.sha256(f"{seed}/{purpose}".encode()).hexdigest()[:15], 16)


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


class Loop:
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

    def begin(self, theta: torch.Tensor, curves: Curves, resume, checkpointer):
        """The state training begins from, and the checkpoint state it continues (None: it
        starts before the first update). ``resume``'s state is saved again at once by a
        ``checkpointer`` (the checkpoint then names this cohort's runs); one that holds other
        parameters than ``theta``'s is not used (one line says so)."""
        if resume is not None and resume["theta"].shape != theta.shape:
            shapes = f"{tuple(resume['theta'].shape)}, this cohort's {tuple(theta.shape)}"
            checkpoints.say(
                f"checkpoint not used: its parameters are {shapes}; training starts over"
            )
            resume = None
        if resume is None:
            return self.start(theta), None
        state = self.restore(resume, curves)
        if checkpointer is not None:
            seconds = resume["curves"]["seconds"]
            checkpointer.save(self.snapshot(state, curves), state.step, seconds)
        return state, resume

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
        curves.take(steps_or_none(torch.where(state.active, -1, state.healthy_steps)))
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
            if checkpointer is None:
                stopping.check()
            else:  # a signal noted after this look waits for the next update
                stop = stopping.requested()
                training_seconds = time.perf_counter() - curves.start
                if stop or checkpointer.due(training_seconds):
                    checkpointer.save(self.snapshot(state, curves), step, training_seconds)
                if stop:
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
            curves.take(steps_or_none(torch.where(state.active, -1, state.healthy_steps)))
