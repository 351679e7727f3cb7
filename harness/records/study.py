"""A study's records as the report stage sees them: every run read back in bulk, and the
report logged as the study's report run."""

from __future__ import annotations

from pathlib import Path

from harness.config import ConfigError
from harness.records import experiments
from harness.records.provenance import source_tags
from harness.records.schema import ExperimentTables, Role, Status


def read_experiment(uri: str, experiment: str) -> ExperimentTables:
    """Every active run of ``experiment`` with all its params, tags and metric histories: in
    four SQL queries on a database store, in bulk requests to an MLflow server. Raises
    ConfigError when the store cannot be opened or has no such experiment."""
    backend = experiments.open_backend(uri)
    try:
        experiment_id = backend.find_experiment(experiment)
        if experiment_id is None:
            allowed = f"no experiment of that name in {uri}"
            raise ConfigError("study", experiment, allowed)
        return backend.read_tables(experiment_id)
    finally:
        backend.close()


def log_report(uri: str, experiment: str, folder: Path) -> str:
    """Log ``folder`` as the artifacts of the experiment's report run (role ``report``),
    replacing an earlier report's files; returns the run id."""
    from harness.records.backends.client import Client

    experiments.open_backend(uri).close()  # refuses a store the installed MLflow cannot open
    backend = Client(uri)
    experiment_id = experiments.experiment_id(backend, experiment)
    run_id, _ = experiments.reopen_or_create(
        backend, experiment_id, Role.REPORT, {}, Role.REPORT, source_tags("reports"), {}
    )
    backend.client.log_artifacts(run_id, str(folder), "report")
    backend.client.set_terminated(run_id, Status.FINISHED)
    return run_id
