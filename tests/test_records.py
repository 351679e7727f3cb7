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
from conftest import ROOT, compose_spec, process_is_gone, runs_in
from mlflow.tracking import MlflowClient

from harness import config, engine, records, train
from harness import problem as problem_module
from harness.config import ConfigError
from harness.records.backends import client as client_backend


def test_uri_precedence(monkeypatch, tmp_path):
    default = f"sqlite:///{ROOT / 'mlflow.db'}"
    assert records.resolve_uri(None) == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/env.db")
    assert records.resolve_uri(None) == "sqlite:////elsewhere/env.db"
    assert records.resolve_uri("sqlite:////explicit.db") == "sqlite:////explicit.db"
    monkeypatch.chdir(tmp_path)
    assert records.resolve_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"


@pytest.mark.parametrize(
    "uri", ["file:///tmp/mlruns", "mlruns", "sqlite:////no/such/folder/x.db", "http://127.0.0.1:9/"]
)
def test_unusable_uris_are_refused(uri):
    with pytest.raises(ConfigError, match="tracking.uri"):
        records.check_uri(records.resolve_uri(uri))


def record(store_uri, *overrides, background=True):
    spec = compose_spec(f"tracking.uri={store_uri}", *overrides)
    built = problem_module.build(spec)
    store = records.Store(store_uri, spec.tracking.experiment, background=background)
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


def test_long_runs_show_their_curves_while_they_train(store_uri):
    spec = compose_spec(f"tracking.uri={store_uri}", "trainer.steps=10", "tracking.log_every=1")
    store = records.Store(store_uri, "live", background=False, flush_seconds=0.0)
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
    curve = records.read_experiment(store_uri, "live").metrics.query("key == 'train_loss'")
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
    store = records.Store(store_uri, "runs")
    store.writer.process.kill()
    store.writer.process.join()
    with pytest.raises(records.TrackingError, match="writer process died"):
        store.writer.call("finish", ["no-such-run"], [{}], [{}], reply=True)


def test_an_mlflow_error_in_the_writer_reaches_the_caller(store_uri):
    store = records.Store(store_uri, "runs")
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
    store = records.Store(store_uri, "runs")
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
        "from harness import records\n"
        f"store = records.Store({store_uri!r}, 'runs')\n"
        "print(store.writer.process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    writer = int(done.stdout.split()[0])
    for _ in range(50):
        if process_is_gone(writer):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the orphaned writer process is still running")


def test_a_busy_server_is_asked_again_and_other_errors_are_raised_at_once(monkeypatch):
    from mlflow.exceptions import MlflowException

    monkeypatch.setattr(client_backend.time, "sleep", lambda seconds: None)
    answers = iter(
        [
            "QueuePool limit of size 5 overflow 10 reached",
            "BAD_REQUEST: (psycopg2.errors.UniqueViolation) duplicate key value violates "
            'unique constraint "dataset_pk"',  # two writers logged one new dataset at once
        ]
    )

    def busy_twice(value):
        message = next(answers, None)
        if message:
            raise MlflowException(message)
        return value

    assert client_backend.retrying(busy_twice, 7) == 7
    calls = []

    def refused(value):
        calls.append(value)
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such run")

    with pytest.raises(MlflowException, match="no such run"):
        client_backend.retrying(refused, 1)
    assert calls == [1]


def test_mlflow_telemetry_is_off_unless_asked_for():
    """Its thread unsets an environment variable while writer threads copy os.environ."""
    code = "import harness.records; from mlflow.telemetry.client import get_telemetry_client as t;"
    code += " print(t())"
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment
    )
    assert done.stdout.strip() == "None", done.stderr


def test_what_the_writer_writes_the_reader_reads_back_field_by_field(store_uri):
    """A cohort written through the Store (one run diverges), read back by read_experiment:
    every run's name, status, times, params, tags, curve points (step, value, timestamp) and
    end-of-run summaries."""
    specs = [
        compose_spec(
            f"tracking.uri={store_uri}",
            "dataset=linear_toy",
            "model=linear",
            "model.init=[1.6,-0.5]",
            f"optimizer.lr={lr}",
            "trainer.steps=40",
            "tracking.log_every=1",
        )
        for lr in (0.01, 0.5)
    ]
    problem = problem_module.build(specs[0])
    results = engine.train_cohort(specs, problem)
    assert [r.diverged for r in results] == [False, True]
    params = [records.run_params(s, {"data.n_train": 12}) for s in specs]
    given = [{"note": f"run {i}", records.Tag.SPLIT_DIGEST: "abc"} for i in range(2)]
    store = records.Store(store_uri, "trip")
    try:
        handles = store.start_runs(specs, ["slow", "fast"], params, given)
        store.log_curves(handles, [r.curves for r in results], results[0].seconds_at)
        written = store.finish_runs(handles, results)
    finally:
        store.close()
    tables = records.read_experiment(store_uri, "trip")
    assert set(tables.runs.run_id) == {w.run_id for w in written}
    for spec, name, recorded, result, sent, tags in zip(
        specs, ["slow", "fast"], written, results, params, given, strict=True
    ):
        run = tables.runs.set_index("run_id").loc[recorded.run_id]
        assert (run.run_name, run.status) == (name, records.Status.FINISHED)
        assert run.end_time >= run.start_time > 0
        got_params = tables.params.query("run_id == @recorded.run_id")
        assert dict(zip(got_params.key, got_params.value, strict=True)) == sent
        got_tags = tables.tags.query("run_id == @recorded.run_id")
        got_tags = dict(zip(got_tags.key, got_tags.value, strict=True))
        assert (
            got_tags.items()
            >= {
                **tags,
                records.Tag.FINGERPRINT: config.fingerprint(spec),
                records.Tag.DIVERGED: str(result.diverged).lower(),
                records.Tag.COHORT_SIZE: "2",
                records.Tag.RUN_NAME: name,
                records.Tag.SOURCE_NAME: "harness.train",
            }.items()
        )
        metrics = tables.metrics.query("run_id == @recorded.run_id")
        for key, (steps, values) in result.curves.items():
            curve = metrics[metrics.key == key].sort_values("step")
            assert curve.step.tolist() == steps, key
            assert curve.value.tolist() == pytest.approx(values, nan_ok=True), key
            offsets = [int(1000 * result.seconds_at.get(step, 0)) for step in steps]
            assert curve.timestamp.tolist() == [run.start_time + o for o in offsets], key
        last = result.diverged_step if result.diverged else result.plan.total_steps
        summaries = metrics[metrics.key.isin(records.Summary.ALL)].set_index("key")
        assert summaries.loc[records.Summary.WALL_SECONDS, "value"] == result.seconds
        assert (summaries.step == last).all()
        if result.diverged:
            assert summaries.loc[records.Summary.DIVERGED_STEP, "value"] == last
        else:
            assert records.Summary.DIVERGED_STEP not in summaries.index


def test_runs_carry_mlflows_source_tags_and_their_data_set(store_uri):
    """The UI's Source and User columns, the Dataset column (one input per split with its
    rows, digests derived from the split digest) and the model-training experiment kind."""
    spec, run, _ = record(store_uri, "dataset=wine", "model=softmax", "loss=cross_entropy")
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "harness.train" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == tags["git_commit"] != "unknown"
    assert run.info.user_id == tags["mlflow.user"] != "unknown"
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    params = run.data.params
    assert set(inputs) == {"train", "val", "test"}
    for split, dataset in inputs.items():
        assert dataset.name == "wine" and dataset.source_type == "code"
        assert json.loads(dataset.profile) == {"num_rows": int(params[f"data.n_{split}"])}
        assert json.loads(dataset.source)["tags"]["dataset.split_seed"] == "0"
    assert len({d.digest for d in inputs.values()}) == 3
    experiment = MlflowClient(tracking_uri=store_uri).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
