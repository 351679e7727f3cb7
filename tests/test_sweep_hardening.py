"""Sweeps when users and machines misbehave: two sweeps of one study at once on a new store, a
tracking writer killed (as the OOM killer would), SIGTERM to the whole process group
(``timeout``, systemd, ``docker stop``), Ctrl-C twice, and a kill during a new store's
creation."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, runs_in, wait_for
from test_sweep import (
    assert_complete,
    points_and_parents,
    process_group_is_gone,
    running_worker_pids,
    sweep_process,
)

from harness.sweep import settings

GRID = ["seed=range(6)", "trainer.steps=3000", "hydra.launcher.max_cohort=2"]  # 24 points


@pytest.mark.slow  # about 20 s; claims on held points are tested in test_records_hardening
def test_two_sweeps_of_one_study_at_once_run_each_point_once(tmp_path):
    """Started together on a store neither has created yet: every point has exactly one
    FINISHED run and none FAILED; each sweep has its own parent run, and together they
    trained each point once."""
    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    (tmp_path / "new").mkdir()
    first = sweep_process(tmp_path / "a", uri, *GRID)
    second = sweep_process(tmp_path / "b", uri, *GRID)
    outs = [process.communicate(timeout=600)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert_complete(uri, 24)
    points, parents = points_and_parents(uri)
    assert collections.Counter(r.info.status for r in points) == {"FINISHED": 24}
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    assert sum(p.data.metrics["runs_trained"] for p in parents) == 24
    # the sweep that ends last finds every point finished, by itself or by the other
    assert max(p.data.metrics["runs_finished"] for p in parents) == 24, outs


def writer_pids(worker: int) -> list[int]:
    children = Path(f"/proc/{worker}/task/{worker}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@pytest.mark.slow  # about 30 s; Ctrl-C and a killed worker are in the default suite
def test_a_killed_tracking_writer_fails_its_cohort_and_the_sweep_finishes(tmp_path, store_uri):
    """The OOM killer takes a worker's tracking writer midway: that cohort's runs end FAILED
    with the reason, the worker writes the next cohorts through a new writer, and the sweep
    ends with its summary (exit 1) instead of hanging."""
    process = sweep_process(
        tmp_path, store_uri, "seed=range(2)", "trainer.steps=20000", "hydra.launcher.n_jobs=1"
    )
    wait_for(lambda: running_worker_pids(store_uri))
    (worker,) = set(running_worker_pids(store_uri))
    wait_for(lambda: writer_pids(worker))
    for writer in writer_pids(worker):
        os.kill(writer, signal.SIGKILL)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == settings.EXIT_FAILED, out
    assert "| failed | 2 |" in out and "| finished | 6 |" in out
    points, (parent,) = points_and_parents(store_uri)
    assert collections.Counter(r.info.status for r in points) == {"FINISHED": 6, "FAILED": 2}
    failed = [r for r in points if r.info.status == "FAILED"]
    assert all("tracking writer process died" in r.data.tags["error"] for r in failed)
    assert parent.info.status == "FAILED"


@pytest.mark.slow  # about 30 s; Ctrl-C and a killed worker are in the default suite
def test_sigterm_to_the_process_group_records_killed_runs_and_exits_130(tmp_path, store_uri):
    """``timeout`` sends SIGTERM to the whole process group: the cut runs are KILLED in the
    store and in the summary, none FAILED, and the sweep exits 130."""
    sweep = [
        sys.executable,
        "-m",
        "harness.sweep",
        "smoke",
        f"tracking.uri={store_uri}",
        f"hydra.sweep.dir={tmp_path}/multirun",
        "seed=range(4)",
        "trainer.steps=200000",
        "hydra.launcher.n_jobs=2",
    ]
    command = ["timeout", "--preserve-status", "-s", "TERM", "25", *sweep]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == settings.EXIT_INTERRUPTED, done.stdout + done.stderr
    points, (parent,) = points_and_parents(store_uri)
    statuses = collections.Counter(r.info.status for r in points)
    assert statuses["KILLED"] > 0 and "FAILED" not in statuses and "RUNNING" not in statuses
    assert f"| killed | {statuses['KILLED']} |" in done.stdout
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["runs_killed"] == statuses["KILLED"]


def test_ctrl_c_twice_still_ends_with_the_summary_and_exit_130(tmp_path, store_uri):
    grid = ["seed=range(4)", "trainer.steps=200000", "hydra.launcher.n_jobs=2"]
    process = sweep_process(tmp_path, store_uri, *grid)
    wait_for(lambda: len(running_worker_pids(store_uri)) >= 2)
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == settings.EXIT_INTERRUPTED, out
    assert "| killed |" in out
    points, parents = points_and_parents(store_uri)
    assert not [r for r in points + parents if r.info.status == "RUNNING"]


# ``harness.train`` in a process of its own with a store's creation changed: by MLflow's
# migrations (no shipped schema), or from the shipped schema but stopping before the new store
# is moved into place (the moment a kill would cut).
CREATIONS = {
    "migrations": ("opening.SCHEMAS = Path('/nonexistent')", "Updating database tables"),
    "schema": (
        "opening._move_into_place = lambda *a: (print('moving', file=sys.stderr, flush=True), "
        "time.sleep(60))",
        "moving",
    ),
}
CHANGED_TRAIN = """
import sys, time
from pathlib import Path
from harness.records.backends import opening
{change}
from harness.train import main
main()
"""


@pytest.mark.parametrize("creation", sorted(CREATIONS))
def test_a_kill_during_a_new_stores_creation_leaves_no_store(tmp_path, creation):
    """kill -9 while a new store's tables are made (by MLflow's migrations, or from the
    shipped schema): no broken store is left behind, and the next command creates it
    whole."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = [f"tracking.uri={uri}", f"hydra.run.dir={tmp_path}/run", "trainer.steps=5"]
    change, cue = CREATIONS[creation]
    command = [sys.executable, "-c", CHANGED_TRAIN.format(change=change), *overrides]
    process = subprocess.Popen(
        command, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    for line in process.stderr:
        if cue in line:
            time.sleep(0.15)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    wait_for(lambda: process_group_is_gone(process.pid), timeout=30)
    assert not (tmp_path / "mlflow.db").exists()
    again = [sys.executable, "-m", "harness.train", *overrides]
    done = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r.info.status for r in runs_in(uri)] == ["FINISHED"]
    assert not list(tmp_path.glob(".mlflow.db.creating-*"))
