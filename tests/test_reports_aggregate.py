"""Aggregation and selection on small hand-made frames, NaN and diverged rows included."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import tidy_frame

from reports import aggregate


def runs_frame(rows: list[dict]) -> pd.DataFrame:
    """Runs on digits/mlp with a ``curve`` of (step, train, val) points."""
    return tidy_frame(
        [
            {
                "status": run.get("status", "FINISHED"),
                "diverged": run.get("diverged", False),
                "problem": "digits/mlp",
                "optimizer.name": run.get("optimizer", "sgd"),
                "schedule.name": "constant",
                "optimizer.lr": run["lr"],
                "seed": run.get("seed", 0),
                "curve": [{"step": s, "train_loss": t, "val_loss": v} for s, t, v in run["curve"]],
            }
            for run in rows
        ]
    )


def test_a_median_band_is_the_interquartile_range():
    out = aggregate.band(pd.Series([1.0, 2.0, 3.0, 4.0, np.nan]))
    assert out["n"] == 4 and out["center"] == 2.5
    assert (out["low"], out["high"]) == (1.75, 3.25)


def test_a_mean_band_is_the_student_t_interval():
    values = pd.Series([1.0, 2.0, 3.0])
    out = aggregate.band(values, "mean")
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert out["center"] == 2.0
    assert out["low"] == pytest.approx(2 - half) and out["high"] == pytest.approx(2 + half)
    single = aggregate.band(pd.Series([5.0]), "mean")
    assert (single["low"], single["center"], single["high"]) == (5.0, 5.0, 5.0)
    empty = aggregate.band(pd.Series([np.nan]))
    assert empty["n"] == 0 and np.isnan(empty["center"])
    with pytest.raises(ValueError, match="center='mode'"):
        aggregate.band(values, "mode")


def test_curve_bands_follow_the_runs_that_are_left():
    frame = runs_frame(
        [
            {"lr": 0.1, "seed": 0, "curve": [(0, 4.0, 4.0), (1, 2.0, 2.0), (2, 1.0, 1.0)]},
            {"lr": 0.1, "seed": 1, "curve": [(0, 4.0, 4.0), (1, 3.0, 3.0), (2, 2.0, 2.0)]},
            {  # diverged after step 1: its curve stops there
                "lr": 0.1,
                "seed": 2,
                "diverged": True,
                "curve": [(0, 4.0, 4.0), (1, 9.0, 9.0), (2, np.nan, np.nan)],
            },
        ]
    )
    out = aggregate.curve_bands(frame, ["optimizer.name"], "train_loss").set_index("step")
    assert out["n"].tolist() == [3, 3, 2]
    assert out.loc[1, "center"] == 3.0 and out.loc[2, "center"] == 1.5


def test_final_values_take_the_last_point_of_each_run():
    frame = runs_frame(
        [
            {"lr": 0.1, "curve": [(0, 4.0, 5.0), (5, 1.0, 2.0), (9, 0.5, np.nan)]},
            {"lr": 0.2, "status": "FAILED", "curve": [(0, np.nan, np.nan)]},
        ]
    )
    finals = aggregate.final_values(frame, "val_loss").set_index("run_id")
    assert finals.loc["r0", "final"] == 2.0 and np.isnan(finals.loc["r1", "final"])
    assert "step" not in finals.columns and finals.loc["r1", "status"] == "FAILED"


def test_the_best_rate_is_chosen_on_validation_never_on_test():
    frame = runs_frame(
        [
            {"lr": 0.01, "seed": 0, "curve": [(0, 3.0, 3.0), (9, 0.9, 1.0)]},
            {"lr": 0.01, "seed": 1, "curve": [(0, 3.0, 3.0), (9, 0.9, 1.2)]},
            {"lr": 0.1, "seed": 0, "curve": [(0, 3.0, 3.0), (9, 0.1, 0.8)]},
            {"lr": 0.1, "seed": 1, "curve": [(0, 3.0, 3.0), (9, 0.1, 0.9)]},
            {"lr": 1.0, "seed": 0, "curve": [(0, 3.0, 3.0), (9, 0.01, 0.01)], "diverged": True},
            {"lr": 1.0, "seed": 1, "curve": [(0, 3.0, 3.0), (9, 0.01, 0.01)], "diverged": True},
        ]
    )
    frame["test_loss"] = np.where(frame["optimizer.lr"] == 0.01, 0.0, 5.0)  # a trap
    best = aggregate.best_learning_rates(frame)
    (row,) = best.to_dict("records")
    assert row["optimizer.lr"] == 0.1 and row["metric"] == "val_loss"
    assert row["score"] == pytest.approx(0.85) and row["runs"] == 2 and row["diverged"] == 0


def test_without_validation_the_training_loss_selects_and_divergence_loses():
    frame = runs_frame(
        [
            {"lr": 0.1, "optimizer": "adam", "curve": [(0, 3.0, np.nan), (9, 1.0, np.nan)]},
            {
                "lr": 1.0,
                "optimizer": "adam",
                "curve": [(0, 3.0, np.nan), (9, 0.5, np.nan)],
                "diverged": True,
            },
            {"lr": 0.1, "optimizer": "sgd", "curve": [(0, 3.0, np.nan), (9, 2.0, np.nan)]},
            {"lr": 1.0, "optimizer": "sgd", "curve": [(0, 3.0, np.nan), (9, 1.5, np.nan)]},
        ]
    )
    best = aggregate.best_learning_rates(frame).set_index("optimizer.name")
    assert set(best["metric"]) == {"train_loss"}
    assert best.loc["adam", "optimizer.lr"] == 0.1 and best.loc["sgd", "optimizer.lr"] == 1.0


def test_when_every_rate_diverged_the_smaller_rate_is_reported_with_its_divergence():
    frame = runs_frame(
        [
            {"lr": 0.5, "diverged": True, "curve": [(0, 3.0, 3.0), (2, 1.0, 1.0)]},
            {"lr": 1.0, "diverged": True, "curve": [(0, 3.0, 3.0), (2, 0.5, 0.5)]},
        ]
    )
    (row,) = aggregate.best_learning_rates(frame).to_dict("records")
    assert row["optimizer.lr"] == 0.5 and row["score"] == np.inf and row["diverged"] == 1


def test_a_curve_without_points_has_no_bands():
    lost = tidy_frame([{"optimizer.name": "sgd", "curve": [{"step": 0, "train_loss": np.nan}]}])
    bands = aggregate.curve_bands(lost, ["optimizer.name"], "train_loss")
    assert bands.empty
    assert list(bands.columns) == ["optimizer.name", "step", "n", "center", "low", "high"]
