"""The lecture's claims measured on hand-made frames: supported, contradicted, untestable."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import tidy_frame

from reports import claims, surfaces

LINEAR = {
    "problem": "linear_toy/linear",
    "dataset.name": "linear_toy",
    "model.name": "linear",
    "loss.name": "least_squares",
    "loss.reduction": "sum",
    "loss.scale": 1.0,
    "schedule.name": "constant",
}


def linear_gd_frame(final: float) -> pd.DataFrame:
    curve = [{"step": 0, "train_loss": 50.0}, {"step": 9, "train_loss": final}]
    return tidy_frame([{**LINEAR, "optimizer.name": "gd", "optimizer.lr": 0.01, "curve": curve}])


def test_gradient_descent_on_the_linear_problem_is_checked_against_least_squares():
    spec = surfaces.spec_of(linear_gd_frame(1.0).iloc[0])
    x, y = surfaces.training_data(spec)
    phi, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(x)), x[:, 0]]), y, rcond=None)
    optimum = surfaces.loss_at(spec, phi)
    assert 0 < optimum < 12.367  # below the loss at the check point (0.6, -0.2)
    assert claims.convex_gd(linear_gd_frame(optimum * 1.001)).verdict == "supported"
    found = claims.convex_gd(linear_gd_frame(optimum * 2))
    assert found.verdict == "contradicted" and "100.00% above" in found.measured
    empty = linear_gd_frame(1.0).assign(**{"optimizer.name": "adam"})
    assert claims.convex_gd(empty).verdict == "not testable here"


def sweep_frame(losses: dict[str, dict[float, float]]) -> pd.DataFrame:
    """Final losses by optimizer and rate, two seeds each, on one problem."""
    runs = []
    for optimizer, by_rate in losses.items():
        for lr, final in by_rate.items():
            for seed in (0, 1):
                curve = [{"step": 0, "train_loss": 10.0}, {"step": 9, "train_loss": final}]
                runs.append(
                    {
                        **LINEAR,
                        "optimizer.name": optimizer,
                        "optimizer.lr": lr,
                        "seed": seed,
                        "curve": curve,
                    }
                )
    return tidy_frame(runs)


def test_the_learning_rate_range_near_the_best_loss_is_counted_in_decades():
    frame = sweep_frame(
        {
            "adam": {1e-3: 1.05, 1e-2: 1.0, 1e-1: 1.08, 1.0: 3.0},
            "sgd": {1e-3: 2.0, 1e-2: 1.0, 1e-1: 1.5, 1.0: 5.0},
        }
    )
    found = claims.adam_less_sensitive(frame)
    assert found.verdict == "supported" and "Adam 2.00, SGD 0.00 decades" in found.measured
    flipped = sweep_frame(
        {"adam": {1e-3: 2.0, 1e-2: 1.0, 1e-1: 2.0}, "sgd": {1e-3: 1.0, 1e-2: 1.0, 1e-1: 1.0}}
    )
    assert claims.adam_less_sensitive(flipped).verdict == "contradicted"
    one_rate = sweep_frame({"adam": {1e-2: 1.0}, "sgd": {1e-2: 1.0}})
    assert claims.adam_less_sensitive(one_rate).verdict == "not testable here"


def test_nesterov_is_compared_with_momentum_at_their_best_rates():
    better = sweep_frame({"momentum": {0.1: 1.0, 0.2: 0.9}, "nesterov": {0.1: 0.8}})
    assert claims.nesterov_not_always_better(better).verdict == "contradicted"
    worse = sweep_frame({"momentum": {0.1: 1.0}, "nesterov": {0.1: 1.2}})
    found = claims.nesterov_not_always_better(worse)
    assert found.verdict == "supported" and "1 of 1" in found.measured


def test_normalized_steps_keep_their_length():
    path = [(0, 0.0, 0.0), (1, 0.1, 0.1), (2, 0.0, 0.0), (3, 0.1, 0.1)]
    curve = [{"step": s, "phi0": a, "phi1": b, "train_loss": 1.0} for s, a, b in path]
    frame = tidy_frame(
        [{**LINEAR, "optimizer.name": "normalized", "optimizer.lr": 0.1, "curve": curve}]
    )
    found = claims.normalized_never_settles(frame)
    assert found.verdict == "supported" and found.measured.startswith("the last step is 1.41")
    settled = [dict(p, phi0=0.001, phi1=0.001) if p["step"] == 3 else p for p in curve]
    frame = tidy_frame(
        [{**LINEAR, "optimizer.name": "normalized", "optimizer.lr": 0.1, "curve": settled}]
    )
    assert claims.normalized_never_settles(frame).verdict == "contradicted"


def test_sgd_noise_compares_the_end_of_the_curves():
    steady = [{"step": s, "train_loss": 1.0 + 1e-6 * s} for s in range(40)]
    noisy = [{"step": s, "train_loss": 1.0 + 0.2 * (s % 2)} for s in range(40)]
    frame = tidy_frame(
        [
            {**LINEAR, "optimizer.name": "gd", "optimizer.lr": 0.1, "curve": steady},
            {**LINEAR, "optimizer.name": "sgd", "optimizer.lr": 0.1, "curve": noisy},
        ]
    )
    assert claims.sgd_noise(frame).verdict == "supported"
    swapped = frame.assign(
        **{"optimizer.name": frame["optimizer.name"].map({"gd": "sgd", "sgd": "gd"})}
    )
    assert claims.sgd_noise(swapped).verdict == "contradicted"


def diverged_at_step_0(optimizer: str) -> dict:
    """A run whose only point is step 0, where its loss and parameters are already lost."""
    lost = {"step": 0, "train_loss": np.nan, "phi0": np.inf, "phi1": np.inf}
    return {**LINEAR, "optimizer.name": optimizer, "optimizer.lr": 0.5, "diverged": True,
            "curve": [lost]}  # fmt: skip


def test_claims_measure_a_frame_with_runs_diverged_at_step_0():
    found = claims.convex_gd(tidy_frame([diverged_at_step_0("gd")]))
    assert found.verdict == "contradicted" and "inf% above" in found.measured
    path = [{"step": s, "phi0": 0.1 * s, "phi1": 0.0, "train_loss": 1.0} for s in range(3)]
    normalized = {**LINEAR, "optimizer.name": "normalized", "optimizer.lr": 0.1, "curve": path}
    frame = tidy_frame([normalized, diverged_at_step_0("normalized")])
    assert claims.normalized_never_settles(frame).verdict == "supported"
    steady = [{"step": s, "train_loss": 1.0 + 1e-6 * s} for s in range(40)]
    noisy = [{"step": s, "train_loss": 1.0 + 0.2 * (s % 2)} for s in range(40)]
    frame = tidy_frame(
        [
            {**LINEAR, "optimizer.name": "gd", "optimizer.lr": 0.1, "curve": steady},
            {**LINEAR, "optimizer.name": "sgd", "optimizer.lr": 0.1, "curve": noisy},
            diverged_at_step_0("gd"),
        ]
    )
    assert claims.sgd_noise(frame).verdict == "supported"
