"""Search spaces, samplers and the best trial (``harness.search``), and objectives
(``harness.objectives``): pure functions, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import qmc

from harness import objectives, search
from harness.config import ConfigError
from harness.sweep import tuning

SPACES = {
    "sgd": {"optimizer.lr": "tag(log, interval(1e-4, 1))"},
    "momentum": {
        "optimizer.lr": "tag(log, interval(1e-4, 1))",
        "optimizer.beta": "interval(0.5, 0.99)",
    },
}


def parsed(**values) -> search.Search:
    return search.parse({"spaces": SPACES, **values}, tuning.optimizer_schemas())


def test_a_dimension_maps_the_unit_interval_linearly_on_a_log_scale_or_onto_choices():
    linear = search.dimension("k", "optimizer.beta", "interval(0.5, 0.9)")
    assert (linear.low, linear.high, linear.log) == (0.5, 0.9, False)
    assert float(linear.value(0.25)) == pytest.approx(0.6)
    log = search.dimension("k", "optimizer.lr", "tag(log, interval(1e-4, 1))")
    assert float(log.value(0.5)) == pytest.approx(1e-2)
    assert float(log.value(0.0)) == pytest.approx(1e-4)
    whole = search.dimension("k", "trainer.batch_size", "int(interval(8, 11))")
    assert [whole.value(u) for u in (0.0, 0.24, 0.26, 0.99)] == ["8", "8", "9", "11"]
    around_zero = search.dimension("k", "n", "int(interval(-2, 1))")
    assert [around_zero.value(u) for u in (0.0, 0.2, 0.3, 0.6, 0.99)] == [
        "-2",
        "-2",
        "-1",
        "0",
        "1",
    ]
    log_whole = search.dimension("k", "n", "tag(log, int(interval(5, 50)))")
    assert log_whole.value(0.0) == "5" and log_whole.value(0.999) == "50"
    picked = search.dimension("k", "optimizer.lookahead", "choice(book, slide)")
    assert [picked.value(u) for u in (0.1, 0.49, 0.5, 0.99)] == ["book", "book", "slide", "slide"]
    assert search.dimension("k", "schedule", "a,b,c").choices == ("a", "b", "c")
    fixed = search.dimension("k", "optimizer.target", "examples.lion")
    assert not fixed.drawn and fixed.value(0.7) == "examples.lion"


def test_the_samplers_draw_the_same_points_from_the_same_seed():
    settings = search.SearchSettings(budget=8, sampler="quasirandom", sequence="halton", seed=3)
    points = search.unit_points(8, 2, settings)
    expected = qmc.Halton(2, scramble=True, rng=np.random.default_rng(3)).random(8)
    np.testing.assert_array_equal(points, expected)
    np.testing.assert_array_equal(points, search.unit_points(8, 2, settings))
    other_seed = search.unit_points(8, 2, search.SearchSettings(seed=4))
    assert not np.array_equal(points, other_seed)
    sobol = search.unit_points(8, 2, search.SearchSettings(sequence="sobol", seed=3))
    random = search.unit_points(8, 2, search.SearchSettings(sampler="random", seed=3))
    np.testing.assert_array_equal(random, np.random.default_rng(3).random((8, 2)))
    for drawn in (points, sobol, random):
        assert drawn.shape == (8, 2) and ((drawn >= 0) & (drawn < 1)).all()
    # a quasi-random sequence covers each half of each axis with half the points
    assert ((points < 0.5).sum(axis=0) == 4).all()


@pytest.mark.parametrize(
    "sampler, sequence", [("quasirandom", "halton"), ("quasirandom", "sobol"), ("random", "halton")]
)
def test_every_optimizer_gets_the_budget_and_shares_the_learning_rates(sampler, sequence):
    spaces = {"momentum": SPACES["momentum"], "sgd": SPACES["sgd"]}  # lr second, then first
    found = search.parse(
        {"spaces": spaces, "budget": 5, "seed": 1, "sampler": sampler, "sequence": sequence},
        tuning.optimizer_schemas(),
    )
    sgd, momentum = search.trials(found, "sgd"), search.trials(found, "momentum")
    assert len(sgd) == len(momentum) == 5
    assert sgd[0][0] == "optimizer=sgd" and sgd[0][-1] == "++tracking.tags.stage=tune"
    rates = [
        [o for trial in t for o in trial if o.startswith("optimizer.lr=")] for t in (sgd, momentum)
    ]
    assert rates[0] == rates[1]  # the same seed: the same rates for each optimizer
    betas = [float(o.partition("=")[2]) for t in momentum for o in t if "beta" in o]
    assert len(set(betas)) == 5 and all(0.5 <= b <= 0.99 for b in betas)
    assert search.trials(found, "sgd") == sgd  # and the same trials every time


def test_a_preset_optimizer_takes_a_space_its_keys_checked_when_composed():
    found = search.parse(
        {"spaces": {"lion": {"optimizer.lr": "tag(log, interval(1e-5, 1e-2))"}}},
        tuning.optimizer_schemas(),
    )
    assert search.trials(found, "lion")[0][0] == "optimizer=lion"
    with pytest.raises(ConfigError, match="the space's name chooses the optimizer"):
        search.parse({"spaces": {"lion": {"optimizer": "adam"}}}, tuning.optimizer_schemas())


def test_the_best_trial_is_the_lowest_finite_objective_or_the_highest_accuracy():
    values = [0.5, math.inf, None, 0.2, 0.2, 0.9]
    assert search.best(values, maximize=False) == 3  # the first of a tie
    assert search.best(values, maximize=True) == 5
    assert search.best([math.inf, None, -math.inf], maximize=False) is None


def test_reruns_take_the_seeds_after_the_trials_seed():
    trial = [
        "+problem=x",
        "seed=2",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "++tracking.tags.stage=tune",
    ]
    assert search.reruns(trial, 2, 2) == [
        [
            "+problem=x",
            "optimizer=sgd",
            "optimizer.lr=0.1",
            "seed=3",
            "++tracking.tags.stage=rerun",
        ],
        [
            "+problem=x",
            "optimizer=sgd",
            "optimizer.lr=0.1",
            "seed=4",
            "++tracking.tags.stage=rerun",
        ],
    ]


@pytest.mark.parametrize(
    "values, key, allowed",
    [
        ({"budget": 0}, "hydra.sweeper.search.budget", "expected an integer >= 1"),
        ({"sampler": "grid"}, "hydra.sweeper.search.sampler", "random, quasirandom"),
        ({"sequence": "lattice"}, "hydra.sweeper.search.sequence", "halton, sobol"),
        ({"reruns": -1}, "hydra.sweeper.search.reruns", "expected an integer >= 0"),
        ({"trials": 3}, "hydra.sweeper.search.trials", "expected one of budget"),
        (
            {"spaces": {"sgd": {"optimizer.lr": "interval(0.1, 0.1)"}}},
            "hydra.sweeper.search.spaces.sgd.optimizer.lr",
            "low < high",
        ),
        (
            {"spaces": {"sgd": {"optimizer.lr": "interval(1, 0.1)"}}},
            "hydra.sweeper.search.spaces.sgd.optimizer.lr",
            "low < high",
        ),
        (
            {"spaces": {"sgd": {"optimizer.lr": "tag(log, interval(0, 1))"}}},
            "hydra.sweeper.search.spaces.sgd.optimizer.lr",
            "a log scale needs low > 0",
        ),
        (
            {"spaces": {"sgd": {"optimizer.beta": "interval(0.5, 0.9)"}}},
            "hydra.sweeper.search.spaces.sgd.optimizer.beta",
            "sgd has no hyperparameter beta; it has lr, weight_decay",
        ),
        (
            {"spaces": {"lbfgs": {"optimizer.lr": "interval(0.1, 1)"}}},
            "hydra.sweeper.search.spaces",
            "expected optimizers (conf/optimizer)",
        ),
        ({"spaces": {}}, "hydra.sweeper.search.spaces", "a space per optimizer"),
        (
            {"spaces": {"sgd": {"optimizer.lr": "interval(0.1"}}},
            "hydra.sweeper.search.spaces.sgd.optimizer.lr",
            "Hydra's override grammar",
        ),
    ],
)
def test_a_bad_search_is_refused_naming_its_key(values, key, allowed):
    with pytest.raises(ConfigError) as caught:
        search.parse({"spaces": SPACES, **values}, tuning.optimizer_schemas())
    assert caught.value.key == key
    assert allowed in caught.value.allowed


def test_objectives_default_to_the_validation_loss_and_never_the_test_split():
    assert objectives.resolve("auto", has_validation=True, classifies=True) == "val_loss"
    assert objectives.resolve("auto", has_validation=False, classifies=False) == "train_loss"
    assert objectives.resolve("val_accuracy", True, True) == "val_accuracy"
    for name, has_validation, classifies in (
        ("test_loss", True, True),
        ("val_loss", False, True),
        ("train_accuracy", True, False),
        ("lr", True, True),
    ):
        with pytest.raises(ConfigError) as caught:
            objectives.resolve(name, has_validation, classifies)
        assert caught.value.key == "objective"
    with pytest.raises(ConfigError, match="never tuned on"):
        objectives.resolve("test_accuracy", True, True)


def test_a_diverged_run_reports_the_worst_objective():
    finals = {"val_loss": 0.25, "val_accuracy": 0.9}
    assert objectives.value("val_loss", finals, diverged=False) == 0.25
    assert objectives.value("val_loss", finals, diverged=True) == math.inf
    assert objectives.value("val_accuracy", finals, diverged=True) == -math.inf
    assert objectives.value("val_loss", {"val_loss": math.nan}, diverged=False) == math.inf
    assert objectives.maximized("val_accuracy") and not objectives.maximized("auto")
