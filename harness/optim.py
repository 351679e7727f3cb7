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
- ``adamw`` lr, beta, gamma, eps, weight_decay == AdamW(lr, betas=(beta, gamma), eps, weight_decay)

``weight_decay`` (lambda) is coupled L2 on every rule but ``adamw``, as torch's ``weight_decay``
of SGD and Adam is (see :func:`with_weight_decay`). Users' rules (:mod:`harness.user_rules`) and
torch.optim classes (:mod:`harness.torch_optim`) build rules of the same form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from harness.config import (
    AdamConfig,
    LineSearchConfig,
    MomentumConfig,
    NesterovConfig,
    NormalizedConfig,
    OptimizerConfig,
    OptimizerOption,
)

Tensor = torch.Tensor
LossAt = Callable[[Tensor], Tensor]


class Rule(NamedTuple):
    init: Callable[[Tensor], Any]
    update: Callable[..., tuple[Tensor, Any]]
    lookahead: Callable[..., Tensor] | None = None
    step_size: Callable[[Any, Tensor], Tensor] | None = None
    # a state read back from a checkpoint -> the state to go on with (links pickling loses)
    reloaded: Callable[[Any], Any] | None = None


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


WEIGHT_DECAY_FORMS = ("coupled", "decoupled")


def with_weight_decay(rule: Rule, form: str) -> Rule:
    """``rule`` with weight decay lambda = ``hp["weight_decay"]`` (R, 1), each run its own.

    ``coupled`` (L2; torch's ``weight_decay`` of SGD and Adam): the rule sees the gradient of
    L + lambda/2 |phi|^2, that is g + lambda phi, at the point the gradient is taken (Nesterov's
    look-ahead point), and a line search minimises the same penalised loss.
    ``decoupled`` (AdamW, Lion): phi <- phi - alpha lambda phi, then the rule's own update, with
    alpha the scheduled learning rate: the update is the rule's minus alpha lambda phi.
    """
    if form == "decoupled":

        def decoupled(grads, state, params, hp, lr, loss_at):
            updates, state = rule.update(grads, state, params, hp, lr, loss_at)
            return updates - lr * hp["weight_decay"] * params, state

        return rule._replace(update=decoupled)

    def coupled(grads, state, params, hp, lr, loss_at):
        decay = hp["weight_decay"]
        point = rule.lookahead(params, state, hp, lr) if rule.lookahead else params

        def penalised(points: Tensor) -> Tensor:
            penalty = 0.5 * decay.reshape(-1) * points.square().sum(-1)
            return loss_at(points).reshape(-1) + penalty

        return rule.update(grads + decay * point, state, params, hp, lr, penalised)

    return rule._replace(update=coupled)


def decayed(rule: Rule, configs: list, form: str) -> Rule:
    """``rule`` with weight decay in ``form`` if any run of the cohort has some; with none
    the rule is left exactly as it is (and so are its numbers)."""
    if any(cfg.weight_decay for cfg in configs):
        return with_weight_decay(rule, form)
    return rule


def _lecture(make: Callable[[Any], Rule], form: str = "coupled") -> Callable[..., Rule]:
    """The build of a lecture rule: ``make(cfg)`` for the cohort, with its weight decay."""

    def build(configs: list, shapes, lr_keys) -> Rule:
        return decayed(make(configs[0]), configs, form)

    return build


OPTIONS: dict[str, OptimizerOption] = {
    "gd": OptimizerOption(
        OptimizerConfig, _lecture(lambda cfg: gradient_descent()), full_batch=True
    ),
    "gd_linesearch": OptimizerOption(
        LineSearchConfig, _lecture(lambda cfg: line_search()), full_batch=True
    ),
    "sgd": OptimizerOption(OptimizerConfig, _lecture(lambda cfg: gradient_descent())),
    "momentum": OptimizerOption(MomentumConfig, _lecture(lambda cfg: momentum(cfg.m0))),
    "nesterov": OptimizerOption(NesterovConfig, _lecture(lambda cfg: nesterov(cfg.lookahead))),
    "normalized": OptimizerOption(NormalizedConfig, _lecture(lambda cfg: normalized())),
    "adam": OptimizerOption(AdamConfig, _lecture(lambda cfg: adam())),
    "adamw": OptimizerOption(AdamConfig, _lecture(lambda cfg: adam(), "decoupled")),
}
"""The lecture's rules by name: their schema and ``build(configs, shapes, lr_keys)``.
``adamw`` is ``adam`` with decoupled weight decay (torch's AdamW)."""
