"""Tracking: the package's one door to MLflow.

One MLflow run per configuration: params are the flattened resolved config (plus the data
split's sizes), metrics are the engine's curves written in batched calls, tags carry the
fingerprint, the divergence flag, the device, library versions and the git commit, and the
resolved config is an artifact. A run that raises is recorded FAILED (KILLED on Ctrl-C) with
its error, never left RUNNING.

Every call takes a cohort of runs, and their writes are batched: on a database store (sqlite,
PostgreSQL, MySQL) the cohort's runs are created with their params and tags in one
transaction, and their curves, end-of-run metrics, tags and statuses go in another; on an
MLflow server they go through the client, several runs at a time. The writes run in a forked writer
process (where the platform forks), so they overlap training; ``finish_runs`` and ``fail_runs``
return only once everything queued for the runs is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import platform
import queue
import re
import signal
import subprocess
import tempfile
import time
import traceback
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_metric

from harness.config import (
    ConfigError,
    RunConfig,
    TrackingConfig,
    as_dict,
    fingerprint,
    flatten,
    yaml_text,
)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
BATCH_LIMIT = 1000  # MLflow's cap on metrics in one log_batch call
PARAM_TAG_LIMIT = 100  # and on params plus tags
PARENT_TAG = "mlflow.parentRunId"  # how the MLflow UI nests a sweep's runs under its parent
SWEEP_TAG = "sweep_id"
ROLE_TAG = "role"  # "sweep" on a sweep's parent run; grid points carry no role
OWNER_TAG = "owner"  # the process that writes the run: host:pid:start time[@slurm:job]
SQLITE_CACHE_KIB = 131072  # page cache of the writer's sqlite connection, at most
ROWS_PER_INSERT = 50_000  # metric rows built and inserted at a time
CLIENT_THREADS = 4  # runs written at once through MLflow's client (an MLflow server)
# A server's answer that means "busy, ask again": its database connection pool ran out (MLflow
# answers 400; its HTTP layer already retries 5xx answers). Retried after 1, 2, 4, ... s.
TRANSIENT = ("QueuePool limit",)
RETRIES = 7
FLUSH_SECONDS = 10.0  # curves of runs still training are written at most this often
HISTORY_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"  # on an MLflow server
HISTORY_LIMIT = 25_000  # points in one answer of that endpoint, at most
HISTORY_RUNS = 100  # and runs in one request


def project_root() -> Path:
    """The checkout that holds this package (an editable install), else the working folder."""
    return PACKAGE_ROOT if (PACKAGE_ROOT / "pyproject.toml").is_file() else Path.cwd()


def resolve_uri(uri: str | None) -> str:
    """An explicit ``tracking.uri`` beats ``$MLFLOW_TRACKING_URI``, which beats the default
    ``sqlite:///<project root>/mlflow.db``. Relative sqlite paths are made absolute."""
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path != ":memory:":
            uri = f"sqlite:///{Path(path).expanduser().resolve()}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_uri(uri: str) -> None:
    """Reject a URI MLflow cannot use, before any run is created."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            "tracking.uri",
            uri,
            f"expected a URI with scheme {', '.join(SCHEMES)} "
            "(MLflow's file store is gone since 3.13; use sqlite:///path.db)",
        )
    path = _sqlite_path(uri)
    if path is not None and not path.parent.is_dir():
        raise ConfigError("tracking.uri", uri, f"folder {path.parent} does not exist")
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3).close()
        except OSError as error:
            allowed = f"no MLflow server answers there ({error})"
            raise ConfigError("tracking.uri", uri, allowed) from error


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store go beside the database file, in mlartifacts/<experiment>."""
    path = _sqlite_path(uri)
    if path is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
    return (path.parent / "mlartifacts" / slug).as_uri()


@functools.cache
def git_commit() -> str:
    """The project's commit, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project_root()), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def environment_tags() -> dict[str, str]:
    """Library versions and the git commit."""
    import hydra
    import torch

    from harness import __version__

    return {
        "harness_version": __version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "hydra_version": hydra.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
    }


def param_value(value: Any) -> str:
    """Strings as they are; everything else as JSON, so numbers read back as numbers."""
    return value if isinstance(value, str) else json.dumps(value)


def run_params(spec: RunConfig, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The flattened resolved config, plus ``extra`` (e.g. the data split's sizes)."""
    flat = flatten(as_dict(spec))
    flat.update(extra or {})
    return {key: param_value(value) for key, value in flat.items()}


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TrackingError(RuntimeError):
    """MLflow refused a write, or the writer process died."""


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (opening the store on first use)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, _artifact_location(uri, name))
    except MlflowException:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def _reopen_or_create(client: MlflowClient, experiment_id: str, role: str, match: str, name, tags):
    """The run with tag ``role`` (and matching the filter ``match``), set RUNNING again, or a
    new one named ``name`` with ``tags``; returns (run id, whether it is new)."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.{ROLE_TAG} = '{role}'{match}", max_results=1
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id, False
    run = client.create_run(experiment_id, run_name=name, tags={ROLE_TAG: role, **tags})
    return run.info.run_id, True


@dataclass
class NewRun:
    """A run to create: its name, tags, params (strings) and resolved config (the artifact)."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    config: dict


@dataclass(frozen=True)
class CreatedRun:
    run_id: str
    start_ms: int
    artifact_uri: str


# A stretch of one metric's curve: (key, steps, values, timestamps in ms), lists of equal length
Series = tuple[str, list[int], list[float], list[int]]


@dataclass
class Writes:
    """One batch of writes, by MLflow run id: metrics and tags to add, and the runs to end
    (status, end time in ms)."""

    metrics: dict[str, list[Series]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    ended: dict[str, tuple[str, int]] = field(default_factory=dict)


class DatabaseWrites:
    """Creates and writes many runs per transaction on a database store, leaving the tables as
    MLflow's own ``create_run``, ``log_batch`` and ``set_terminated`` would: run rows (with the
    ``mlflow.runName`` tag and user "unknown", as the client's ``create_run``), metric rows
    (NaN stored as 0 with ``is_nan``, infinities as the largest floats), the latest value per
    run and metric by (step, timestamp, value), params, tags (replacing a tag of the same key)
    and run status. The client needs four or more transactions per run; a cohort needs two
    here (tests/test_tracking.py checks both leave the same records)."""

    def __init__(self, store, client: MlflowClient):
        from mlflow.store.tracking.dbmodels.models import (
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        self.store, self.client = store, client
        self.metrics, self.latest = SqlMetric.__table__, SqlLatestMetric.__table__
        self.params, self.tags, self.runs = SqlParam.__table__, SqlTag.__table__, SqlRun.__table__
        self.artifact_roots: dict[str, str] = {}

    def create(self, experiment_id: str, new_runs: list[NewRun]) -> list[CreatedRun]:
        if experiment_id not in self.artifact_roots:
            found = self.client.get_experiment(experiment_id)
            if found.lifecycle_stage != "active":
                raise MlflowException(f"experiment {found.name!r} is deleted")
            self.artifact_roots[experiment_id] = found.artifact_location
        now, created, rows, params, tags = int(1000 * time.time()), [], [], [], []
        for new in new_runs:
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(
                self.artifact_roots[experiment_id], run_id, "artifacts"
            )
            created.append(CreatedRun(run_id, now, artifact_uri))
            rows.append(
                (
                    run_id,
                    new.name,
                    "UNKNOWN",
                    "",
                    "",
                    new.tags.get("mlflow.user", "unknown"),
                    "RUNNING",
                    now,
                    None,
                    None,
                    "",
                    "active",
                    artifact_uri,
                    int(experiment_id),
                )
            )
            params += [(run_id, key, value) for key, value in new.params.items()]
            tags += [(run_id, k, v) for k, v in {"mlflow.runName": new.name, **new.tags}.items()]
        columns = (
            "run_uuid",
            "name",
            "source_type",
            "source_name",
            "entry_point_name",
            "user_id",
            "status",
            "start_time",
            "end_time",
            "deleted_time",
            "source_version",
            "lifecycle_stage",
            "artifact_uri",
            "experiment_id",
        )
        with self._transaction() as connection:
            self._insert(connection, self.runs, columns, rows)
            self._insert(connection, self.params, ("run_uuid", "key", "value"), params)
            self._insert(connection, self.tags, ("run_uuid", "key", "value"), tags)
        return created

    def write(self, batch: Writes) -> None:
        from sqlalchemy import bindparam, update

        tag_rows = [
            (run, key, value) for run, tags in batch.tags.items() for key, value in tags.items()
        ]
        metric_columns = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")
        with self._transaction() as connection:
            for runs in self._slices(batch.metrics):  # rows for a slice of runs at a time
                metric_rows = self._metric_rows({run: batch.metrics[run] for run in runs})
                if metric_rows:
                    self._insert(connection, self.metrics, metric_columns, metric_rows)
                    newer = self._newer_latest(connection, metric_rows)
                    self._replace(connection, self.latest, metric_columns, newer)
            self._replace(connection, self.tags, ("run_uuid", "key", "value"), tag_rows)
            if batch.ended:
                statement = (
                    update(self.runs)
                    .where(self.runs.c.run_uuid == bindparam("run"))
                    .values(status=bindparam("new_status"), end_time=bindparam("new_end"))
                )
                ended = [
                    {"run": run, "new_status": status, "new_end": end}
                    for run, (status, end) in batch.ended.items()
                ]
                connection.execute(statement, ended)

    @contextlib.contextmanager
    def _transaction(self):
        """A connection in a transaction; sqlite gets a page cache large enough to keep the
        metric indexes in memory while a cohort's rows go in (a quarter less time)."""
        with self.store.engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            yield connection

    @staticmethod
    def _slices(metrics: dict[str, list[Series]]):
        """The runs in groups of about ``ROWS_PER_INSERT`` metric points, so the rows of a
        large cohort are never all in memory at once."""
        group, count = [], 0
        for run, series in metrics.items():
            group.append(run)
            count += sum(len(steps) for _, steps, _, _ in series)
            if count >= ROWS_PER_INSERT:
                yield group
                group, count = [], 0
        if group:
            yield group

    def _metric_rows(self, metrics: dict[str, list[Series]]) -> list[tuple]:
        rows, checked = [], set()
        sanitize = self.store.sanitize_metric_value
        for run, series in metrics.items():
            for key, steps, values, stamps in series:
                if key not in checked and steps:  # the key's name; values are the engine's
                    _validate_metric(key, values[0], stamps[0], steps[0])
                    checked.add(key)
                for step, value, stamp in zip(steps, values, stamps, strict=True):
                    is_nan, value = sanitize(float(value))
                    rows.append((run, key, value, stamp, step, is_nan))
        return rows

    def _newer_latest(self, connection, rows: list[tuple]) -> list[tuple]:
        """The rows that become the latest value of their (run, metric): the largest
        (step, timestamp, value), against those already stored."""
        from sqlalchemy import select

        def order(row):  # (step, timestamp, value) of (run, key, value, timestamp, step, ...)
            return row[4], row[3], row[2]

        best: dict[tuple[str, str], tuple] = {}
        for row in rows:
            if row[:2] not in best or order(row) > order(best[row[:2]]):
                best[row[:2]] = row
        runs = sorted({run for run, _ in best})
        latest = self.latest.c
        for start in range(0, len(runs), 500):
            found = connection.execute(
                select(
                    latest.run_uuid, latest.key, latest.step, latest.timestamp, latest.value
                ).where(latest.run_uuid.in_(runs[start : start + 500]))
            )
            for run, key, step, timestamp, value in found:
                new = best.get((run, key))
                if new is not None and (step, timestamp, value) >= order(new):
                    del best[(run, key)]
        return list(best.values())

    @staticmethod
    def _insert(connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert ``rows`` (tuples in ``columns`` order) with one DB-API executemany: the
        statement is compiled once by SQLAlchemy for the store's dialect."""
        from sqlalchemy import insert

        if not rows:
            return
        compiled = (
            insert(table).values({c: None for c in columns}).compile(dialect=connection.dialect)
        )
        if compiled.positional:
            order = [columns.index(name) for name in compiled.positiontup]
            parameters = [tuple(row[i] for i in order) for row in rows]
        else:
            parameters = [dict(zip(columns, row, strict=True)) for row in rows]
        connection.exec_driver_sql(str(compiled), parameters)

    def _replace(self, connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert ``rows``, first deleting the rows with the same (run, key)."""
        from sqlalchemy import and_, bindparam, delete

        if not rows:
            return
        same = and_(table.c.run_uuid == bindparam("run"), table.c.key == bindparam("name"))
        connection.execute(delete(table).where(same), [{"run": r[0], "name": r[1]} for r in rows])
        self._insert(connection, table, columns, rows)


def _retrying(call, *args, **kwargs):
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


def _in_threads(function, items: list) -> list:
    """``function`` over ``items`` on up to ``CLIENT_THREADS`` threads, results in order; the
    first error is raised."""
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(CLIENT_THREADS, len(items))) as threads:
        return list(threads.map(function, items))


class ClientWrites:
    """Creates and writes runs through MLflow's client (stores that are not databases, such as
    an MLflow server): per run ``create_run``, ``log_batch`` (which splits to MLflow's limits)
    and ``set_terminated``, for ``CLIENT_THREADS`` runs at a time, since each call waits on a
    request to the server."""

    def __init__(self, client: MlflowClient):
        self.client = client

    def create(self, experiment_id: str, new_runs: list[NewRun]) -> list[CreatedRun]:
        def create_one(new: NewRun) -> CreatedRun:
            client = self.client
            run = _retrying(client.create_run, experiment_id, run_name=new.name, tags=new.tags)
            params = [Param(k, v) for k, v in new.params.items()]
            _retrying(client.log_batch, run.info.run_id, params=params)
            return CreatedRun(run.info.run_id, run.info.start_time, run.info.artifact_uri)

        return _in_threads(create_one, new_runs)

    def write(self, batch: Writes) -> None:
        def write_one(run: str) -> None:
            _retrying(
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
                _retrying(self.client.set_terminated, run, status, end)

        _in_threads(write_one, list({*batch.metrics, *batch.tags, *batch.ended}))


@dataclass
class _OpenRun:
    run_id: str
    start_ms: int
    pending: list[Series] = field(default_factory=list)  # curves not written yet


class Recorder:
    """Performs the MLflow writes of runs named by handles the caller chooses, many runs at a
    time: runs are created with their params, then their curves are held until they end (or
    every ``flush_seconds`` while they train, so long runs show their curves live) and written
    with the end-of-run metrics, tags and status. On a database store each step is one
    transaction for all the runs (``bulk``); elsewhere MLflow's client writes run by run."""

    def __init__(self, uri: str, flush_seconds: float = FLUSH_SECONDS, bulk: bool = True):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self.client = MlflowClient(tracking_uri=uri)
        store = self.client._tracking_client.store
        database = bulk and isinstance(store, SqlAlchemyStore)
        self.writes = DatabaseWrites(store, self.client) if database else ClientWrites(self.client)
        self.flush_seconds = flush_seconds
        self.runs: dict[str, _OpenRun] = {}
        self.last_flush = time.monotonic()

    def experiment(self, handles, name: str) -> str:
        return _experiment_id(self.client, self.client.tracking_uri, name)

    def start(self, handles: list[str], experiment_id: str, new_runs: list[NewRun]) -> None:
        created = self.writes.create(experiment_id, new_runs)
        for handle, run in zip(handles, created, strict=True):
            self.runs[handle] = _OpenRun(run.run_id, run.start_ms)
        with tempfile.TemporaryDirectory() as folder:

            def upload(pair: tuple[NewRun, CreatedRun]) -> None:
                new, run = pair
                path = Path(folder) / run.run_id / "config.yaml"
                path.parent.mkdir()
                path.write_text(yaml_text(new.config))
                repository = get_artifact_repository(run.artifact_uri, self.client.tracking_uri)
                repository.log_artifact(str(path))

            _in_threads(upload, list(zip(new_runs, created, strict=True)))

    def curves(self, handles: list[str], chunks: list[dict], seconds_at: dict[int, float]):
        """Hold ``{metric: (steps, values)}`` per run, timestamped at the run's start plus
        seconds_at; write all held points when ``flush_seconds`` have passed."""
        offsets = {step: int(1000 * seconds) for step, seconds in seconds_at.items()}
        for handle, chunk in zip(handles, chunks, strict=True):
            run = self.runs[handle]
            for name, (steps, values) in chunk.items():
                if len(steps) != len(values):
                    raise ValueError(f"{name}: {len(steps)} steps but {len(values)} values")
                stamps = [run.start_ms + offsets.get(step, 0) for step in steps]
                run.pending.append((name, steps, values, stamps))
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
            batch.ended[run.run_id] = ("FINISHED", now)
        self._write(batch, handles)
        return [self.runs.pop(handle).run_id for handle in handles]

    def fail(self, handles: list[str], status: str, message: str, text: str) -> list[str]:
        """Write the held curves and the error, and end the runs with ``status``."""
        handles = [h for h in handles if h in self.runs]  # runs never created are skipped
        batch, now = Writes(), int(1000 * time.time())
        for handle in handles:
            run = self.runs[handle]
            batch.metrics[run.run_id] = run.pending
            batch.tags[run.run_id] = {"error": message, "mlflow.note.content": text}
            batch.ended[run.run_id] = (status, now)
        self._write(batch, handles, status)
        return [self.runs.pop(handle).run_id for handle in handles]

    def _write(self, batch: Writes, handles: list[str], status: str = "FAILED") -> None:
        """Write ``batch``; if that raises, still end the runs (``status``), then re-raise."""
        try:
            self.writes.write(batch)
        except Exception:
            for handle in handles:
                run = self.runs.pop(handle)
                self.client.set_terminated(run.run_id, status)
            raise
        finally:
            self.last_flush = time.monotonic()


def _messages(inbox, parent: int):
    """The parent's messages until it says stop (None) or dies (the writer is then orphaned)."""
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if message is None:
            return
        yield message


def _serve(uri: str, inbox, outbox, parent: int, options: dict) -> None:
    """The writer process: run Recorder calls in order; reply where asked, with the errors met
    for the call's handles. A run whose writes failed is ended FAILED at its finish. Ctrl-C is
    left to the parent, which records KILLED, and so are SIGTERM and SIGUSR2 (a SLURM job's
    end: SLURM signals every process of the job); the writer ends when its parent does."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    # Forget stores inherited from the parent: their sqlite connections must not be shared.
    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    recorder, errors = None, {}
    for method, handles, args, reply in _messages(inbox, parent):
        result = None
        try:
            recorder = recorder or Recorder(uri, **options)
            result = _perform(recorder, method, handles, args, errors)
        except Exception as error:  # reported to the parent at the runs' finish or fail
            for handle in handles:
                errors.setdefault(handle, f"{type(error).__name__}: {error}")
        if reply:
            outbox.put((result, {h: errors.pop(h) for h in handles if h in errors}))


def _perform(recorder: Recorder, method: str, handles: list[str], args: tuple, errors: dict):
    """A Recorder call; at ``finish``, runs with an earlier error are ended FAILED instead."""
    if method != "finish" or not any(h in errors for h in handles):
        return getattr(recorder, method)(handles, *args)
    failed = [h for h in handles if h in errors]
    for handle in failed:
        recorder.fail([handle], "FAILED", errors[handle], errors[handle])
    fine = [i for i, h in enumerate(handles) if h not in errors]
    summaries, tags = args
    done = recorder.finish(
        [handles[i] for i in fine], [summaries[i] for i in fine], [tags[i] for i in fine]
    )
    run_ids = dict(zip([handles[i] for i in fine], done, strict=True))
    return [run_ids.get(handle) for handle in handles]


class Writer:
    """Recorder calls in a forked process, so MLflow's writes overlap training; calls that
    ask for a reply wait until that call and all before it are done."""

    def __init__(self, uri: str, **options):
        context = multiprocessing.get_context("fork")
        self.inbox, self.outbox = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_serve, args=(uri, self.inbox, self.outbox, os.getpid(), options), daemon=True
        )
        self.process.start()

    def call(self, method: str, handles: list[str], *args, reply: bool = False):
        """Queue the call; with ``reply``, wait and return (result, errors by handle)."""
        self.inbox.put((method, handles, args, reply))
        if not reply:
            return None
        while True:
            try:
                return self.outbox.get(timeout=1.0)
            except queue.Empty:
                if not self.process.is_alive():
                    raise TrackingError("the tracking writer process died") from None

    def close(self) -> None:
        self.inbox.put(None)
        self.process.join(timeout=30)


class InlineWriter:
    """Recorder calls in this process (where fork is not available)."""

    def __init__(self, uri: str, **options):
        self.uri, self.options = uri, options
        self.recorder: Recorder | None = None
        self.errors: dict[str, str] = {}

    def call(self, method: str, handles: list[str], *args, reply: bool = False):
        result = None
        try:
            self.recorder = self.recorder or Recorder(self.uri, **self.options)
            result = _perform(self.recorder, method, handles, args, self.errors)
        except Exception as error:
            for handle in handles:
                self.errors.setdefault(handle, f"{type(error).__name__}: {error}")
        if reply:
            return result, {h: self.errors.pop(h) for h in handles if h in self.errors}
        return None

    def close(self) -> None:
        """Nothing runs in the background."""


@dataclass(frozen=True)
class Recorded:
    """What became of a run's record: its MLflow run id (None if it was never created) and
    the error that stopped its writes, if any."""

    run_id: str | None
    error: str | None = None


class Store:
    """An MLflow store and one experiment in it; runs are written through a writer, in a
    forked process where the platform can fork (``background``), else in this one. Only the
    writer connects to the store, so no database connection crosses a fork. Every call takes
    a list of runs (a cohort): their writes are batched. ``options`` go to the Recorder."""

    def __init__(self, uri: str, experiment: str, background: bool = True, **options):
        self.uri = uri
        forks = background and "fork" in multiprocessing.get_all_start_methods()
        self.writer = Writer(uri, **options) if forks else InlineWriter(uri, **options)
        try:
            self.experiment_id = self._reply("experiment", ["experiment"], experiment)
        except BaseException:
            self.close()
            raise

    def _reply(self, method: str, handles: list[str], *args):
        result, errors = self.writer.call(method, handles, *args, reply=True)
        if errors:
            raise TrackingError(next(iter(errors.values())))
        return result

    def start_runs(
        self,
        specs: list[RunConfig],
        names: list[str],
        params: list[dict[str, str]],
        tags: list[dict[str, str]],
    ) -> list[str]:
        """Queue the creation of the runs (RUNNING) with their params, tags (besides the
        fingerprint, versions and commit) and config artifacts; returns the handles that
        name them in the other calls."""
        common = environment_tags()
        runs = [
            NewRun(
                name,
                {"fingerprint": fingerprint(spec), **common, **run_tags},
                run_params,
                as_dict(spec),
            )
            for spec, name, run_params, run_tags in zip(specs, names, params, tags, strict=True)
        ]
        handles = [uuid.uuid4().hex for _ in runs]
        self.writer.call("start", handles, self.experiment_id, runs)
        return handles

    def log_curves(self, handles: list[str], chunks: list[dict], seconds_at: dict[int, float]):
        """Queue chunks of curves ``{metric: (steps, values)}``, one per run."""
        self.writer.call("curves", handles, chunks, seconds_at)

    def finish_runs(self, handles: list[str], results: list) -> list[Recorded]:
        """Write the end-of-run metrics and tags, and mark the runs FINISHED once everything
        queued for them is written. The curves come by ``log_curves``."""
        summaries, tags = [], []
        for result in results:
            last_step = result.diverged_step if result.diverged else result.plan.total_steps
            summary = {"wall_seconds": (result.seconds, last_step)}
            if result.diverged:
                summary["diverged_step"] = (result.diverged_step, last_step)
            summaries.append(summary)
            tags.append(
                {
                    "diverged": str(result.diverged).lower(),
                    "device": result.device,
                    "device_name": result.device_name,
                    "cohort_size": str(result.cohort_size),
                }
            )
        run_ids, errors = self.writer.call("finish", handles, summaries, tags, reply=True)
        run_ids = run_ids or [None] * len(handles)
        return [Recorded(r, errors.get(h)) for h, r in zip(handles, run_ids, strict=True)]

    def fail_runs(self, handles: list[str], error: BaseException) -> None:
        """Record the error and mark the runs FAILED, or KILLED when interrupted."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        text = "".join(traceback.format_exception(error))[-5000:]
        message = f"{type(error).__name__}: {error}"[:5000]
        self._reply("fail", handles, status, message, text)

    def close(self) -> None:
        """Stop the writer process, if any."""
        self.writer.close()


@dataclass(frozen=True)
class RunRecord:
    """What a sweep needs to know of a grid point's run already in the store."""

    run_id: str
    fingerprint: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED | SCHEDULED
    owner: str  # the OWNER_TAG of the process that wrote it, "" if unknown
    diverged: bool = False
    sweep: str = ""  # the SWEEP_TAG of the sweep that ran it


def _all_runs(client: MlflowClient, experiment_id: str):
    """Every active run of the experiment, searched page by page."""
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=5000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


class Ledger:
    """A sweep's view of its study's experiment, from the sweep's own process: the grid points
    already recorded, the sweep's parent run, and repairs of runs a dead process left RUNNING.
    Opening it creates the database schema and the experiment, once, before any worker runs."""

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            self.experiment_id = _experiment_id(self.client, uri, experiment)
        except Exception as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            allowed = f"MLflow cannot open it: {first_line}"
            raise ConfigError("tracking.uri", uri, allowed) from error

    def grid_runs(self) -> list[RunRecord]:
        """Every run of the experiment that records a grid point (parent runs left out)."""
        return [
            RunRecord(
                run.info.run_id,
                run.data.tags.get("fingerprint", ""),
                run.info.status,
                run.data.tags.get(OWNER_TAG, ""),
                run.data.tags.get("diverged") == "true",
                run.data.tags.get(SWEEP_TAG, ""),
            )
            for run in _all_runs(self.client, self.experiment_id)
            if run.data.tags.get(ROLE_TAG) != "sweep" and "fingerprint" in run.data.tags
        ]

    def open_sweep(self, sweep_id: str, name: str, params: dict[str, str], tags: dict) -> str:
        """The parent run of sweep ``sweep_id``: the one an earlier attempt left, set RUNNING
        again, or a new one."""
        run_id, new = _reopen_or_create(
            self.client,
            self.experiment_id,
            "sweep",
            f" and tags.{SWEEP_TAG} = '{sweep_id}'",
            name,
            {SWEEP_TAG: sweep_id, **environment_tags(), **tags},
        )
        if new:
            entries = [Param(k, v) for k, v in params.items()]
            for chunk in _chunks(entries, PARAM_TAG_LIMIT):
                self.client.log_batch(run_id, params=chunk)
        return run_id

    def close_sweep(
        self, run_id: str, status: str, counts: dict[str, int], times: dict[str, float], note: str
    ) -> None:
        """Record the sweep's outcome counts (``runs_*``), its time (``times``: name -> s) and
        its summary (as the run's description)."""
        now = int(1000 * time.time())
        metrics = [Metric(f"runs_{key}", value, now, 0) for key, value in counts.items()]
        metrics += [Metric(key, value, now, 0) for key, value in times.items()]
        self.client.log_batch(run_id, metrics=metrics, tags=[RunTag("mlflow.note.content", note)])
        self.client.set_terminated(run_id, status)

    def mark(self, run_id: str, status: str, message: str) -> None:
        """End a run someone else left RUNNING, saying why."""
        self.client.set_tag(run_id, "error", message)
        self.client.set_terminated(run_id, status)


@dataclass
class ExperimentTables:
    """An experiment's records as long tables (pandas DataFrames), read in bulk:
    ``runs`` (run_id, run_name, status, start_time, end_time; times in ms), ``params`` and
    ``tags`` (run_id, key, value), ``metrics`` (run_id, key, value, step, timestamp)."""

    runs: Any
    params: Any
    tags: Any
    metrics: Any


def read_experiment(uri: str, experiment: str) -> ExperimentTables:
    """Every active run of ``experiment`` with all its params, tags and metric histories, in
    four SQL queries on the store's database (MLflow's client would need one call per run and
    metric), or in bulk requests to an MLflow server (http, https: ``_read_from_server``).
    Raises ConfigError when the store is neither or has no such experiment."""
    if uri.split(":", 1)[0] in ("http", "https"):
        return _read_from_server(uri, experiment)
    import pandas as pd
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import select

    store = MlflowClient(tracking_uri=uri)._tracking_client.store
    if not isinstance(store, SqlAlchemyStore):
        allowed = "expected a database store (sqlite:///..., postgresql://..., mysql://...)"
        raise ConfigError("tracking.uri", uri, allowed)
    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError("study", experiment, f"no experiment of that name in {uri}")
    active = select(SqlRun.run_uuid).where(
        SqlRun.experiment_id == int(found.experiment_id), SqlRun.lifecycle_stage == "active"
    )
    runs = select(
        SqlRun.run_uuid.label("run_id"),
        SqlRun.name.label("run_name"),
        SqlRun.status,
        SqlRun.start_time,
        SqlRun.end_time,
    ).where(SqlRun.run_uuid.in_(active))

    def pairs(model):
        return select(model.run_uuid.label("run_id"), model.key, model.value).where(
            model.run_uuid.in_(active)
        )

    metrics = select(
        SqlMetric.run_uuid.label("run_id"),
        SqlMetric.key,
        SqlMetric.value,
        SqlMetric.step,
        SqlMetric.timestamp,
        SqlMetric.is_nan,
    ).where(SqlMetric.run_uuid.in_(active))
    queries = (runs, pairs(SqlParam), pairs(SqlTag), metrics)
    with store.engine.connect() as connection:
        tables = ExperimentTables(*(pd.read_sql(query, connection) for query in queries))
    nan = tables.metrics.pop("is_nan").astype(bool)  # MLflow stores NaN as 0 with this flag
    tables.metrics.loc[nan, "value"] = float("nan")
    return tables


def _read_from_server(uri: str, experiment: str) -> ExperimentTables:
    """``read_experiment`` from an MLflow server: runs, params and tags from paged run searches
    (active runs), the histories of each metric from the server's bulk endpoint for the runs
    whose latest metrics name it."""
    import pandas as pd

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError("study", experiment, f"no experiment of that name in {uri}")
    runs = list(_all_runs(client, found.experiment_id))
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
        chunks = _chunks(run_ids, HISTORY_RUNS)
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


def log_report(uri: str, experiment: str, folder: Path) -> str:
    """Log ``folder`` as the artifacts of the experiment's ``report`` run (tag role=report),
    replacing an earlier report's files; returns the run id."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, uri, experiment)
    run_id, _ = _reopen_or_create(client, experiment_id, "report", "", "report", {})
    client.log_artifacts(run_id, str(folder), "report")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def open_store(cfg: TrackingConfig, background: bool = True, uri: str | None = None) -> Store:
    """Resolve and check the URI (``uri``, the sweep's already resolved one, else the
    config's), then open the store and its experiment (``background``: see ``Store``)."""
    uri = uri or resolve_uri(cfg.uri)
    check_uri(uri)
    try:
        return Store(uri, cfg.experiment, background)
    except TrackingError as error:
        raise ConfigError(
            "tracking.uri", uri, f"MLflow cannot open it: {str(error).splitlines()[0]}"
        ) from error
