"""Tracking: the package's one door to MLflow.

One MLflow run per configuration: params are the flattened resolved config (plus the data
split's sizes), metrics are the engine's curves written in batched calls, tags carry the
fingerprint, the divergence flag, the device, library versions and the git commit, and the
resolved config is an artifact. A run that raises is recorded FAILED (KILLED on Ctrl-C) with
its error, never left RUNNING.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import subprocess
import traceback
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from harness.config import ConfigError, RunConfig, TrackingConfig, as_dict, fingerprint, flatten

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")
BATCH_LIMIT = 1000  # MLflow's cap on metrics in one log_batch call
PARAM_TAG_LIMIT = 100  # and on params plus tags


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


class Store:
    """An MLflow store and one experiment in it."""

    def __init__(self, uri: str, experiment: str):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment)
        self.start_ms: dict[str, int] = {}

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, _artifact_location(self.uri, name))
        except MlflowException:  # another process created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def start_run(
        self, spec: RunConfig, name: str, params: dict[str, str], tags: dict[str, str]
    ) -> str:
        """Create the run (RUNNING) with its params, tags and config artifact."""
        all_tags = {"fingerprint": fingerprint(spec), **environment_tags(), **tags}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        self.start_ms[run_id] = run.info.start_time
        entries = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(entries, PARAM_TAG_LIMIT):
            self.client.log_batch(run_id, params=chunk)
        self.client.log_text(
            run_id, OmegaConf.to_yaml(OmegaConf.create(as_dict(spec))), "config.yaml"
        )
        return run_id

    def finish(self, run_id: str, result) -> None:
        """Write the curves in batches, the divergence tags, and mark the run FINISHED."""
        start_ms = self.start_ms.pop(run_id)
        metrics = [
            Metric(name, value, start_ms + int(1000 * result.seconds_at.get(step, 0.0)), step)
            for name, (steps, values) in result.curves.items()
            for step, value in zip(steps, values, strict=True)
        ]
        last_step = result.plan.total_steps if not result.diverged else result.diverged_step
        metrics.append(Metric("wall_seconds", result.seconds, start_ms, last_step))
        if result.diverged:
            metrics.append(Metric("diverged_step", result.diverged_step, start_ms, last_step))
        tags = [
            RunTag("diverged", str(result.diverged).lower()),
            RunTag("device", result.device),
            RunTag("device_name", result.device_name),
        ]
        self.client.log_batch(run_id, tags=tags)
        for chunk in _chunks(metrics, BATCH_LIMIT):
            self.client.log_batch(run_id, metrics=chunk)
        self.client.set_terminated(run_id, "FINISHED")

    def fail(self, run_id: str, error: BaseException) -> None:
        """Record the error and mark the run FAILED, or KILLED when interrupted."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        text = "".join(traceback.format_exception(error))
        message = f"{type(error).__name__}: {error}"[:5000]
        self.client.log_batch(
            run_id, tags=[RunTag("error", message), RunTag("mlflow.note.content", text[-5000:])]
        )
        self.client.set_terminated(run_id, status)


def open_store(cfg: TrackingConfig) -> Store:
    """Resolve and check the URI, then open the store and its experiment."""
    uri = resolve_uri(cfg.uri)
    check_uri(uri)
    try:
        return Store(uri, cfg.experiment)
    except MlflowException as error:
        raise ConfigError(
            "tracking.uri", uri, f"MLflow cannot open it: {str(error).splitlines()[0]}"
        ) from error
