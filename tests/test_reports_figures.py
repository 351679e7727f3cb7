"""The report's figures, each built from a small real sweep (files, axes and series), and the
accuracy figures from hand-made frames."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import tidy_frame
from matplotlib.collections import PathCollection
from matplotlib.contour import QuadContourSet

from harness import train
from reports import aggregate, figures
from reports.collect import collect

GRID = [
    "dataset=linear_toy,regression1d",
    "model=linear",
    "optimizer=sgd,adam",
    "optimizer.lr=0.01,0.1,30",
    "schedule=constant,cosine",
    "seed=0,1",
    "trainer.batch_size=4",
    "trainer.steps=30",
]


@pytest.fixture(scope="module")
def frame(tmp_path_factory, migrated_store):
    """48 runs: 2 problems x 2 optimizers x 3 rates (30 diverges) x 2 schedules x 2 seeds."""
    folder = tmp_path_factory.mktemp("figures")
    shutil.copy(migrated_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    argv = [
        "harness.train",
        "--multirun",
        f"tracking.uri={uri}",
        "tracking.experiment=figs",
        f"hydra.sweep.dir={folder}/m",
        "hydra.launcher.n_jobs=2",
        *GRID,
    ]
    old, sys.argv = sys.argv, argv
    try:
        train.main()
    finally:
        sys.argv = old
    return collect(uri, "figs")


def lines(axis) -> list:
    return [
        line
        for line in axis.get_lines()
        if line.get_label() and not line.get_label().startswith("_")
    ]


def test_the_sweep_has_diverged_runs_to_show(frame):
    runs = frame.drop_duplicates("run_id")
    assert len(runs) == 48 and runs["diverged"].sum() >= 4
    assert set(runs.loc[runs["diverged"], "optimizer.lr"]) == {30.0}


def test_convergence_draws_each_variant_at_its_best_rate(frame, tmp_path):
    figure = figures.convergence(frame)
    axes = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == ["linear_toy/linear", "regression1d/linear"]
    for axis in axes:
        labels = sorted(line.get_label() for line in lines(axis))
        assert labels == ["adam / constant", "adam / cosine", "sgd / constant", "sgd / cosine"]
        assert axis.get_yscale() == "log" and axis.get_xlabel() == "step"
    paths = figures.save(figure, tmp_path, "convergence")
    assert [p.name for p in paths] == ["convergence.png", "convergence.svg"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_sensitivity_marks_diverged_runs_at_the_top(frame):
    figure = figures.sensitivity(frame)
    runs = frame.drop_duplicates("run_id")
    for axis in (a for a in figure.axes if a.get_visible()):
        assert axis.get_xscale() == "log"
        problem = runs[runs["problem"] == axis.get_title()]
        drawn = {line.get_label(): line for line in lines(axis)}
        assert set(drawn) == {"adam / constant", "adam / cosine", "sgd / constant", "sgd / cosine"}
        for line in drawn.values():
            assert {0.01, 0.1} <= set(line.get_xdata()) <= {0.01, 0.1, 30.0}
        crosses = [c for c in axis.collections if isinstance(c, PathCollection)]
        diverged = problem[problem["diverged"]]
        assert len(diverged) and sum(len(c.get_offsets()) for c in crosses) == len(diverged)
        tops = np.concatenate([c.get_offsets()[:, 1] for c in crosses])
        assert np.allclose(tops, axis.get_ylim()[1])  # at the top, never 0, never dropped
        rates = np.concatenate([c.get_offsets()[:, 0] for c in crosses])
        assert sorted(rates) == sorted(diverged["optimizer.lr"])


def test_the_landscape_draws_every_trajectory_on_the_book_range(frame):
    figure = figures.landscape(frame, "linear_toy/linear")
    panels = [a for a in figure.axes if a.get_title()]
    assert len(panels) == 4  # one per variant
    for axis in panels:
        assert any(isinstance(c, QuadContourSet) for c in [axis.collections, *axis.get_children()])
        assert axis.get_xlim() == (0.0, 2.0) and axis.get_ylim() == (-1.0, 1.0)
        assert (
            len([ln for ln in axis.get_lines() if ln.get_marker() == "None"]) == 6
        )  # 3 lr x 2 seeds


def test_the_schedules_figure_has_a_line_per_schedule(frame):
    figure = figures.schedules(frame, "sgd")
    (axis,) = figure.axes
    assert sorted(line.get_label() for line in lines(axis)) == ["constant", "cosine"]


def test_performance_profiles_start_at_the_share_of_wins(frame):
    ratios = aggregate.performance_ratios(frame)
    assert list(ratios.index) == ["linear_toy/linear", "regression1d/linear"]
    assert (ratios.min(axis=1) == 1.0).all()
    figure = figures.performance_profiles(frame)
    (axis,) = figure.axes
    for line in lines(axis):
        share = (ratios[line.get_label()] <= 1.0).mean()
        assert line.get_ydata()[0] == share and line.get_ydata()[-1] <= 1.0


def test_bands_can_be_means_with_their_interval(frame):
    median = figures.convergence(frame, center="median").axes[0]
    mean = figures.convergence(frame, center="mean").axes[0]
    assert "mean, 95% interval" in mean.get_ylabel() and "median, IQR" in median.get_ylabel()
    assert [line.get_label() for line in lines(mean)] == [
        line.get_label() for line in lines(median)
    ]


def classifying_frame() -> pd.DataFrame:
    """Hand-made runs, 2 optimizers x 3 rates x 2 seeds x 3 epochs (10 steps each), on
    digits/SmallCnn (which classifies: accuracies) and diabetes/linear (which does not). The
    validation loss picks 0.1 for sgd and 0.01 for adam; adam at 1.0 diverges after epoch 0."""
    runs = []
    for problem in ("digits/SmallCnn", "diabetes/linear"):
        for optimizer, best in (("sgd", 0.1), ("adam", 0.01)):
            for lr in (0.01, 0.1, 1.0):
                for seed in (0, 1):
                    diverged = optimizer == "adam" and lr == 1.0
                    pace = 1.0 if lr == best else 0.5
                    curve = []
                    for epoch in range(3):
                        loss = 2.0 / (1 + pace * epoch) + 0.01 * seed
                        point = {"step": 10 * epoch, "epoch": epoch, "seconds": float(epoch)}
                        point |= {"train_loss": loss, "val_loss": loss}
                        if problem.startswith("digits"):
                            accuracy = 0.1 + 0.4 * pace * epoch + 0.01 * seed
                            point |= {"val_accuracy": accuracy, "test_accuracy": accuracy - 0.02}
                        if diverged and epoch > 0:
                            point = {key: np.nan for key in point} | {"step": 10 * epoch}
                        curve.append(point)
                    runs.append(
                        {
                            "diverged": diverged,
                            "problem": problem,
                            "optimizer.name": optimizer,
                            "optimizer.lr": lr,
                            "schedule.name": "constant",
                            "seed": seed,
                            "trainer.epochs": 3,
                            "curve": curve,
                        }
                    )
    return tidy_frame(runs)


def test_accuracy_curves_are_linear_and_drawn_for_classifying_problems_only():
    frame = classifying_frame()
    for metric, offset in (("val_accuracy", 0.0), ("test_accuracy", -0.02)):
        figure = figures.convergence(frame, metric, "epoch", log_y=False)
        (axis,) = [a for a in figure.axes if a.get_visible()]
        assert axis.get_title() == "digits/SmallCnn" and axis.get_yscale() == "linear"
        assert axis.get_xlabel() == "epoch" and axis.get_ylabel().startswith(metric)
        drawn = {line.get_label(): line for line in lines(axis)}
        assert sorted(drawn) == ["adam", "sgd"]
        for line in drawn.values():  # the best rate's median over seeds 0 and 1
            assert np.allclose(line.get_ydata(), np.array([0.105, 0.505, 0.905]) + offset)
    regression = frame[frame["problem"] == "diabetes/linear"].dropna(axis=1, how="all")
    assert "val_accuracy" not in regression.columns
    assert figures.accuracy_sensitivity(regression) is None


def test_accuracy_sensitivity_puts_diverged_runs_at_the_bottom():
    frame = classifying_frame()
    figure = figures.accuracy_sensitivity(frame)
    (axis,) = [a for a in figure.axes if a.get_visible()]
    assert axis.get_title() == "digits/SmallCnn" and axis.get_xscale() == "log"
    assert axis.get_yscale() == "linear" and "final val_accuracy" in axis.get_ylabel()
    drawn = {line.get_label(): line for line in lines(axis)}
    assert list(drawn["sgd"].get_xdata()) == [0.01, 0.1, 1.0]
    assert np.allclose(drawn["sgd"].get_ydata(), [0.505, 0.905, 0.505])
    assert list(drawn["adam"].get_xdata()) == [0.01, 0.1]  # 1.0 diverged
    (crosses,) = [c for c in axis.collections if isinstance(c, PathCollection)]
    offsets = crosses.get_offsets()
    assert list(offsets[:, 0]) == [1.0, 1.0]  # both seeds of adam at 1.0
    assert np.allclose(offsets[:, 1], axis.get_ylim()[0])  # at the bottom, never dropped


def decay_frame() -> pd.DataFrame:
    """Hand-made runs on breast_cancer/logistic: adam (L2) and a user rule (lion) x 2 rates x
    2 weight decays x 2 seeds; the final validation loss is lr + decay (+ 0.01 per seed), and
    lion at lr 1 with decay 0.1 diverges."""
    runs = []
    for name, target in (("adam", None), ("rule", "examples.lion")):
        for lr in (0.1, 1.0):
            for decay in (0.0, 0.1):
                for seed in (0, 1):
                    diverged = name == "rule" and lr == 1.0 and decay == 0.1
                    loss = np.nan if diverged else lr + decay + 0.01 * seed
                    runs.append(
                        {
                            "diverged": diverged,
                            "problem": "breast_cancer/logistic",
                            "optimizer.name": name,
                            "optimizer.target": target,
                            "optimizer.lr": lr,
                            "optimizer.weight_decay": decay,
                            "schedule.name": "constant",
                            "seed": seed,
                            "curve": [
                                {"step": 0, "train_loss": 2.0, "val_loss": 2.0},
                                {"step": 10, "train_loss": loss, "val_loss": loss},
                            ],
                        }
                    )
    return tidy_frame(runs)


def test_the_decay_grid_shows_each_optimizers_loss_over_rate_and_decay():
    frame = decay_frame()
    assert sorted(aggregate.variants(frame).unique()) == [
        "adam weight_decay=0.0",
        "adam weight_decay=0.1",
        "lion weight_decay=0.0",
        "lion weight_decay=0.1",
    ]
    figure = figures.decay_grid(frame)
    axes = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in axes] == [
        "breast_cancer/logistic: adam",
        "breast_cancer/logistic: lion",
    ]
    for axis, diverged in zip(axes, (False, True), strict=True):
        assert [t.get_text() for t in axis.get_xticklabels()] == ["0.1", "1"]
        assert [t.get_text() for t in axis.get_yticklabels()] == ["0", "0.1"]
        cells = axis.collections[0].get_array().reshape(-1)
        assert np.allclose(cells[:3], [0.105, 1.005, 0.205])  # median over the two seeds
        assert bool(np.ma.is_masked(cells[3])) == diverged  # lion at 1, 0.1 diverged: blank
        (best,) = axis.patches
        assert best.get_xy() == (0, 0)  # lr 0.1, no decay
    assert figures.decay_grid(frame.drop(columns="optimizer.weight_decay")) is None
