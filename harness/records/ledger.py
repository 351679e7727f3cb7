"""A sweep's view of its study's experiment: the grid points already recorded, the sweep's
parent run, and repairs of runs that a dead process left RUNNING."""

from __future__ import annotations

import sys
import time

from mlflow.entities import Metric, Param, RunTag

from harness.records import experiments
from harness.records.backends import opening
from harness.records.provenance import environment_tags, source_tags
from harness.records.schema import (
    OUTCOME_PREFIX,
    PARAM_TAG_LIMIT,
    Role,
    RunRecord,
    Tag,
    is_grid_point,
)
from harness.records.uri import is_database


class Ledger:
    """Opened from the sweep's own process, before any worker runs: opening it creates the
    database schema and the experiment once, or refuses the store (ConfigError), and says once
    when runs will go through MLflow's client (``backends.opening.unverified_note``)."""

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        self.client = experiments.open_client(uri)
        try:
            self.experiment_id = experiments.experiment_id(self.client, experiment)
        except Exception as error:  # a read-only store, a deleted experiment, ...
            raise experiments.cannot_open(uri, error) from error
        note = opening.unverified_note() if is_database(uri) else None
        if note:
            print(note, file=sys.stderr)

    def grid_runs(self) -> list[RunRecord]:
        """Every run of the experiment that records a grid point (parent runs left out), with
        the last value of each of its metrics."""
        return [
            RunRecord.of(run.info.run_id, run.info.status, run.data.tags, run.data.metrics)
            for run in experiments.all_runs(self.client, self.experiment_id)
            if is_grid_point(run.data.tags)
        ]

    def record(self, run_id: str) -> RunRecord:
        """The grid point run ``run_id`` as it is now."""
        run = self.client.get_run(run_id)
        return RunRecord.of(run_id, run.info.status, run.data.tags, run.data.metrics)

    def open_sweep(self, sweep_id: str, name: str, params: dict[str, str], tags: dict) -> str:
        """The parent run of sweep ``sweep_id``: the one an earlier attempt left, set RUNNING
        again, or a new one (also when a live sweep of the same grid holds that one)."""
        run_id, new = experiments.reopen_or_create(
            self.client,
            self.experiment_id,
            Role.SWEEP,
            f" and tags.{Tag.SWEEP_ID} = '{sweep_id}'",
            name,
            {Tag.SWEEP_ID: sweep_id, **environment_tags(), **source_tags("harness.sweep"), **tags},
        )
        if new:
            entries = [Param(k, v) for k, v in params.items()]
            for chunk in experiments.chunks(entries, PARAM_TAG_LIMIT):
                self.client.log_batch(run_id, params=chunk)
        return run_id

    def close_sweep(
        self, run_id: str, status: str, counts: dict[str, int], times: dict[str, float], note: str
    ) -> None:
        """Record the sweep's outcome counts (``runs_<outcome>``), its times (``times``:
        metric name -> s) and its summary (as the run's description), and end it."""
        now = int(1000 * time.time())
        metrics = [Metric(f"{OUTCOME_PREFIX}{key}", value, now, 0) for key, value in counts.items()]
        metrics += [Metric(key, value, now, 0) for key, value in times.items()]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag(Tag.NOTE, note)])
        self.client.set_terminated(run_id, status)

    def mark(self, run_id: str, status: str, message: str) -> bool:
        """End a run someone else left RUNNING, saying why; only while it is still RUNNING
        (False when its own process ended it first: see ``experiments.end_if_running``)."""
        return experiments.end_if_running(self.client, run_id, status, message)
