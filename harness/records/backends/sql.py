"""Direct writes and bulk reads on the tables of MLflow's database store (sqlite, PostgreSQL,
MySQL), through MLflow's internals (its table models, its metric and param validation, the
artifact repository that takes a run's artifact URI as it is); ``backends.opening`` opens the
store. These two modules are the harness's only use of MLflow's internals.

Verified on MLflow 3.17.2 (schema revision dc11669786a5) and 3.18.0 (f4a9b2c7d1e6; its three
new revisions add tables of their own and change none of these): ``tests/test_records_sql.py``
holds these writes against MLflow's own ``create_run``, ``log_batch``, ``log_inputs`` and
``set_terminated`` (the same records, read back through MLflow's client). On a store of any
other schema revision the writers go through MLflow's client instead
(``opening.bulk_verified``), and a store newer than the installed MLflow is refused before
anything is written (``opening.check_schema``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import TYPE_CHECKING, Any

from mlflow.entities import Dataset, InputTag
from mlflow.entities import DatasetInput as MlflowDatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import (
    _validate_dataset_inputs,
    _validate_metric,
    _validate_param,
    _validate_tag,
)

from harness.records.backends import Claim, CreatedRun, Held, NewRun, Series, Writes, holders
from harness.records.schema import DATASET_CONTEXT, DatasetInput, ExperimentTables, Status, Tag

if TYPE_CHECKING:  # MLflow's store modules take half a second to import: where they are used
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

SQLITE_CACHE_KIB = 131072  # page cache of the writer's sqlite connection, at most
SQLITE_BUSY_MS = 120_000  # how long a writer waits for another's transaction on sqlite
ROWS_PER_INSERT = 50_000  # metric rows built and inserted at a time
RUN_COLUMNS = (
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
DATASET_COLUMNS = (
    "dataset_uuid",
    "experiment_id",
    "name",
    "digest",
    "dataset_source_type",
    "dataset_source",
    "dataset_schema",
    "dataset_profile",
)
INPUT_COLUMNS = ("input_uuid", "source_type", "source_id", "destination_type", "destination_id")
DATASET_TRIES = 3  # inserts of a dataset that another writer may be inserting at once
METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")
PAIR_COLUMNS = ("run_uuid", "key", "value")


def upload_artifact(path: str, artifact_uri: str, tracking_uri: str) -> None:
    """Log the file at ``path`` into a run's ``artifact_uri``, with no lookup of the run."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(artifact_uri, tracking_uri).log_artifact(path)


def swap_tag(store: SqlAlchemyStore, run_id: str, key: str, seen: str, new: str) -> bool:
    """Set the run's tag ``key`` to ``new`` only if it is still ``seen`` ("": absent), in one
    conditional statement; False when another process changed it first."""
    from mlflow.store.tracking.dbmodels.models import SqlTag
    from sqlalchemy import insert, update
    from sqlalchemy.exc import IntegrityError

    tags = SqlTag.__table__
    if seen:
        where = (tags.c.run_uuid == run_id, tags.c.key == key, tags.c.value == seen)
        with store.engine.begin() as connection:
            return connection.execute(update(tags).where(*where).values(value=new)).rowcount == 1
    try:
        with store.engine.begin() as connection:
            connection.execute(insert(tags).values(run_uuid=run_id, key=key, value=new))
    except IntegrityError:
        return False
    return True


def _first_of_each(inputs: list[DatasetInput]) -> dict[tuple[str, str], DatasetInput]:
    """The first input of each (name, digest), by that key: the one MLflow's ``log_inputs``
    keeps."""
    first: dict[tuple[str, str], DatasetInput] = {}
    for entry in inputs:
        first.setdefault((entry.name, entry.digest), entry)
    return first


class DatabaseWrites:
    """Creates and writes many runs per transaction on a database store, leaving the tables as
    MLflow's own ``create_run``, ``log_inputs``, ``log_batch`` and ``set_terminated`` would: run
    rows (the user from the ``mlflow.user`` tag, as the client's ``create_run``), dataset rows
    (one per experiment, name and digest), input edges and their context tags, metric rows
    (NaN stored as 0 with ``is_nan``, infinities as the largest floats), the latest value per
    run and metric by (step, timestamp, value), params, tags (replacing a tag of the same key)
    and run status. The client needs five or more transactions per run; a cohort needs two
    here."""

    def __init__(self, store: SqlAlchemyStore, client: MlflowClient):
        from mlflow.store.tracking.dbmodels.models import (
            SqlDataset,
            SqlExperiment,
            SqlInput,
            SqlInputTag,
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )

        self.store, self.client = store, client
        self.metrics, self.latest = SqlMetric.__table__, SqlLatestMetric.__table__
        self.params, self.tags, self.runs = SqlParam.__table__, SqlTag.__table__, SqlRun.__table__
        self.datasets, self.inputs = SqlDataset.__table__, SqlInput.__table__
        self.experiments = SqlExperiment.__table__
        self.input_tags = SqlInputTag.__table__
        self.artifact_roots: dict[str, str] = {}

    def create(
        self, experiment_id: str, new_runs: list[NewRun], claim: Claim | None = None
    ) -> list[CreatedRun | Held]:
        """Create the runs in one transaction. With a ``claim``, each run is a claim on its
        grid point: a point that another run holds (see ``backends.holders``) gets no run
        but that run's ``Held``. The claim is atomic: the transaction first takes the
        experiment's row for update, which serialises claims on one experiment (sqlite's
        write lock, a row lock on PostgreSQL and MySQL), then reads the holders."""
        if experiment_id not in self.artifact_roots:
            found = self.client.get_experiment(experiment_id)
            if found.lifecycle_stage != "active":
                raise MlflowException(f"experiment {found.name!r} is deleted")
            self.artifact_roots[experiment_id] = found.artifact_location
        now = int(1000 * time.time())
        created = [self._created(experiment_id, now) for _ in new_runs]
        datasets = self._datasets(int(experiment_id), new_runs)
        with self._transaction() as connection:
            held = {}
            if claim is not None:
                held = self._holders(connection, int(experiment_id), new_runs, claim)
            outcome = [
                held.get(new.tags[Tag.FINGERPRINT], run)
                for run, new in zip(created, new_runs, strict=True)
            ]
            pairs = zip(outcome, new_runs, strict=True)
            chosen = [(run, new) for run, new in pairs if isinstance(run, CreatedRun)]
            rows, params, tags = [], [], []
            for run, new in chosen:
                rows.append(self._run_row(run, new, experiment_id))
                params += _pairs(run.run_id, new.params, _validate_param)
                tags += _pairs(run.run_id, {Tag.RUN_NAME: new.name, **new.tags}, _validate_tag)
            self._insert(connection, self.runs, RUN_COLUMNS, rows)
            self._insert(connection, self.params, PAIR_COLUMNS, params)
            self._insert(connection, self.tags, PAIR_COLUMNS, tags)
            self._link_inputs(connection, datasets, [(r.run_id, n.inputs) for r, n in chosen])
        return outcome

    def _created(self, experiment_id: str, now: int) -> CreatedRun:
        run_id = uuid.uuid4().hex
        root = self.artifact_roots[experiment_id]
        return CreatedRun(run_id, now, append_to_uri_path(root, run_id, "artifacts"))

    @staticmethod
    def _run_row(run: CreatedRun, new: NewRun, experiment_id: str) -> tuple:
        """The run's row, as MLflow's ``create_run`` writes it (the user from its tag)."""
        return (
            run.run_id,
            new.name,
            "UNKNOWN",  # source_type, source_name, entry_point_name: as create_run
            "",
            "",
            new.tags.get(Tag.USER, "unknown"),
            Status.RUNNING,
            run.start_ms,  # start_time
            None,  # end_time
            None,  # deleted_time
            "",  # source_version
            "active",
            run.artifact_uri,
            int(experiment_id),
        )

    def _holders(self, connection, experiment_id: int, new_runs: list, claim: Claim) -> dict:
        """Take the experiment's row for the rest of the transaction (a write that changes
        nothing: sqlite takes its write lock, other databases the row's lock), then read who
        holds the new runs' grid points."""
        from sqlalchemy import update

        table = self.experiments.c
        connection.execute(
            update(self.experiments)
            .where(table.experiment_id == experiment_id)
            .values(last_update_time=table.last_update_time)
        )
        wanted = {new.tags[Tag.FINGERPRINT] for new in new_runs}
        return holders(self._candidates(connection, experiment_id, wanted), claim)

    def _candidates(self, connection, experiment_id: int, fingerprints: set[str]) -> list:
        """The experiment's active RUNNING and FINISHED runs of these grid points, as
        ``backends.Candidate``s."""
        from sqlalchemy import and_, select

        runs, marks = self.runs.c, self.tags.alias("marks")
        owner = self.tags.alias("owner")
        query = (
            select(runs.run_uuid, marks.c.value, runs.status, runs.start_time, owner.c.value)
            .join(marks, and_(marks.c.run_uuid == runs.run_uuid, marks.c.key == Tag.FINGERPRINT))
            .outerjoin(owner, and_(owner.c.run_uuid == runs.run_uuid, owner.c.key == Tag.OWNER))
            .where(
                runs.experiment_id == experiment_id,
                runs.lifecycle_stage == "active",
                runs.status.in_((Status.RUNNING, Status.FINISHED)),
                marks.c.value.in_(sorted(fingerprints)),
            )
        )
        return [(r, f, s, t or 0, o or "") for r, f, s, t, o in connection.execute(query)]

    def _datasets(self, experiment_id: int, new_runs: list[NewRun]) -> dict:
        """The id of each dataset the runs saw, by (name, digest), its row inserted where the
        experiment has none yet (as MLflow's ``log_inputs``: the first input of a name and
        digest counts, and each is validated). Datasets are shared by the experiment's runs,
        so this is a transaction of its own: when another writer inserts the same dataset
        between its read and its insert, the insert fails on the table's key and is tried
        again, then finding that writer's row."""
        from sqlalchemy.exc import IntegrityError

        wanted = _first_of_each([entry for new in new_runs for entry in new.inputs])
        if not wanted:
            return {}
        _validate_dataset_inputs([dataset_input_entity(entry) for entry in wanted.values()])
        for attempt in range(DATASET_TRIES):
            try:
                with self._transaction() as connection:
                    return self._insert_datasets(connection, experiment_id, wanted)
            except IntegrityError:
                if attempt == DATASET_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_datasets(self, connection, experiment_id: int, wanted: dict) -> dict:
        uuids = self._dataset_uuids(connection, experiment_id, wanted)
        new = [key for key in wanted if key not in uuids]
        uuids.update({key: uuid.uuid4().hex for key in new})
        rows = [
            (
                uuids[key],
                experiment_id,
                wanted[key].name,
                wanted[key].digest,
                wanted[key].source_type,
                wanted[key].source,
                None,  # dataset_schema
                wanted[key].profile,
            )
            for key in new
        ]
        self._insert(connection, self.datasets, DATASET_COLUMNS, rows)
        return uuids

    def _link_inputs(self, connection, datasets: dict, runs: list) -> None:
        """An input edge from each dataset (``datasets``: id by name and digest) to each run
        that saw it, with the edge's context tag."""
        edges, edge_tags = [], []
        for run_id, inputs in runs:
            for key, entry in _first_of_each(inputs).items():
                edge = uuid.uuid4().hex
                edges.append((edge, "DATASET", datasets[key], "RUN", run_id))
                edge_tags.append((edge, DATASET_CONTEXT, entry.context))
        self._insert(connection, self.inputs, INPUT_COLUMNS, edges)
        self._insert(connection, self.input_tags, ("input_uuid", "name", "value"), edge_tags)

    def _dataset_uuids(self, connection, experiment_id: int, wanted: dict) -> dict:
        from sqlalchemy import select

        table = self.datasets.c
        found = connection.execute(
            select(table.name, table.digest, table.dataset_uuid).where(
                table.experiment_id == experiment_id,
                table.name.in_({name for name, _ in wanted}),
                table.digest.in_({digest for _, digest in wanted}),
            )
        )
        return {(name, digest): dataset for name, digest, dataset in found}

    def write(self, batch: Writes) -> None:
        from sqlalchemy import bindparam, update

        tag_rows = [
            row for run, tags in batch.tags.items() for row in _pairs(run, tags, _validate_tag)
        ]
        with self._transaction() as connection:
            for runs in self._slices(batch.metrics):  # rows for a slice of runs at a time
                metric_rows = self._metric_rows({run: batch.metrics[run] for run in runs})
                if metric_rows:
                    self._insert(connection, self.metrics, METRIC_COLUMNS, metric_rows)
                    newer = self._newer_latest(connection, metric_rows)
                    self._replace(connection, self.latest, METRIC_COLUMNS, newer)
            self._replace(connection, self.tags, PAIR_COLUMNS, tag_rows)
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
        metric indexes in memory while a cohort's rows go in (a quarter less time), and waits
        up to ``SQLITE_BUSY_MS`` for other writers (many workers write one file)."""
        with self.store.engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
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
        """The rows of the metrics, each once (as MLflow's ``log_batch``, which drops a point
        given twice: same key, step, timestamp and value)."""
        rows, checked = {}, set()
        sanitize = self.store.sanitize_metric_value
        for run, series in metrics.items():
            for key, steps, values, stamps in series:
                if key not in checked and steps:  # the key's name; values are the engine's
                    _validate_metric(key, values[0], stamps[0], steps[0])
                    checked.add(key)
                for step, value, stamp in zip(steps, values, stamps, strict=True):
                    is_nan, value = sanitize(float(value))
                    rows.setdefault((run, key, value, stamp, step, is_nan), None)
        return list(rows)

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


def _pairs(run_id: str, entries: dict[str, str], validate) -> list[tuple[str, str, str]]:
    """(run id, key, value) rows of params or tags, checked and cut to MLflow's limits as
    its client's ``log_batch`` does (``validate``: MLflow's ``_validate_param`` or
    ``_validate_tag``; a param value over 6 000 characters, a tag value over 8 000, is cut)."""
    checked = (validate(key, value) for key, value in entries.items())
    return [(run_id, entry.key, entry.value) for entry in checked]


def end_running(store: SqlAlchemyStore, run_id: str, status: str, end_ms: int) -> bool:
    """End the run with ``status`` if it is still RUNNING, in one conditional update; False
    when it was not (another process ended it first), which is then left as it is."""
    from mlflow.store.tracking.dbmodels.models import SqlRun
    from sqlalchemy import update

    runs = SqlRun.__table__
    statement = (
        update(runs)
        .where(runs.c.run_uuid == run_id, runs.c.status == Status.RUNNING)
        .values(status=status, end_time=end_ms)
    )
    with store.engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def read_tables(store: SqlAlchemyStore, experiment_id: str) -> ExperimentTables:
    """Every active run of the experiment with all its params, tags and metric histories, in
    four SQL queries (MLflow's client would need one call per run and metric)."""
    import pandas as pd
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import select

    active = select(SqlRun.run_uuid).where(
        SqlRun.experiment_id == int(experiment_id), SqlRun.lifecycle_stage == "active"
    )
    runs = select(
        SqlRun.run_uuid.label("run_id"),
        SqlRun.name.label("run_name"),
        SqlRun.status,
        SqlRun.start_time,
        SqlRun.end_time,
    ).where(SqlRun.run_uuid.in_(active))

    def pairs(model: Any):
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


def dataset_input_entity(entry: DatasetInput) -> MlflowDatasetInput:
    """MLflow's dataset input entity for ``entry``, as ``log_inputs`` takes it."""
    dataset = Dataset(
        entry.name, entry.digest, entry.source_type, entry.source, profile=entry.profile
    )
    return MlflowDatasetInput(dataset, [InputTag(DATASET_CONTEXT, entry.context)])
