"""Holding runs' curves and writing them in batches, many runs at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from harness.config import yaml_text
from harness.records import experiments
from harness.records.backends import Claim, CreatedRun, Held, NewRun, Series, Writes
from harness.records.schema import Status, Tag, is_grid_point
from harness.records.uri import artifact_location

FLUSH_SECONDS = 10.0  # curves of runs still training are written at most this often


@dataclass
class _OpenRun:
    run_id: str
    start_ms: int
    pending: list[Series] = field(default_factory=list)  # curves not written yet


class Recorder:
    """Performs the MLflow writes of runs named by handles the caller chooses, many runs at a
    time: runs are created with their params, tags, dataset inputs and config artifact, then
    their curves are held until they end (or every ``flush_seconds`` while they train, so long
    runs show their curves live) and written with the end-of-run metrics, tags and status. On
    a database store of a verified schema each step is one transaction for all the runs
    (``bulk``, see ``backends.sql``); elsewhere MLflow's client writes run by run."""

    def __init__(self, uri: str, flush_seconds: float = FLUSH_SECONDS, bulk: bool = True):
        self.backend = experiments.open_backend(uri, bulk)
        self.flush_seconds = flush_seconds
        self.runs: dict[str, _OpenRun] = {}
        self.last_flush = time.monotonic()

    def experiment(self, handles, name: str) -> str:
        return self.backend.experiment_id(name, artifact_location(self.backend.uri, name))

    def start(
        self,
        handles: list[str],
        experiment_id: str,
        new_runs: list[NewRun],
        claim: Claim | None = None,
    ) -> list[Held | str]:
        """Create the runs (with a ``claim``: as claims on their grid points, see
        ``backends.holders``) and save their configs as their ``config.yaml`` artifacts;
        returns, per run, its id where it was created, else the ``Held`` of the run that holds
        its point. Runs whose configs could not be saved are ended FAILED before the error is
        raised."""
        outcome = self.backend.create(experiment_id, new_runs, claim)
        created = [
            (handle, new, run)
            for handle, new, run in zip(handles, new_runs, outcome, strict=True)
            if isinstance(run, CreatedRun)
        ]
        for handle, _, run in created:
            self.runs[handle] = _OpenRun(run.run_id, run.start_ms)
        try:
            self.backend.save_configs(
                [(run.artifact_uri, yaml_text(new.config)) for _, new, run in created]
            )
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            self.fail([handle for handle, _, _ in created], Status.FAILED, message, message)
            raise
        return [run if isinstance(run, Held) else run.run_id for run in outcome]

    def curves(self, handles: list[str], chunks: list[dict], seconds_at: dict[int, float]):
        """Hold ``{metric: (steps, values)}`` per run, timestamped at the run's start plus
        seconds_at; write all held points when ``flush_seconds`` have passed."""
        offsets = {step: int(1000 * seconds) for step, seconds in seconds_at.items()}
        stamped: dict[tuple[int, tuple[int, ...]], list[int]] = {}  # runs share their stamps
        for handle, chunk in zip(handles, chunks, strict=True):
            run = self.runs[handle]
            for name, (steps, values) in chunk.items():
                if len(steps) != len(values):
                    raise ValueError(f"{name}: {len(steps)} steps but {len(values)} values")
                key = (run.start_ms, tuple(steps))
                if key not in stamped:
                    stamped[key] = [run.start_ms + offsets.get(step, 0) for step in steps]
                run.pending.append((name, steps, values, stamped[key]))
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            batch = Writes()
            for run in self.runs.values():
                batch.metrics[run.run_id], run.pending = run.pending, []
            self._write(batch, list(self.runs))

    def finish(self, handles: list[str], summaries: list[dict], tags: list[dict]) -> list[str]:
        """Write the held curves, the end-of-run metrics ``{name: (value, step)}`` and tags,
        and mark the runs FINISHED."""
        batch, now = Writes(), int(1000 * time.time())
        for handle, summary, run_tags in zip(handles, summaries, tags, strict=True):
            run = self.runs[handle]
            ends = [
                (key, [step], [value], [run.start_ms]) for key, (value, step) in summary.items()
            ]
            batch.metrics[run.run_id] = run.pending + ends
            batch.tags[run.run_id] = run_tags
            batch.ended[run.run_id] = (Status.FINISHED, now)
        self._write(batch, handles)
        return [self.runs.pop(handle).run_id for handle in handles]

    def fail(self, handles: list[str], status: str, message: str, text: str) -> list[str]:
        """Write the held curves and the error, and end the runs with ``status``."""
        handles = [h for h in handles if h in self.runs]  # runs never created are skipped
        batch, now = Writes(), int(1000 * time.time())
        for handle in handles:
            run = self.runs[handle]
            batch.metrics[run.run_id] = run.pending
            batch.tags[run.run_id] = {Tag.ERROR: message, Tag.NOTE: text}
            batch.ended[run.run_id] = (status, now)
        self._write(batch, handles, status)
        return [self.runs.pop(handle).run_id for handle in handles]

    def delete(self, handles, run_ids: list[str]) -> None:
        """Mark the runs ``run_ids`` deleted (runs that others replace), except RUNNING ones."""
        self.backend.delete_runs(run_ids)

    def end_owned(self, handles, experiment_id: str, owner: str, message: str) -> None:
        """End FAILED, with ``message``, every grid point's run of the experiment that the
        process ``owner`` left RUNNING (the runs a writer that died held open)."""
        owned = self.backend.runs(experiment_id, {Tag.OWNER: owner}, Status.RUNNING)
        for run_id, _, tags in owned:
            if is_grid_point(tags):
                self.backend.end_if_running(run_id, Status.FAILED, message)

    def _write(self, batch: Writes, handles: list[str], status: str = Status.FAILED) -> None:
        """Write ``batch``; if that raises, still end the runs (``status``, with the error),
        then re-raise."""
        try:
            self.backend.write(batch)
        except Exception as error:
            why = f"{type(error).__name__}: {error}"
            for handle in handles:
                self.backend.end_if_running(self.runs.pop(handle).run_id, status, why)
            raise
        finally:
            self.last_flush = time.monotonic()
