"""Where a study's records go: resolving and checking a store's URI, and where a sqlite store
keeps its artifacts."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from harness.config import ConfigError
from harness.paths import folder_name, project_root

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
    if path is not None:
        check_sqlite_path(uri, path)
    if is_server(uri):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=3).close()
        except OSError as error:
            allowed = f"no MLflow server answers there ({error})"
            raise ConfigError("tracking.uri", uri, allowed) from error


def check_sqlite_path(uri: str, path: Path) -> None:
    """A sqlite store needs its folder (sqlite writes a journal beside the database) and its
    file, if it exists, writable by this process."""
    if not path.parent.is_dir():
        raise ConfigError("tracking.uri", uri, f"folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        allowed = f"a folder this user can write; {path.parent} is not"
        raise ConfigError("tracking.uri", uri, allowed)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        allowed = f"a database file this user can write; {path} is not"
        raise ConfigError("tracking.uri", uri, allowed)


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store go beside the database file, in mlartifacts/<experiment>;
    other stores choose their own (None)."""
    path = sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "mlartifacts" / folder_name(experiment)).as_uri()
