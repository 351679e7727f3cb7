"""Any ``torch.optim.Optimizer`` as the rule of a cohort: ``optimizer=torch
optimizer.class_name=RMSprop`` (a class of ``torch.optim``) or ``optimizer.class_name=
my_pkg.MyOptimizer`` (an import path), with its keyword arguments in ``optimizer.kwargs``.

The cohort's parameters stay one tensor (R, P). The optimizer sees each run's parameters as
tensors of their own, in a parameter group of their own that holds the run's learning rate
and keyword arguments. torch keeps an optimizer's state per parameter tensor, so each run has
its own hyperparameters and state, and its steps do not depend on who else is in the cohort.
The tensors are views into one buffer (and their gradients views into another): before each
step the buffers take the cohort's parameters and gradients, each group the run's scheduled
learning rate, and the change the step makes to the buffer is the update.

A run's tensors are the model's parameter pieces (``model.shapes``: a weight stays a matrix,
for optimizers that use shapes, such as Adafactor, Muon or a user's). The classes of
torch.optim that act element by element (``ELEMENTWISE``: every value's step depends on that
value's own gradient and state, and on counts and hyperparameters) need no shapes: their
runs that share keyword arguments and learning rates share one group and one tensor (runs,
P). Each row is still its own run, with the same arithmetic, in fewer steps of Python (torch
loops over the tensors of a step on a CPU).

An optimizer whose ``step`` couples the parameter groups (a norm over all of them) would couple
the runs of a cohort; train it with ``hydra.launcher.max_cohort=1``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import torch

from harness.config import ConfigError, OptimizerOption, TorchOptimizerConfig, is_number
from harness.imports import import_object
from harness.optim import Rule

Tensor = torch.Tensor

UNUSABLE = {
    "LBFGS": "LBFGS re-evaluates the loss through a closure; use gd_linesearch (the lecture's "
    "line search) or a rule of your own (optimizer=rule)",
    "SparseAdam": "SparseAdam takes sparse gradients only; the harness's are dense",
    "Muon": "Muon takes 2-D parameters only, and the models have 1-D ones (biases); use "
    "Adam, AdamW or a rule of your own (optimizer=rule)",
}
ELEMENTWISE = frozenset(
    getattr(torch.optim, name)
    for name in (
        "ASGD",
        "Adadelta",
        "Adagrad",
        "Adam",
        "AdamW",
        "Adamax",
        "NAdam",
        "RAdam",
        "RMSprop",
        "Rprop",
        "SGD",
    )
)


def torch_optimizers() -> dict[str, type]:
    """The concrete torch.optim optimizers by name: subclasses of ``Optimizer`` with a ``step``
    of their own (torch wraps ``step`` in a profiling hook, hence the unwrap)."""
    return {
        name: c
        for name, c in vars(torch.optim).items()
        if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and _concrete(c)
    }


def _concrete(cls: type) -> bool:
    return inspect.unwrap(cls.step) is not inspect.unwrap(torch.optim.Optimizer.step)


def _needs_closure(cls: type) -> bool:
    closure = inspect.signature(cls.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def optimizer_class(class_name: str) -> type:
    """The class ``class_name`` names: a bare name in torch.optim, else an import path; a
    ConfigError on ``optimizer.class_name`` unless it is an optimizer the harness can step."""
    key = "optimizer.class_name"
    usable = sorted(torch_optimizers().keys() - UNUSABLE.keys())
    if "." in class_name:
        found = import_object(class_name, key, "a torch.optim.Optimizer subclass")
    elif class_name in UNUSABLE:
        raise ConfigError(key, class_name, UNUSABLE[class_name])
    else:
        found = torch_optimizers().get(class_name)
        if found is None:
            names = ", ".join(usable)
            raise ConfigError(
                key, class_name, f"expected a torch.optim optimizer ({names}) or an import path"
            )
    if not (inspect.isclass(found) and issubclass(found, torch.optim.Optimizer)):
        rule = all(callable(getattr(found, name, None)) for name in ("init", "update"))
        hint = "; a rule goes with optimizer=rule optimizer.target=..." if rule else ""
        raise ConfigError(key, class_name, f"expected a torch.optim.Optimizer subclass{hint}")
    if found.__name__ in UNUSABLE and found is getattr(torch.optim, found.__name__, None):
        raise ConfigError(key, class_name, UNUSABLE[found.__name__])
    if not _concrete(found):
        raise ConfigError(key, class_name, "expected an optimizer with a step of its own")
    if _needs_closure(found):
        raise ConfigError(
            key,
            class_name,
            "its step needs a closure that re-evaluates the loss, which the harness does not "
            "give; use gd_linesearch or a rule of your own (optimizer=rule)",
        )
    return found


def check(cfg: TorchOptimizerConfig) -> None:
    """Refuse a class the harness cannot step, keyword arguments it does not take, and values
    it refuses when built with them on a trial parameter (torch checks the values)."""
    cls = optimizer_class(cfg.class_name)
    parameters = inspect.signature(cls).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    accepted = set(parameters) - {"params", "lr"}
    if "lr" not in parameters and not open_ended:
        raise ConfigError(
            "optimizer.class_name",
            cfg.class_name,
            "expected an optimizer that takes lr: the harness sets each run's from optimizer.lr "
            "and the schedule",
        )
    for key, value in cfg.kwargs.items():
        if key == "lr":
            raise ConfigError("optimizer.kwargs.lr", value, "set the learning rate as optimizer.lr")
        if key not in accepted and not open_ended:
            takes = ", ".join(sorted(accepted))
            raise ConfigError(f"optimizer.kwargs.{key}", value, f"{cls.__name__} takes {takes}")
    try:
        cls([torch.zeros(2, 2, requires_grad=True)], lr=cfg.lr, **cfg.kwargs)
    except Exception as error:  # a user's class may raise anything on values it refuses
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            "optimizer.kwargs", dict(cfg.kwargs), f"{cls.__name__} refuses them: {message}"
        ) from error


def per_run(value: Any) -> bool:
    """Whether a keyword argument may differ between the runs of a cohort (a number, or a list
    of numbers such as Adam's ``betas``), rather than shape it (``amsgrad``, ``foreach``)."""
    if isinstance(value, list | tuple):
        return bool(value) and all(is_number(item) for item in value)
    return is_number(value)


class TorchState(NamedTuple):
    count: int
    params: Tensor
    grads: Tensor
    optimizer: torch.optim.Optimizer


def _views(row: Tensor, shapes) -> list[Tensor]:
    """``row`` (P,) cut into tensors of ``shapes``, each a view sharing its storage."""
    views, offset = [], 0
    for shape in shapes:
        count = math.prod(shape)
        views.append(row[offset : offset + count].view(shape))
        offset += count
    return views


def run_groups(configs: list[TorchOptimizerConfig], lr_keys: list, cls: type) -> list[list[int]]:
    """The runs each parameter group holds: one run per group, or for an ``ELEMENTWISE``
    class the runs whose keyword arguments and learning rates are always equal."""
    if cls not in ELEMENTWISE:
        return [[run] for run in range(len(configs))]
    groups: dict[str, list[int]] = {}
    for run, (cfg, lr_key) in enumerate(zip(configs, lr_keys, strict=True)):
        groups.setdefault(repr((lr_key, sorted(cfg.kwargs.items()))), []).append(run)
    return list(groups.values())


def build(configs: list[TorchOptimizerConfig], shapes, lr_keys: list) -> Rule:
    """The cohort's rule (see the module docstring). The buffers hold the runs in the order of
    their groups, each group's rows side by side: an ``ELEMENTWISE`` group is one tensor
    (runs, P), any other run is its parameter pieces."""
    cls = optimizer_class(configs[0].class_name)
    groups = run_groups(configs, lr_keys, cls)
    order = [run for group in groups for run in group]
    firsts = [group[0] for group in groups]

    in_order = order == sorted(order)
    indices: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def index_on(device: torch.device) -> tuple[Tensor, Tensor]:
        """The runs in the groups' order, and its inverse, as index tensors on ``device``."""
        if device not in indices:
            index = torch.tensor(order, device=device)
            indices[device] = (index, torch.argsort(index))
        return indices[device]

    def arrange(values: Tensor, buffer: Tensor) -> None:
        """Copy ``values`` (R, P), one row per run, into ``buffer`` in the groups' order."""
        if in_order:
            buffer.copy_(values)
        else:
            torch.index_select(values, 0, index_on(values.device)[0], out=buffer)

    def tensors(buffer: Tensor, start: int, runs: int) -> list[Tensor]:
        if cls in ELEMENTWISE:
            return [buffer[start : start + runs]]
        return _views(buffer[start], shapes)

    def init(params: Tensor) -> TorchState:
        buffer, grads = torch.empty_like(params), torch.zeros_like(params)
        arrange(params.detach(), buffer)
        param_groups, start = [], 0
        for group in groups:
            cfg = configs[group[0]]
            pieces = tensors(buffer, start, len(group))
            for piece, grad in zip(pieces, tensors(grads, start, len(group)), strict=True):
                piece.grad = grad
            param_groups.append({"params": pieces, "lr": cfg.lr, **cfg.kwargs})
            start += len(group)
        optimizer = cls(param_groups, lr=configs[0].lr, **configs[0].kwargs)
        return TorchState(0, buffer, grads, optimizer)

    def update(grads, state, params, hp, lr, loss_at):
        arrange(params, state.params)
        arrange(grads, state.grads)
        rates = lr.reshape(-1).tolist()
        for param_group, group, first in zip(
            state.optimizer.param_groups, groups, firsts, strict=True
        ):
            if any(rates[run] != rates[first] for run in group):
                raise RuntimeError("runs that share a parameter group got different learning rates")
            param_group["lr"] = rates[first]
        state.optimizer.step()
        moved = state.params if in_order else state.params[index_on(params.device)[1]]
        return moved - params, state._replace(count=state.count + 1)

    return Rule(init, update, reloaded=_relinked)


def _relinked(state: TorchState) -> TorchState:
    """A state read back from a checkpoint, each parameter's ``grad`` again its view of the
    gradient buffer (a tensor's ``grad`` is not saved; the pieces and their optimizer state
    come back as views of the parameter buffer, as they were)."""
    base = state.params.storage_offset()
    for group in state.optimizer.param_groups:
        on_device = group.get("capturable") or group.get("fused")
        for piece in group["params"]:
            offset = state.grads.storage_offset() + piece.storage_offset() - base
            piece.grad = state.grads.as_strided(piece.shape, piece.stride(), offset)
            kept = state.optimizer.state.get(piece, {})
            if not on_device and isinstance(kept.get("step"), Tensor):  # as torch keeps it
                kept["step"] = kept["step"].cpu()
    return state


OPTIONS: dict[str, OptimizerOption] = {
    "torch": OptimizerOption(TorchOptimizerConfig, build, check=check),
}
