"""Aggregation over seeds and selection of the best learning rate: pure functions of the tidy
frame (see ``reports.collect``), so each is tested on small hand-made frames.

- A *band* summarises the values of a group of runs (usually the seeds of one configuration):
  the median with the interquartile range [q25, q75] (default), or the mean with its 95%
  Student-t interval mean +- t(0.975, n-1) s / sqrt(n). NaN values are left out; ``n`` says
  how many values remain.
- A run's *final* value of a metric is its last non-NaN value. A diverged or failed run has no
  meaningful final value: for selection it counts as +inf (worse than any finite loss), never
  as 0 and never dropped silently.
- The best learning rate per (problem, optimizer, schedule) minimises the median final
  validation loss over seeds, or the training loss where the problem has no validation split.
  The test split is never used to select.
- A classification problem's accuracy is read, like its loss, on the validation split, or on
  the training split where it has none (``accuracy_finals``); a diverged or failed run's
  accuracy counts as -inf.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from harness.records import Status, Tag

SELECTION_GROUPS = ("problem", "optimizer.name", "schedule.name")
LEARNING_RATE = "optimizer.lr"


def band(values: pd.Series, center: str = "median") -> pd.Series:
    """``n``, ``center``, ``low``, ``high`` of the non-NaN values (see the module docstring)."""
    finite = values.dropna().astype(float)
    n = len(finite)
    if n == 0:
        return pd.Series({"n": 0, "center": np.nan, "low": np.nan, "high": np.nan})
    if center == "median":
        low, mid, high = np.quantile(finite, [0.25, 0.5, 0.75])
    elif center == "mean":
        mid = finite.mean()
        half = stats.t.ppf(0.975, n - 1) * finite.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
        low, high = mid - half, mid + half
    else:
        raise ValueError(f"center={center!r}: expected median or mean")
    return pd.Series({"n": n, "center": mid, "low": low, "high": high})


def bands(frame: pd.DataFrame, by: Sequence[str], value: str, center: str = "median"):
    """One band per group of ``by``: columns ``by`` + n, center, low, high (no rows for an
    empty frame)."""
    if frame.empty:
        return pd.DataFrame(columns=[*by, "n", "center", "low", "high"])
    grouped = frame.groupby(list(by), dropna=False, sort=True)[value]
    out = grouped.apply(lambda values: band(values, center)).unstack()
    out["n"] = out["n"].astype(int)
    return out.reset_index()


def curve_bands(frame, by: Sequence[str], metric: str, x: str = "step", center: str = "median"):
    """A band over runs at every ``x`` of the curves of ``metric``, per group of ``by``. A run
    that diverged stops contributing after its last point; ``n`` shows it."""
    points = frame.dropna(subset=[metric])
    return bands(points, [*by, x], metric, center)


def final_values(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run: the run's columns (config, status, diverged, ...) and ``final``, the
    last non-NaN value of ``metric`` (NaN if the run has none)."""
    ordered = frame.sort_values(["run_id", "step"])
    last = ordered.dropna(subset=[metric]).groupby("run_id")[metric].last()
    runs = ordered.drop_duplicates("run_id").set_index("run_id")
    runs = runs.drop(columns=[c for c in ("step", "epoch", "seconds") if c in runs.columns])
    return runs.assign(final=last.reindex(runs.index)).reset_index()


def selection_metric(frame: pd.DataFrame) -> str:
    """``val_loss`` where the frame has a validation split, else ``train_loss``."""
    has_val = "val_loss" in frame.columns and frame["val_loss"].notna().any()
    return "val_loss" if has_val else "train_loss"


def selection_finals(frame: pd.DataFrame) -> pd.DataFrame:
    """``final_values`` of each problem's selection metric (validation loss where that problem
    has a validation split), with ``metric`` naming it and ``score`` (see selection_score)."""
    parts = []
    for _, part in frame.groupby("problem", sort=True):
        metric = selection_metric(part)
        finals = final_values(part, metric)
        parts.append(finals.assign(metric=metric, score=selection_score(finals)))
    return pd.concat(parts, ignore_index=True)


def lost(finals: pd.DataFrame) -> pd.Series:
    """Whether each run of ``finals`` diverged, failed or has no final value."""
    return finals[Tag.DIVERGED] | finals["status"].ne(Status.FINISHED) | finals["final"].isna()


def selection_score(finals: pd.DataFrame) -> pd.Series:
    """The final loss of each run, +inf for a run that diverged, failed or has no value."""
    return finals["final"].where(~lost(finals), np.inf)


def accuracy_metric(frame: pd.DataFrame) -> str | None:
    """``val_accuracy`` where the frame has a validation accuracy, else ``train_accuracy``;
    None without any accuracy (a regression problem)."""
    for metric in ("val_accuracy", "train_accuracy"):
        if metric in frame.columns and frame[metric].notna().any():
            return metric
    return None


def accuracy_finals(frame: pd.DataFrame) -> pd.DataFrame:
    """``final_values`` of each classification problem's accuracy (see accuracy_metric), with
    ``metric`` naming it and ``score``: the final accuracy, -inf for a run that diverged,
    failed or has none. Problems without an accuracy are left out (an empty frame if all)."""
    parts = []
    for _, part in frame.groupby("problem", sort=True):
        metric = accuracy_metric(part)
        if metric is not None:
            finals = final_values(part, metric)
            score = finals["final"].where(~lost(finals), -np.inf)
            parts.append(finals.assign(metric=metric, score=score))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def best_learning_rates(
    frame: pd.DataFrame, groups: Sequence[str] = SELECTION_GROUPS, lr: str = LEARNING_RATE
) -> pd.DataFrame:
    """Per group, the learning rate whose median score over seeds is lowest (the smaller rate
    on a tie). Columns: ``groups``, ``lr``, ``metric`` (what was minimised), ``score`` (the
    median), ``runs`` and ``diverged`` (how many of the winner's runs diverged)."""
    groups = [g for g in groups if g in frame.columns]
    finals = selection_finals(frame)
    per_rate = finals.groupby([*groups, lr], dropna=False).agg(
        metric=("metric", "first"),
        score=("score", "median"),
        runs=("run_id", "size"),
        diverged=("diverged", "sum"),
    )
    per_rate = per_rate.reset_index().sort_values([*groups, "score", lr])
    best = per_rate.drop_duplicates(groups, keep="first").reset_index(drop=True)
    return best[[*groups, lr, "metric", "score", "runs", "diverged"]]


def optimizer_names(frame: pd.DataFrame) -> pd.Series:
    """The optimizer of each row as a report names it: a user's rule by the last part of its
    import path (``lion``), a torch.optim class by its name (``RMSprop``), else the option's
    name (``adam``)."""
    names = frame["optimizer.name"].astype(str)
    for option, key in (("rule", "optimizer.target"), ("torch", "optimizer.class_name")):
        if key in frame.columns:
            chosen = names.eq(option) & frame[key].notna()
            names = names.where(~chosen, frame[key].astype(str).str.rpartition(".")[2])
    return names


NAMING_KEYS = ("optimizer.name", "optimizer.target", "optimizer.class_name", LEARNING_RATE)


def variants(frame: pd.DataFrame) -> pd.Series:
    """A label per row naming the optimizer (see ``optimizer_names``), plus each of its
    settings (other than the learning rate) that takes several values on the same problem,
    plus the schedule when the frame has several: ``nesterov lookahead=slide``,
    ``sgd / cosine``."""
    label = optimizer_names(frame)
    settings = [c for c in frame.columns if c.startswith("optimizer.") and c not in NAMING_KEYS]
    within = ["problem", label] if "problem" in frame.columns else [label]
    for key in settings:
        counts = frame.groupby(within)[key].transform("nunique")
        varying = counts > 1
        label = label.where(~varying, label + f" {key.split('.', 1)[1]}=" + frame[key].astype(str))
    if "schedule.name" in frame.columns and frame["schedule.name"].nunique() > 1:
        label = label + " / " + frame["schedule.name"].astype(str)
    return label


def best_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the runs at the best learning rate of their (problem, variant)."""
    labelled = frame.assign(variant=variants(frame))
    best = best_learning_rates(labelled, ("problem", "variant"))
    keys = ["problem", "variant", LEARNING_RATE]
    chosen = labelled.merge(best[keys], on=keys, how="inner")
    return chosen.drop(columns="variant")


def performance_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Dolan-More ratios: rows are problems, columns variants; each entry is the variant's
    best median selection loss divided by the best variant's on that problem (1 for the
    best, inf for a variant whose every rate diverged or failed)."""
    labelled = frame.assign(variant=variants(frame))
    best = best_learning_rates(labelled, ("problem", "variant"))
    scores = best.pivot(index="problem", columns="variant", values="score")
    lowest = scores.min(axis=1)
    ratios = scores.div(lowest, axis=0)
    degenerate = lowest <= 0  # a best loss of 0: the best get 1, the others inf
    ratios.loc[degenerate] = np.where(
        scores[degenerate].eq(lowest[degenerate], axis=0), 1.0, np.inf
    )
    return ratios
