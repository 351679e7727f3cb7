"""A study's records as the report stage sees them: every run read back in bulk, and the
report logged as the study's report run."""

from __future__ import annotations

from pathlib import Path

from harness.config import ConfigError
from harness.records import experiments
from harness.records.backends import client as client_backend
from harness.records.backends import opening, sql
from harness.records.provenance import source_tags
from harness.records.schema import ExperimentTables, Role, Status
from harness.records.uri import is_server


def read_experiment(uri: str, experiment: str) -> ExperimentTables:
    """Every active run of ``experiment`` with all its params, tags and metric histories: in
    four SQL queries on a database store, in bulk requests to an MLflow server. Raises
    ConfigError when the store is neither, cannot be opened, or has no such experiment."""
    client = experiments.open_client(uri)
    experiment_id = experiments.find_experiment(client, experiment)
    if is_server(uri):
        return client_backend.read_tables(uri, experiment_id)
    store = opening.database_store(client)
    if store is None:
        allowed = "expected a database store (sqlite:///..., postgresql://..., mysql://...)"
        raise ConfigError("tracking.uri", uri, allowed)
    return sql.read_tables(store, experiment_id)


def log_report(uri: str, experiment: str, folder: Path) -> str:
    """Log ``folder`` as the artifacts of the experiment's report run (role ``report``),
    replacing an earlier report's files; returns the run id."""
    client = experiments.open_client(uri)
    experiment_id = experiments.experiment_id(client, experiment)
    run_id, _ = experiments.reopen_or_create(
        client, experiment_id, Role.REPORT, "", Role.REPORT, source_tags("reports")
    )
    client.log_artifacts(run_id, str(folder), "report")
    client.set_terminated(run_id, Status.FINISHED)
    return run_id
