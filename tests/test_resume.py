"""Checkpointed sweeps end to end: a sweep killed with -9 mid-training, or stopped by SIGTERM,
resumes its cohort from the checkpoint when it is run again, in the same runs' place, and its
records equal an uninterrupted sweep's."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import runs_in, wait_for
from mlflow.tracking import MlflowClient
from test_sweep import assert_complete, process_group_is_gone, sweep_process

from harness import checkpoints
from harness.sweep import settings

# one cohort of six Adam runs, long enough (about 7 s here) to be stopped midway
GRID = ["optimizer=adam", "seed=range(6)", "trainer.steps=20000", "trainer.checkpoint_every=0.5"]
TIMINGS = {"wall_seconds"}
# tags that differ between any two sweeps (the writing process, the parent run) or that say
# the run was resumed
VARYING_TAGS = {"owner", "mlflow.parentRunId", "resumed_step", "resumed_from"}


def folder_of(uri: str) -> Path:
    return checkpoints.folder(uri, "smoke", None)


def checkpoint_step(uri: str) -> int:
    """The update of the checkpoint in the store's smoke folder (-1: none yet)."""
    found = checkpoints.headers(folder_of(uri))
    steps = [header.step for _, header in found if isinstance(header, checkpoints.Header)]
    return max(steps, default=-1)


def run_sweep(tmp_path: Path, uri: str, *args: str) -> str:
    process = sweep_process(tmp_path, uri, *GRID, *args)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    return out


def records(uri: str) -> dict[str, dict]:
    """Each FINISHED point's params, tags and curves, by fingerprint."""
    client = MlflowClient(tracking_uri=uri)
    found = {}
    for run in assert_complete(uri, 6):
        curves = {
            key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics
            if key not in TIMINGS
        }
        tags = {k: v for k, v in run.data.tags.items() if k not in VARYING_TAGS}
        params = {k: v for k, v in run.data.params.items() if k != "tracking.uri"}  # 2 stores
        found[run.data.tags["fingerprint"]] = {"params": params, "tags": tags, "curves": curves}
    return found


def assert_same_records(mine: dict, theirs: dict) -> None:
    assert mine.keys() == theirs.keys()
    for fingerprint, record in theirs.items():
        assert mine[fingerprint]["params"] == record["params"]
        assert mine[fingerprint]["tags"] == record["tags"]
        assert mine[fingerprint]["curves"].keys() == record["curves"].keys()
        for key, points in record["curves"].items():
            steps, values = zip(*points, strict=True)
            my_steps, my_values = zip(*mine[fingerprint]["curves"][key], strict=True)
            assert my_steps == steps, key  # complete, no step twice
            np.testing.assert_allclose(my_values, values, rtol=1e-6, err_msg=key)


def deleted_runs(uri: str) -> list[str]:
    with sqlite3.connect(uri[len("sqlite:///") :]) as db:
        rows = db.execute("select run_uuid from runs where lifecycle_stage = 'deleted'")
        return [run_id for (run_id,) in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, migrated_store) -> dict:
    """The grid's records from a sweep that was never stopped."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    uri = f"sqlite:///{folder}/mlflow.db"
    Path(uri[len("sqlite:///") :]).write_bytes(migrated_store.read_bytes())
    run_sweep(folder, uri)
    assert not list(folder_of(uri).iterdir())  # removed once the runs are FINISHED
    return records(uri)


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_stopped_sweep_resumes_its_cohort_and_records_what_an_uninterrupted_one_does(
    tmp_path, store_uri, uninterrupted, stop
):
    """kill -9 of the process group once a checkpoint is a quarter of the way; or SIGTERM
    with checkpoints otherwise too rare to be written, so that the signal writes one. The
    rerun changes max_cohort and the workers: the checkpoint's cohort resumes as written."""
    every = [] if stop == "SIGKILL" else ["trainer.checkpoint_every=1000"]
    process = sweep_process(tmp_path, store_uri, *GRID, *every)
    if stop == "SIGKILL":
        wait_for(lambda: checkpoint_step(store_uri) >= 5000)
    else:
        wait_for(lambda: len(runs_in(store_uri, "smoke")) == 7)  # the parent and its cohort
        time.sleep(2.5)  # a third of the training
    os.killpg(process.pid, getattr(signal, stop))
    out, _ = process.communicate(timeout=120)
    wait_for(lambda: process_group_is_gone(process.pid), timeout=30)
    if stop == "SIGTERM":
        assert process.returncode == settings.EXIT_INTERRUPTED, out
    step = checkpoint_step(store_uri)
    assert 0 < step < 20000
    stopped = {r.info.run_id for r in runs_in(store_uri, "smoke") if r.data.tags.get("fingerprint")}

    out = run_sweep(tmp_path, store_uri, "hydra.launcher.max_cohort=2", "hydra.launcher.n_jobs=2")
    assert "resuming 1 cohort(s) of 6 point(s) from checkpoints" in out
    assert_same_records(records(store_uri), uninterrupted)
    for run in assert_complete(store_uri, 6):
        assert run.data.tags["resumed_step"] == str(step)
        assert run.data.tags["resumed_from"] in stopped
    assert sorted(deleted_runs(store_uri)) == sorted(stopped)  # replaced: no stale copies
    assert not list(folder_of(store_uri).iterdir())
