"""How easy is an optimizer to tune (``reports.tuning``): the expected best of k trials by its
exact order-statistics formula, checked against every subset and by hand, the budget to come
within 5%, lost trials, the tuning table and the claim, on hand-made frames."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from conftest import tidy_frame

from reports import claims, tuning

PROBLEM = {"problem": "digits/mlp", "dataset.name": "digits", "model.name": "mlp"}


def test_the_expected_best_of_k_trials_is_the_mean_best_over_every_subset():
    values = np.array([0.7, 0.2, 0.9, 0.4, 0.4, 1.5])
    for maximize in (False, True):
        curve = tuning.expected_best(values, maximize)
        pick = max if maximize else min
        for k in range(1, len(values) + 1):
            bests = [pick(subset) for subset in itertools.combinations(values, k)]
            row = curve[curve["k"] == k].iloc[0]
            assert row["center"] == pytest.approx(np.mean(bests))
            spread = np.std(bests)
            assert row["low"] == pytest.approx(max(np.mean(bests) - spread, values.min()))
            assert row["high"] == pytest.approx(min(np.mean(bests) + spread, values.max()))


def test_the_expected_best_by_hand():
    curve = tuning.expected_best(np.array([3.0, 1.0, 2.0]))
    # k=1: the mean; k=2: 1 with probability 2/3, 2 with 1/3; k=3: the best
    assert curve["center"].tolist() == pytest.approx([2.0, 4 / 3, 1.0])
    assert curve["high"].iloc[0] == pytest.approx(2 + math.sqrt(2 / 3))
    assert curve["low"].iloc[2] == curve["high"].iloc[2] == 1.0
    assert tuning.budget_within(curve, 1.0) == 3  # 1.05: only k = 3
    assert tuning.budget_within(curve, 1.3) == 2  # 1.365
    assert tuning.budget_within(curve, 0.5) == math.inf
    accuracies = tuning.expected_best(np.array([0.5, 0.9, 0.7]), maximize=True)
    assert accuracies["center"].tolist() == pytest.approx([0.7, 0.9 * 2 / 3 + 0.7 / 3, 0.9])
    assert tuning.budget_within(accuracies, 0.94, maximize=True) == 3  # 0.893
    assert tuning.budget_within(accuracies, 0.95, maximize=True) == math.inf  # 0.9025


def trial(optimizer: str, lr: float, final: float | None, stage: str = "tune", **extra) -> dict:
    """A run with validation loss 2.0 at step 0 and ``final`` (None: diverged) at step 10."""
    end = {"step": 10, "val_loss": final, "val_accuracy": 0.9} if final is not None else None
    curve = [{"step": 0, "val_loss": 2.0, "val_accuracy": 0.1}] + ([end] if end else [])
    return {
        **PROBLEM,
        "optimizer.name": optimizer,
        "optimizer.lr": lr,
        "stage": stage,
        "diverged": final is None,
        "seed": extra.pop("seed", 0),
        "curve": curve,
        **extra,
    }


def test_a_lost_trial_counts_as_no_better_than_not_training_nor_any_finished_trial():
    frame = tidy_frame([trial("sgd", 0.1, 0.5), trial("sgd", 1.0, 0.8), trial("sgd", 9.0, None)])
    scored = tuning.scored_trials(frame).sort_values("optimizer.lr")
    assert scored["value"].tolist() == [0.5, 0.8, 2.0]  # the initial loss
    worse = tidy_frame([trial("sgd", 0.1, 0.5), trial("sgd", 1.0, 3.0), trial("sgd", 9.0, None)])
    assert tuning.scored_trials(worse).sort_values("optimizer.lr")["value"].tolist() == [
        0.5,
        3.0,
        3.0,
    ]
    failed = tidy_frame([trial("sgd", 0.1, 0.5), trial("sgd", 1.0, 0.7, status="FAILED")])
    assert tuning.scored_trials(failed).sort_values("optimizer.lr")["value"].tolist() == [0.5, 2.0]
    accuracy = tuning.scored_trials(frame, accuracy=True).sort_values("optimizer.lr")
    assert accuracy["value"].tolist() == [0.9, 0.9, 0.1]


def tuning_frame() -> pd.DataFrame:
    """SGD: 4 trials, one near its best; Adam: 4 trials, three near its best; each best
    rerun with 2 seeds."""
    runs = [
        trial("sgd", lr, final) for lr, final in ((0.01, 1.0), (0.1, 0.5), (1.0, 1.2), (9.0, None))
    ]
    runs += [
        trial("adam", lr, final)
        for lr, final in ((1e-4, 0.52), (1e-3, 0.5), (1e-2, 0.51), (1.0, 1.5))
    ]
    runs += [trial("sgd", 0.1, f, "rerun", seed=s) for s, f in ((1, 0.55), (2, 0.45))]
    runs += [trial("adam", 1e-3, f, "rerun", seed=s) for s, f in ((1, 0.6), (2, 0.4))]
    return tidy_frame(runs)


def test_the_tuning_table_gives_the_best_setting_its_reruns_and_the_budgets():
    frame = tuning_frame()
    assert tuning.has_search(frame) and len(tuning.not_trials(frame)["run_id"].unique()) == 4
    table = tuning.table(frame).set_index("optimizer")
    assert table.loc["sgd", "best setting"] == "optimizer.lr=0.1"
    assert table.loc["adam", "best setting"] == "optimizer.lr=0.001"
    assert table.loc["sgd", "best trial loss"] == 0.5 and table.loc["sgd", "reruns"] == 2
    assert table.loc["sgd", "rerun loss"] == "0.5 [0.45, 0.55]"
    assert table.loc["adam", "rerun accuracy"] == "0.9 [0.9, 0.9]"
    # SGD (0.5, 1.0, 1.2, 2.0): within 5% of 0.5 only at k = 4; Adam: at k = 2
    assert table.loc["sgd", "budget to 5% of best"] == 4
    assert table.loc["adam", "budget to 5% of best"] == 2
    curves = tuning.curves(frame)
    sgd = curves[curves["optimizer"] == "sgd"]
    assert sgd["center"].iloc[0] == pytest.approx((0.5 + 1.0 + 1.2 + 2.0) / 4)


def test_adam_less_sensitive_is_measured_on_the_tuning_budget():
    found = claims.adam_less_sensitive_to_tune(tuning_frame())
    assert found.verdict == "supported"
    assert "Adam 2 of 4, SGD 4 of 4 trials" in found.measured
    assert claims.adam_less_sensitive(tuning_frame()).verdict == "not testable here"
    grid_only = tuning_frame().drop(columns="stage")
    assert claims.adam_less_sensitive_to_tune(grid_only).verdict == "not testable here"


def test_without_reruns_the_best_setting_is_the_best_trials():
    frame = tuning_frame()
    trials_only = frame[frame["stage"].eq("tune")]
    table = tuning.table(trials_only).set_index("optimizer")
    assert table.loc["sgd", "best setting"] == "optimizer.lr=0.1"
    assert table.loc["sgd", "reruns"] == 0 and table.loc["sgd", "rerun loss"] == "-"
