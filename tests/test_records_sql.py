"""The direct writes on MLflow's tables (``harness.records.backends.sql``) against MLflow's own
client, and the store schemas they accept: the verification that module's header names."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import mlflow
import pytest
from conftest import compose_spec, metric_rows, record_cohort, runs_in
from mlflow.store.db.utils import _get_latest_schema_revision

from harness import engine, records, train
from harness import problem as problem_module
from harness.config import ConfigError
from harness.records.backends import opening, sql

WINE = (
    "dataset=wine",
    "model=softmax",
    "loss=cross_entropy",
    "trainer.steps=40",
    "trainer.batch_size=16",
    "optimizer=adam",
)


def inputs_of(run) -> list[tuple]:
    """A run's dataset inputs as (name, digest, source type, source, profile, tags)."""
    return sorted(
        (
            i.dataset.name,
            i.dataset.digest,
            i.dataset.source_type,
            i.dataset.source,
            i.dataset.profile,
            tuple((t.key, t.value) for t in i.tags),
        )
        for i in run.inputs.dataset_inputs
    )


def test_database_writes_leave_the_records_mlflows_client_leaves(store_uri):
    """The cohort path (one transaction for many runs) against MLflow's own log_batch,
    log_inputs and set_terminated: the same params, tags, datasets, metric histories and
    latest values."""
    bulk = record_cohort(store_uri, WINE, [0, 1, 2])
    client = record_cohort(store_uri, WINE, [0, 1, 2], bulk=False)
    assert all(run.info.status == "FINISHED" for run in bulk + client)
    different = {"owner", "mlflow.runName"}
    for a, b in zip(bulk, client, strict=True):
        assert a.info.run_name == b.info.run_name and a.info.user_id == b.info.user_id
        assert (a.info.lifecycle_stage, a.info.status) == (b.info.lifecycle_stage, "FINISHED")
        assert a.info.artifact_uri.replace(a.info.run_id, "") == b.info.artifact_uri.replace(
            b.info.run_id, ""
        )
        assert a.info.end_time >= a.info.start_time > 0
        assert a.data.params == b.data.params
        assert {k: v for k, v in a.data.tags.items() if k not in different} == {
            k: v for k, v in b.data.tags.items() if k not in different
        } | {"cohort_size": "3"}
        assert inputs_of(a) == inputs_of(b) and len(inputs_of(a)) == 3
        rows_a, rows_b = (
            metric_rows(store_uri, a.info.run_id),
            metric_rows(store_uri, b.info.run_id),
        )
        assert rows_a.keys() == rows_b.keys() and "val_accuracy" in rows_a
        for name in rows_a:
            if name != "wall_seconds":
                assert [r[:2] for r in rows_a[name]] == [r[:2] for r in rows_b[name]]
        latest = {k: v for k, v in a.data.metrics.items() if k != "wall_seconds"}
        assert latest == {k: v for k, v in b.data.metrics.items() if k != "wall_seconds"}
    assert [run.data.tags["fingerprint"] for run in bulk] == [
        run.data.tags["fingerprint"] for run in client
    ]


def test_runs_of_one_data_set_share_its_dataset_rows(store_uri):
    """One row per split in MLflow's datasets table however many runs and cohorts use it, as
    MLflow's log_inputs leaves it; each run has an input edge per split."""
    record_cohort(store_uri, WINE, [0, 1])
    record_cohort(store_uri, WINE, [2, 3], bulk=False)
    record_cohort(store_uri, WINE, [4])
    path = store_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        datasets = connection.execute("select name, digest from datasets").fetchall()
        edges = connection.execute("select count(*) from inputs").fetchone()[0]
        contexts = connection.execute("select distinct value from input_tags").fetchall()
    assert len(datasets) == 3 and {name for name, _ in datasets} == {"wine"}
    assert edges == 5 * 3 and {c for (c,) in contexts} == {"train", "val", "test"}


def test_a_dataset_another_writer_inserts_first_is_shared_not_a_failure(store_uri, monkeypatch):
    """Two writers reading no row for a new dataset both insert it: the second insert fails on
    the table's key, and its writer reads the first one's row and links its runs to it."""
    record_cohort(store_uri, WINE, [0])  # the first writer's datasets
    reads = []
    original = sql.Database._dataset_uuids

    def stale_first_read(self, connection, experiment_id, wanted):
        reads.append(len(reads))
        return {} if len(reads) == 1 else original(self, connection, experiment_id, wanted)

    monkeypatch.setattr(sql.Database, "_dataset_uuids", stale_first_read)
    (run,) = record_cohort(store_uri, WINE, [1], background=False)
    assert len(reads) == 2 and run.info.status == "FINISHED" and len(inputs_of(run)) == 3
    with sqlite3.connect(store_uri.removeprefix("sqlite:///")) as connection:
        assert connection.execute("select count(*) from datasets").fetchone()[0] == 3


def test_the_installed_mlflow_writes_a_verified_schema(store_uri):
    """The bulk path is what runs here: the installed MLflow's schema is a verified one, and
    the revisions the harness reads off MLflow's migrations are alembic's."""
    assert opening.known_revisions() == known_revisions()
    assert _get_latest_schema_revision() in opening.VERIFIED
    assert opening.VERIFIED[_get_latest_schema_revision()] == mlflow.__version__
    assert opening.head_revision() == _get_latest_schema_revision()
    assert opening.mlflow_version() == mlflow.__version__
    assert opening.direct(store_uri)
    assert isinstance(opening.open_backend(store_uri), sql.Database)
    assert opening.unverified_note() is None


def test_an_unverified_schema_is_written_through_mlflows_client_and_said_once(
    store_uri, monkeypatch, capsys
):
    """On a schema the direct writes were not verified on, runs go through MLflow's client,
    with the same records, and a sweep's store says so once."""
    monkeypatch.setattr(opening, "VERIFIED", {"0123456789ab": "0.0.0"})
    store = records.Store(store_uri, "runs", background=False)
    assert not isinstance(store.writer.calls.recorder.backend, sql.Database)
    store.close()
    (run,) = record_cohort(store_uri, WINE, [0])
    assert run.info.status == "FINISHED" and len(inputs_of(run)) == 3
    records.Ledger(store_uri, "runs")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "through MLflow's client" in notes[0]


def set_revision(uri: str, revision: str) -> None:
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as connection:
        connection.execute("update alembic_version set version_num = ?", (revision,))


def known_revisions() -> set[str]:
    """The schema revisions the installed MLflow knows."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    return {revision.revision for revision in script.walk_revisions()}


def test_a_store_of_a_newer_mlflow_is_refused_naming_both_versions(store_uri, run_cli):
    """A verified newer MLflow's schema revision (3.18.0's under 3.17.2, as 3.18.0 leaves a
    3.17 store it opened), then one no MLflow we know of wrote."""
    newer = [r for r in opening.VERIFIED if r not in known_revisions()]
    if not newer:
        pytest.skip(f"no verified MLflow is newer than the installed {mlflow.__version__}")
    set_revision(store_uri, newer[0])
    with pytest.raises(ConfigError) as raised:
        records.Ledger(store_uri, "runs")
    message = str(raised.value)
    assert raised.value.key == "tracking.uri"
    assert f"MLflow {opening.VERIFIED[newer[0]]}" in message and mlflow.__version__ in message
    assert "mlflow db upgrade" in message
    code, _, err = run_cli("trainer.steps=3")
    assert code == 2 and err.startswith("error: tracking.uri=") and len(err.splitlines()) == 1
    assert f"MLflow {opening.VERIFIED[newer[0]]}" in err


def test_a_store_of_an_unknown_newer_schema_is_refused(store_uri):
    set_revision(store_uri, "0123456789ab")  # a revision no MLflow we know of wrote
    with pytest.raises(ConfigError, match="an MLflow newer than that"):
        records.read_experiment(store_uri, "runs")


def test_a_store_of_an_older_schema_is_mlflows_to_refuse_in_one_line(store_uri, run_cli):
    """All of 3.17's tables there but an older revision: MLflow asks for `mlflow db upgrade`;
    the harness says so in one line, exit 2, and writes nothing."""
    set_revision(store_uri, "17e22815139b")  # an older revision the installed MLflow knows
    code, _, err = run_cli("trainer.steps=3")
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: tracking.uri=") and "mlflow db upgrade" in err
    set_revision(store_uri, _get_latest_schema_revision())
    assert runs_in(store_uri) == []


def test_a_run_whose_final_write_fails_is_not_left_running(store_uri, monkeypatch):
    store = records.Store(store_uri, "runs", background=False)
    (handle,) = store.start_runs([compose_spec()], ["doomed"], [{}], [{}])
    original = sql.Database.write

    def locked(self, batch):
        if batch.ended:
            raise RuntimeError("database is locked")
        return original(self, batch)

    monkeypatch.setattr(sql.Database, "write", locked)
    result = train.engine.train_cohort([compose_spec("trainer.steps=3")])[0]
    (recorded,) = store.finish_runs([handle], [result])
    assert "database is locked" in recorded.error
    assert runs_in(store_uri)[0].info.status == "FAILED"


@pytest.mark.parametrize("bulk", [True, False], ids=["direct", "client"])
def test_long_values_and_repeated_points_are_kept_as_mlflows_client_keeps_them(store_uri, bulk):
    """A param over 6 000 characters is cut to 6 000 (on PostgreSQL a longer one failed the
    whole cohort's creation); a metric point given twice in one batch is written once (it
    aborted the whole transaction)."""
    spec = compose_spec(f"tracking.uri={store_uri}", "trainer.steps=5")
    store = records.Store(store_uri, "limits", bulk=bulk)
    try:
        params = {**records.run_params(spec), "long": "p" * 7000}
        (handle,) = store.start_runs([spec], ["long"], [params], [{}])
        twice = {"train_loss": ([0, 1, 1], [3.0, 2.0, 2.0])}
        store.log_curves([handle], [twice], {0: 0.0, 1: 0.0})
        result = engine.train_cohort([spec], problem_module.build(spec), lambda *_: None)[0]
        (recorded,) = store.finish_runs([handle], [result])
    finally:
        store.close()
    assert recorded.error is None, recorded.error
    (run,) = runs_in(store_uri, "limits")
    assert run.info.status == "FINISHED"
    assert run.data.params["long"] == "p" * 6000
    rows = metric_rows(store_uri, run.info.run_id)["train_loss"]
    assert [(step, value) for step, value, _ in rows] == [(0, 3.0), (1, 2.0)]


def statements(script: str) -> list[list[str]]:
    """The statements of a schema script, sorted, each as its sorted lines without their
    trailing commas: MLflow's migrations create indexes, and write a table's constraints, in
    an order that varies from run to run."""
    found: list[list[str]] = []
    for line in script.splitlines():
        if line.startswith(("CREATE ", "INSERT ")):
            found.append([])
        found[-1].append(line.strip().rstrip(","))
    return sorted(sorted(lines) for lines in found)


def test_a_new_store_is_made_from_the_shipped_schema_as_mlflows_migrations_make_it(
    tmp_path, monkeypatch
):
    """The shipped schema of the installed MLflow's revision is the SQL of a store MLflow
    has just made; a store made from it holds the same tables, indexes, triggers and rows
    (the default experiment's times aside), ``mlflow db upgrade`` finds nothing to do, and
    MLflow's client writes and reads it."""
    monkeypatch.chdir(tmp_path)  # the default experiment's artifacts go under ./mlruns
    reference, ours = tmp_path / "reference.db", tmp_path / "ours.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{reference}").search_experiments()
    shipped = opening.SCHEMAS / f"{_get_latest_schema_revision()}.sql"
    assert statements(shipped.read_text()) == statements(opening.schema_script(reference))
    opening.create_if_missing(f"sqlite:///{ours}")
    assert statements(opening.schema_script(ours)) == statements(opening.schema_script(reference))

    def experiments(path):
        with sqlite3.connect(path) as connection:
            rows = connection.execute("select * from experiments").fetchall()
        connection.close()
        return [row[:4] + row[6:] for row in rows]  # without creation and update times

    assert experiments(ours) == experiments(reference)
    upgrade = [sys.executable, "-m", "mlflow", "db", "upgrade", f"sqlite:///{ours}"]
    assert subprocess.run(upgrade, capture_output=True).returncode == 0
    assert opening.revision_at(f"sqlite:///{ours}") == _get_latest_schema_revision()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ours}")
    run = client.create_run(client.create_experiment("made"))
    client.log_metric(run.info.run_id, "loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}


NAMES = ["train_loss", "optimizer.kwargs.a b", "a:b/c-d_e", "x" * 250, "x" * 251, "", "a@b"]
NAMES += ["../up", "/root", "a//b", "a/./b", ".", "ok/", "tab\there", "é"]


@pytest.mark.parametrize("name", NAMES)
def test_names_are_refused_as_mlflows_client_refuses_them(name):
    """``backends.rules`` against ``mlflow.utils.validation`` (the direct writes' rules)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric, _validate_param, _validate_tag

    from harness.records.backends import rules

    for theirs, ours in (
        (lambda: _validate_metric(name, 0.0, 0, 0), lambda: rules.check_name("metric", name)),
        (lambda: _validate_param(name, "v"), lambda: rules.param(name, "v")),
        (lambda: _validate_tag(name, "v"), lambda: rules.tag(name, "v")),
    ):
        try:
            theirs()
            refused = False
        except MlflowException:
            refused = True
        if refused:
            with pytest.raises(rules.Refused):
                ours()
        else:
            ours()


def test_long_values_are_cut_as_mlflows_client_cuts_them():
    from mlflow.utils.validation import _validate_param, _validate_tag

    from harness.records.backends import rules

    for length in (5999, 6000, 6001, 7999, 8000, 8001, 20000):
        value = "v" * length
        param, tag = _validate_param("p", value), _validate_tag("t", value)
        assert rules.param("p", value) == (param.key, param.value)
        assert rules.tag("t", value) == (tag.key, tag.value)


def test_the_tables_the_harness_writes_are_mlflows():
    """Each table of ``backends.tables`` is one of MLflow's models' tables, its columns among
    that table's and its primary key the same."""
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.tracking.dbmodels import models  # noqa: F401  (defines the tables)

    from harness.records.backends import tables

    theirs = Base.metadata.tables
    for name, table in tables.metadata.tables.items():
        assert {c.name for c in table.columns} <= {c.name for c in theirs[name].columns}, name
        ours_key = {c.name for c in table.primary_key.columns}
        assert ours_key == {c.name for c in theirs[name].primary_key.columns}, name


def test_long_values_are_refused_where_mlflow_is_told_not_to_cut_them(monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_param

    from harness.records.backends import rules

    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    with pytest.raises(MlflowException):
        _validate_param("p", "v" * 6001)
    with pytest.raises(rules.Refused):
        rules.param("p", "v" * 6001)
    assert rules.param("p", "v" * 6000) == ("p", "v" * 6000)


def test_a_file_that_is_no_database_is_refused_in_one_line(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_text("not a database")
    with pytest.raises(ConfigError, match="cannot open it") as raised:
        records.Ledger(f"sqlite:///{path}", "runs")
    assert raised.value.key == "tracking.uri"
