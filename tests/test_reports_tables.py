"""The comparison table on hand-made frames: best rate, medians, steps to target, divergence,
the Gabor global-minimum share, and escaping in Markdown and HTML."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import tidy_frame

from reports import tables


def frame_of(runs: list[dict]) -> pd.DataFrame:
    """Runs with a ``train`` list of losses at steps 0, 10, 20, ..."""
    return tidy_frame(
        [
            {
                "diverged": run.get("diverged", False),
                "problem": run.get("problem", "gabor_toy/gabor"),
                "model.name": run.get("model", "gabor"),
                "model.envelope": 32.0,
                "optimizer.name": run.get("optimizer", "sgd"),
                "schedule.name": "constant",
                "optimizer.lr": run["lr"],
                "wall_seconds": run.get("wall", 1.0),
                "curve": [{"step": 10 * i, "train_loss": x} for i, x in enumerate(run["train"])],
            }
            for run in runs
        ]
    )


def test_median_iqr_and_steps_to_target():
    assert tables.median_iqr(pd.Series([1.0, 2.0, 3.0, np.nan])) == "2 [1.5, 2.5]"
    assert tables.median_iqr(pd.Series([np.nan])) == "-"
    runs = frame_of([{"lr": 0.1, "train": [5.0, 3.0, 1.0]}, {"lr": 0.1, "train": [5.0, 4.0, 2.5]}])
    assert tables.steps_to_target(runs, 3.0) == 15.0  # firsts 10 and 20
    assert tables.steps_to_target(runs, 0.5) == np.inf


def test_the_comparison_table_reports_each_optimizer_at_its_best_rate():
    frame = frame_of(
        [
            {"lr": 0.1, "train": [9.0, 3.0, 0.7], "wall": 2.0},
            {"lr": 0.1, "train": [9.0, 4.0, 3.7], "wall": 4.0},
            {"lr": 1.0, "train": [9.0, 50.0], "diverged": True},
            {"lr": 1.0, "train": [9.0, 60.0], "diverged": True},
            {"lr": 0.05, "optimizer": "adam", "train": [9.0, 0.9, 0.65]},
            {"lr": 0.05, "optimizer": "adam", "train": [9.0, 1.0, 0.66]},
        ]
    )
    table = tables.comparison(frame).set_index("optimizer")
    assert table.loc["sgd", "best lr"] == 0.1 and table.loc["adam", "best lr"] == 0.05
    assert table.loc["sgd", "final train_loss"] == "2.2 [1.45, 2.95]"
    assert table.loc["sgd", "diverged"] == 0.5 and table.loc["adam", "diverged"] == 0.0
    assert table.loc["sgd", "global min"] == 0.5 and table.loc["adam", "global min"] == 1.0
    target = 1.1 * 0.655  # the lowest median final training loss: adam's
    assert np.isclose(table.loc["adam", "target"], target)
    assert (
        table.loc["adam", "steps to target"] == 20 and table.loc["sgd", "steps to target"] == np.inf
    )
    assert table.loc["sgd", "wall s"] == "3 [2.5, 3.5]"


def test_the_global_minimum_share_is_only_for_the_book_gabor_model():
    frame = frame_of(
        [{"lr": 0.1, "problem": "linear_toy/linear", "model": "linear", "train": [3, 1]}]
    )
    assert "global min" not in tables.comparison(frame).columns


def test_markdown_and_html_escape_what_they_show(tmp_path):
    table = pd.DataFrame(
        {"optimizer": ["<script>alert(1)</script>", "a|b"], "best lr": [0.1, np.nan]}
    )
    text = tables.markdown(table)
    assert "a\\|b" in text and "| - |" in text
    page = tables.html_table(table)
    assert "<script>" not in page and "&lt;script&gt;" in page
    paths = tables.write(table, tmp_path)
    assert [p.suffix for p in paths] == [".md", ".csv", ".html"]
    assert pd.read_csv(paths[1])["optimizer"].tolist() == table["optimizer"].tolist()


def test_without_a_target_there_are_no_steps_to_it():
    runs = frame_of([{"lr": 0.1, "train": [np.nan]}])
    assert np.isnan(tables.steps_to_target(runs, np.nan))
