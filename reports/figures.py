"""The report's figures (seaborn on matplotlib's Agg backend), each a function of the tidy frame
that returns a Figure, or None where the frame holds nothing it could draw (every run diverged
at step 0); ``save`` writes it as PNG and SVG.

- ``convergence``: a loss (or an accuracy, linear y) against step (or epoch, or seconds) for
  each optimizer variant at its best learning rate, median over seeds with the interquartile
  band, log y where positive.
- ``sensitivity``: the final selection loss against the learning rate (log x), a line and band
  per variant; diverged or failed runs are drawn as crosses at the top of the axis.
- ``accuracy_sensitivity``: the same for the final accuracy of each classification problem
  (linear y); diverged or failed runs are drawn as crosses at the bottom.
- ``decay_grid``: the final selection loss over learning rate and weight decay, a heatmap
  per problem and optimizer, where a study varies the weight decay.
- ``landscape``: the loss surface of a two-parameter problem as a contour over the book's
  ranges, with the runs' trajectories (phi0, phi1) on it.
- ``schedules``: the learning rate against step, one line per schedule.
- ``performance_profiles``: Dolan-More profiles over problems, for studies with two or more.
- ``expected_best``: a tuning study's expected best validation loss (and accuracy) after k
  trials, per optimizer, one figure per problem (see ``reports.tuning``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from reports import aggregate, surfaces  # noqa: E402

sns.set_theme(style="whitegrid", context="paper")
PANEL = (4.8, 3.6)  # inches per facet
STORED_INFINITY = sys.float_info.max  # an infinite value, as MLflow's stores keep it


def save(figure, folder: Path, name: str) -> list[Path]:
    """Write ``name``.png and ``name``.svg into ``folder``; returns the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.svg"]
    for path in paths:
        figure.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(figure)
    return paths


def _facets(count: int, columns: int = 3):
    rows = -(-count // columns)
    width = min(count, columns)
    figure, axes = plt.subplots(
        rows,
        width,
        figsize=(PANEL[0] * width, PANEL[1] * rows),
        squeeze=False,
        layout="constrained",
    )
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return figure, list(axes.flat[:count])


def _log_if_positive(axis, values: pd.Series, which: str = "y") -> None:
    finite = values[np.isfinite(values)]
    if len(finite) and (finite > 0).all():
        (axis.set_yscale if which == "y" else axis.set_xscale)("log")


def _band_line(axis, x: pd.Series, curve: pd.DataFrame, label: str, **style) -> str:
    """The band's center as a line and [low, high] shaded in its color; returns the color."""
    (line,) = axis.plot(x, curve["center"], label=label, **style)
    axis.fill_between(x, curve["low"], curve["high"], color=line.get_color(), alpha=0.2)
    return line.get_color()


def _problem_panels(table: pd.DataFrame):
    """A figure with one facet per problem of ``table`` (its rows labelled with their
    ``variant``), and each facet's (axis, problem, rows)."""
    problems = sorted(table["problem"].unique())
    figure, axes = _facets(len(problems))
    rows = [table[table["problem"] == problem] for problem in problems]
    return figure, list(zip(axes, problems, rows, strict=True))


BAND_LABEL = {"median": "median, IQR over seeds", "mean": "mean, 95% interval over seeds"}


def convergence(
    frame: pd.DataFrame,
    metric: str = "train_loss",
    x: str = "step",
    center: str = "median",
    log_y: bool = True,
):
    """One facet per problem: ``metric`` against ``x`` (step, epoch or seconds) per variant
    at its best rate, with a band over seeds (``center``: median or mean); log y where positive
    unless ``log_y`` is false (accuracies). Problems and variants without a point of ``metric``
    are left out; None if no best run has one."""
    best = aggregate.best_runs(frame)
    points = best.assign(variant=aggregate.variants(best)).dropna(subset=[metric, x])
    if points.empty:
        return None
    figure, panels = _problem_panels(points)
    for axis, problem, part in panels:
        curves = aggregate.curve_bands(part, ["variant"], metric, x, center)
        for variant, curve in curves.groupby("variant"):
            _band_line(axis, curve[x], curve, variant)
        if log_y:
            _log_if_positive(axis, curves["center"])
        axis.set(title=problem, xlabel=x, ylabel=f"{metric} ({BAND_LABEL[center]})")
        axis.legend(fontsize="x-small")
    return figure


def sensitivity(frame: pd.DataFrame, center: str = "median"):
    """One facet per problem: final selection loss against the learning rate per variant,
    with a band over seeds (``center``: median or mean); runs that diverged or failed as
    crosses at the top."""
    return _rate_panels(aggregate.selection_finals(frame), center, lost_at_top=True)


def accuracy_sensitivity(frame: pd.DataFrame, center: str = "median"):
    """One facet per classification problem: its final accuracy (see
    ``aggregate.accuracy_finals``) against the learning rate per variant, with a band over
    seeds; runs that diverged or failed as crosses at the bottom. None without a
    classification problem."""
    finals = aggregate.accuracy_finals(frame)
    return None if finals.empty else _rate_panels(finals, center, lost_at_top=False)


def _rate_panels(finals: pd.DataFrame, center: str, lost_at_top: bool):
    """The figure of ``sensitivity`` for ``finals`` (``score``, ``metric``; infinite scores
    are lost runs): log y where positive when lost runs go at the top (losses), linear y when
    they go at the bottom (accuracies)."""
    figure, panels = _problem_panels(finals.assign(variant=aggregate.variants(finals)))
    for axis, problem, part in panels:
        finite = part[np.isfinite(part["score"])]
        lost = part[~np.isfinite(part["score"])]
        colors = {}
        for variant, group in finite.groupby("variant"):
            curve = aggregate.bands(group, [aggregate.LEARNING_RATE], "score", center)
            rates = curve[aggregate.LEARNING_RATE]
            colors[variant] = _band_line(axis, rates, curve, variant, marker="o", markersize=3)
        axis.set_xscale("log")
        if lost_at_top:
            _log_if_positive(axis, finite["score"])
        if len(lost):
            edge = axis.get_ylim()[1 if lost_at_top else 0]
            for variant, group in lost.groupby("variant"):
                axis.scatter(
                    group[aggregate.LEARNING_RATE],
                    np.full(len(group), edge),
                    marker="x",
                    color=colors.get(variant, "black"),
                    clip_on=False,
                    zorder=3,
                    label=f"{variant}: diverged/failed",
                )
            axis.set_ylim(**{"top" if lost_at_top else "bottom": edge})
        metric = part["metric"].iloc[0]
        axis.set(
            title=problem, xlabel="learning rate", ylabel=f"final {metric} ({BAND_LABEL[center]})"
        )
        axis.legend(fontsize="x-small")
    return figure


DECAY = "optimizer.weight_decay"


def decay_grid(frame: pd.DataFrame, center: str = "median"):
    """One heatmap per problem and optimizer: the final selection loss (``center`` over seeds)
    at each learning rate (columns) and weight decay (rows), colored on a log scale where all
    are positive, the best cell framed; a cell that
    runs which diverged or failed make infinite is left blank. None without a weight decay."""
    if DECAY not in frame.columns:
        return None
    finals = aggregate.selection_finals(frame.dropna(subset=[DECAY]))
    finals = finals.assign(optimizer=aggregate.optimizer_names(finals))
    keys = ["problem", "optimizer"]
    panels = sorted(finals.groupby(keys).groups)
    if not panels:
        return None
    figure, axes = _facets(len(panels), columns=len(finals["optimizer"].unique()))
    for axis, (problem, optimizer) in zip(axes, panels, strict=True):
        part = finals[(finals["problem"] == problem) & (finals["optimizer"] == optimizer)]
        cells = aggregate.bands(part, [DECAY, aggregate.LEARNING_RATE], "score", center)
        grid = cells.pivot(index=DECAY, columns=aggregate.LEARNING_RATE, values="center")
        grid = grid.where(np.isfinite(grid))
        positive = bool((grid.stack() > 0).all())
        sns.heatmap(
            grid,
            ax=axis,
            annot=True,
            fmt=".2g",
            annot_kws={"fontsize": 6},
            cmap="viridis_r",
            norm=matplotlib.colors.LogNorm() if positive else None,
            cbar=False,
            xticklabels=[f"{rate:g}" for rate in grid.columns],
            yticklabels=[f"{decay:g}" for decay in grid.index],
        )
        if grid.notna().any().any():
            row, column = np.unravel_index(np.nanargmin(grid.to_numpy()), grid.shape)
            axis.add_patch(plt.Rectangle((column, row), 1, 1, fill=False, edgecolor="red", lw=2))
        axis.set(
            title=f"{problem}: {optimizer}",
            xlabel="learning rate",
            ylabel="weight decay",
        )
    return figure


def landscape(frame: pd.DataFrame, problem: str, resolution: int = 120):
    """The loss surface of a two-parameter problem over the book's range, one facet per
    variant, each with its runs' trajectories (start: circle, end: cross) where the
    coordinates are finite. Only the points before a run diverged count for the range and the
    facets; None without any such point."""
    part = frame[(frame["problem"] == problem) & frame["phi0"].notna()]
    part = part.assign(variant=aggregate.variants(part))
    part = part[part[["phi0", "phi1"]].abs().lt(STORED_INFINITY).all(axis=1)]
    healthy = part[part["diverged_step"].isna() | (part["step"] < part["diverged_step"])]
    if healthy.empty:
        return None
    spec = surfaces.spec_of(healthy.iloc[0])
    (low0, high0), (low1, high1) = surfaces.plot_range(spec, healthy)
    phi0 = np.linspace(low0, high0, resolution)
    phi1 = np.linspace(low1, high1, resolution)
    loss = surfaces.loss_grid(spec, phi0, phi1)
    variants = sorted(healthy["variant"].unique())
    figure, axes = _facets(len(variants))
    levels = np.quantile(loss[np.isfinite(loss)], np.linspace(0, 1, 25))
    for axis, variant in zip(axes, variants, strict=True):
        filled = axis.contourf(phi0, phi1, loss, levels=np.unique(levels), cmap="viridis_r")
        for _, run in part[part["variant"] == variant].groupby("run_id"):
            path = run.sort_values("step")
            axis.plot(path["phi0"], path["phi1"], color="white", linewidth=0.9, alpha=0.9)
            axis.plot(path["phi0"].iloc[0], path["phi1"].iloc[0], "o", color="white", markersize=3)
            axis.plot(path["phi0"].iloc[-1], path["phi1"].iloc[-1], "x", color="red", markersize=5)
        axis.set(
            xlim=(low0, high0), ylim=(low1, high1), title=variant, xlabel="phi0", ylabel="phi1"
        )
    figure.colorbar(filled, ax=axes, label="training loss", shrink=0.8)
    figure.suptitle(problem)
    return figure


def schedules(frame: pd.DataFrame, optimizer: str | None = None):
    """The learning rate against step for one run of each schedule (of ``optimizer``)."""
    part = frame.dropna(subset=["lr"])
    if optimizer is not None:
        part = part[part["optimizer.name"] == optimizer]
    figure, axis = plt.subplots(figsize=PANEL, layout="constrained")
    for name, group in part.groupby("schedule.name"):
        run = group[group["run_id"] == group["run_id"].iloc[0]].sort_values("step")
        axis.step(run["step"], run["lr"], where="post", label=name)
    axis.set_yscale("log")
    axis.set(xlabel="step", ylabel="learning rate", title=f"schedules ({optimizer or 'all'})")
    axis.legend(fontsize="x-small")
    return figure


def performance_profiles(frame: pd.DataFrame, taus: np.ndarray | None = None):
    """Dolan-More profiles: for each variant, the fraction of problems on which its best
    final selection loss is within a factor tau of the best variant's."""
    ratios = aggregate.performance_ratios(frame)
    taus = np.logspace(0, 2, 200) if taus is None else taus
    figure, axis = plt.subplots(figsize=PANEL, layout="constrained")
    for variant, column in ratios.items():
        axis.step(taus, [(column <= tau).mean() for tau in taus], where="post", label=variant)
    axis.set_xscale("log")
    axis.set(
        xlabel="tau (loss / best loss)",
        ylabel="fraction of problems",
        ylim=(0, 1.02),
        title=f"performance profiles over {len(ratios)} problems",
    )
    axis.legend(fontsize="x-small")
    return figure


def expected_best(losses: pd.DataFrame, accuracies: pd.DataFrame, problem: str):
    """The expected best final loss after k = 1..N trials for each optimizer on ``problem``,
    with the band E_k -+ sd_k (``reports.tuning.curves``), log y where positive; beside it
    the same for the accuracy where the problem classifies. None without trials."""
    panels = [part for part in (losses, accuracies) if len(part)]
    panels = [part[part["problem"] == problem] for part in panels]
    panels = [part for part in panels if len(part)]
    if not panels:
        return None
    figure, axes = _facets(len(panels), columns=2)
    for axis, part in zip(axes, panels, strict=True):
        for optimizer, curve in part.groupby("optimizer", sort=True):
            _band_line(axis, curve["k"], curve, optimizer, marker="o", markersize=2)
        metric = part["metric"].iloc[0]
        if not metric.endswith("accuracy"):
            _log_if_positive(axis, part["center"])
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set(
            title=problem,
            xlabel="trials (k)",
            ylabel=f"expected best final {metric} (+- sd)",
        )
        axis.legend(fontsize="x-small")
    return figure
