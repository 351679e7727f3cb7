"""Rules of a user's own (``optimizer=rule``): the protocol's checks, hyperparameters completed
with their defaults, and per-run values in a cohort. The example rule, Lion, has its own test
beside it (examples/test_lion.py); its failures in a sweep are in test_sweep.py."""

from __future__ import annotations

import pytest
import torch
import user_optim

from harness import config, engine, user_rules
from harness import problem as problem_module
from harness.compose import compose_spec
from harness.config import ConfigError

LION = ("optimizer=rule", "optimizer.target=examples.lion")

REFUSED = [
    (["optimizer=rule"], "optimizer.target", "expected the import path of a rule"),
    (["optimizer=rule", "optimizer.target=lion"], "optimizer.target", "expected the import path"),
    (
        ["optimizer=rule", "optimizer.target=no_such_pkg.rule"],
        "optimizer.target",
        "cannot be imported",
    ),
    (["optimizer=rule", "optimizer.target=user_optim.missing"], "optimizer.target", "no attribute"),
    (
        ["optimizer=rule", "optimizer.target=user_optim.no_update"],
        "optimizer.target",
        "expected a rule: init",
    ),
    (
        ["optimizer=rule", "optimizer.target=torch.nn.Linear"],
        "optimizer.target",
        "expected a rule: init",
    ),
    (
        ["optimizer=rule", "optimizer.target=user_optim.SignSgd"],
        "optimizer.target",
        "use optimizer=torch",
    ),
    (
        ["optimizer=rule", "optimizer.target=user_optim.no_hyperparameters"],
        "optimizer.target",
        "declares no hyperparameters",
    ),
    (
        ["optimizer=rule", "optimizer.target=user_optim.text_default"],
        "optimizer.target",
        "'scale': 'big': expected a number",
    ),
    (
        ["optimizer=rule", "optimizer.target=user_optim.claims_lr"],
        "optimizer.target",
        "a name other than lr and weight_decay",
    ),
    (
        ["optimizer=rule", "optimizer.target=user_optim.sideways_decay"],
        "optimizer.target",
        "weight_decay is 'sideways'",
    ),
    (
        [*LION, "+optimizer.hp.gamma=0.5"],
        "optimizer.hp.gamma",
        "examples.lion declares beta1, beta2",
    ),
    ([*LION, "+optimizer.hp.lr=0.5"], "optimizer.hp.lr", "set it as optimizer.lr"),
    ([*LION, "+optimizer.hp.beta1=1.5"], "optimizer.hp.beta1", r"a number in \[0, 1\]"),
    ([*LION, "+optimizer.hp.beta1=high"], "optimizer.hp.beta1", r"a number in \[0, 1\]"),
    ([*LION, "+optimizer.hp.beta1=true"], "optimizer.hp.beta1", r"a number in \[0, 1\]"),
    ([*LION, "+optimizer.hp.beta1=nan"], "optimizer.hp.beta1", "a finite number"),
    ([*LION, "optimizer.weight_decay=-0.1"], "optimizer.weight_decay", "a value >= 0"),
    (["optimizer=sgd", "optimizer.weight_decay=-1"], "optimizer.weight_decay", "a value >= 0"),
    (["optimizer=gd_linesearch", "optimizer.weight_decay=-1"], "optimizer.weight_decay", ">= 0"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "message"), REFUSED, ids=[" ".join(r[0][1:]) for r in REFUSED]
)
def test_a_rule_that_cannot_train_is_refused_by_key(overrides, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        compose_spec(*overrides)
    assert error.value.key == key


def test_a_rules_hyperparameters_take_their_defaults_and_vary_per_run():
    spec = compose_spec(*LION, "+optimizer.hp.beta2=0.98", "optimizer.weight_decay=0.1")
    assert spec.optimizer.hp == {"beta1": 0.9, "beta2": 0.98}  # in the rule's order
    assert config.hyperparameters(spec.optimizer) == {
        "lr": 1e-4,
        "weight_decay": 0.1,
        "beta1": 0.9,
        "beta2": 0.98,
    }
    params = config.flatten(config.as_dict(spec))
    assert params["optimizer.hp.beta1"] == 0.9 and params["optimizer.target"] == "examples.lion"
    other = compose_spec(*LION, "+optimizer.hp.beta1=0.5", "optimizer.lr=0.01", "seed=1")
    assert engine.cohort_key(spec) == engine.cohort_key(other)
    assert config.fingerprint(spec) != config.fingerprint(other)


def test_a_hyperparameter_declares_a_closed_range():
    bounded = user_rules.Hyperparameter(0.5, low=0.0, high=1.0)
    assert bounded.allows(0.0) and bounded.allows(1.0) and not bounded.allows(1.01)
    assert user_rules.Hyperparameter(2.0, low=1.0).allows(1e9)
    assert user_rules.Hyperparameter(-3.0).describe() == "a number in [-inf, inf]"


def test_a_rule_with_a_lookahead_takes_its_gradient_there():
    """A rule may declare ``lookahead``: the engine evaluates the gradient at that point."""
    spec = compose_spec(
        "optimizer=rule", "optimizer.target=user_optim.looks_back", "trainer.steps=5"
    )
    problem = problem_module.build(spec)
    (result,) = engine.train_cohort([spec], problem)
    start = engine.initial_parameters([spec], problem.model)[0]
    assert len(user_optim.LooksBack.seen) == 5 and torch.isfinite(result.final_params).all()
    torch.testing.assert_close(user_optim.LooksBack.seen[0], start - 1.0)
