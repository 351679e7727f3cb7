"""The lecture's claims (LECTURE.md, "What the lecture claims"), each measured on a study's
frame where the study can test it. Every check returns a Claim whose verdict says plainly
whether the data supports or contradicts it, or why this study cannot test it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.records import Tag
from reports import aggregate, surfaces, tables, tuning

NEAR_BEST = 1.1  # "within 10% of the best loss"


@dataclass(frozen=True)
class Claim:
    claim: str
    measured: str
    verdict: str  # supported | contradicted | not testable here


def _untestable(claim: str, why: str) -> Claim:
    return Claim(claim, why, "not testable here")


def _runs_of(frame: pd.DataFrame, optimizer: str, model: str | None = None) -> pd.DataFrame:
    part = frame[frame["optimizer.name"] == optimizer]
    return part if model is None else part[part["model.name"] == model]


def convex_gd(frame: pd.DataFrame) -> Claim:
    """GD on the linear problem ends at the least-squares minimum (gap below 1%); a run
    without a final training loss (diverged at step 0) never reached it (an infinite gap)."""
    claim = "On the convex linear problem gradient descent reaches the minimum."
    runs = _runs_of(frame, "gd", "linear")
    if runs.empty:
        return _untestable(claim, "no gradient-descent run on a linear model")
    finals = aggregate.final_values(runs, "train_loss").set_index("run_id")["final"]
    gaps = []
    for run_id, run in runs.groupby("run_id"):
        spec = surfaces.spec_of(run.iloc[0])
        x, y = surfaces.training_data(spec)
        design = np.column_stack([np.ones(len(x)), x[:, 0]])
        phi, *_ = np.linalg.lstsq(design, y, rcond=None)
        best = surfaces.loss_at(spec, phi)
        final = np.inf if np.isnan(finals[run_id]) else finals[run_id]
        gaps.append((final - best) / best)
    gap = float(np.median(gaps))
    verdict = "supported" if gap < 0.01 else "contradicted"
    return Claim(
        claim, f"median final loss {100 * gap:.2f}% above the least-squares minimum", verdict
    )


def gabor_valleys(frame: pd.DataFrame) -> Claim:
    """GD on Gabor (w = 32) reaches the global valley from some starts and not from others."""
    claim = (
        "On the Gabor model gradient descent reaches the global minimum only from the right valley."
    )
    runs = _runs_of(frame, "gd", "gabor")
    runs = runs[runs["model.envelope"] == 32.0] if "model.envelope" in runs else runs.iloc[:0]
    starts = runs.drop_duplicates("run_id")["model.init"].nunique() if len(runs) else 0
    if starts < 2:
        return _untestable(claim, "needs gradient descent on Gabor (w = 32) from several starts")
    finals = aggregate.final_values(runs, "train_loss")["final"]
    share = float((finals < tables.GABOR_GLOBAL_VALLEY).mean())
    verdict = "supported" if 0 < share < 1 else "contradicted"
    return Claim(claim, f"{100 * share:.0f}% of {starts} starts reach the global valley", verdict)


def fluctuation(run: pd.DataFrame) -> float:
    """Relative spread (std / mean) of the training loss over the last quarter of the run."""
    curve = run.dropna(subset=["train_loss"]).sort_values("step")["train_loss"]
    tail = curve.iloc[-max(len(curve) // 4, 2) :]
    return float(tail.std() / tail.mean())


def sgd_noise(frame: pd.DataFrame) -> Claim:
    """With a constant rate, SGD's loss keeps fluctuating at the end; full-batch GD's does not.
    Runs that diverged have no end to measure and are left out."""
    claim = "SGD adds noise and does not converge with a fixed learning rate."
    constant = frame[(frame["schedule.name"] == "constant") & ~frame[Tag.DIVERGED]]
    sgd, gd = _runs_of(constant, "sgd"), _runs_of(constant, "gd")
    shared = set(sgd["problem"]) & set(gd["problem"])
    if not shared:
        return _untestable(claim, "needs SGD and GD at a constant rate on the same problem")
    problem = sorted(shared)[0]
    spread = {
        name: np.median(
            [fluctuation(r) for _, r in runs[runs["problem"] == problem].groupby("run_id")]
        )
        for name, runs in (("sgd", sgd), ("gd", gd))
    }
    verdict = "supported" if spread["sgd"] > 10 * spread["gd"] else "contradicted"
    measured = (
        f"on {problem}, the loss over the last quarter varies by {100 * spread['sgd']:.2f}% "
        f"(SGD) against {100 * spread['gd']:.4f}% (GD)"
    )
    return Claim(claim, measured, verdict)


def nesterov_not_always_better(frame: pd.DataFrame) -> Claim:
    claim = "Momentum smooths the path; Nesterov is not always better."
    best = aggregate.best_learning_rates(
        frame.assign(variant=aggregate.variants(frame)), ("problem", "variant")
    )
    scores = best.pivot(index="problem", columns="variant", values="score")
    nesterov = [c for c in scores.columns if c.startswith("nesterov")]
    if "momentum" not in scores.columns or not nesterov:
        return _untestable(claim, "needs momentum and Nesterov runs on the same problems")
    pairs = [
        (p, n)
        for n in nesterov
        for p in scores.index
        if scores.loc[p, [n, "momentum"]].notna().all()
    ]
    worse = [(p, n) for p, n in pairs if scores.loc[p, n] > scores.loc[p, "momentum"]]
    verdict = "supported" if worse else "contradicted"
    return Claim(
        claim, f"Nesterov ends above momentum in {len(worse)} of {len(pairs)} comparisons", verdict
    )


def normalized_never_settles(frame: pd.DataFrame) -> Claim:
    """The last step of each normalized-gradient run that did not diverge, in learning rates."""
    claim = "Normalized gradients move at a fixed speed and never settle."
    runs = _runs_of(frame[~frame[Tag.DIVERGED]], "normalized")
    if runs.empty or "phi0" not in runs.columns or runs["phi0"].isna().all():
        return _untestable(claim, "needs normalized-gradient runs on a two-parameter problem")
    ratios = []
    for _, run in runs.dropna(subset=["phi0"]).groupby("run_id"):
        path = run.sort_values("step")[["step", "phi0", "phi1"]].to_numpy()
        (s0, a0, b0), (s1, a1, b1) = path[-2], path[-1]
        ratios.append(np.hypot(a1 - a0, b1 - b0) / (s1 - s0) / run["optimizer.lr"].iloc[0])
    ratio = float(np.median(ratios))
    verdict = "supported" if ratio > 0.5 else "contradicted"
    return Claim(claim, f"the last step is {ratio:.2f} x the learning rate long", verdict)


def lr_range(finals: pd.DataFrame, optimizer: str) -> float:
    """Decades of learning rate whose median final loss is within 10% of the best rate's."""
    part = finals[finals["optimizer.name"] == optimizer]
    medians = part.groupby(aggregate.LEARNING_RATE)["score"].median()
    good = medians[medians <= NEAR_BEST * medians.min()].index
    return float(np.log10(good.max() / good.min())) if len(good) else np.nan


SENSITIVITY_CLAIM = "Adam is less sensitive to the initial learning rate (than SGD)."


def adam_less_sensitive(frame: pd.DataFrame) -> Claim:
    """On a grid of learning rates (a tuning search's trials left out): the decades of rate
    within 10% of the best, Adam's against SGD's."""
    claim = SENSITIVITY_CLAIM + " (grid of rates)"
    frame = tuning.not_trials(frame)
    if frame.empty:
        return _untestable(claim, "needs Adam and SGD over several learning rates")
    finals = aggregate.selection_finals(frame)
    rows = []
    for problem, part in finals.groupby("problem"):
        rates = part.groupby("optimizer.name")[aggregate.LEARNING_RATE].nunique()
        if rates.get("adam", 0) > 2 and rates.get("sgd", 0) > 2:
            rows.append((problem, lr_range(part, "adam"), lr_range(part, "sgd")))
    if not rows:
        return _untestable(claim, "needs Adam and SGD over several learning rates")
    wider = sum(adam > sgd for _, adam, sgd in rows)
    measured = "; ".join(
        f"{p}: Adam {a:.2f}, SGD {s:.2f} decades within 10% of the best" for p, a, s in rows
    )
    return Claim(claim, measured, "supported" if wider > len(rows) / 2 else "contradicted")


def adam_less_sensitive_to_tune(frame: pd.DataFrame) -> Claim:
    """On a tuning search: the trials after which the expected best loss (``reports.tuning``)
    comes within 5% of the optimizer's own best trial, Adam's against SGD's; supported where
    Adam needs fewer on most problems."""
    claim = SENSITIVITY_CLAIM + " (tuning budget)"
    curves = tuning.curves(frame)
    rows = []
    for problem, part in curves.groupby("problem", sort=True):
        budgets = {}
        for optimizer in ("adam", "sgd"):
            curve = part[part["optimizer"] == optimizer]
            if len(curve):
                budgets[optimizer] = (
                    tuning.budget_within(curve, curve["center"].min()),
                    len(curve),
                )
        if len(budgets) == 2:
            rows.append((problem, budgets["adam"], budgets["sgd"]))
    if not rows:
        return _untestable(claim, "needs a tuning search of Adam and SGD on the same problem")
    fewer = sum(adam[0] < sgd[0] for _, adam, sgd in rows)
    measured = "; ".join(
        f"{p}: Adam {a[0]:.0f} of {a[1]}, SGD {s[0]:.0f} of {s[1]} trials to come within 5% of "
        "its own best (expected)"
        for p, a, s in rows
    )
    return Claim(claim, measured, "supported" if fewer > len(rows) / 2 else "contradicted")


CHECKS = (
    convex_gd,
    gabor_valleys,
    sgd_noise,
    nesterov_not_always_better,
    normalized_never_settles,
    adam_less_sensitive,
)


def measure(finished: pd.DataFrame, frame: pd.DataFrame | None = None) -> list[Claim]:
    """Every claim, measured on the finished runs; the tuning claim on every run of the frame
    (a trial that failed counts too, see ``reports.tuning``), the finished ones without it."""
    measured = [check(finished) for check in CHECKS]
    return [*measured, adam_less_sensitive_to_tune(finished if frame is None else frame)]
