"""Writes and reads through MLflow's client: the path for an MLflow server (and for database
stores whose schema the direct writes were not verified on). Each call waits on a request, so
runs are written several at a time, and a server's "busy" answer is asked again.

Reading a server's metric histories uses the bulk endpoint MLflow's own web app reads
(``HISTORY_ENDPOINT``, through MLflow's REST helpers), not a public client call: the cluster
tests (``tests/test_server.py``) hold what it returns against the same study read from
sqlite, cut answers included."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

from harness.records import experiments
from harness.records.backends import Claim, CreatedRun, Held, NewRun, Writes, holders
from harness.records.backends.sql import dataset_input_entity
from harness.records.schema import ExperimentTables, Status, Tag

CLIENT_THREADS = 4  # runs written at once through MLflow's client
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


def in_threads(function, items: list) -> list:
    """``function`` over ``items`` on up to ``CLIENT_THREADS`` threads, results in order; the
    first error is raised."""
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(CLIENT_THREADS, len(items))) as threads:
        return list(threads.map(function, items))


class ClientWrites:
    """Creates and writes runs through MLflow's client: per run ``create_run``, ``log_batch``
    (which splits to MLflow's limits), ``log_inputs`` and ``set_terminated``, for
    ``CLIENT_THREADS`` runs at a time."""

    def __init__(self, client: MlflowClient):
        self.client = client

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
            for run in experiments.all_runs(self.client, experiment_id, matching)
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


def read_tables(uri: str, experiment_id: str) -> ExperimentTables:
    """``read_experiment`` from an MLflow server: runs, params and tags from paged run searches
    (active runs), the histories of each metric from the server's bulk endpoint for the runs
    whose latest metrics name it."""
    import pandas as pd

    runs = list(experiments.all_runs(MlflowClient(tracking_uri=uri), experiment_id))
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
        chunks = experiments.chunks(run_ids, HISTORY_RUNS)
        return [p for chunk in chunks for p in _metric_histories(uri, key, chunk)]
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
