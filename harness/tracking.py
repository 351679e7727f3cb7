"""Tracking: the package's one door to MLflow.

One MLflow run per configuration: params are the flattened resolved config (plus the data
split's sizes), metrics are the engine's curves written in batched calls, tags carry the
fingerprint, the divergence flag, the device, library versions and the git commit, and the
resolved config is an artifact. A run that raises is recorded FAILED (KILLED on Ctrl-C) with
its error, never left RUNNING.

The writes run in a forked writer process (where the platform forks), so they overlap
training; ``finish`` and ``fail`` return only once everything queued for the run is written.
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
import time
import traceback
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
from omegaconf import OmegaConf

from harness.config import ConfigError, RunConfig, TrackingConfig, as_dict, fingerprint, flatten

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
BATCH_LIMIT = 1000  # MLflow's cap on metrics in one log_batch call
PARAM_TAG_LIMIT = 100  # and on params plus tags
PARENT_TAG = "mlflow.parentRunId"  # how the MLflow UI nests a sweep's runs under its parent
SWEEP_TAG = "sweep_id"
ROLE_TAG = "role"  # "sweep" on a sweep's parent run; grid points carry no role
OWNER_TAG = "owner"  # the process that writes the run: host:pid:start time


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


class Recorder:
    """Performs the MLflow writes of runs named by handles the caller chooses."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.runs: dict[str, tuple[str, int]] = {}  # handle -> (run id, start in ms)

    def experiment(self, name: str) -> str:
        return _experiment_id(self.client, self.uri, name)

    def start(self, handle, experiment_id, name, tags, params, config: dict) -> None:
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.runs[handle] = (run.info.run_id, run.info.start_time)
        entries = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(entries, PARAM_TAG_LIMIT):
            self.client.log_batch(run.info.run_id, params=chunk)
        config_text = OmegaConf.to_yaml(OmegaConf.create(config))
        self.client.log_text(run.info.run_id, config_text, "config.yaml")

    def curves(self, handle, chunk: dict, seconds_at: dict[int, float]) -> None:
        """Write ``{metric: (steps, values)}``, timestamped at the run's start plus seconds_at."""
        run_id, start_ms = self.runs[handle]
        metrics = [
            Metric(name, value, start_ms + int(1000 * seconds_at.get(step, 0.0)), step)
            for name, (steps, values) in chunk.items()
            for step, value in zip(steps, values, strict=True)
        ]
        for batch in _chunks(metrics, BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=batch)

    def finish(self, handle, summary: dict[str, tuple[float, int]], tags: dict[str, str]) -> str:
        run_id, start_ms = self.runs.pop(handle)
        metrics = [Metric(k, value, start_ms, step) for k, (value, step) in summary.items()]
        with self._failed_on_error(run_id):
            self.client.log_batch(
                run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()]
            )
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def fail(self, handle, status: str, message: str, text: str) -> str | None:
        if handle not in self.runs:  # the run was never created
            return None
        run_id, _ = self.runs.pop(handle)
        tags = [RunTag("error", message), RunTag("mlflow.note.content", text)]
        with self._failed_on_error(run_id, status):
            self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, status)
        return run_id

    @contextlib.contextmanager
    def _failed_on_error(self, run_id: str, status: str = "FAILED"):
        """If the writes inside raise, still end the run (``status``), then re-raise."""
        try:
            yield
        except Exception:
            self.client.set_terminated(run_id, status)
            raise


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


def _serve(uri: str, inbox, outbox, parent: int) -> None:
    """The writer process: run Recorder calls in order; reply where asked, with the first
    error met for that handle. A run whose writes failed is finished as FAILED. Ctrl-C is left
    to the parent, which records KILLED."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Forget stores inherited from the parent: their sqlite connections must not be shared.
    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    recorder, errors = None, {}
    for method, handle, args, reply in _messages(inbox, parent):
        result = None
        try:
            recorder = recorder or Recorder(uri)
            if method == "finish" and handle in errors:
                result = recorder.fail(handle, "FAILED", errors[handle], errors[handle])
            else:
                result = getattr(recorder, method)(handle, *args)
        except Exception as error:  # reported to the parent at the run's finish or fail
            errors.setdefault(handle, f"{type(error).__name__}: {error}")
        if reply:
            outbox.put((result, errors.pop(handle, None)))


class Writer:
    """Recorder calls in a forked process, so MLflow's writes overlap training; calls that
    ask for a reply wait until that call and all before it are done."""

    def __init__(self, uri: str):
        context = multiprocessing.get_context("fork")
        self.inbox, self.outbox = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_serve, args=(uri, self.inbox, self.outbox, os.getpid()), daemon=True
        )
        self.process.start()

    def call(self, method: str, handle: str, *args, reply: bool = False):
        self.inbox.put((method, handle, args, reply))
        if not reply:
            return None
        while True:
            try:
                result, error = self.outbox.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise TrackingError("the tracking writer process died") from None
        if error is not None:
            raise TrackingError(error)
        return result

    def close(self) -> None:
        self.inbox.put(None)
        self.process.join(timeout=30)


class InlineWriter:
    """Recorder calls in this process (where fork is not available)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.recorder: Recorder | None = None

    def call(self, method: str, handle: str, *args, reply: bool = False):
        try:
            self.recorder = self.recorder or Recorder(self.uri)
            return getattr(self.recorder, method)(handle, *args)
        except Exception as error:
            raise TrackingError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        """Nothing runs in the background."""


class Store:
    """An MLflow store and one experiment in it; runs are written through a writer, in a
    forked process where the platform can fork (``background``), else in this one. Only the
    writer connects to the store, so no database connection crosses a fork."""

    def __init__(self, uri: str, experiment: str, background: bool = True):
        self.uri = uri
        forks = background and "fork" in multiprocessing.get_all_start_methods()
        self.writer = Writer(uri) if forks else InlineWriter(uri)
        try:
            self.experiment_id = self.writer.call("experiment", experiment, reply=True)
        except BaseException:
            self.close()
            raise

    def start_run(
        self, spec: RunConfig, name: str, params: dict[str, str], tags: dict[str, str]
    ) -> str:
        """Create the run (RUNNING) with its params, tags and config artifact; returns the
        handle that names it in the other calls."""
        handle = uuid.uuid4().hex
        all_tags = {"fingerprint": fingerprint(spec), **environment_tags(), **tags}
        config = as_dict(spec)
        self.writer.call("start", handle, self.experiment_id, name, all_tags, params, config)
        return handle

    def log_curves(self, handle: str, chunk: dict, seconds_at: dict[int, float]) -> None:
        """Queue a chunk of curves ``{metric: (steps, values)}``."""
        self.writer.call("curves", handle, chunk, seconds_at)

    def finish(self, handle: str, result) -> str:
        """Write the end-of-run metrics and tags, mark the run FINISHED once everything queued
        for it is written, and return its MLflow run id. The curves come by ``log_curves``."""
        last_step = result.diverged_step if result.diverged else result.plan.total_steps
        summary = {"wall_seconds": (result.seconds, last_step)}
        if result.diverged:
            summary["diverged_step"] = (result.diverged_step, last_step)
        tags = {
            "diverged": str(result.diverged).lower(),
            "device": result.device,
            "device_name": result.device_name,
        }
        return self.writer.call("finish", handle, summary, tags, reply=True)

    def fail(self, handle: str, error: BaseException) -> str | None:
        """Record the error and mark the run FAILED, or KILLED when interrupted."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        text = "".join(traceback.format_exception(error))[-5000:]
        message = f"{type(error).__name__}: {error}"[:5000]
        return self.writer.call("fail", handle, status, message, text, reply=True)

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

    def _runs(self):
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=5000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def grid_runs(self) -> list[RunRecord]:
        """Every run of the experiment that records a grid point (parent runs left out)."""
        return [
            RunRecord(
                run.info.run_id,
                run.data.tags.get("fingerprint", ""),
                run.info.status,
                run.data.tags.get(OWNER_TAG, ""),
                run.data.tags.get("diverged") == "true",
            )
            for run in self._runs()
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

    def close_sweep(self, run_id: str, status: str, counts: dict[str, int], note: str) -> None:
        """Record the sweep's outcome counts and its summary (as the run's description)."""
        now = int(1000 * time.time())
        metrics = [Metric(f"runs_{key}", value, now, 0) for key, value in counts.items()]
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
    metric). Raises ConfigError when the store is not a database or has no such experiment."""
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
    ).where(SqlMetric.run_uuid.in_(active))
    queries = (runs, pairs(SqlParam), pairs(SqlTag), metrics)
    with store.engine.connect() as connection:
        return ExperimentTables(*(pd.read_sql(query, connection) for query in queries))


def log_report(uri: str, experiment: str, folder: Path) -> str:
    """Log ``folder`` as the artifacts of the experiment's ``report`` run (tag role=report),
    replacing an earlier report's files; returns the run id."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, uri, experiment)
    run_id, _ = _reopen_or_create(client, experiment_id, "report", "", "report", {})
    client.log_artifacts(run_id, str(folder), "report")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def open_store(cfg: TrackingConfig) -> Store:
    """Resolve and check the URI, then open the store and its experiment."""
    uri = resolve_uri(cfg.uri)
    check_uri(uri)
    try:
        return Store(uri, cfg.experiment)
    except TrackingError as error:
        raise ConfigError(
            "tracking.uri", uri, f"MLflow cannot open it: {str(error).splitlines()[0]}"
        ) from error
