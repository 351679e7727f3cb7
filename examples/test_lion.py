"""The Lion rule against the paper's algorithm, trained as a cohort, and trained for real."""

from __future__ import annotations

import torch

from examples import lion
from harness import engine, user_rules
from harness import problem as problem_module
from harness.compose import compose_spec
from harness.config import RuleConfig

LION = ("optimizer=rule", "optimizer.target=examples.lion")


def paper_lion(params, grads, lr, beta1, beta2, weight_decay):
    """Chen et al. (2023), Algorithm 2, one tensor, written out: the parameters after each
    gradient of ``grads``."""
    m, path = torch.zeros_like(params), []
    for g in grads:
        c = beta1 * m + (1 - beta1) * g
        params = params - lr * (torch.sign(c) + weight_decay * params)
        m = beta2 * m + (1 - beta2) * g
        path.append(params)
    return torch.stack(path)


def test_lion_takes_the_papers_steps_each_run_with_its_own_values():
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(12, 3, 5, generator=generator, dtype=torch.float64)
    params = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    settings = [(1e-2, 0.9, 0.99, 0.0), (3e-3, 0.5, 0.9, 0.1), (1e-3, 0.0, 0.0, 1.0)]
    configs = [
        RuleConfig(name="rule", target="examples.lion", lr=lr, weight_decay=wd, hp={})
        for lr, _, _, wd in settings
    ]
    rule = user_rules.build(configs, [(5,)], [0, 1, 2])
    hp = {
        name: torch.tensor([[row[i]] for row in settings], dtype=torch.float64)
        for i, name in enumerate(("lr", "beta1", "beta2", "weight_decay"))
    }
    state, ours = rule.init(params), []
    phi = params
    for g in grads:
        delta, state = rule.update(g, state, phi, hp, hp["lr"], None)
        phi = phi + delta
        ours.append(phi)
    for run, setting in enumerate(settings):
        theirs = paper_lion(params[run], grads[:, run], *setting)
        torch.testing.assert_close(torch.stack(ours)[:, run], theirs, rtol=1e-12, atol=1e-14)


def test_a_cohort_of_lion_runs_trains_each_as_it_trains_alone():
    base = (*LION, "+problem=digits_mlp", "trainer.dtype=float64", "trainer.epochs=1")
    grid = [
        ("optimizer.lr=1e-3", "+optimizer.hp.beta1=0.9", "optimizer.weight_decay=0.0", "seed=0"),
        ("optimizer.lr=3e-4", "+optimizer.hp.beta1=0.5", "optimizer.weight_decay=0.1", "seed=1"),
        ("optimizer.lr=1e-3", "+optimizer.hp.beta2=0.9", "optimizer.weight_decay=1.0", "seed=2"),
    ]
    specs = [compose_spec(*base, *point) for point in grid]
    assert len({engine.cohort_key(spec) for spec in specs}) == 1
    problem = problem_module.build(specs[0])
    together = engine.train_cohort(specs, problem)
    for spec, ours in zip(specs, together, strict=True):
        (alone,) = engine.train_cohort([spec], problem)
        torch.testing.assert_close(ours.final_params, alone.final_params, rtol=1e-6, atol=1e-12)
        ours_val, alone_val = (torch.tensor(r.curves["val_loss"][1]) for r in (ours, alone))
        torch.testing.assert_close(ours_val, alone_val, rtol=1e-6, atol=1e-12)


def test_lion_trains_an_mlp_on_digits():
    spec = compose_spec(*LION, "+problem=digits_mlp", "optimizer.lr=1e-3", "trainer.dtype=float32")
    (result,) = engine.train_cohort([spec])
    assert result.final("test_accuracy") > 0.93
    assert lion.hyperparameters["beta1"].default == 0.9
