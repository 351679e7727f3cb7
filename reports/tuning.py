"""How easy is each optimizer to tune? Measured on a tuning study's runs (``harness.search``:
trials tagged ``stage=tune``, reruns of each best setting tagged ``stage=rerun``).

**Expected best after k trials.** Of an optimizer's N trials on a problem, sorted from best to
worst v_(1), ..., v_(N), the best of k trials drawn at random without replacement is v_(i)
with probability

    p_i(k) = C(N - i, k - 1) / C(N, k),

so its expectation is E_k = sum_i p_i(k) v_(i) and its spread sd_k = sqrt(sum_i p_i(k)
v_(i)^2 - E_k^2), exactly (no resampling). E_k is the unbiased estimate of the expected best of
k fresh trials from the same search (Dodge et al., "Show your work", 2019, use the same
quantity with replacement; this is its unbiased U-statistic form, equal to the best trial at
k = N). The band is E_k +- sd_k, clipped to the trials' range.

A trial that diverged or failed has no final value; it counts as no better than not training
and no better than any trial that finished: for a loss, the larger of the problem's initial
loss (the median value at step 0) and the worst finite final loss of the problem's trials;
for an accuracy, the smaller of the initial accuracy and the worst finite final accuracy.

**Budget to come within 5%.** The smallest k with E_k <= 1.05 x the best loss any optimizer's
trial reached on the problem (its own best, for ``budget to 5% of own best``); inf when E_N
stays above it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.records import Stage, Tag
from reports import aggregate, tables

WITHIN = 1.05  # "within 5% of the best loss"
STAGE = Tag.STAGE
EXCLUDED_PREFIXES = ("data.", "tracking.")  # derived or bookkeeping params, never searched


def has_search(frame: pd.DataFrame) -> bool:
    """Whether the frame holds trials of a tuning search."""
    return STAGE in frame.columns and frame[STAGE].eq(Stage.TUNE).any()


def trials(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the search's trials."""
    return frame[frame[STAGE].eq(Stage.TUNE)] if STAGE in frame.columns else frame.iloc[:0]


def not_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """Every row but the trials' (the reruns, and any grid the study holds besides)."""
    return frame[~frame[STAGE].eq(Stage.TUNE)] if STAGE in frame.columns else frame


def best_probabilities(n: int, k: int) -> np.ndarray:
    """p_i(k), i = 1..n: the chance that the i-th best of n values is the best of k of them
    drawn without replacement (see the module docstring)."""
    total = math.comb(n, k)
    return np.array([math.comb(n - i, k - 1) / total for i in range(1, n + 1)])


def expected_best(values: np.ndarray, maximize: bool = False) -> pd.DataFrame:
    """E_k and sd_k for k = 1..N of finite ``values`` (see the module docstring): columns
    ``k``, ``center``, ``low``, ``high`` (E_k -+ sd_k clipped to the values' range)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    if maximize:
        ordered = ordered[::-1]
    n = len(ordered)
    rows = []
    for k in range(1, n + 1):
        weights = best_probabilities(n, k)
        mean = float(weights @ ordered)
        spread = math.sqrt(max(float(weights @ ordered**2) - mean**2, 0.0))
        low = max(mean - spread, ordered.min())
        high = min(mean + spread, ordered.max())
        rows.append({"k": k, "center": mean, "low": low, "high": high})
    return pd.DataFrame(rows)


def budget_within(curve: pd.DataFrame, target: float, maximize: bool = False) -> float:
    """The smallest k whose E_k is within 5% of ``target`` (a loss: E_k <= target + 0.05
    |target|; an accuracy: E_k >= target - 0.05 |target|); inf when no k is."""
    margin = (WITHIN - 1) * abs(target)
    near = curve["center"] >= target - margin if maximize else curve["center"] <= target + margin
    return float(curve.loc[near, "k"].min()) if near.any() else math.inf


def scored_trials(frame: pd.DataFrame, accuracy: bool = False) -> pd.DataFrame:
    """One row per trial with ``optimizer`` (as the report names it), ``metric``, ``final``
    and ``value``: the final selection loss (or accuracy), a trial that diverged or failed
    counted as described in the module docstring. Problems without the metric are left out."""
    part = trials(frame)
    if part.empty:
        return pd.DataFrame()
    finals = aggregate.accuracy_finals(part) if accuracy else aggregate.selection_finals(part)
    if finals.empty:
        return finals
    finals = finals.assign(optimizer=aggregate.optimizer_names(finals))
    scored = []
    for problem, rows in finals.groupby("problem", sort=True):
        metric = rows["metric"].iloc[0]
        initial = part.loc[(part["problem"] == problem) & part["step"].eq(0), metric].median()
        finite = rows.loc[np.isfinite(rows["score"]), "final"]
        pick = min if accuracy else max
        candidates = [v for v in (initial, finite.agg(pick.__name__)) if pd.notna(v)]
        floor = pick(candidates, default=np.nan)  # NaN: nothing to value a lost trial by
        value = rows["score"].where(np.isfinite(rows["score"]), floor)
        scored.append(rows.assign(value=value).dropna(subset=["value"]))
    return pd.concat(scored, ignore_index=True)


def curves(frame: pd.DataFrame, accuracy: bool = False) -> pd.DataFrame:
    """The expected best after k trials for each (problem, optimizer): columns ``problem``,
    ``optimizer``, ``metric``, ``k``, ``center``, ``low``, ``high``."""
    scored = scored_trials(frame, accuracy)
    parts = []
    groups = scored.groupby(["problem", "optimizer"], sort=True) if len(scored) else []
    for (problem, optimizer), rows in groups:
        curve = expected_best(rows["value"].to_numpy(), maximize=accuracy)
        parts.append(
            curve.assign(problem=problem, optimizer=optimizer, metric=rows["metric"].iloc[0])
        )
    columns = ["problem", "optimizer", "metric", "k", "center", "low", "high"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def searched_keys(rows: pd.DataFrame) -> list[str]:
    """The config keys that take several values among one optimizer's trials (its space)."""
    keys = [
        c
        for c in rows.columns
        if "." in c and not c.startswith(EXCLUDED_PREFIXES) and c not in (Tag.FINGERPRINT,)
    ]
    return [c for c in keys if rows[c].nunique(dropna=True) > 1]


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per problem and optimizer: its trials, the best setting the search chose (the
    searched keys of its reruns; without reruns, of its trial with the lowest loss), the
    lowest final selection loss of its trials, the reruns' selection loss and accuracy as
    median [min, max] over their seeds, and the budget to come within 5% of the best loss any
    optimizer's trial reached (and of its own best)."""
    losses = curves(frame)
    scored = scored_trials(frame)
    reruns = frame[frame[STAGE].eq(Stage.RERUN)] if STAGE in frame.columns else frame.iloc[:0]
    reruns = reruns.assign(optimizer=aggregate.optimizer_names(reruns))
    rows = []
    for (problem, optimizer), tried in scored.groupby(["problem", "optimizer"], sort=True):
        runs = trials(frame)
        runs = runs[(runs["problem"] == problem) & (aggregate.optimizer_names(runs) == optimizer)]
        keys = searched_keys(runs.drop_duplicates("run_id"))
        chosen = reruns[(reruns["problem"] == problem) & (reruns["optimizer"] == optimizer)]
        curve = losses[(losses["problem"] == problem) & (losses["optimizer"] == optimizer)]
        best_any = scored.loc[scored["problem"] == problem, "value"].min()
        if len(chosen):
            setting = chosen.iloc[0]
        else:  # no rerun: the trial with the best value
            best_id = tried.loc[tried["value"].idxmin(), "run_id"]
            setting = runs[runs["run_id"] == best_id].iloc[0]
        row = {
            "problem": problem,
            "optimizer": optimizer,
            "trials": len(tried),
            "best setting": " ".join(f"{k}={tables.cell(setting[k])}" for k in keys) or "-",
            "best trial loss": tried["value"].min(),
            "metric": tried["metric"].iloc[0],
            "reruns": chosen["run_id"].nunique(),
        }
        row["rerun loss"] = median_range(aggregate.final_values(chosen, row["metric"])["final"])
        accuracy = aggregate.accuracy_metric(chosen) if len(chosen) else None
        row["rerun accuracy"] = (
            median_range(aggregate.final_values(chosen, accuracy)["final"]) if accuracy else "-"
        )
        row["budget to 5% of best"] = budget_within(curve, best_any)
        row["budget to 5% of own best"] = budget_within(curve, tried["value"].min())
        rows.append(row)
    return pd.DataFrame(rows)


def median_range(values: pd.Series) -> str:
    """``median [min, max]`` with 4 significant digits, ``-`` without values."""
    finite = values.dropna()
    if finite.empty:
        return "-"
    return f"{finite.median():.4g} [{finite.min():.4g}, {finite.max():.4g}]"
