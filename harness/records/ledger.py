"""A sweep's view of its study's experiment: the grid points already recorded, the sweep's
parent run, and repairs of runs that a dead process left RUNNING."""

from __future__ import annotations

import sys
import time

from harness.records import experiments
from harness.records.backends import Series, Writes, opening
from harness.records.provenance import environment_tags, source_tags
from harness.records.schema import OUTCOME_PREFIX, Role, RunRecord, Tag
from harness.records.uri import is_database


class Ledger:
    """Opened from the sweep's own process, before any worker runs: opening it creates the
    database schema and the experiment once, or refuses the store (ConfigError), and says once
    when runs will go through MLflow's client (``backends.opening.unverified_note``). On a
    database of a verified schema it reads and writes with SQL, without importing MLflow."""

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        self.backend = experiments.open_backend(uri)
        self.experiment_id = experiments.experiment_id(self.backend, experiment)
        note = opening.unverified_note() if is_database(uri) else None
        if note:
            print(note, file=sys.stderr)

    def close(self) -> None:
        self.backend.close()

    def grid_runs(self) -> list[RunRecord]:
        """Every run of the experiment that records a grid point (parent runs left out),
        newest first, with the last value of each of its metrics."""
        return self.backend.grid_runs(self.experiment_id)

    def record(self, run_id: str) -> RunRecord:
        """The grid point run ``run_id`` as it is now."""
        return self.backend.record(run_id)

    def open_sweep(self, sweep_id: str, name: str, params: dict[str, str], tags: dict) -> str:
        """The parent run of sweep ``sweep_id``: the one an earlier attempt left, set RUNNING
        again, or a new one (also when a live sweep of the same grid holds that one)."""
        run_id, _ = experiments.reopen_or_create(
            self.backend,
            self.experiment_id,
            Role.SWEEP,
            {Tag.SWEEP_ID: sweep_id},
            name,
            {Tag.SWEEP_ID: sweep_id, **environment_tags(), **source_tags("harness.sweep"), **tags},
            params,
        )
        return run_id

    def close_sweep(
        self, run_id: str, status: str, counts: dict[str, int], times: dict[str, float], note: str
    ) -> None:
        """Record the sweep's outcome counts (``runs_<outcome>``), its times (``times``:
        metric name -> s) and its summary (as the run's description), and end it."""
        now = int(1000 * time.time())
        values = {f"{OUTCOME_PREFIX}{key}": value for key, value in counts.items()} | times
        series: list[Series] = [(key, [0], [value], [now]) for key, value in values.items()]
        batch = Writes({run_id: series}, {run_id: {Tag.NOTE: note}}, {run_id: (status, now)})
        self.backend.write(batch)

    def mark(self, run_id: str, status: str, message: str) -> bool:
        """End a run someone else left RUNNING, saying why; only while it is still RUNNING
        (False when its own process ended it first)."""
        return self.backend.end_if_running(run_id, status, message)
