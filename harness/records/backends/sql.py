"""A database store (sqlite, PostgreSQL, MySQL) of a verified schema, written and read with SQL
on MLflow's tables (``backends.tables``) under MLflow's rules (``backends.rules``), without
importing MLflow: a sweep's start-up pays for SQLAlchemy alone (a tenth of a second) instead
of MLflow's client and store modules (about two seconds).

Verified on MLflow 3.17.2 (schema revision dc11669786a5) and 3.18.0 (f4a9b2c7d1e6; its three
new revisions add tables of their own and change none of these): ``tests/test_records_sql.py``
holds these writes against MLflow's own ``create_run``, ``log_batch``, ``log_inputs``,
``update_run`` and ``set_terminated`` (the same records, read back through MLflow's client). On
a store of any other schema revision the records go through MLflow's client instead
(``backends.client``, chosen by ``opening.open_backend``), and a store newer than the installed
MLflow is refused before anything is written (``opening.check_schema``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import sqlalchemy
from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from harness.records.backends import (
    STOPPED,
    Claim,
    CreatedRun,
    Held,
    NewRun,
    Writes,
    holders,
    rows,
    rules,
    tables,
)
from harness.records.schema import (
    DATASET_CONTEXT,
    KIND_TAG,
    KIND_TRAINING,
    ExperimentTables,
    RunRecord,
    Status,
    Tag,
    is_grid_point,
)

SQLITE_CACHE_KIB = 131072  # page cache of a writer's sqlite connection, at most
SQLITE_BUSY_MS = 120_000  # how long a writer waits for another's transaction on sqlite
RUNS_PER_INSERT = 25  # runs whose metric rows are built and inserted at a time (see write)
DATASET_TRIES = 3  # inserts of a dataset that another writer may be inserting at once
DEFAULT_WORKSPACE = "default"
CONFIG_FILE = "config.yaml"  # a run's resolved config, among its artifacts
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
METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")
PAIR_COLUMNS = ("run_uuid", "key", "value")


def now_ms() -> int:
    return int(1000 * time.time())


def default_artifact_root() -> str:
    """Where MLflow's client puts the artifacts of a store opened without an artifact root:
    ``./mlruns``, made absolute."""
    return os.path.abspath("mlruns")


def engine_for(uri: str) -> sqlalchemy.Engine:
    """The engine of a database store: for sqlite a plain one (whose pooled connection is
    checked before each use); for a database server MLflow's own, with its connection
    settings (``MLFLOW_SQLALCHEMYSTORE_*`` pools, ``MLFLOW_MYSQL_SSL_*``, checked
    connections), worth its import where a connection may have gone idle for hours."""
    if uri.startswith("sqlite"):
        return sqlalchemy.create_engine(uri, pool_pre_ping=True)
    from mlflow.store.db.utils import create_sqlalchemy_engine

    return create_sqlalchemy_engine(uri)


def local_path(artifact_uri: str) -> Path | None:
    """The folder of a local artifact URI (``file://...`` or a plain path), else None."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(artifact_uri) if parsed.scheme == "" else None


class Database:
    """A database store's experiments and runs, through one SQLAlchemy engine of this process.
    Every write leaves the tables as MLflow's client would: run rows (the user from the
    ``mlflow.user`` tag, as ``create_run``), dataset rows (one per experiment, name and
    digest), input edges and their context tags, metric rows (NaN stored as 0 with ``is_nan``,
    infinities as the largest floats), the latest value per run and metric by (step,
    timestamp, value), params, tags (replacing a tag of the same key) and run status. The
    client needs five or more transactions per run; a cohort needs two here."""

    def __init__(self, uri: str):
        self.uri = uri
        self.engine = engine_for(uri)
        self.artifact_roots: dict[str, str] = {}

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _transaction(self):
        """A connection in a transaction; sqlite gets a page cache large enough to keep the
        metric indexes in memory while a cohort's rows go in, and waits up to
        ``SQLITE_BUSY_MS`` for other writers (many workers write one file)."""
        with self.engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
                connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            yield connection

    # Experiments

    def experiment_id(self, name: str, location: str | None) -> str:
        """The id of experiment ``name``, created if missing (at ``location``; None: under
        the default artifact root, as MLflow's client), either way tagged as a model-training
        experiment."""
        found = self.find_experiment(name)
        if found is None:
            try:
                return str(self._create_experiment(name, location))
            except IntegrityError:  # another process created it first
                found = self.find_experiment(name)
        self.set_experiment_tag(found, KIND_TAG, KIND_TRAINING)
        return found

    def _create_experiment(self, name: str, location: str | None) -> int:
        """A new experiment and its kind tag, in one transaction (as MLflow's
        ``create_experiment``)."""
        stamp = now_ms()
        row = {
            "name": name,
            "artifact_location": location,
            "lifecycle_stage": "active",
            "creation_time": stamp,
            "last_update_time": stamp,
        }
        with self._transaction() as connection:
            created = connection.execute(insert(tables.experiments).values(**row))
            number = created.inserted_primary_key[0]
            if location is None:
                where = tables.experiments.c.experiment_id == number
                where_to = f"{default_artifact_root()}/{number}"
                statement = update(tables.experiments).where(where)
                connection.execute(statement.values(artifact_location=where_to))
            tag = {"key": KIND_TAG, "value": KIND_TRAINING, "experiment_id": number}
            connection.execute(insert(tables.experiment_tags).values(**tag))
        return number

    def find_experiment(self, name: str) -> str | None:
        """The id of experiment ``name``, None if there is none."""
        table = tables.experiments.c
        where = (table.name == name, table.workspace == DEFAULT_WORKSPACE)
        with self._transaction() as connection:
            found = connection.execute(select(table.experiment_id).where(*where)).scalar()
        return None if found is None else str(found)

    def set_experiment_tag(self, experiment_id: int | str, key: str, value: str) -> None:
        """Set the tag unless it is set (another process setting it at the same moment
        sets the same value)."""
        table = tables.experiment_tags
        where = (table.c.experiment_id == int(experiment_id), table.c.key == key)
        with self._transaction() as connection:
            if connection.execute(select(table.c.value).where(*where)).scalar() == value:
                return
        row = {"key": key, "value": value, "experiment_id": int(experiment_id)}
        try:
            with self._transaction() as connection:
                connection.execute(delete(table).where(*where))
                connection.execute(insert(table).values(**row))
        except IntegrityError:  # another process inserted it between the two
            return

    def _artifact_root(self, experiment_id: str) -> str:
        """The experiment's artifact location; refuses a deleted experiment."""
        if experiment_id not in self.artifact_roots:
            table = tables.experiments.c
            query = select(table.artifact_location, table.lifecycle_stage, table.name)
            with self._transaction() as connection:
                found = connection.execute(query.where(table.experiment_id == int(experiment_id)))
                location, stage, name = found.one()
            if stage != "active":
                raise rules.Refused(f"experiment {name!r} is deleted")
            self.artifact_roots[experiment_id] = location
        return self.artifact_roots[experiment_id]

    # Creating runs

    def create(
        self, experiment_id: str, new_runs: list[NewRun], claim: Claim | None = None
    ) -> list[CreatedRun | Held]:
        """Create the runs in one transaction. With a ``claim``, each run is a claim on its
        grid point: a point that another run holds (see ``backends.holders``) gets no run
        but that run's ``Held``. The claim is atomic: the transaction first takes the
        experiment's row for update, which serialises claims on one experiment (sqlite's
        write lock, a row lock on PostgreSQL and MySQL), then reads the holders. The runs'
        ids are in increasing order, so that their metric rows go in fast (see ``write``)."""
        root = self._artifact_root(experiment_id)
        stamp = now_ms()
        ids = sorted(uuid.uuid4().hex for _ in new_runs)
        created = [CreatedRun(i, stamp, f"{root.rstrip('/')}/{i}/artifacts") for i in ids]
        datasets = self._datasets(int(experiment_id), new_runs)
        with self._transaction() as connection:
            held = {}
            if claim is not None:
                held = self._holders(connection, int(experiment_id), new_runs, claim)
            outcome = [
                held.get(new.tags.get(Tag.FINGERPRINT), run)
                for run, new in zip(created, new_runs, strict=True)
            ]
            pairs = zip(outcome, new_runs, strict=True)
            chosen = [(run, new) for run, new in pairs if isinstance(run, CreatedRun)]
            run_rows, params, tags = [], [], []
            for run, new in chosen:
                run_rows.append(self._run_row(run, new, experiment_id))
                params += rows.pairs(run.run_id, new.params, rules.param)
                tags += rows.pairs(run.run_id, {Tag.RUN_NAME: new.name, **new.tags}, rules.tag)
            self._insert(connection, tables.runs, RUN_COLUMNS, run_rows)
            self._insert(connection, tables.params, PAIR_COLUMNS, params)
            self._insert(connection, tables.tags, PAIR_COLUMNS, tags)
            self._link_inputs(connection, datasets, [(r.run_id, n.inputs) for r, n in chosen])
        return outcome

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
        table = tables.experiments.c
        connection.execute(
            update(tables.experiments)
            .where(table.experiment_id == experiment_id)
            .values(last_update_time=table.last_update_time)
        )
        wanted = {new.tags[Tag.FINGERPRINT] for new in new_runs}
        return holders(self._candidates(connection, experiment_id, wanted), claim)

    def _candidates(self, connection, experiment_id: int, fingerprints: set[str]) -> list:
        """The experiment's active RUNNING and FINISHED runs of these grid points, as
        ``backends.Candidate``s."""
        runs, marks = tables.runs.c, tables.tags.alias("marks")
        owner = tables.tags.alias("owner")
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
        wanted = rows.first_of_each([entry for new in new_runs for entry in new.inputs])
        if not wanted:
            return {}
        for entry in wanted.values():
            rules.dataset_input(entry)
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
        dataset_rows = [
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
        self._insert(connection, tables.datasets, DATASET_COLUMNS, dataset_rows)
        return uuids

    def _link_inputs(self, connection, datasets: dict, runs: list) -> None:
        """An input edge from each dataset (``datasets``: id by name and digest) to each run
        that saw it, with the edge's context tag."""
        edges, edge_tags = [], []
        for run_id, inputs in runs:
            for key, entry in rows.first_of_each(inputs).items():
                edge = uuid.uuid4().hex
                edges.append((edge, "DATASET", datasets[key], "RUN", run_id))
                edge_tags.append((edge, DATASET_CONTEXT, entry.context))
        self._insert(connection, tables.inputs, INPUT_COLUMNS, edges)
        self._insert(connection, tables.input_tags, ("input_uuid", "name", "value"), edge_tags)

    def _dataset_uuids(self, connection, experiment_id: int, wanted: dict) -> dict:
        table = tables.datasets.c
        found = connection.execute(
            select(table.name, table.digest, table.dataset_uuid).where(
                table.experiment_id == experiment_id,
                table.name.in_({name for name, _ in wanted}),
                table.digest.in_({digest for _, digest in wanted}),
            )
        )
        return {(name, digest): dataset for name, digest, dataset in found}

    def save_configs(self, configs: list[tuple[str, str]]) -> None:
        """Save each (artifact URI, text) as the ``config.yaml`` artifact of a run: written
        into a local artifact folder directly (as MLflow's local artifact repository leaves
        it), else through MLflow's artifact repository for that URI."""
        remote = []
        for artifact_uri, text in configs:
            folder = local_path(artifact_uri)
            if folder is None:
                remote.append((artifact_uri, text))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CONFIG_FILE).write_text(text)
        if remote:
            from harness.records.backends.client import save_configs

            save_configs(self.uri, remote)

    # Writing runs

    def write(self, batch: Writes) -> None:
        """The batch in one transaction. The metric rows go in ``RUNS_PER_INSERT`` runs at a
        time, each slice in the order of the metrics table's key (metric, timestamp, step,
        run; the runs of a cohort share their timestamps and their ids increase): the key's
        index then grows at its end, and the two indexes by run each take a handful of
        places, about twice as fast as run after run."""
        tag_rows = [
            row for run, tags in batch.tags.items() for row in rows.pairs(run, tags, rules.tag)
        ]
        runs = sorted(batch.metrics)
        with self._transaction() as connection:
            for first in range(0, len(runs), RUNS_PER_INSERT):
                part = {run: batch.metrics[run] for run in runs[first : first + RUNS_PER_INSERT]}
                metric_rows, latest = rows.metric_rows(part)
                if metric_rows:
                    self._insert(connection, tables.metrics, METRIC_COLUMNS, metric_rows)
                    newer = self._newer_latest(connection, latest)
                    self._replace(connection, tables.latest_metrics, METRIC_COLUMNS, newer)
            self._replace(connection, tables.tags, PAIR_COLUMNS, tag_rows)
            if batch.ended:
                statement = (
                    update(tables.runs)
                    .where(tables.runs.c.run_uuid == bindparam("run"))
                    .values(status=bindparam("new_status"), end_time=bindparam("new_end"))
                )
                ended = [
                    {"run": run, "new_status": status, "new_end": end}
                    for run, (status, end) in batch.ended.items()
                ]
                connection.execute(statement, ended)

    @staticmethod
    def _newer_latest(connection, best: dict[tuple[str, str], tuple]) -> list[tuple]:
        """The rows of ``best`` (by run and metric) that are newer than the latest values
        already stored: a larger (step, timestamp, value)."""
        best = dict(best)
        runs = sorted({run for run, _ in best})
        latest = tables.latest_metrics.c
        for start in range(0, len(runs), 500):
            found = connection.execute(
                select(
                    latest.run_uuid, latest.key, latest.step, latest.timestamp, latest.value
                ).where(latest.run_uuid.in_(runs[start : start + 500]))
            )
            for run, key, step, timestamp, value in found:
                new = best.get((run, key))
                if new is not None and (step, timestamp, value) >= rows.LATEST_ORDER(new):
                    del best[(run, key)]
        return list(best.values())

    @staticmethod
    def _insert(connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert ``rows`` (tuples in ``columns`` order) with one DB-API executemany: the
        statement is compiled once by SQLAlchemy for the store's dialect."""
        if not rows:
            return
        compiled = (
            insert(table).values({c: None for c in columns}).compile(dialect=connection.dialect)
        )
        if compiled.positional:
            order = [columns.index(name) for name in compiled.positiontup]
            if order != list(range(len(columns))):
                rows = [tuple(row[i] for i in order) for row in rows]
        else:
            rows = [dict(zip(columns, row, strict=True)) for row in rows]
        connection.exec_driver_sql(str(compiled), rows)

    def _replace(self, connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert ``rows``, first deleting the rows with the same (run, key)."""
        if not rows:
            return
        same = and_(table.c.run_uuid == bindparam("run"), table.c.key == bindparam("name"))
        connection.execute(delete(table).where(same), [{"run": r[0], "name": r[1]} for r in rows])
        self._insert(connection, table, columns, rows)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.write(Writes(tags={run_id: tags}))

    # The sweep's parent runs and repairs

    def create_run(
        self, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, str]
    ) -> str:
        """A new RUNNING run with ``tags`` and ``params``, as MLflow's ``create_run`` and
        ``log_batch`` leave it; returns its id."""
        (run,) = self.create(experiment_id, [NewRun(name, tags, params, {})])
        return run.run_id

    def runs(self, experiment_id: str, tags: dict[str, str], status: str | None = None) -> list:
        """The experiment's active runs that carry ``tags`` (and have ``status``), newest
        first, as (run id, status, all their tags)."""
        table = tables.runs.c
        query = select(table.run_uuid, table.status).where(
            table.experiment_id == int(experiment_id), table.lifecycle_stage == "active"
        )
        if status is not None:
            query = query.where(table.status == status)
        for key, value in tags.items():
            mark = tables.tags.alias(f"tag_{len(query.selected_columns)}_{key}")
            query = query.join(
                mark,
                and_(mark.c.run_uuid == table.run_uuid, mark.c.key == key, mark.c.value == value),
            )
        query = query.order_by(table.start_time.desc(), table.run_uuid)
        with self._transaction() as connection:
            found = connection.execute(query).all()
            tags_of = self._tags_of(connection, [run_id for run_id, _ in found])
        return [(run_id, run_status, tags_of.get(run_id, {})) for run_id, run_status in found]

    @staticmethod
    def _tags_of(connection, run_ids: list[str]) -> dict[str, dict[str, str]]:
        table, found = tables.tags.c, {}
        for start in range(0, len(run_ids), 500):
            part = run_ids[start : start + 500]
            query = select(table.run_uuid, table.key, table.value).where(table.run_uuid.in_(part))
            for run_id, key, value in connection.execute(query):
                found.setdefault(run_id, {})[key] = value
        return found

    def grid_runs(self, experiment_id: str) -> list[RunRecord]:
        """Every active run of the experiment that records a grid point, newest first, with
        the last value of each of its metrics."""
        found = self.runs(experiment_id, {})
        finals: dict[str, dict[str, float]] = {}
        latest = tables.latest_metrics.c
        ids = [run_id for run_id, _, tags in found if is_grid_point(tags)]
        with self._transaction() as connection:
            for start in range(0, len(ids), 500):
                query = select(latest.run_uuid, latest.key, latest.value, latest.is_nan).where(
                    latest.run_uuid.in_(ids[start : start + 500])
                )
                for run_id, key, value, is_nan in connection.execute(query):
                    finals.setdefault(run_id, {})[key] = math.nan if is_nan else value
        return [
            RunRecord.of(run_id, status, tags, finals.get(run_id, {}))
            for run_id, status, tags in found
            if is_grid_point(tags)
        ]

    def record(self, run_id: str) -> RunRecord:
        """The run ``run_id`` as it is now."""
        table, latest = tables.runs.c, tables.latest_metrics.c
        with self._transaction() as connection:
            status = connection.execute(select(table.status).where(table.run_uuid == run_id))
            status = status.scalar_one()
            tags = self._tags_of(connection, [run_id]).get(run_id, {})
            query = select(latest.key, latest.value, latest.is_nan)
            finals = {
                key: math.nan if is_nan else value
                for key, value, is_nan in connection.execute(query.where(latest.run_uuid == run_id))
            }
        return RunRecord.of(run_id, status, tags, finals)

    def swap_tag(self, run_id: str, key: str, seen: str, new: str) -> bool:
        """Set the run's tag ``key`` to ``new`` only if it is still ``seen`` ("": absent), in
        one conditional statement; False when another process changed it first."""
        table = tables.tags
        if seen:
            where = (table.c.run_uuid == run_id, table.c.key == key, table.c.value == seen)
            with self._transaction() as connection:
                changed = connection.execute(update(table).where(*where).values(value=new))
                return changed.rowcount == 1
        try:
            with self._transaction() as connection:
                connection.execute(insert(table).values(run_uuid=run_id, key=key, value=new))
        except IntegrityError:
            return False
        return True

    def set_status(self, run_id: str, status: str) -> None:
        """The run's status, its end time left as it is (MLflow's ``update_run``)."""
        statement = update(tables.runs).where(tables.runs.c.run_uuid == run_id)
        with self._transaction() as connection:
            connection.execute(statement.values(status=status))

    def end_if_running(self, run_id: str, status: str, why: str) -> bool:
        """End the run with ``status`` and the error tag ``why`` if it is still RUNNING, in
        one conditional update; False when it was not (another process ended it first),
        which is then left as it is."""
        runs = tables.runs
        statement = (
            update(runs)
            .where(runs.c.run_uuid == run_id, runs.c.status == Status.RUNNING)
            .values(status=status, end_time=now_ms())
        )
        with self._transaction() as connection:
            ended = connection.execute(statement).rowcount == 1
        if ended:
            self.set_tags(run_id, {Tag.ERROR: why})
        return ended

    def delete_runs(self, run_ids: list[str]) -> None:
        """Mark the runs deleted (MLflow's ``delete_run``: hidden, restorable until ``mlflow
        gc``), only those that were stopped (KILLED or FAILED): never a finished result, nor
        a run someone trains."""
        runs, now = tables.runs, now_ms()
        with self._transaction() as connection:
            for start in range(0, len(run_ids), 500):
                chosen = runs.c.run_uuid.in_(run_ids[start : start + 500])
                statement = update(runs).where(chosen, runs.c.status.in_(STOPPED))
                connection.execute(statement.values(lifecycle_stage="deleted", deleted_time=now))

    # Reading a study

    def read_tables(self, experiment_id: str) -> ExperimentTables:
        """Every active run of the experiment with all its params, tags and metric
        histories, in four SQL queries (MLflow's client would need one call per run and
        metric)."""
        import pandas as pd

        runs = tables.runs.c
        active = select(runs.run_uuid).where(
            runs.experiment_id == int(experiment_id), runs.lifecycle_stage == "active"
        )
        info = select(
            runs.run_uuid.label("run_id"),
            runs.name.label("run_name"),
            runs.status,
            runs.start_time,
            runs.end_time,
        ).where(runs.run_uuid.in_(active))

        def pairs(table):
            return select(table.c.run_uuid.label("run_id"), table.c.key, table.c.value).where(
                table.c.run_uuid.in_(active)
            )

        metric = tables.metrics.c
        points = select(
            metric.run_uuid.label("run_id"),
            metric.key,
            metric.value,
            metric.step,
            metric.timestamp,
            metric.is_nan,
        ).where(metric.run_uuid.in_(active))
        queries = (info, pairs(tables.params), pairs(tables.tags), points)
        with self.engine.connect() as connection:
            found = ExperimentTables(*(pd.read_sql(query, connection) for query in queries))
        nan = found.metrics.pop("is_nan").astype(bool)  # NaN is stored as 0 with this flag
        found.metrics.loc[nan, "value"] = float("nan")
        return found
