"""Where a study's records go: resolving and checking a store's URI, and where a sqlite store
keeps its artifacts."""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

from harness.config import ConfigError
from harness.paths import project_root

SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


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


DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def is_database(uri: str) -> bool:
    """Whether ``uri`` names a database MLflow's SQL store opens (its scheme, before any
    ``+driver``, is one of ``DATABASES``)."""
    return uri.split(":", 1)[0].split("+", 1)[0] in DATABASES


def is_server(uri: str) -> bool:
    """Whether ``uri`` names an MLflow server (reached over HTTP) rather than a database."""
    return uri.split(":", 1)[0] in ("http", "https")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI, else None."""
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
    path = sqlite_path(uri)
    if path is not None and not path.parent.is_dir():
        raise ConfigError("tracking.uri", uri, f"folder {path.parent} does not exist")
    if is_server(uri):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3).close()
        except OSError as error:
            allowed = f"no MLflow server answers there ({error})"
            raise ConfigError("tracking.uri", uri, allowed) from error


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store go beside the database file, in mlartifacts/<experiment>;
    other stores choose their own (None)."""
    path = sqlite_path(uri)
    if path is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment)
    return (path.parent / "mlartifacts" / slug).as_uri()
