"""The lecture's optimizer rules as pure functions on tensors with a leading run dimension.

A rule is ``init(params) -> state`` and
``update(grads, state, params, hp, lr, loss_at) -> (updates, state)``, in the manner of optax:
``params`` and ``grads`` have shape (R, P); ``hp`` maps each hyperparameter name to a tensor
(R, 1), so every run of a cohort has its own values; ``lr`` (R, 1) is alpha after the schedule;
``loss_at(points)`` is the per-run training loss at other parameter values (the line search
needs it). A rule with a ``lookahead`` wants its gradient taken at ``lookahead(...)`` rather
than at ``params`` (Nesterov). The new parameters are ``params + updates``.

Lecture setting -> torch.optim equivalent (tests/test_optim.py checks each):

- ``gd``/``sgd`` lr=a                  == SGD(lr=a)
- ``momentum`` lr=a, beta=b, m0=zero    == SGD(lr=a(1-b), momentum=b, dampening=0)
- ``momentum`` lr=a, beta=b, m0=gradient == SGD(lr=a, momentum=b, dampening=b)
  (torch starts its buffer at the first gradient; the lecture starts m at 0)
- ``nesterov`` lookahead=book lr=a, beta=b == SGD(lr=a(1-b), momentum=b, nesterov=True),
  whose parameters are the lecture's look-ahead points phi - a b m
- ``adam`` lr, beta, gamma, eps        == Adam(lr, betas=(beta, gamma), eps)
- ``normalized`` lr, eps              == Adam(lr, betas=(0, 0), eps)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from harness.config import (
    AdamConfig,
    ConfigError,
    LineSearchConfig,
    MomentumConfig,
    NesterovConfig,
    NormalizedConfig,
    OptimizerConfig,
    OptimizerOption,
    TorchOptimizerConfig,
)

Tensor = torch.Tensor
LossAt = Callable[[Tensor], Tensor]


class Rule(NamedTuple):
    init: Callable[[Tensor], Any]
    update: Callable[..., tuple[Tensor, Any]]
    lookahead: Callable[..., Tensor] | None = None
    step_size: Callable[[Any, Tensor], Tensor] | None = None


class NoState(NamedTuple):
    count: int = 0


def gradient_descent() -> Rule:
    """phi <- phi - alpha g (g over the full batch for ``gd``, a mini-batch for ``sgd``)."""

    def update(grads, state, params, hp, lr, loss_at):
        return -lr * grads, NoState(state.count + 1)

    return Rule(lambda params: NoState(), update)


class MomentumState(NamedTuple):
    count: int
    m: Tensor


def _momentum_update(grads, state, params, hp, lr, loss_at, first_is_gradient=False):
    beta = hp["beta"]
    first = first_is_gradient and state.count == 0
    m = grads if first else torch.lerp(grads, state.m, beta)  # beta m + (1 - beta) g
    return -lr * m, MomentumState(state.count + 1, m)


def momentum(m0: str = "zero") -> Rule:
    """m <- beta m + (1 - beta) g;  phi <- phi - alpha m.  m starts at 0 (``m0: zero``), or at
    the first gradient (``m0: gradient``, torch's SGD with dampening = beta)."""

    def update(grads, state, params, hp, lr, loss_at):
        return _momentum_update(grads, state, params, hp, lr, loss_at, m0 == "gradient")

    return Rule(lambda params: MomentumState(0, torch.zeros_like(params)), update)


def nesterov(lookahead: str = "book") -> Rule:
    """g = dL/dphi at the look-ahead point phi - alpha beta m (book, eq. 6.12 corrected) or
    phi - alpha m (slide); then m <- beta m + (1 - beta) g;  phi <- phi - alpha m."""

    def point(params, state, hp, lr):
        scale = lr * hp["beta"] if lookahead == "book" else lr
        return params - scale * state.m

    return Rule(lambda params: MomentumState(0, torch.zeros_like(params)), _momentum_update, point)


def normalized() -> Rule:
    """m = g, v = g^2;  phi <- phi - alpha m / (sqrt(v) + eps): a fixed step per coordinate."""

    def update(grads, state, params, hp, lr, loss_at):
        return -lr * grads / (grads.abs() + hp["eps"]), NoState(state.count + 1)

    return Rule(lambda params: NoState(), update)


class AdamState(NamedTuple):
    count: int
    m: Tensor
    v: Tensor


def adam() -> Rule:
    """m <- beta m + (1 - beta) g;  v <- gamma v + (1 - gamma) g^2;
    m~ = m / (1 - beta^(t+1));  v~ = v / (1 - gamma^(t+1));
    phi <- phi - alpha m~ / (sqrt(v~) + eps), with t counting from 0."""

    def update(grads, state, params, hp, lr, loss_at):
        beta, gamma, t = hp["beta"], hp["gamma"], state.count
        m = torch.lerp(grads, state.m, beta)  # beta m + (1 - beta) g
        v = torch.lerp(grads * grads, state.v, gamma)
        v_hat = v / (1 - gamma ** (t + 1))
        step = lr / (1 - beta ** (t + 1))
        return -step * m / (v_hat.sqrt() + hp["eps"]), AdamState(t + 1, m, v)

    return Rule(lambda p: AdamState(0, torch.zeros_like(p), torch.zeros_like(p)), update)


class LineSearchState(NamedTuple):
    count: int
    step: Tensor


def bracket(loss_along: LossAt, max_dist: Tensor, tol: Tensor, max_iter: Tensor) -> Tensor:
    """The lecture's bracketing search for the step (R, 1) minimising ``loss_along(step)``.

    a=0, b=0.33 max_dist, c=0.66 max_dist, d=max_dist. While |b - c| > tol and fewer than
    max_iter iterations: if L(a) is lowest, move b, c, d half-way toward a; else if
    L(b) < L(c) set d = c, otherwise a = b, and put b, c at 1/3 and 2/3 of [a, d].
    Returns (b + c) / 2. Every run of the cohort searches with its own settings.
    """
    a = torch.zeros_like(max_dist)
    b, c, d = 0.33 * max_dist, 0.66 * max_dist, max_dist.clone()
    for iteration in range(int(max_iter.max())):
        active = ((b - c).abs() > tol) & (iteration < max_iter)
        if not bool(active.any()):
            break
        la, lb, lc, ld = (loss_along(point).reshape(a.shape) for point in (a, b, c, d))
        a_lowest = (la <= lb) & (la <= lc) & (la <= ld)
        shrink = active & a_lowest
        keep_left = active & ~a_lowest & (lb < lc)
        keep_right = active & ~a_lowest & ~(lb < lc)
        d = torch.where(shrink, a + (d - a) / 2, torch.where(keep_left, c, d))
        a = torch.where(keep_right, b, a)
        thirds = keep_left | keep_right
        b = torch.where(shrink, a + (b - a) / 2, torch.where(thirds, a + (d - a) / 3, b))
        c = torch.where(shrink, a + (c - a) / 2, torch.where(thirds, a + 2 * (d - a) / 3, c))
    return (b + c) / 2


def line_search() -> Rule:
    """phi <- phi - s g with s from :func:`bracket` along -g (the full-batch gradient)."""

    def update(grads, state, params, hp, lr, loss_at):
        def loss_along(step: Tensor) -> Tensor:
            return loss_at(params - step * grads)

        step = bracket(loss_along, hp["max_dist"], hp["tol"], hp["max_iter"])
        return -step * grads, LineSearchState(state.count + 1, step)

    def init(params):
        return LineSearchState(
            0, torch.zeros(params.shape[0], 1, dtype=params.dtype, device=params.device)
        )

    return Rule(init, update, step_size=lambda state, lr: state.step)


class TorchState(NamedTuple):
    count: int
    leaf: Tensor
    optimizer: torch.optim.Optimizer


def torch_optimizer(class_name: str, kwargs: dict[str, Any], lr: float) -> Rule:
    """Any torch.optim class on one run: the step it takes is returned as the update; its
    learning rate is set to the scheduled ``lr`` before every step."""
    optimizer_class = check_torch_optimizer(class_name, kwargs, lr)

    def init(params):
        if params.shape[0] != 1:
            raise ValueError("torch.optim optimizers train cohorts of one run")
        leaf = params.detach().clone().requires_grad_(True)
        return TorchState(0, leaf, optimizer_class([leaf], lr=lr, **kwargs))

    def update(grads, state, params, hp, lr, loss_at):
        with torch.no_grad():
            state.leaf.copy_(params)
        for group in state.optimizer.param_groups:
            group["lr"] = float(lr)
        state.leaf.grad = grads.detach().clone()
        state.optimizer.step()
        return state.leaf.detach() - params, TorchState(
            state.count + 1, state.leaf, state.optimizer
        )

    return Rule(init, update)


UNUSABLE_TORCH_OPTIMIZERS = {
    "LBFGS": "LBFGS re-evaluates the loss through a closure; use gd_linesearch",
    "SparseAdam": "SparseAdam takes sparse gradients only; the harness's are dense",
}


def torch_optimizers() -> dict[str, type]:
    """The concrete torch.optim optimizers by name: subclasses of ``Optimizer`` with a ``step``
    of their own (torch wraps ``step`` in a profiling hook, hence the unwrap)."""
    base = inspect.unwrap(torch.optim.Optimizer.step)
    return {
        name: c
        for name, c in vars(torch.optim).items()
        if inspect.isclass(c)
        and issubclass(c, torch.optim.Optimizer)
        and inspect.unwrap(c.step) is not base
    }


def check_torch_optimizer(class_name: str, kwargs: dict[str, Any], lr: float) -> type:
    """The concrete torch.optim class named ``class_name``, after checking its keyword names
    and building it with ``lr`` and ``kwargs`` on a trial parameter (torch checks values)."""
    optimizers = torch_optimizers()
    if class_name in UNUSABLE_TORCH_OPTIMIZERS or class_name not in optimizers:
        names = sorted(optimizers.keys() - UNUSABLE_TORCH_OPTIMIZERS.keys())
        allowed = f"expected a torch.optim optimizer: {', '.join(names)}"
        if class_name in UNUSABLE_TORCH_OPTIMIZERS:
            allowed = f"{UNUSABLE_TORCH_OPTIMIZERS[class_name]}; {allowed}"
        raise ConfigError("optimizer.class_name", class_name, allowed)
    optimizer_class = optimizers[class_name]
    accepted = set(inspect.signature(optimizer_class).parameters) - {"params", "lr"}
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"optimizer.kwargs.{key}",
                kwargs[key],
                f"{class_name} takes {', '.join(sorted(accepted))}",
            )
    try:
        optimizer_class([torch.zeros(1, 2, requires_grad=True)], lr=lr, **kwargs)
    except (TypeError, ValueError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        allowed = f"{class_name} refuses them: {message}"
        raise ConfigError("optimizer.kwargs", kwargs, allowed) from error
    return optimizer_class


OPTIONS: dict[str, OptimizerOption] = {
    "gd": OptimizerOption(OptimizerConfig, lambda cfg: gradient_descent(), full_batch=True),
    "gd_linesearch": OptimizerOption(LineSearchConfig, lambda cfg: line_search(), full_batch=True),
    "sgd": OptimizerOption(OptimizerConfig, lambda cfg: gradient_descent()),
    "momentum": OptimizerOption(MomentumConfig, lambda cfg: momentum(cfg.m0)),
    "nesterov": OptimizerOption(NesterovConfig, lambda cfg: nesterov(cfg.lookahead)),
    "normalized": OptimizerOption(NormalizedConfig, lambda cfg: normalized()),
    "adam": OptimizerOption(AdamConfig, lambda cfg: adam()),
    "torch": OptimizerOption(
        TorchOptimizerConfig,
        lambda cfg: torch_optimizer(cfg.class_name, dict(cfg.kwargs), cfg.lr),
        alone=True,
    ),
}
"""Every optimizer by name: its schema, ``build(cfg)`` (its rule) and how it trains."""


def trains_alone(cfg) -> bool:
    """Whether the optimizer trains one run at a time (torch.optim pass-through)."""
    return OPTIONS[cfg.name].alone


def build(cfg) -> Rule:
    """The rule ``cfg`` (an optimizer config) names."""
    return OPTIONS[cfg.name].build(cfg)
