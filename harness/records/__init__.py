"""Records: the package's one door to MLflow.

One MLflow run per grid point (see ``schema``, the record's contract): params are the
flattened resolved config plus the data split's sizes, metrics the engine's curves written in
batches, tags the fingerprint, the divergence flag, the device, library versions, the commit
and MLflow's source tags, dataset inputs the splits the run saw, and the resolved config an
artifact. A run that raises is recorded FAILED (KILLED on Ctrl-C) with its error, never left
RUNNING.

Modules: ``schema`` (names and record types), ``uri`` (where a store is), ``provenance``
(versions, commit, source tags), ``experiments`` (opening a store, finding experiments and
runs), ``backends.opening`` (a database's schema and creation), ``backends.sql`` and
``backends.client`` (the two write and read paths), ``recorder`` and ``writer`` (batching a
cohort's writes, in a forked process or inline), ``store`` (what training writes through),
``ledger`` (what a sweep reads and repairs), ``study`` (what the report stage reads and
logs).
"""

from harness.records.backends import Claim
from harness.records.experiments import listing
from harness.records.ledger import Ledger
from harness.records.schema import (
    SECONDS_PREFIX,
    TRUE,
    DatasetInput,
    ExperimentTables,
    Recorded,
    Role,
    RunRecord,
    Stage,
    Status,
    Summary,
    Tag,
    check_tags,
    dataset_inputs,
    is_grid_point,
    run_params,
)
from harness.records.store import Store, open_store
from harness.records.study import log_report, read_experiment
from harness.records.uri import check_uri, resolve_uri
from harness.records.writer import TrackingError

__all__ = [
    "SECONDS_PREFIX",
    "TRUE",
    "Claim",
    "DatasetInput",
    "ExperimentTables",
    "Ledger",
    "Recorded",
    "Role",
    "RunRecord",
    "Stage",
    "Status",
    "Store",
    "Summary",
    "Tag",
    "TrackingError",
    "check_tags",
    "check_uri",
    "dataset_inputs",
    "is_grid_point",
    "listing",
    "log_report",
    "open_store",
    "read_experiment",
    "resolve_uri",
    "run_params",
]
