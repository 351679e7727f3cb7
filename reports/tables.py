"""The comparison table: one row per problem x optimizer variant, at the variant's best
learning rate (chosen on the validation loss, see ``reports.aggregate``), written as Markdown,
CSV and HTML.

Columns: ``best lr``; final train, validation and test loss and accuracy as median [q25, q75]
over seeds; ``steps to target``: the median first step at which the training loss reaches the
problem's target, 1.1 x the lowest median final training loss of any variant (a run that never
reaches it counts as never); wall time (median seconds); ``diverged``: the fraction of all the
variant's runs, at every rate, that diverged or failed; for the Gabor model with w = 32,
``global min``: the fraction of the best rate's runs that end in the global minimum's valley
(final training loss below 2.0; the global minimum is about 0.646, the next local minimum 3.67).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import Status, Summary, Tag
from reports import aggregate

TARGET_FACTOR = 1.1
GABOR_GLOBAL_VALLEY = 2.0  # final loss below this: the run found the global minimum (w = 32)
LOSSES = ("train_loss", "val_loss", "test_loss", "val_accuracy", "test_accuracy")


def median_iqr(values: pd.Series) -> str:
    """``median [q25, q75]`` with 4 significant digits, or ``-`` without values."""
    finite = values.dropna()
    if finite.empty:
        return "-"
    low, mid, high = np.quantile(finite, [0.25, 0.5, 0.75])
    return f"{mid:.4g} [{low:.4g}, {high:.4g}]"


def steps_to_target(runs: pd.DataFrame, target: float) -> float:
    """Median over runs of the first step with train_loss <= target (inf for a run that never
    gets there); NaN without runs or without a target (no variant has a final loss)."""
    if np.isnan(target):
        return np.nan
    firsts = []
    for _, run in runs.groupby("run_id"):
        reached = run.loc[run["train_loss"] <= target, "step"]
        firsts.append(float(reached.min()) if len(reached) else np.inf)
    return float(np.median(firsts)) if firsts else np.nan


def comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison table (see the module docstring), sorted by problem and variant."""
    labelled = frame.assign(variant=aggregate.variants(frame))
    best = aggregate.best_learning_rates(labelled, ("problem", "variant"))
    chosen = labelled.merge(best[["problem", "variant", aggregate.LEARNING_RATE]])
    runs = labelled.drop_duplicates("run_id")
    parts = dict(iter(chosen.groupby(["problem", "variant"], sort=True)))
    final_train = {key: final_median(part, "train_loss") for key, part in parts.items()}
    lowest = pd.Series(final_train).groupby(level=0).min()
    rows = []
    for (problem, variant), part in parts.items():
        all_runs = runs[(runs["problem"] == problem) & (runs["variant"] == variant)]
        target = TARGET_FACTOR * lowest[problem]
        row = {
            "problem": problem,
            "optimizer": variant,
            "best lr": part[aggregate.LEARNING_RATE].iloc[0],
            "runs": part["run_id"].nunique(),
        }
        for metric in LOSSES:
            if metric in part.columns:
                row[f"final {metric}"] = median_iqr(aggregate.final_values(part, metric)["final"])
        row["wall s"] = median_iqr(part.drop_duplicates("run_id")[Summary.WALL_SECONDS])
        row["target"] = target
        row["steps to target"] = steps_to_target(part, target)
        ended_badly = all_runs[Tag.DIVERGED] | all_runs["status"].ne(Status.FINISHED)
        row["diverged"] = float(ended_badly.mean())
        row["global min"] = gabor_global_share(part)
        rows.append(row)
    table = pd.DataFrame(rows)
    return table if table["global min"].notna().any() else table.drop(columns="global min")


def final_median(part: pd.DataFrame, metric: str) -> float:
    return aggregate.final_values(part, metric)["final"].median()


def gabor_global_share(part: pd.DataFrame) -> float:
    """The share of runs ending below the global valley's threshold, for Gabor with w = 32."""
    first = part.iloc[0]
    if first.get("model.name") != "gabor" or first.get("model.envelope") != 32.0:
        return np.nan
    finals = aggregate.final_values(part, "train_loss")["final"]
    return float((finals < GABOR_GLOBAL_VALLEY).mean())


def cell(value) -> str:
    """A table cell as text: floats to 4 significant digits, NaN as ``-``."""
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = [
        "| " + " | ".join(cell(v).replace("|", "\\|") for v in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body]) + "\n"


def html_table(table: pd.DataFrame) -> str:
    """An HTML table with every cell escaped."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False)
    )
    return f'<table class="comparison"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write(table: pd.DataFrame, folder: Path, name: str = "comparison") -> list[Path]:
    """``name``.md, .csv and .html in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{suffix}" for suffix in ("md", "csv", "html")]
    paths[0].write_text(markdown(table))
    table.to_csv(paths[1], index=False)
    paths[2].write_text(html_table(table))
    return paths
