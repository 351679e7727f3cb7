"""Collect a study's runs into one tidy pandas frame: one row per run and logged step.

Columns: the run (``run_id``, ``run_name``, ``status``, ``diverged``, ``fingerprint``,
``stage`` (a tuning search's ``tune`` or ``rerun``, else NaN), ``wall_seconds``,
``diverged_step``), its config as typed columns (``optimizer.lr`` a float,
``seed`` an integer, ``optimizer.name`` a string, ...), ``problem`` (``dataset/model``, a
``model=module`` model named by its class: ``digits/SmallCnn``; see ``model_names``), the
position (``step``, ``epoch`` where the data has epochs, ``seconds`` since the run started) and
one column per curve (``train_loss``, ``val_loss``, ``lr``, ...; NaN where a curve has no point
at that step or its value was NaN; an infinite value comes back as the largest float, as MLflow
keeps it). The status and divergence flag are on every row.

A grid point rerun (``force=true``, or after a failure) is represented by its newest FINISHED
run, else its newest run; the sweeps' parent runs are left out.
"""

from __future__ import annotations

import json

import pandas as pd

from harness import records
from harness.records import TRUE, Status, Summary, Tag


def typed(values: pd.Series) -> pd.Series:
    """Param strings back to numbers where every value of the column is a JSON number (or
    null); other columns stay strings."""
    decoded = {}
    for value in values.dropna().unique():
        try:
            decoded[value] = json.loads(value)
        except (TypeError, ValueError):
            return values
    numbers = all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool))
        for v in decoded.values()
    )
    if not numbers:
        return values
    column = values.map(decoded).astype(float)
    whole = column.dropna()
    if (
        len(whole)
        and (whole == whole.round()).all()
        and all(isinstance(v, int) for v in decoded.values() if v is not None)
    ):
        return column.astype("Int64")
    return column


def latest_per_point(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per fingerprint: the newest FINISHED one, else the newest."""
    order = runs.assign(_finished=runs["status"].eq(Status.FINISHED))
    order = order.sort_values(["_finished", "start_time"])
    return order.drop_duplicates(Tag.FINGERPRINT, keep="last").drop(columns="_finished")


def run_table(tables: records.ExperimentTables) -> pd.DataFrame:
    """One row per grid point: run columns, typed config, ``problem``, run summaries."""
    tags = tables.tags.pivot(index="run_id", columns="key", values="value")
    runs = tables.runs.set_index("run_id").join(
        tags.reindex(columns=[Tag.FINGERPRINT, Tag.DIVERGED, Tag.ROLE, Tag.STAGE])
    )
    grid_points = runs[Tag.ROLE].isna() & runs[Tag.FINGERPRINT].notna()  # is_grid_point
    runs = runs[grid_points].drop(columns=Tag.ROLE)
    runs = latest_per_point(runs.reset_index()).set_index("run_id")
    runs[Tag.DIVERGED] = runs[Tag.DIVERGED].eq(TRUE)
    params = tables.params[tables.params["run_id"].isin(runs.index)]
    config = params.pivot(index="run_id", columns="key", values="value").apply(typed)
    config = config.drop(columns=[c for c in config.columns if c in runs.columns])  # run_name
    summaries = tables.metrics[tables.metrics["key"].isin(Summary.ALL)]
    summaries = summaries.pivot_table(index="run_id", columns="key", values="value")
    runs = runs.join(config).join(summaries.reindex(columns=list(Summary.ALL)))
    if {"dataset.name", "model.name"} <= set(runs.columns):
        runs["problem"] = runs["dataset.name"] + "/" + model_names(runs)
    return runs


def model_names(runs: pd.DataFrame) -> pd.Series:
    """Each run's model as the report names it: ``model.name``, except that a model with a
    ``model.target`` (``model=module``) is named by its class (``SmallCnn`` for
    ``harness.nets.SmallCnn``), or by the whole import path where two targets of the frame
    share a class name, so that runs of different modules are never grouped together."""
    names = runs["model.name"].astype(str)
    if "model.target" not in runs.columns:
        return names
    targets = runs["model.target"]
    classes = targets.str.rsplit(".", n=1).str[-1]
    paths_per_class = targets.groupby(classes).transform("nunique")
    labels = classes.where(paths_per_class.eq(1), targets)
    return labels.where(targets.notna(), names)


def curve_table(tables: records.ExperimentTables, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, step), one column per curve, and ``seconds`` since the run began.
    A point whose values are all NaN (a run that diverged at step 0) is kept as a row."""
    metrics = tables.metrics[
        tables.metrics["run_id"].isin(runs.index) & ~tables.metrics["key"].isin(Summary.ALL)
    ]
    # not pivot_table: it drops the rows and the columns that are all NaN
    curves = metrics.groupby(["run_id", "step", "key"])["value"].mean().unstack("key")
    curves.columns.name = None
    stamps = metrics.groupby(["run_id", "step"])["timestamp"].min()
    start = runs["start_time"].reindex(stamps.index.get_level_values("run_id")).to_numpy()
    curves["seconds"] = (stamps - start) / 1000.0
    return curves.reset_index()


def collect(uri: str, study: str) -> pd.DataFrame:
    """The tidy frame of study ``study`` (its MLflow experiment) in the store at ``uri``."""
    tables = records.read_experiment(records.resolve_uri(uri), study)
    runs = run_table(tables)
    curves = curve_table(tables, runs)
    frame = curves.merge(runs.reset_index(), on="run_id", how="right")
    if "data.steps_per_epoch" in frame.columns:
        frame["epoch"] = frame["step"] / frame["data.steps_per_epoch"].astype(float)
    frame["step"] = frame["step"].astype("Int64")
    return frame
