"""Shared fixtures: real Hydra composition of the project's conf/, real MLflow sqlite stores in
temporary folders (migrated once per session, then copied for each test), and for the cluster
tests an MLflow server on a private PostgreSQL (started once per session)."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from harness import problem as problem_module
from harness import records, train
from harness.compose import compose_spec  # noqa: F401 (the tests' way to compose a spec)
from harness.paths import CONFIG_DIR, PACKAGE_ROOT
from harness.server import LocalPostgres, MlflowServer, ServerError, postgres_bindir

ROOT = PACKAGE_ROOT
CONF = str(CONFIG_DIR)


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True)
def _a_cache_of_the_tests_own(monkeypatch, tmp_path_factory):
    """Downloaded data sets go to a temporary cache, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite database with every migration applied."""
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(tmp_path, migrated_store) -> str:
    """A fresh sqlite store of this test's own."""
    path = tmp_path / "mlflow.db"
    shutil.copy(migrated_store, path)
    return f"sqlite:///{path}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """The http URI of an MLflow server recording into a private PostgreSQL, both on free
    ports of 127.0.0.1 in a temporary folder under /tmp (which the postgres user reaches when
    the tests run as root); stopped and removed at the session's end. Skips without
    PostgreSQL's programs or psycopg2 (the ``server`` extra)."""
    pytest.importorskip("psycopg2", reason="needs the server extra: pip install -e '.[server]'")
    try:
        postgres_bindir()
    except ServerError as error:
        pytest.skip(str(error))
    folder = Path(tempfile.mkdtemp(prefix="harness-server-"))
    folder.chmod(0o755)
    try:
        with LocalPostgres(folder / "postgres", free_port()) as postgres:
            artifacts = folder / "artifacts"
            with MlflowServer(postgres.uri, artifacts, port=free_port()) as server:
                yield server.uri
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def run_cli(tmp_path, store_uri, capsys):
    """Run ``python -m harness.train`` in this process: returns (exit code, stdout, stderr)."""

    def run(*overrides: str, uri: str | None = store_uri):
        argv = ["harness.train", f"hydra.run.dir={tmp_path}/hydra", *overrides]
        if uri is not None:
            argv.insert(1, f"tracking.uri={uri}")
        old_argv, sys.argv = sys.argv, argv
        try:
            train.main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        finally:
            sys.argv = old_argv
        out, err = capsys.readouterr()
        return code, out, err

    return run


def runs_in(uri: str, experiment: str = "runs") -> list:
    """All runs of ``experiment`` in the store at ``uri`` (none if it has no such experiment)."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def wait_for(condition, timeout: float = 180.0) -> None:
    """Poll ``condition`` every 0.2 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def process_is_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited: no entry in /proc, or a zombie its reaper has yet to
    collect (where init reaps late, an exited process can linger as one for a while)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" in status.read_text().lower()
    except FileNotFoundError:
        return True


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests where CUDA is missing."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tidy_frame(runs: list[dict]) -> pd.DataFrame:
    """A hand-made report frame: each run is a dict of run columns plus ``curve``, a list of
    per-step dicts; runs get ids r0, r1, ... and default to FINISHED, not diverged."""
    records = []
    for index, run in enumerate(runs):
        base = {"run_id": f"r{index}", "status": "FINISHED", "diverged": False}
        base.update({key: value for key, value in run.items() if key != "curve"})
        records += [{**base, **point} for point in run["curve"]]
    return pd.DataFrame(records)


SWEEP_TAGS = {"mlflow.parentRunId", "sweep_id", "owner", "cohort_size", "mlflow.runName"}
TIMES = {"wall_seconds"}  # a cohort's time is shared by its runs
STORE = {  # each sweep writes to a store (or an experiment) of its own
    "tracking.uri": "",
    "tracking.experiment": "",
}


def point_records(uri: str, experiment: str) -> dict[str, dict]:
    """Each grid point's FINISHED run by fingerprint: params, tag names and curves."""
    tables = records.read_experiment(uri, experiment)
    finished = set(tables.runs.run_id[tables.runs.status == "FINISHED"])
    tags = tables.tags[tables.tags.run_id.isin(finished)]
    marked = tags[tags.key == "fingerprint"]
    fingerprints = dict(zip(marked.run_id, marked.value, strict=True))
    found = {}
    for run_id, fingerprint in fingerprints.items():
        params = tables.params[tables.params.run_id == run_id]
        metrics = tables.metrics[tables.metrics.run_id == run_id].sort_values(["key", "step"])
        found[fingerprint] = {
            "params": dict(zip(params.key, params.value, strict=True)),
            "tags": set(tags[tags.run_id == run_id].key) - SWEEP_TAGS,
            "diverged": tags[(tags.run_id == run_id) & (tags.key == "diverged")].value.item(),
            "curves": {
                key: (list(group.step), np.array(group.value, dtype=float))
                for key, group in metrics.groupby("key")
                if key not in TIMES
            },
        }
    return found


def assert_same_records(batched: dict, alone: dict, points: int) -> None:
    """The same points, params and tag names; curves equal within 1e-5 relative."""
    assert len(batched) == len(alone) == points
    assert batched.keys() == alone.keys()
    for fingerprint, run in batched.items():
        other = alone[fingerprint]
        assert run["params"].keys() == other["params"].keys()
        assert run["params"] | STORE == other["params"] | STORE
        assert run["tags"] == other["tags"] and run["diverged"] == other["diverged"]
        assert run["curves"].keys() == other["curves"].keys()
        for key, (steps, values) in run["curves"].items():
            other_steps, other_values = other["curves"][key]
            assert steps == other_steps, key
            np.testing.assert_allclose(values, other_values, rtol=1e-5, atol=1e-12, err_msg=key)


def record_cohort(store_uri, overrides, seeds, **options):
    """Train one cohort (a run per seed) and record it; returns the runs by seed."""
    specs = [compose_spec(f"tracking.uri={store_uri}", *overrides, f"seed={s}") for s in seeds]
    store = records.Store(store_uri, "cohort", **options)
    try:
        written = train.record_cohort(
            specs, problem_module.build(specs[0]), store, [f"seed {s}" for s in seeds]
        )
    finally:
        store.close()
    assert all(recorded.error is None for recorded, _ in written)
    client = MlflowClient(tracking_uri=store_uri)
    return [client.get_run(recorded.run_id) for recorded, _ in written]


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
