"""The optimizer rules against the lecture's equations and against torch.optim."""

from __future__ import annotations

import inspect

import pytest
import torch

from harness import optim
from harness.config import AdamConfig, OptimizerConfig
from harness.models import RosenbrockSurface

ROSENBROCK = RosenbrockSurface(1.0, 100.0)


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)


def hyper(**values: float) -> dict[str, torch.Tensor]:
    return {name: column(value) for name, value in values.items()}


def run_rule(rule: optim.Rule, hp: dict, start: list[float], steps: int, loss_fn=ROSENBROCK):
    """Apply ``rule`` with gradients of ``loss_fn``; the parameters after each step."""
    params = torch.tensor([start], dtype=torch.float64)
    state, path = rule.init(params), []
    lr = hp.get("lr", column(1.0))
    for _ in range(steps):
        point = rule.lookahead(params, state, hp, lr) if rule.lookahead else params
        point = point.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(point).sum(), point)
        delta, state = rule.update(grad, state, params, hp, lr, lambda p: loss_fn(p))
        params = params + delta
        path.append(params[0].clone())
    return torch.stack(path), state


def run_torch(optimizer_class, start: list[float], steps: int, **kwargs):
    leaf = torch.tensor([start], dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_class([leaf], **kwargs)
    path = []
    for _ in range(steps):
        optimizer.zero_grad()
        ROSENBROCK(leaf).sum().backward()
        optimizer.step()
        path.append(leaf[0].detach().clone())
    return torch.stack(path)


# --------------------------------------------------------------------- hand-computed steps

G1, G2 = column(2.0), column(-1.0)


def two_steps(rule, hp, grads=(G1, G2), start=0.5):
    params = column(start)
    state = rule.init(params)
    values = []
    for grad in grads:
        delta, state = rule.update(grad, state, params, hp, hp["lr"], None)
        params = params + delta
        values.append(float(params))
    return values, state


def test_gradient_descent_steps_by_minus_alpha_g():
    values, _ = two_steps(optim.gradient_descent(), hyper(lr=0.1))
    assert values == pytest.approx([0.5 - 0.2, 0.3 + 0.1])


def test_momentum_is_an_exponential_moving_average_starting_at_zero():
    values, state = two_steps(optim.momentum(), hyper(lr=0.1, beta=0.6))
    m1 = 0.4 * 2.0
    m2 = 0.6 * m1 + 0.4 * -1.0
    assert values == pytest.approx([0.5 - 0.1 * m1, 0.5 - 0.1 * m1 - 0.1 * m2])
    assert float(state.m) == pytest.approx(m2)


def test_momentum_m0_gradient_starts_at_the_first_gradient():
    values, _ = two_steps(optim.momentum("gradient"), hyper(lr=0.1, beta=0.6))
    m1 = 2.0
    m2 = 0.6 * m1 + 0.4 * -1.0
    assert values == pytest.approx([0.5 - 0.1 * m1, 0.5 - 0.1 * m1 - 0.1 * m2])


@pytest.mark.parametrize(("lookahead", "scale"), [("book", 0.1 * 0.6), ("slide", 0.1)])
def test_nesterov_takes_the_gradient_at_the_lookahead_point(lookahead, scale):
    rule = optim.nesterov(lookahead)
    hp = hyper(lr=0.1, beta=0.6)
    params = column(0.5)
    state = optim.MomentumState(3, column(2.0))
    point = rule.lookahead(params, state, hp, hp["lr"])
    assert float(point) == pytest.approx(0.5 - scale * 2.0)
    delta, state = rule.update(column(1.0), state, params, hp, hp["lr"], None)
    assert float(state.m) == pytest.approx(0.6 * 2.0 + 0.4 * 1.0)
    assert float(delta) == pytest.approx(-0.1 * float(state.m))


def test_normalized_gradient_moves_a_fixed_distance_per_coordinate():
    rule = optim.normalized()
    grads = torch.tensor([[3.0, -0.001, 250.0]], dtype=torch.float64)
    delta, _ = rule.update(
        grads, optim.NoState(), torch.zeros_like(grads), hyper(lr=0.1, eps=1e-12), column(0.1), None
    )
    assert delta[0].tolist() == pytest.approx([-0.1, 0.1, -0.1])


def test_adam_bias_corrections_count_from_zero():
    values, state = two_steps(optim.adam(), hyper(lr=0.05, beta=0.9, gamma=0.99, eps=1e-8))
    m1, v1 = 0.1 * 2.0, 0.01 * 4.0
    step1 = 0.05 * (m1 / 0.1) / ((v1 / 0.01) ** 0.5 + 1e-8)
    m2, v2 = 0.9 * m1 + 0.1 * -1.0, 0.99 * v1 + 0.01 * 1.0
    step2 = 0.05 * (m2 / (1 - 0.9**2)) / ((v2 / (1 - 0.99**2)) ** 0.5 + 1e-8)
    assert values == pytest.approx([0.5 - step1, 0.5 - step1 - step2])
    assert state.count == 2


def test_bracket_follows_the_lecture_on_a_parabola():
    """L(s) = (s - 0.3)^2 on [0, 1]: first iteration has L(b=0.33) < L(c=0.66), so d = c."""
    calls = []

    def loss_along(step):
        calls.append(step.clone())
        return ((step - 0.3) ** 2).reshape(-1)

    found = optim.bracket(loss_along, column(1.0), column(1e-4), column(1.0))
    # one iteration: d = 0.66, b = 0.22, c = 0.44 -> (b + c) / 2 = 0.33
    assert float(found) == pytest.approx(0.33)
    assert [float(c) for c in calls] == pytest.approx([0.0, 0.33, 0.66, 1.0])
    found = optim.bracket(loss_along, column(1.0), column(1e-6), column(100.0))
    assert float(found) == pytest.approx(0.3, abs=1e-4)


def test_bracket_moves_toward_a_when_a_is_lowest():
    def loss_along(step):
        return (step**2).reshape(-1)

    found = optim.bracket(loss_along, column(2.0), column(1e-4), column(1.0))
    assert float(found) == pytest.approx((0.33 + 0.66) / 2)  # b, c, d halved: (0.33+0.66)/2


def test_bracket_searches_each_run_with_its_own_settings():
    def loss_along(step):
        return ((step - column(0.3, 1.5)) ** 2).reshape(-1)

    found = optim.bracket(loss_along, column(1.0, 2.0), column(1e-6, 1e-6), column(60.0, 60.0))
    assert found.reshape(-1).tolist() == pytest.approx([0.3, 1.5], abs=1e-4)


# --------------------------------------------------------------------- torch equivalents

START, STEPS = [-1.2, 1.0], 25


def test_sgd_equals_torch_sgd():
    ours, _ = run_rule(optim.gradient_descent(), hyper(lr=1e-3), START, STEPS)
    theirs = run_torch(torch.optim.SGD, START, STEPS, lr=1e-3)
    torch.testing.assert_close(ours, theirs)


def test_lecture_momentum_equals_torch_sgd_with_rescaled_lr():
    """m <- b m + (1 - b) g, phi -= a m  ==  SGD(lr=a (1 - b), momentum=b, dampening=0)."""
    ours, _ = run_rule(optim.momentum(), hyper(lr=1e-3, beta=0.9), START, STEPS)
    theirs = run_torch(torch.optim.SGD, START, STEPS, lr=1e-3 * 0.1, momentum=0.9)
    torch.testing.assert_close(ours, theirs)


def test_torch_dampening_differs_from_the_lecture_in_the_first_step_only():
    """SGD(momentum=b, dampening=b) starts its buffer at g: that is m0=gradient, not m0=zero."""
    theirs = run_torch(torch.optim.SGD, START, STEPS, lr=1e-3, momentum=0.9, dampening=0.9)
    same, _ = run_rule(optim.momentum("gradient"), hyper(lr=1e-3, beta=0.9), START, STEPS)
    lecture, _ = run_rule(optim.momentum("zero"), hyper(lr=1e-3, beta=0.9), START, STEPS)
    torch.testing.assert_close(same, theirs)
    assert not torch.allclose(lecture, theirs)


def book_lookaheads(rule: optim.Rule, hp: dict) -> torch.Tensor:
    """The book's look-ahead points phi - a b m after each of STEPS steps of ``rule`` on
    Rosenbrock from START, the gradient taken at the rule's look-ahead point."""
    params = torch.tensor([START], dtype=torch.float64)
    state, lookaheads = rule.init(params), []
    for _ in range(STEPS):
        point = rule.lookahead(params, state, hp, hp["lr"]).requires_grad_(True)
        (grad,) = torch.autograd.grad(ROSENBROCK(point).sum(), point)
        delta, state = rule.update(grad, state, params, hp, hp["lr"], None)
        params = params + delta
        lookaheads.append((params - hp["lr"] * hp["beta"] * state.m)[0])
    return torch.stack(lookaheads)


def test_book_nesterov_equals_torch_nesterov_at_the_lookahead_points():
    """torch's SGD(nesterov) parameters are the lecture's look-ahead points phi - a b m."""
    lr, beta = 1e-3, 0.9
    ours = book_lookaheads(optim.nesterov("book"), hyper(lr=lr, beta=beta))
    theirs = run_torch(
        torch.optim.SGD, START, STEPS, lr=lr * (1 - beta), momentum=beta, nesterov=True
    )
    torch.testing.assert_close(ours, theirs)


def test_slide_nesterov_differs_from_the_book():
    book, _ = run_rule(optim.nesterov("book"), hyper(lr=1e-3, beta=0.9), START, STEPS)
    slide, _ = run_rule(optim.nesterov("slide"), hyper(lr=1e-3, beta=0.9), START, STEPS)
    assert not torch.allclose(book, slide)


def test_adam_equals_torch_adam():
    ours, _ = run_rule(optim.adam(), hyper(lr=0.05, beta=0.9, gamma=0.99, eps=1e-8), START, STEPS)
    theirs = run_torch(torch.optim.Adam, START, STEPS, lr=0.05, betas=(0.9, 0.99), eps=1e-8)
    torch.testing.assert_close(ours, theirs)


def test_normalized_equals_torch_adam_without_averaging():
    ours, _ = run_rule(optim.normalized(), hyper(lr=0.01, eps=1e-8), START, STEPS)
    theirs = run_torch(torch.optim.Adam, START, STEPS, lr=0.01, betas=(0.0, 0.0), eps=1e-8)
    torch.testing.assert_close(ours, theirs)


# --------------------------------------------------------------------- weight decay

DECAY = 0.05


def decaying(rule: optim.Rule, form: str = "coupled") -> optim.Rule:
    return optim.with_weight_decay(rule, form)


def test_coupled_decay_equals_torch_sgd_weight_decay():
    hp = hyper(lr=1e-3, weight_decay=DECAY)
    ours, _ = run_rule(decaying(optim.gradient_descent()), hp, START, STEPS)
    theirs = run_torch(torch.optim.SGD, START, STEPS, lr=1e-3, weight_decay=DECAY)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_coupled_decay_on_momentum_equals_torch_sgd_with_rescaled_lr():
    hp = hyper(lr=1e-3, beta=0.9, weight_decay=DECAY)
    ours, _ = run_rule(decaying(optim.momentum()), hp, START, STEPS)
    theirs = run_torch(
        torch.optim.SGD, START, STEPS, lr=1e-3 * 0.1, momentum=0.9, weight_decay=DECAY
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_coupled_decay_on_nesterov_decays_the_lookahead_point_as_torch_does():
    lr, beta = 1e-3, 0.9
    ours = book_lookaheads(
        decaying(optim.nesterov("book")), hyper(lr=lr, beta=beta, weight_decay=DECAY)
    )
    theirs = run_torch(
        torch.optim.SGD,
        START,
        STEPS,
        lr=lr * (1 - beta),
        momentum=beta,
        nesterov=True,
        weight_decay=DECAY,
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_coupled_decay_on_normalized_and_adam_equals_torch_adam_weight_decay():
    hp = hyper(lr=0.01, eps=1e-8, weight_decay=DECAY)
    ours, _ = run_rule(decaying(optim.normalized()), hp, START, STEPS)
    theirs = run_torch(
        torch.optim.Adam, START, STEPS, lr=0.01, betas=(0.0, 0.0), eps=1e-8, weight_decay=DECAY
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    hp = hyper(lr=0.05, beta=0.9, gamma=0.99, eps=1e-8, weight_decay=DECAY)
    ours, _ = run_rule(decaying(optim.adam()), hp, START, STEPS)
    theirs = run_torch(
        torch.optim.Adam, START, STEPS, lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=DECAY
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_adamw_equals_torch_adamw_and_differs_from_adam_with_l2():
    adamw = optim.OPTIONS["adamw"].build([AdamConfig(name="adamw", weight_decay=0.1)], (), [0])
    hp = hyper(lr=0.05, beta=0.9, gamma=0.999, eps=1e-8, weight_decay=0.1)
    ours, _ = run_rule(adamw, hp, START, STEPS)
    theirs = run_torch(torch.optim.AdamW, START, STEPS, lr=0.05, weight_decay=0.1)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    coupled, _ = run_rule(decaying(optim.adam()), hp, START, STEPS)
    assert not torch.allclose(coupled, theirs)


def test_adamw_defaults_are_torchs_under_the_lecture_names():
    defaults = inspect.signature(torch.optim.AdamW).parameters
    cfg = AdamConfig(name="adamw")
    assert (cfg.lr, cfg.eps) == (defaults["lr"].default, defaults["eps"].default)
    assert (cfg.beta, cfg.gamma) == defaults["betas"].default
    assert cfg.weight_decay == 0.0  # torch's AdamW decays by 0.01 unless told; we do not


def test_coupled_decay_makes_the_line_search_minimise_the_penalised_loss():
    """With a flat loss the only force is the penalty lambda/2 |phi|^2: the search along
    -lambda phi finds the step 1/lambda, which lands on 0."""
    rule = decaying(optim.line_search())
    hp = {**hyper(max_dist=2.0, tol=1e-9, max_iter=200.0), "weight_decay": column(1.0)}
    params = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    delta, state = rule.update(
        torch.zeros_like(params),
        rule.init(params),
        params,
        hp,
        column(1.0),
        lambda points: torch.zeros(len(points), dtype=torch.float64),
    )
    torch.testing.assert_close(params + delta, torch.zeros_like(params), atol=1e-6, rtol=0)
    assert float(state.step) == pytest.approx(1.0, abs=1e-6)


def test_each_run_decays_by_its_own_weight_decay():
    rule = decaying(optim.gradient_descent())
    params = torch.ones(3, 2, dtype=torch.float64)
    hp = {"lr": column(0.1, 0.1, 0.1), "weight_decay": column(0.0, 1.0, 2.0)}
    delta, _ = rule.update(torch.zeros_like(params), optim.NoState(), params, hp, hp["lr"], None)
    assert delta[:, 0].tolist() == pytest.approx([0.0, -0.1, -0.2])


def test_no_weight_decay_leaves_a_rule_as_it_is():
    configs = [OptimizerConfig(name="sgd"), OptimizerConfig(name="sgd", weight_decay=0.0)]
    plain = optim.gradient_descent()
    assert optim.decayed(plain, configs, "coupled") is plain
    configs[1].weight_decay = 1e-4
    assert optim.decayed(plain, configs, "coupled") is not plain
