"""Optimizer rules of the user's own, by import path: ``optimizer=rule
optimizer.target=examples.lion +optimizer.hp.beta1=0.9``.

A rule is any object (a module, a class, an instance) that has, as the built-in rules of
:mod:`harness.optim` have:

- ``init(params) -> state`` and ``update(grads, state, params, hp, lr, loss_at) -> (updates,
  state)``: ``params``, ``grads`` and ``updates`` are (R, P), one row per run; ``hp[name]``
  and ``lr`` (the scheduled learning rate) are (R, 1); the new parameters are ``params +
  updates``; ``loss_at(points)`` is each run's loss at other parameters (R, P);
- ``hyperparameters``: a mapping from each hyperparameter's name to its default, a number or a
  :class:`Hyperparameter` (a default and a closed range). ``optimizer.hp`` sets them per run;
  those it leaves out take their defaults, which the run's config (and its MLflow params,
  ``optimizer.hp.<name>``) then holds;

and may have

- ``weight_decay``: how ``optimizer.weight_decay`` applies to it, ``"coupled"`` (L2 in the
  gradient, the default) or ``"decoupled"`` (as AdamW's; see ``optim.with_weight_decay``);
- ``lookahead(params, state, hp, lr) -> points``: where the gradient is taken (Nesterov).

The harness checks the rule when the config is validated, and each update's shape while it
trains: a rule that raises or returns the wrong shape fails its runs, not the sweep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import ConfigError, OptimizerOption, RuleConfig, is_number
from harness.imports import import_object
from harness.optim import WEIGHT_DECAY_FORMS, Rule, decayed

RESERVED = {"lr": "optimizer.lr", "weight_decay": "optimizer.weight_decay"}
PROTOCOL = (
    "expected a rule: init(params), update(grads, state, params, hp, lr, loss_at) and "
    "hyperparameters (name -> default); a torch.optim.Optimizer goes with optimizer=torch"
)


@dataclass(frozen=True)
class Hyperparameter:
    """A rule's hyperparameter: its ``default`` and the closed range [``low``, ``high``] its
    values must lie in (None: unbounded on that side)."""

    default: float
    low: float | None = None
    high: float | None = None

    def allows(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"a number in [{low}, {high}]"


def find(target: str) -> Any:
    """The rule at ``target``; a ConfigError on ``optimizer.target`` unless it imports and
    has ``init`` and ``update``."""
    if not target:
        raise ConfigError("optimizer.target", target, "expected the import path of a rule")
    found = import_object(target, "optimizer.target", "a rule, e.g. examples.lion")
    if isinstance(found, type) and issubclass(found, torch.optim.Optimizer):
        raise ConfigError(
            "optimizer.target",
            target,
            f"is a torch.optim.Optimizer: use optimizer=torch optimizer.class_name={target}",
        )
    if not all(callable(getattr(found, name, None)) for name in ("init", "update")):
        raise ConfigError("optimizer.target", target, PROTOCOL)
    form = getattr(found, "weight_decay", "coupled")
    if form not in WEIGHT_DECAY_FORMS:
        raise ConfigError(
            "optimizer.target",
            target,
            f"its weight_decay is {form!r}: expected one of {', '.join(WEIGHT_DECAY_FORMS)}",
        )
    return found


def declared(rule: Any, target: str) -> dict[str, Hyperparameter]:
    """The hyperparameters ``rule`` declares; a ConfigError on ``optimizer.target`` when they
    are missing, or a name or default is not usable."""
    table = getattr(rule, "hyperparameters", None)
    if not isinstance(table, Mapping):
        raise ConfigError(
            "optimizer.target",
            target,
            "declares no hyperparameters: expected a mapping `hyperparameters` from each name "
            "to its default (an empty one for none)",
        )
    found = {}
    for name, entry in table.items():
        item = entry if isinstance(entry, Hyperparameter) else Hyperparameter(entry)
        bounds = (item.default, *(b for b in (item.low, item.high) if b is not None))
        if not all(is_number(value) and math.isfinite(value) for value in bounds):
            why = "expected a number or a Hyperparameter of numbers"
        elif not (isinstance(name, str) and name.isidentifier()) or name in RESERVED:
            why = "expected a name other than lr and weight_decay (they are optimizer.<name>)"
        elif not item.allows(item.default):
            why = f"expected a default that is {item.describe()}"
        else:
            found[name] = item
            continue
        raise ConfigError(
            "optimizer.target", target, f"its hyperparameter {name!r}: {entry!r}: {why}"
        )
    return found


def check(cfg: RuleConfig) -> None:
    """Validate ``cfg.hp`` against the rule's declared hyperparameters and complete it with
    their defaults, in the rule's order."""
    table = declared(find(cfg.target), cfg.target)
    for name, value in cfg.hp.items():
        key = f"optimizer.hp.{name}"
        if name not in table:
            names = ", ".join(table) or "none"
            hint = f"; set it as {RESERVED[name]}" if name in RESERVED else ""
            raise ConfigError(key, value, f"{cfg.target} declares {names}{hint}")
        if not is_number(value) or not table[name].allows(value):
            raise ConfigError(key, value, f"expected {table[name].describe()}")
    cfg.hp = {name: float(cfg.hp.get(name, item.default)) for name, item in table.items()}


def build(configs: list[RuleConfig], shapes, lr_keys) -> Rule:
    """The cohort's rule, with its weight decay, whose updates are checked for shape."""
    target = configs[0].target
    found = find(target)

    def update(grads, state, params, hp, lr, loss_at):
        updates, state = found.update(grads, state, params, hp, lr, loss_at)
        if not isinstance(updates, torch.Tensor) or updates.shape != params.shape:
            shape = tuple(updates.shape) if isinstance(updates, torch.Tensor) else type(updates)
            raise ValueError(
                f"rule {target} returned updates of shape {shape} for parameters of shape "
                f"{tuple(params.shape)}"
            )
        return updates, state

    rule = Rule(found.init, update, getattr(found, "lookahead", None))
    return decayed(rule, configs, getattr(found, "weight_decay", "coupled"))


OPTIONS: dict[str, OptimizerOption] = {
    "rule": OptimizerOption(RuleConfig, build, check=check),
}
