"""MLflow's tracking tables, the columns the harness reads and writes, as SQLAlchemy Core
tables: the schema of the revisions in ``opening.VERIFIED`` (MLflow 3.17.2 and 3.18.0), declared
here so that writing and reading a database store needs no import of MLflow (about two seconds
of a sweep's start-up). ``tests/test_records_sql.py`` holds them against MLflow's own models."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", Integer, primary_key=True),
    Column("name", String(256), nullable=False),
    Column("artifact_location", String(256)),
    Column("lifecycle_stage", String(32)),
    Column("creation_time", BigInteger),
    Column("last_update_time", BigInteger),
    Column("workspace", String(63)),
)
experiment_tags = Table(
    "experiment_tags",
    metadata,
    Column("key", String(250), primary_key=True),
    Column("value", Text),
    Column("experiment_id", Integer, primary_key=True),
)
runs = Table(
    "runs",
    metadata,
    Column("run_uuid", String(32), primary_key=True),
    Column("name", String(250)),
    Column("source_type", String(20)),
    Column("source_name", String(500)),
    Column("entry_point_name", String(50)),
    Column("user_id", String(256)),
    Column("status", String(9)),
    Column("start_time", BigInteger),
    Column("end_time", BigInteger),
    Column("deleted_time", BigInteger),
    Column("source_version", String(50)),
    Column("lifecycle_stage", String(20)),
    Column("artifact_uri", String(200)),
    Column("experiment_id", Integer),
)


def _pairs(name: str, value_length: int) -> Table:
    return Table(
        name,
        metadata,
        Column("run_uuid", String(32), primary_key=True),
        Column("key", String(250), primary_key=True),
        Column("value", String(value_length)),
    )


# The columns in the order the writers give them (``sql.PAIR_COLUMNS``, ``METRIC_COLUMNS``).
tags = _pairs("tags", 8000)
params = _pairs("params", 8000)
metrics = Table(
    "metrics",
    metadata,
    Column("run_uuid", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float, primary_key=True),
    Column("timestamp", BigInteger, primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("is_nan", Boolean, primary_key=True),
)
latest_metrics = Table(
    "latest_metrics",
    metadata,
    Column("run_uuid", String(32), primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Float),
    Column("timestamp", BigInteger),
    Column("step", BigInteger),
    Column("is_nan", Boolean),
)
datasets = Table(
    "datasets",
    metadata,
    Column("dataset_uuid", String(36)),
    Column("experiment_id", Integer, primary_key=True),
    Column("name", String(500), primary_key=True),
    Column("digest", String(36), primary_key=True),
    Column("dataset_source_type", String(36)),
    Column("dataset_source", Text),
    Column("dataset_schema", Text),
    Column("dataset_profile", Text),
)
inputs = Table(
    "inputs",
    metadata,
    Column("input_uuid", String(36)),
    Column("source_type", String(36), primary_key=True),
    Column("source_id", String(36), primary_key=True),
    Column("destination_type", String(36), primary_key=True),
    Column("destination_id", String(36), primary_key=True),
)
input_tags = Table(
    "input_tags",
    metadata,
    Column("input_uuid", String(36), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("value", String(500)),
)
