"""Tracking into a real MLflow sqlite store: params, curves, tags, artifact, failures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, compose_spec, runs_in
from mlflow.tracking import MlflowClient

from harness import config, tracking, train
from harness import problem as problem_module
from harness.config import ConfigError


def test_uri_precedence(monkeypatch, tmp_path):
    default = f"sqlite:///{ROOT / 'mlflow.db'}"
    assert tracking.resolve_uri(None) == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/env.db")
    assert tracking.resolve_uri(None) == "sqlite:////elsewhere/env.db"
    assert tracking.resolve_uri("sqlite:////explicit.db") == "sqlite:////explicit.db"
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"


@pytest.mark.parametrize(
    "uri", ["file:///tmp/mlruns", "mlruns", "sqlite:////no/such/folder/x.db", "http://127.0.0.1:9/"]
)
def test_unusable_uris_are_refused(uri):
    with pytest.raises(ConfigError, match="tracking.uri"):
        tracking.check_uri(tracking.resolve_uri(uri))


def record(store_uri, *overrides, background=True):
    spec = compose_spec(f"tracking.uri={store_uri}", *overrides)
    built = problem_module.build(spec)
    store = tracking.Store(store_uri, spec.tracking.experiment, background=background)
    try:
        run_id, result = train.train_and_record(spec, built, store)
    finally:
        store.close()
    return spec, MlflowClient(tracking_uri=store_uri).get_run(run_id), result


def test_a_run_records_params_curves_tags_and_config(store_uri):
    spec, run, result = record(
        store_uri,
        "dataset=wine",
        "model=softmax",
        "loss=cross_entropy",
        "optimizer=momentum",
        "trainer.steps=30",
        "seed=7",
    )
    params = run.data.params
    assert params["optimizer.name"] == "momentum" and float(params["optimizer.lr"]) == 0.1
    assert params["dataset.name"] == "wine" and params["model.name"] == "softmax"
    assert params["loss.name"] == "cross_entropy" and params["schedule.name"] == "constant"
    assert params["seed"] == "7" and json.loads(params["model.init"]) is None
    assert (
        int(params["data.n_train"]) + int(params["data.n_val"]) + int(params["data.n_test"]) == 178
    )
    tags = run.data.tags
    assert tags["fingerprint"] == config.fingerprint(spec)
    assert tags["diverged"] == "false" and tags["device"] == "cpu"
    assert {"torch_version", "mlflow_version", "git_commit", "split_digest"} <= set(tags)
    assert run.info.status == "FINISHED"
    client = MlflowClient(tracking_uri=store_uri)
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(31))
    assert [m.value for m in history] == pytest.approx(result.curves["train_loss"][1])
    for metric in ("val_loss", "test_loss", "val_accuracy", "test_accuracy", "lr"):
        assert metric in run.data.metrics
    artifact = Path(client.download_artifacts(run.info.run_id, "config.yaml"))
    assert "momentum" in artifact.read_text()


def test_two_parameter_runs_record_their_trajectory(store_uri):
    _, run, result = record(
        store_uri, "model.init=[-1.5,8.5]", "trainer.steps=5", "tracking.log_every=1"
    )
    client = MlflowClient(tracking_uri=store_uri)
    phi0 = client.get_metric_history(run.info.run_id, "phi0")
    assert phi0[0].value == -1.5 and len(phi0) == 6


def test_the_fingerprint_ignores_tracking_and_run_name():
    a = compose_spec("tracking.experiment=a", "run_name=x")
    b = compose_spec("tracking.experiment=b", "tracking.log_every=3")
    assert config.fingerprint(a) == config.fingerprint(b)
    assert config.fingerprint(a) != config.fingerprint(compose_spec("seed=1"))


def record_cohort(store_uri, overrides, seeds, **options):
    """Train one cohort (a run per seed) and record it; returns the runs by seed."""
    specs = [compose_spec(f"tracking.uri={store_uri}", *overrides, f"seed={s}") for s in seeds]
    store = tracking.Store(store_uri, "cohort", **options)
    try:
        records = train.record_cohort(
            specs, problem_module.build(specs[0]), store, [f"seed {s}" for s in seeds]
        )
    finally:
        store.close()
    assert all(recorded.error is None for recorded, _ in records)
    client = MlflowClient(tracking_uri=store_uri)
    return [client.get_run(recorded.run_id) for recorded, _ in records]


def metric_rows(store_uri, run_id):
    """Every metric row of a run, as MLflow's client reads them back."""
    client = MlflowClient(tracking_uri=store_uri)
    names = client.get_run(run_id).data.metrics
    return {
        name: sorted(
            (m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, name)
        )
        for name in names
    }


def test_database_writes_leave_the_records_mlflows_client_leaves(store_uri):
    """The cohort path (one transaction for many runs) against MLflow's own log_batch and
    set_terminated: the same params, tags, metric histories and latest values."""
    overrides = (
        "dataset=wine",
        "model=softmax",
        "loss=cross_entropy",
        "trainer.steps=40",
        "trainer.batch_size=16",
        "optimizer=adam",
    )
    bulk = record_cohort(store_uri, overrides, [0, 1, 2])
    client = record_cohort(store_uri, overrides, [0, 1, 2], bulk=False)
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


def test_long_runs_show_their_curves_while_they_train(store_uri):
    spec = compose_spec(f"tracking.uri={store_uri}", "trainer.steps=10", "tracking.log_every=1")
    store = tracking.Store(store_uri, "live", background=False, flush_seconds=0.0)
    (handle,) = store.start_runs([spec], ["live"], [{}], [{}])
    store.log_curves([handle], [{"train_loss": ([0, 1, 2], [3.0, 2.0, 1.0])}], {})
    (run,) = runs_in(store_uri, "live")
    client = MlflowClient(tracking_uri=store_uri)
    assert run.info.status == "RUNNING" and run.data.metrics == {"train_loss": 1.0}
    store.log_curves([handle], [{"train_loss": ([3], [float("nan")])}], {})
    result = train.engine.train_cohort([spec])[0]
    (recorded,) = store.finish_runs([handle], [result])
    run = client.get_run(recorded.run_id)
    assert run.info.status == "FINISHED" and math.isnan(run.data.metrics["train_loss"])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    curve = tracking.read_experiment(store_uri, "live").metrics.query("key == 'train_loss'")
    values = curve.sort_values("step").value.tolist()
    assert values[:3] == [3.0, 2.0, 1.0] and math.isnan(values[3])  # not MLflow's stored 0


def test_the_inline_writer_records_the_same_run(store_uri):
    overrides = ("dataset=wine", "model=softmax", "loss=cross_entropy", "trainer.steps=300")
    _, forked, _ = record(store_uri, *overrides)
    _, inline, _ = record(store_uri, *overrides, background=False)
    assert forked.data.params == inline.data.params
    assert forked.data.metrics.keys() == inline.data.metrics.keys()
    client = MlflowClient(tracking_uri=store_uri)
    for name in ("train_loss", "val_accuracy", "lr"):
        a = client.get_metric_history(forked.info.run_id, name)
        b = client.get_metric_history(inline.info.run_id, name)
        assert [(m.step, m.value) for m in a] == [(m.step, m.value) for m in b]


def test_a_dead_writer_is_reported_not_waited_for(store_uri):
    store = tracking.Store(store_uri, "runs")
    store.writer.process.kill()
    store.writer.process.join()
    with pytest.raises(tracking.TrackingError, match="writer process died"):
        store.writer.call("finish", ["no-such-run"], [{}], [{}], reply=True)


def test_an_mlflow_error_in_the_writer_reaches_the_caller(store_uri):
    store = tracking.Store(store_uri, "runs")
    try:
        _, errors = store.writer.call("finish", ["never-started"], [{}], [{}], reply=True)
    finally:
        store.close()
    assert "KeyError" in errors["never-started"]


def test_a_diverged_run_is_finished_and_tagged(store_uri):
    _, run, _ = record(
        store_uri,
        "dataset=linear_toy",
        "model=linear",
        "optimizer.lr=0.5",
        "model.init=[1.6,-0.5]",
        "trainer.steps=100",
    )
    assert run.info.status == "FINISHED" and run.data.tags["diverged"] == "true"
    assert run.data.metrics["diverged_step"] < 100


def test_a_run_that_raises_is_recorded_failed(store_uri, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(train.engine, "train_cohort", explode)
    with pytest.raises(RuntimeError, match="boom"):
        record(store_uri, "trainer.steps=3")
    (run,) = runs_in(store_uri)
    assert run.info.status == "FAILED"
    assert "boom in training" in run.data.tags["error"]


def test_an_interrupted_run_is_recorded_killed(store_uri, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.engine, "train_cohort", interrupt)
    with pytest.raises(KeyboardInterrupt):
        record(store_uri, "trainer.steps=3")
    assert runs_in(store_uri)[0].info.status == "KILLED"


def test_a_failed_curve_write_finishes_the_run_failed(store_uri):
    store = tracking.Store(store_uri, "runs")
    spec = compose_spec()
    try:
        (handle,) = store.start_runs([spec], ["broken"], [{}], [{}])
        store.log_curves([handle], [{"train_loss": ([0, 1], [1.0])}], {})  # steps, values differ
        result = train.engine.train_cohort([spec])[0]
        (recorded,) = store.finish_runs([handle], [result])
    finally:
        store.close()
    assert "ValueError" in recorded.error
    (run,) = runs_in(store_uri)
    assert run.info.status == "FAILED" and "ValueError" in run.data.tags["error"]


def test_the_writer_exits_when_its_parent_is_killed(tmp_path, store_uri):
    script = (
        "import os, sys\n"
        "from harness import tracking\n"
        f"store = tracking.Store({store_uri!r}, 'runs')\n"
        "print(store.writer.process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    writer = int(done.stdout.split()[0])
    for _ in range(50):
        if (
            not Path(f"/proc/{writer}").exists()
            or "zombie" in Path(f"/proc/{writer}/status").read_text().lower()
        ):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the orphaned writer process is still running")


def test_a_run_whose_final_write_fails_is_not_left_running(store_uri, monkeypatch):
    store = tracking.Store(store_uri, "runs", background=False)
    (handle,) = store.start_runs([compose_spec()], ["doomed"], [{}], [{}])
    original = tracking.DatabaseWrites.write

    def locked(self, batch):
        if batch.ended:
            raise RuntimeError("database is locked")
        return original(self, batch)

    monkeypatch.setattr(tracking.DatabaseWrites, "write", locked)
    result = train.engine.train_cohort([compose_spec("trainer.steps=3")])[0]
    (recorded,) = store.finish_runs([handle], [result])
    assert "database is locked" in recorded.error
    assert runs_in(store_uri)[0].info.status == "FAILED"


def test_a_busy_server_is_asked_again_and_other_errors_are_raised_at_once(monkeypatch):
    from mlflow.exceptions import MlflowException

    monkeypatch.setattr(tracking.time, "sleep", lambda seconds: None)
    answers = iter(["QueuePool limit of size 5 overflow 10 reached"] * 2)

    def busy_twice(value):
        message = next(answers, None)
        if message:
            raise MlflowException(message)
        return value

    assert tracking._retrying(busy_twice, 7) == 7
    calls = []

    def refused(value):
        calls.append(value)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such run")

    with pytest.raises(MlflowException, match="no such run"):
        tracking._retrying(refused, 1)
    assert calls == [1]


def test_mlflow_telemetry_is_off_unless_asked_for():
    """Its thread unsets an environment variable while writer threads copy os.environ."""
    code = "import harness.tracking; from mlflow.telemetry.client import get_telemetry_client as t;"
    code += " print(t())"
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment
    )
    assert done.stdout.strip() == "None", done.stderr
