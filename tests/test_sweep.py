"""Sweeps end to end: `make sweep` into temporary sqlite stores, parallel workers, resume after
kill -9 and Ctrl-C, failure isolation, bad input, and the MLflow UI's REST API over the result."""

from __future__ import annotations

import collections
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, runs_in, wait_for

from harness.sweep import cli, settings

SMOKE_POINTS = 8  # experiments/smoke.yaml: 4 optimizers x 2 seeds


def make_sweep(tmp_path: Path, uri: str, *args: str, jobs: int = 1, study: str = "smoke"):
    """``make sweep`` as a user types it, into the store at ``uri``."""
    overrides = [f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/multirun", *args]
    overrides = " ".join(map(shlex.quote, overrides))
    command = ["make", "-s", "sweep", f"EXP={study}", f"JOBS={jobs}", f"ARGS={overrides}"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def sweep_process(tmp_path: Path, uri: str, *args: str, sigint=signal.SIG_DFL) -> subprocess.Popen:
    """The sweep program in its own process group, as a terminal would run it (SIGINT as
    ``sigint`` at its start: a background job of a non-interactive shell ignores it)."""
    command = [
        sys.executable,
        "-m",
        "harness.sweep",
        "smoke",
        f"tracking.uri={uri}",
        f"hydra.sweep.dir={tmp_path}/multirun",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )


def finished_points(uri: str, experiment: str = "smoke") -> int:
    """How many grid points are FINISHED, read straight from the database file."""
    path = uri[len("sqlite:///") :]
    try:
        with sqlite3.connect(path, timeout=10) as db:
            (count,) = db.execute(
                "select count(*) from runs join experiments using (experiment_id) "
                "where experiments.name = ? and runs.status = 'FINISHED'",
                (experiment,),
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return count


def points_and_parents(uri: str, experiment: str = "smoke"):
    runs = runs_in(uri, experiment)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    points = [r for r in runs if r.data.tags.get("role") != "sweep"]
    return points, parents


def assert_complete(uri: str, n_points: int) -> list:
    """Every point has exactly one FINISHED run; none is left RUNNING. Returns the FINISHED."""
    points, parents = points_and_parents(uri)
    assert not [r for r in points + parents if r.info.status == "RUNNING"]
    finished = [r for r in points if r.info.status == "FINISHED"]
    per_point = collections.Counter(r.data.tags["fingerprint"] for r in finished)
    assert len(per_point) == n_points and set(per_point.values()) == {1}
    return finished


def process_group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


# ----------------------------------------------------------------------------- end to end


def test_make_sweep_runs_a_study_in_parallel_then_resumes_and_forces(tmp_path, store_uri):
    done = make_sweep(tmp_path, store_uri, "seed=range(5)", jobs=4)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\r" not in done.stdout + done.stderr  # no live progress outside a terminal
    assert "| finished | 20 |" in done.stdout and "| failed | 0 |" in done.stdout
    finished = assert_complete(store_uri, 20)
    (parent,) = points_and_parents(store_uri)[1]
    assert parent.info.status == "FINISHED" and parent.data.tags["study"] == "smoke"
    assert parent.data.metrics["runs_finished"] == 20 and parent.data.metrics["runs_failed"] == 0
    assert "| finished | 20 |" in parent.data.tags["mlflow.note.content"]
    for run in finished:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert run.data.params["optimizer.name"] in ("sgd", "momentum", "nesterov", "adam")
        assert run.data.params["model.envelope"] == "32.0"
        assert run.info.run_name.startswith("optimizer=")
    names = {run.info.run_name for run in finished}
    assert len(names) == 20 and "optimizer=adam seed=4" in names

    again = make_sweep(tmp_path, store_uri, "seed=range(5)", jobs=4)
    assert again.returncode == 0 and "20 skipped" in again.stdout
    assert "| finished | 20 |" in again.stdout and "| skipped | 0 |" in again.stdout
    assert "trained by this sweep: 0 of 20 points" in again.stdout
    points, parents = points_and_parents(store_uri)
    assert len(points) == 20 and [p.info.run_id for p in parents] == [parent.info.run_id]
    (parent,) = parents  # the rerun keeps the counts of what the grid holds
    assert parent.data.metrics["runs_finished"] == 20 and parent.data.metrics["runs_trained"] == 0

    forced = make_sweep(tmp_path, store_uri, "seed=range(5)", "force=true", jobs=2)
    assert forced.returncode == 0 and "| finished | 20 |" in forced.stdout
    points, parents = points_and_parents(store_uri)
    assert len(points) == 40 and len(parents) == 2


def test_a_failing_and_a_diverging_point_never_stop_the_sweep(tmp_path, store_uri):
    """Rules of a user's own (tests/user_optim.py): one raises at its first update, one returns
    updates of the wrong shape; a plain one at lr 10 on the linear problem diverges. All are
    recorded; only the failures set the exit status."""
    command = [
        sys.executable,
        "-m",
        "harness.train",
        "--multirun",
        f"tracking.uri={store_uri}",
        "tracking.experiment=failures",
        f"hydra.sweep.dir={tmp_path}/multirun",
        "dataset=linear_toy",
        "model=linear",
        "optimizer=rule",
        "optimizer.target=user_optim.raises,user_optim.wrong_shape,user_optim.scaled_sgd",
        "optimizer.lr=0.01,10",
        "trainer.steps=30",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment
    )
    assert done.returncode == 1, done.stdout + done.stderr
    for row in ("| finished | 1 |", "| diverged | 1 |", "| failed | 4 |"):
        assert row in done.stdout
    points, (parent,) = points_and_parents(store_uri, "failures")
    status = collections.Counter(
        (r.info.status, r.data.tags.get("diverged"), r.data.params["optimizer.target"])
        for r in points
    )
    assert status == {
        ("FAILED", None, "user_optim.raises"): 2,
        ("FAILED", None, "user_optim.wrong_shape"): 2,
        ("FINISHED", "false", "user_optim.scaled_sgd"): 1,
        ("FINISHED", "true", "user_optim.scaled_sgd"): 1,
    }
    errors = {
        "user_optim.raises": "FloatingPointError: this rule gives up",
        # the two points train as one cohort
        "user_optim.wrong_shape": "returned updates of shape (2, 1) for parameters of shape (2, 2)",
    }
    for run in points:
        if run.info.status == "FAILED":
            assert errors[run.data.params["optimizer.target"]] in run.data.tags["error"]
        assert run.data.params["optimizer.weight_decay"] == "0.0"  # recorded, though 0
    scaled = [r for r in points if r.data.params["optimizer.target"] == "user_optim.scaled_sgd"]
    assert {r.data.params["optimizer.hp.scale"] for r in scaled} == {"1.0"}  # its default
    assert parent.info.status == "FAILED" and parent.data.metrics["runs_failed"] == 4


@pytest.mark.parametrize("signal_name", ["SIGKILL", pytest.param("SIGINT", marks=pytest.mark.slow)])
def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, store_uri, signal_name):
    """kill -9 of the whole process group, or Ctrl-C, midway; then the same sweep again."""
    grid = [
        "seed=range(6)",
        "trainer.steps=4000",
        "hydra.launcher.n_jobs=2",
        "hydra.launcher.max_cohort=2",
    ]
    process = sweep_process(tmp_path, store_uri, *grid)
    wait_for(lambda: finished_points(store_uri) >= 3)
    os.killpg(process.pid, getattr(signal, signal_name))
    out, _ = process.communicate(timeout=120)
    wait_for(lambda: process_group_is_gone(process.pid), timeout=30)
    points, parents = points_and_parents(store_uri)
    before = {r.info.run_id for r in points if r.info.status == "FINISHED"}
    assert 3 <= len(before) < 24
    if signal_name == "SIGINT":  # stopped cleanly: summary, nothing RUNNING
        assert process.returncode == settings.EXIT_INTERRUPTED
        assert "| outcome | runs |" in out and "| not_run |" in out
        assert not [r for r in points + parents if r.info.status == "RUNNING"]
        assert [p.info.status for p in parents] == ["KILLED"]
    left_running = {r.info.run_id for r in points if r.info.status == "RUNNING"}

    resumed = sweep_process(tmp_path, store_uri, *grid)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert f"{len(before)} skipped" in out
    finished = assert_complete(store_uri, 24)
    assert before <= {r.info.run_id for r in finished}  # nothing finished was redone
    points, parents = points_and_parents(store_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    for run in points:
        if run.info.run_id in left_running:
            assert run.info.status == "KILLED" and "process that died" in run.data.tags["error"]


def test_ctrl_c_stops_a_sweep_whose_own_process_ignores_sigint(tmp_path, store_uri):
    """Started with SIGINT ignored, the sweep process misses Ctrl-C, but its workers do not:
    the first interrupted worker stops the sweep all the same."""
    grid = [
        "seed=range(6)",
        "trainer.steps=4000",
        "hydra.launcher.n_jobs=2",
        "hydra.launcher.max_cohort=2",
    ]
    process = sweep_process(tmp_path, store_uri, *grid, sigint=signal.SIG_IGN)
    wait_for(lambda: finished_points(store_uri) >= 2)
    os.killpg(process.pid, signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == settings.EXIT_INTERRUPTED, out
    assert "| not_run |" in out
    points, parents = points_and_parents(store_uri)
    assert len(points) < 24 and not [r for r in points if r.info.status == "RUNNING"]
    assert [p.info.status for p in parents] == ["KILLED"]


def run_sweep_here(*args: str) -> int:
    """``python -m harness.sweep`` in this process; returns its exit status."""
    try:
        cli.main(list(args))
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["no_such_study"], 2, "error: study='no_such_study' is not allowed: expected one of"),
        (["smoke", "optimizer.no_such_key=1,2"], 1, "Could not override 'optimizer.no_such_key'"),
        (["smoke", "optimizer.lr=0.1,-1"], 2, "error: optimizer.lr=-1.0 is not allowed"),
        (["smoke", "hydra.launcher.n_jobs=0"], 2, "error: hydra.launcher.n_jobs=0"),
        (
            ["smoke", "seed=range(30)", "hydra.launcher.max_points=100"],
            2,
            "error: grid='120 points' is not allowed: at most hydra.launcher.max_points=100",
        ),
        (
            ["smoke", "trainer.checkpoint_dir=/dev/null/checkpoints"],
            2,
            "error: trainer.checkpoint_dir='/dev/null/checkpoints' is not allowed: a folder "
            "this user can write (for checkpoints); /dev/null is not",
        ),
        (["smoke", "trainer.checkpoint_every=-5"], 2, "error: trainer.checkpoint_every=-5"),
    ],
)
def test_bad_sweep_input_creates_no_run(tmp_path, store_uri, capsys, args, code, message):
    overrides = [f"tracking.uri={store_uri}", f"hydra.sweep.dir={tmp_path}/m"]
    assert run_sweep_here(*args, *overrides) == code
    out, err = capsys.readouterr()
    assert message in err, err
    assert runs_in(store_uri, "smoke") == []
    if "lr=-1" in message:
        assert "grid point #" in err and "optimizer.lr=-1" in err


# ----------------------------------------------------------------------------- the UI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rest(base: str, path: str, body: bytes | None = None) -> dict:
    import json

    request = urllib.request.Request(
        f"{base}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow  # about 20 s; test_ui opens a study's runs table through a real server
def test_make_ui_serves_the_smoke_sweep_over_rest(tmp_path, store_uri):
    import json

    assert run_sweep_here("smoke", f"tracking.uri={store_uri}", f"hydra.sweep.dir={tmp_path}") == 0
    port = free_port()
    server = subprocess.Popen(
        ["make", "-s", "ui", f"PORT={port}", f"STORE={store_uri}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert server.poll() is None, "the UI exited"
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
            except OSError:
                return False
            return True

        wait_for(healthy, timeout=120)
        found = rest(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke")
        experiment_id = found["experiment"]["experiment_id"]
        query = {"experiment_ids": [experiment_id], "max_results": 100}
        runs = rest(base, "/api/2.0/mlflow/runs/search", json.dumps(query).encode())["runs"]
        points = [r for r in runs if {"key": "role", "value": "sweep"} not in r["data"]["tags"]]
        assert len(points) == SMOKE_POINTS
        for run in points:
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            metrics = {m["key"] for m in run["data"]["metrics"]}
            tags = {t["key"] for t in run["data"]["tags"]}
            assert params["dataset.name"] == "gabor_toy" and params["trainer.steps"] == "20"
            assert {"train_loss", "lr", "phi0", "phi1", "wall_seconds"} <= metrics
            assert {"fingerprint", "sweep_id", "mlflow.parentRunId", "diverged"} <= tags
            assert run["info"]["status"] == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    wait_for(lambda: process_group_is_gone(server.pid), timeout=30)


def test_studies_are_listed_with_the_question_each_answers(capsys):
    assert run_sweep_here("--list") == 0
    listed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert {"lecture", "gabor_valleys", "lr_sensitivity", "schedules", "smoke"} <= set(listed)
    assert all(question.strip().endswith((".", "?")) for question in listed.values())


def running_worker_pids(uri: str) -> list[int]:
    """The pids of the workers writing RUNNING points, from their ``owner`` tags (a parent
    run's owner is the sweep's own process)."""
    try:
        with sqlite3.connect(uri[len("sqlite:///") :], timeout=10) as db:
            owners = db.execute(
                "select tags.value from tags join runs using (run_uuid) "
                "where tags.key = 'owner' and runs.status = 'RUNNING' and run_uuid not in "
                "(select run_uuid from tags where key = 'role')"
            ).fetchall()
    except sqlite3.OperationalError:
        return []
    return [int(owner.split(":")[1]) for (owner,) in owners]


def test_a_worker_killed_midway_fails_its_cohort_and_the_sweep_goes_on(tmp_path, store_uri):
    """Smoke's 8 points train in 4 cohorts of 2 seeds: the killed worker's cohort fails."""
    process = sweep_process(
        tmp_path, store_uri, "seed=range(2)", "trainer.steps=20000", "hydra.launcher.n_jobs=2"
    )
    wait_for(lambda: finished_points(store_uri) >= 1 and running_worker_pids(store_uri))
    victim = running_worker_pids(store_uri)[0]
    os.kill(victim, signal.SIGKILL)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 1, out
    assert "| failed | 2 |" in out and "worker died (exit code -9)" in out
    points, (parent,) = points_and_parents(store_uri)
    statuses = collections.Counter(r.info.status for r in points)
    assert statuses == {"FINISHED": 6, "FAILED": 2}
    failed = [r for r in points if r.info.status == "FAILED"]
    assert {r.data.tags["error"] for r in failed} == {"worker died (exit code -9)"}
    assert {r.data.tags["owner"].split(":")[1] for r in failed} == {str(victim)}
    assert {r.data.params["optimizer.name"] for r in failed} == {
        failed[0].data.params["optimizer.name"]
    }
    assert parent.info.status == "FAILED"
