"""The direct writes on MLflow's tables (``harness.records.backends.sql``) against MLflow's own
client, and the store schemas they accept: the verification that module's header names."""

from __future__ import annotations

import sqlite3

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
    original = sql.DatabaseWrites._dataset_uuids

    def stale_first_read(self, connection, experiment_id, wanted):
        reads.append(len(reads))
        return {} if len(reads) == 1 else original(self, connection, experiment_id, wanted)

    monkeypatch.setattr(sql.DatabaseWrites, "_dataset_uuids", stale_first_read)
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
    client = mlflow.MlflowClient(tracking_uri=store_uri)
    assert opening.bulk_verified(opening.database_store(client))
    assert opening.unverified_note() is None


def test_an_unverified_schema_is_written_through_mlflows_client_and_said_once(
    store_uri, monkeypatch, capsys
):
    """On a schema the direct writes were not verified on, runs go through MLflow's client,
    with the same records, and a sweep's store says so once."""
    monkeypatch.setattr(opening, "VERIFIED", {"0123456789ab": "0.0.0"})
    store = records.Store(store_uri, "runs", background=False)
    assert not isinstance(store.writer.calls.recorder.writes, sql.DatabaseWrites)
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
    original = sql.DatabaseWrites.write

    def locked(self, batch):
        if batch.ended:
            raise RuntimeError("database is locked")
        return original(self, batch)

    monkeypatch.setattr(sql.DatabaseWrites, "write", locked)
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
