"""Writes and reads through MLflow's client: the path for an MLflow server (and for database
stores whose schema the direct writes were not verified on). Each call waits on a request, so
runs are written several at a time, and a server's "busy" answer is asked again.

Reading a server's metric histories uses the bulk endpoint MLflow's own web app reads
(``HISTORY_ENDPOINT``, through MLflow's REST helpers), not a public client call: the cluster
tests (``tests/test_server.py``) hold what it returns against the same study read from
sqlite, cut answers included."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from mlflow.entities import Dataset, InputTag, Metric, Param, RunTag
from mlflow.entities import DatasetInput as MlflowDatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

from harness.config import ConfigError
from harness.records.backends import (
    STOPPED,
    Claim,
    CreatedRun,
    Held,
    NewRun,
    Writes,
    holders,
    in_threads,
)
from harness.records.experiments import cannot_open
from harness.records.schema import (
    DATASET_CONTEXT,
    KIND_TAG,
    KIND_TRAINING,
    PARAM_TAG_LIMIT,
    DatasetInput,
    ExperimentTables,
    RunRecord,
    Status,
    Tag,
    is_grid_point,
)
from harness.records.uri import is_database

# A server's answers that mean "ask again" (MLflow answers 400; its HTTP layer already retries
# 5xx answers), retried after 1, 2, 4, ... s: its database connection pool ran out, or two
# writers logged the same new dataset at once and this one lost (MLflow's log_inputs reads,
# then inserts; the loser's transaction is rolled back whole, and its retry finds the row).
TRANSIENT = (
    "QueuePool limit",
    'unique constraint "dataset_pk"',  # PostgreSQL
    "UNIQUE constraint failed: datasets.",  # sqlite
)
RETRIES = 7
CLAIM_MARGIN_MS = 600_000  # FINISHED runs a claim reads: those started since planning, less this
HISTORY_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"  # on an MLflow server
HISTORY_LIMIT = 25_000  # points in one answer of that endpoint, at most
HISTORY_RUNS = 100  # and runs in one request
T = TypeVar("T")


def retrying(call: Callable[..., T], *args, **kwargs) -> T:
    """``call(*args, **kwargs)``, asked again while the server answers that it is busy
    (``TRANSIENT``: the request failed before its transaction began, so nothing is written
    twice); any other error is raised at once."""
    for attempt in range(RETRIES):
        try:
            return call(*args, **kwargs)
        except MlflowException as error:
            if attempt == RETRIES - 1 or not any(m in str(error) for m in TRANSIENT):
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


class Client:
    """A store through MLflow's client (an MLflow server, or a database of a schema the
    direct writes were not verified on), with the operations of ``sql.Database``. Runs are
    created and written per run (``create_run``, ``log_batch``, which splits to MLflow's
    limits, ``log_inputs``, ``set_terminated``), ``backends.THREADS`` runs at a time. Opening it
    opens the store (MLflow upgrades or refuses an older database here): ConfigError when it
    cannot."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = open_client(uri)

    def close(self) -> None:
        """Nothing to release: MLflow's client keeps its store for the process."""

    def experiment_id(self, name: str, location: str | None) -> str:
        """The id of experiment ``name``, created if missing (at ``location``), either way
        marked as a model-training experiment."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, location, {KIND_TAG: KIND_TRAINING})
            except MlflowException:  # another process created it first
                found = self.client.get_experiment_by_name(name)
        if found.tags.get(KIND_TAG) != KIND_TRAINING:
            self.client.set_experiment_tag(found.experiment_id, KIND_TAG, KIND_TRAINING)
        return found.experiment_id

    def find_experiment(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        return None if found is None else found.experiment_id

    def create(
        self, experiment_id: str, new_runs: list[NewRun], claim: Claim | None = None
    ) -> list[CreatedRun | Held]:
        """Create the runs; with a ``claim``, not those whose grid points another run holds
        (``backends.holders``). Through a client the claim is a search, then the creation:
        two sweeps that claim the same point within that moment both run it."""
        held = {} if claim is None else self._holders(experiment_id, claim)
        fresh = [new for new in new_runs if new.tags[Tag.FINGERPRINT] not in held]
        created = iter(self._create(experiment_id, fresh))
        return [held.get(new.tags[Tag.FINGERPRINT]) or next(created) for new in new_runs]

    def _holders(self, experiment_id: str, claim: Claim) -> dict[str, Held]:
        """The holders among RUNNING runs and those FINISHED since a while before the claimant
        planned (a run is stamped before it is created; ``CLAIM_MARGIN_MS`` covers that)."""
        since = claim.planned_ms - CLAIM_MARGIN_MS
        running = f"attributes.status = '{Status.RUNNING}'"
        finished = f"attributes.status = '{Status.FINISHED}' and attributes.start_time >= {since}"
        found = [
            run
            for matching in (running, finished)
            for run in all_runs(self.client, experiment_id, matching)
        ]
        candidates = [
            (
                r.info.run_id,
                r.data.tags.get(Tag.FINGERPRINT, ""),
                r.info.status,
                r.info.start_time,
                r.data.tags.get(Tag.OWNER, ""),
            )
            for r in found
        ]
        return holders(candidates, claim)

    def _create(self, experiment_id: str, new_runs: list[NewRun]) -> list[CreatedRun]:
        def create_one(new: NewRun) -> CreatedRun:
            client = self.client
            run = retrying(client.create_run, experiment_id, run_name=new.name, tags=new.tags)
            params = [Param(k, v) for k, v in new.params.items()]
            retrying(client.log_batch, run.info.run_id, params=params)
            if new.inputs:
                datasets = [dataset_input_entity(entry) for entry in new.inputs]
                retrying(client.log_inputs, run.info.run_id, datasets=datasets)
            return CreatedRun(run.info.run_id, run.info.start_time, run.info.artifact_uri)

        return in_threads(create_one, new_runs)

    def save_configs(self, configs: list[tuple[str, str]]) -> None:
        save_configs(self.uri, configs)

    def write(self, batch: Writes) -> None:
        def write_one(run: str) -> None:
            retrying(
                self.client.log_batch,
                run,
                metrics=[
                    Metric(key, value, stamp, step)
                    for key, steps, values, stamps in batch.metrics.get(run, [])
                    for step, value, stamp in zip(steps, values, stamps, strict=True)
                ],
                tags=[RunTag(k, v) for k, v in batch.tags.get(run, {}).items()],
            )
            if run in batch.ended:
                status, end = batch.ended[run]
                retrying(self.client.set_terminated, run, status, end)

        in_threads(write_one, list({*batch.metrics, *batch.tags, *batch.ended}))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def create_run(
        self, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, str]
    ) -> str:
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        entries = [Param(k, v) for k, v in params.items()]
        for chunk in chunks(entries, PARAM_TAG_LIMIT):
            self.client.log_batch(run.info.run_id, params=chunk)
        return run.info.run_id

    def runs(self, experiment_id: str, tags: dict[str, str], status: str | None = None) -> list:
        """The experiment's active runs that carry ``tags`` (and have ``status``), newest
        first, as (run id, status, all their tags)."""
        matching = [f"tags.{key} = '{value}'" for key, value in tags.items()]
        matching += [f"attributes.status = '{status}'"] if status else []
        found = all_runs(self.client, experiment_id, " and ".join(matching))
        return [(run.info.run_id, run.info.status, run.data.tags) for run in found]

    def grid_runs(self, experiment_id: str) -> list[RunRecord]:
        return [
            RunRecord.of(run.info.run_id, run.info.status, run.data.tags, run.data.metrics)
            for run in all_runs(self.client, experiment_id)
            if is_grid_point(run.data.tags)
        ]

    def record(self, run_id: str) -> RunRecord:
        run = self.client.get_run(run_id)
        return RunRecord.of(run_id, run.info.status, run.data.tags, run.data.metrics)

    def swap_tag(self, run_id: str, key: str, seen: str, new: str) -> bool:
        """On a database, one conditional write (``sql.Database.swap_tag``: its tags table is
        the same in every schema); through a server, a plain one (the later writer wins)."""
        if is_database(self.uri):
            return _on_database(self.uri, lambda db: db.swap_tag(run_id, key, seen, new))
        self.client.set_tag(run_id, key, new)
        return True

    def set_status(self, run_id: str, status: str) -> None:
        self.client.update_run(run_id, status=status)

    def end_if_running(self, run_id: str, status: str, why: str) -> bool:
        """On a database the check and the change are one conditional update; through a
        server they are two calls, with a moment between them in which the run's own process
        may end it (its status then wins)."""
        if is_database(self.uri):
            return _on_database(self.uri, lambda db: db.end_if_running(run_id, status, why))
        ended = self.client.get_run(run_id).info.status == Status.RUNNING
        if ended:
            self.client.set_terminated(run_id, status)
            self.client.set_tag(run_id, Tag.ERROR, why)
        return ended

    def delete_runs(self, run_ids: list[str]) -> None:
        """Mark the runs deleted, only those that were stopped (KILLED or FAILED)."""
        for run_id in run_ids:
            if self.client.get_run(run_id).info.status in STOPPED:
                self.client.delete_run(run_id)

    def read_tables(self, experiment_id: str) -> ExperimentTables:
        if is_database(self.uri):
            return _on_database(self.uri, lambda db: db.read_tables(experiment_id))
        return read_tables(self.uri, experiment_id)


def save_configs(uri: str, configs: list[tuple[str, str]]) -> None:
    """Save each (artifact URI, text) as the ``config.yaml`` artifact of a run of the store at
    ``uri``, through MLflow's artifact repository for that URI (no lookup of the run), a few
    at a time."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from harness.records.backends.sql import CONFIG_FILE

    with tempfile.TemporaryDirectory() as folder:

        def save(entry: tuple[int, tuple[str, str]]) -> None:
            index, (artifact_uri, text) = entry
            path = Path(folder) / str(index) / CONFIG_FILE
            path.parent.mkdir()
            path.write_text(text)
            get_artifact_repository(artifact_uri, uri).log_artifact(str(path))

        in_threads(save, list(enumerate(configs)))


def _on_database(uri: str, call: Callable[..., T]) -> T:
    """``call`` on a ``sql.Database`` of ``uri`` opened for it."""
    from harness.records.backends.sql import Database

    database = Database(uri)
    try:
        return call(database)
    finally:
        database.close()


def dataset_input_entity(entry: DatasetInput) -> MlflowDatasetInput:
    """MLflow's dataset input entity for ``entry``, as ``log_inputs`` takes it."""
    dataset = Dataset(
        entry.name, entry.digest, entry.source_type, entry.source, profile=entry.profile
    )
    return MlflowDatasetInput(dataset, [InputTag(DATASET_CONTEXT, entry.context)])


def read_tables(uri: str, experiment_id: str) -> ExperimentTables:
    """``read_experiment`` from an MLflow server: runs, params and tags from paged run searches
    (active runs), the histories of each metric from the server's bulk endpoint for the runs
    whose latest metrics name it."""
    import pandas as pd

    runs = list(all_runs(MlflowClient(tracking_uri=uri), experiment_id))
    keys: dict[str, list[str]] = {}
    for run in runs:
        for key in run.data.metrics:
            keys.setdefault(key, []).append(run.info.run_id)
    info = [
        (r.info.run_id, r.info.run_name, r.info.status, r.info.start_time, r.info.end_time)
        for r in runs
    ]
    params = [(r.info.run_id, k, v) for r in runs for k, v in r.data.params.items()]
    tags = [(r.info.run_id, k, v) for r in runs for k, v in r.data.tags.items()]
    points = [p for key, run_ids in keys.items() for p in _metric_histories(uri, key, run_ids)]
    return ExperimentTables(
        pd.DataFrame(info, columns=["run_id", "run_name", "status", "start_time", "end_time"]),
        pd.DataFrame(params, columns=["run_id", "key", "value"]),
        pd.DataFrame(tags, columns=["run_id", "key", "value"]),
        pd.DataFrame(points, columns=["run_id", "key", "value", "step", "timestamp"]),
    )


def _metric_histories(uri: str, key: str, run_ids: list[str]) -> list[dict]:
    """Every point of metric ``key`` of the runs (dicts with run_id, key, value, step and
    timestamp) from the server's bulk endpoint, ``HISTORY_RUNS`` runs a request. The server
    cuts an answer at ``HISTORY_LIMIT`` points, so a full answer is asked again in halves, and
    a single run's by MLflow's paged history call."""
    if len(run_ids) > HISTORY_RUNS:
        parts = chunks(run_ids, HISTORY_RUNS)
        return [p for part in parts for p in _metric_histories(uri, key, part)]
    query = {"run_id": run_ids, "metric_key": key, "max_results": HISTORY_LIMIT}
    answer = http_request(get_default_host_creds(uri), HISTORY_ENDPOINT, "GET", params=query)
    points = verify_rest_response(answer, HISTORY_ENDPOINT).json().get("metrics", [])
    if len(points) < HISTORY_LIMIT:
        return points
    if len(run_ids) == 1:
        history = MlflowClient(tracking_uri=uri).get_metric_history(run_ids[0], key)
        return [{**m.to_dictionary(), "run_id": run_ids[0]} for m in history]
    half = len(run_ids) // 2
    return _metric_histories(uri, key, run_ids[:half]) + _metric_histories(uri, key, run_ids[half:])


def connect(uri: str) -> MlflowClient:
    """MLflow's client of the store at ``uri``, after refusing a database the installed MLflow
    cannot open (ConfigError: see ``backends.opening.check_schema``)."""
    if is_database(uri):
        from harness.records.backends import opening

        opening.check_schema(uri)
    return MlflowClient(tracking_uri=uri)


def open_client(uri: str) -> MlflowClient:
    """``connect``, with any failure to open the store (MLflow's own) as a ConfigError."""
    try:
        client = connect(uri)
        client.search_experiments(max_results=1)
    except ConfigError:
        raise
    except Exception as error:
        raise cannot_open(uri, error) from error
    return client


def all_runs(client: MlflowClient, experiment: str, matching: str = "") -> Iterator:
    """Every active run of the experiment (``matching``: MLflow's search filter), searched
    page by page."""
    token = None
    while True:
        page = client.search_runs([experiment], matching, max_results=5000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def listing(uri: str) -> list[tuple[str, str]]:
    """The store's active experiments that hold runs: (id, name), by name."""
    client = open_client(uri)
    found = [
        (experiment.experiment_id, experiment.name)
        for experiment in client.search_experiments()
        if client.search_runs([experiment.experiment_id], max_results=1)
    ]
    return sorted(found, key=lambda entry: entry[1])
