"""Learning-rate schedules: a multiplier of alpha per run and per update.

``factor(step)`` gives the multiplier (R, 1) for update number ``step`` (counting from 0), so
the learning rate of that update is ``lr * factor(step)``. Every hyperparameter is a tensor
(R, 1): the runs of a cohort may each have their own. ``observe(loss)`` feeds the monitored
loss (R,) at each evaluation; only ``plateau`` uses it.
"""

from __future__ import annotations

import math

import torch

from harness.config import (
    CosineScheduleConfig,
    ExponentialScheduleConfig,
    Option,
    PlateauScheduleConfig,
    ScheduleConfig,
    StepScheduleConfig,
)

Tensor = torch.Tensor


class Constant:
    """factor = 1."""

    follows_loss = False  # True: each run's factor depends on its own losses (Plateau)

    def __init__(self, hp: dict[str, Tensor], total_steps: int, like: Tensor):
        self.ones = torch.ones_like(like)

    def factor(self, step: int) -> Tensor:
        return self.ones

    def observe(self, loss: Tensor) -> None:
        """Closed-form schedules ignore the loss."""


class Step(Constant):
    """factor = factor^floor(step / step_size)."""

    def __init__(self, hp: dict[str, Tensor], total_steps: int, like: Tensor):
        self.base, self.step_size = hp["factor"], hp["step_size"]

    def factor(self, step: int) -> Tensor:
        return self.base ** torch.floor(step / self.step_size)


class Exponential(Constant):
    """factor = factor^step."""

    def __init__(self, hp: dict[str, Tensor], total_steps: int, like: Tensor):
        self.base = hp["factor"]

    def factor(self, step: int) -> Tensor:
        return self.base**step


class Cosine(Constant):
    """(step + 1) / warmup during the warm-up, then
    min_factor + (1 - min_factor) (1 + cos(pi (step - warmup) / (total - warmup))) / 2."""

    def __init__(self, hp: dict[str, Tensor], total_steps: int, like: Tensor):
        self.min_factor, self.warmup = hp["min_factor"], hp["warmup_steps"]
        self.total = total_steps

    def factor(self, step: int) -> Tensor:
        ramp = (step + 1) / self.warmup.clamp(min=1)
        progress = (step - self.warmup) / (self.total - self.warmup).clamp(min=1)
        cosine = self.min_factor + (1 - self.min_factor) * 0.5 * (1 + torch.cos(math.pi * progress))
        return torch.where(step < self.warmup, ramp, cosine)


class Plateau(Constant):
    """Reduce on plateau (as torch's ReduceLROnPlateau, mode min, relative threshold): a loss
    below best (1 - threshold) is an improvement; after more than ``patience`` evaluations
    without one, factor <- max(factor * factor_cut, min_factor) and ``cooldown`` evaluations
    pass before counting again."""

    follows_loss = True

    def __init__(self, hp: dict[str, Tensor], total_steps: int, like: Tensor):
        self.hp = hp
        self.scale = torch.ones_like(like)
        self.best = torch.full_like(like, math.inf)
        self.bad = torch.zeros_like(like)
        self.cooldown_left = torch.zeros_like(like)

    def factor(self, step: int) -> Tensor:
        return self.scale

    def observe(self, loss: Tensor) -> None:
        loss = loss.reshape(self.best.shape)
        better = loss < self.best * (1 - self.hp["threshold"])
        self.best = torch.where(better, loss, self.best)
        self.bad = torch.where(better, torch.zeros_like(self.bad), self.bad + 1)
        cooling = self.cooldown_left > 0
        self.cooldown_left = torch.where(cooling, self.cooldown_left - 1, self.cooldown_left)
        self.bad = torch.where(cooling, torch.zeros_like(self.bad), self.bad)
        cut = self.bad > self.hp["patience"]
        reduced = torch.maximum(self.scale * self.hp["factor"], self.hp["min_factor"])
        self.scale = torch.where(cut, reduced, self.scale)
        self.cooldown_left = torch.where(cut, self.hp["cooldown"], self.cooldown_left)
        self.bad = torch.where(cut, torch.zeros_like(self.bad), self.bad)


OPTIONS: dict[str, Option] = {
    "constant": Option(ScheduleConfig, Constant),
    "step": Option(StepScheduleConfig, Step),
    "exponential": Option(ExponentialScheduleConfig, Exponential),
    "cosine": Option(CosineScheduleConfig, Cosine),
    "warmup_cosine": Option(CosineScheduleConfig, Cosine),
    "plateau": Option(PlateauScheduleConfig, Plateau),
}
"""Every schedule by name: its schema and the class built as ``(hp, total_steps, like)``."""


def build(name: str, hp: dict[str, Tensor], total_steps: int, like: Tensor) -> Constant:
    """The schedule ``name`` for hyperparameters ``hp`` (each (R, 1), shaped like ``like``)."""
    return OPTIONS[name].build(hp, total_steps, like)
