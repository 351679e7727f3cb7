"""Executors: their settings are validated before any work, and the ``slurm`` (submitit's local
cluster: jobs as processes here) and ``ray`` (a local Ray instance with 2 CPUs) code paths run
real sweeps into an MLflow server on PostgreSQL, leaving the records of a local sweep; a job
killed mid-run leaves exactly its points to the next sweep; many workers write through the
server at once and lose nothing. The tests of the engines carry the ``cluster`` marker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, assert_same_records, point_records, process_is_gone, wait_for
from mlflow.tracking import MlflowClient

from harness import executors, owners, records
from harness.config import ConfigError
from harness.sweep.settings import RaySettings, SlurmSettings, parse


def check(executor: str, slurm: dict, ray: dict) -> None:
    """The launcher's settings with these values, parsed and checked as a sweep checks them."""
    executors.check(parse({"executor": executor, "slurm": slurm, "ray": ray}))


ENGINES = {
    "slurm": [  # the SLURM settings are checked by submitit, then ignored by its local cluster
        "hydra/launcher=slurm",
        "hydra.launcher.slurm.cluster=local",
        "hydra.launcher.slurm.partition=gpu",
        "hydra.launcher.slurm.setup=[true]",
    ],
    "ray": ["hydra/launcher=ray", "hydra.launcher.ray.local_cpus=2"],
}


def sweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m harness.sweep`` with ``args``, from the project root."""
    command = [sys.executable, "-m", "harness.sweep", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- settings


def test_an_unknown_executor_is_named_with_the_choices():
    with pytest.raises(ConfigError) as raised:
        check("kubernetes", {}, {})
    assert raised.value.key == "hydra.launcher.executor"
    assert "local, slurm, ray" in str(raised.value)


@pytest.mark.parametrize(
    ("slurm", "ray", "key"),
    [
        ({"gpus": 1}, {}, "hydra.launcher.slurm.gpus"),
        ({"cpus_per_job": -2}, {}, "hydra.launcher.slurm.cpus_per_job"),
        ({"array_parallelism": 0}, {}, "hydra.launcher.slurm.array_parallelism"),
        ({}, {"local_cpus": 0}, "hydra.launcher.ray.local_cpus"),
        ({}, {"num_cpus": 0}, "hydra.launcher.ray.num_cpus"),
        ({}, {"resources": {"big_memory": -1}}, "hydra.launcher.ray.resources.big_memory"),
        ({"cluster": "pbs"}, {}, "hydra.launcher.slurm.cluster"),
        ({}, {"num_gpus": -1}, "hydra.launcher.ray.num_gpus"),
        ({}, {"adress": "auto"}, "hydra.launcher.ray.adress"),
    ],
)
def test_bad_executor_settings_are_named(slurm, ray, key):
    with pytest.raises(ConfigError) as raised:
        check("local", slurm, ray)
    assert raised.value.key == key


@pytest.mark.cluster  # with submitit installed
def test_slurm_jobs_need_slurm_here():
    if shutil.which("sbatch"):
        pytest.skip("this machine has SLURM")
    with pytest.raises(ConfigError, match="sbatch") as raised:
        check("slurm", {"cluster": "slurm"}, {})
    assert raised.value.key == "hydra.launcher.executor"
    check("slurm", {"cluster": "local"}, {})


def test_jobs_on_other_machines_cannot_share_a_sqlite_file():
    slurm, ray = SlurmSettings(), RaySettings(address="auto")
    for kind in ("slurm", "ray"):
        with pytest.raises(ConfigError, match="cannot share a sqlite file"):
            executors.check_store(kind, slurm, ray, "sqlite:////tmp/m.db")
        executors.check_store(kind, slurm, ray, "http://127.0.0.1:5000")
    local = SlurmSettings(cluster="local")
    executors.check_store("slurm", local, RaySettings(), "sqlite:////tmp/m.db")


def test_a_bad_executor_on_the_command_line_stops_the_sweep_before_any_run(tmp_path):
    store = tmp_path / "m.db"
    done = sweep(
        "smoke",
        "hydra.launcher.executor=kubernetes",
        f"tracking.uri=sqlite:///{store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert done.returncode == 2, done.stderr
    assert "hydra.launcher.executor" in done.stderr and "kubernetes" in done.stderr
    assert not store.exists()


def test_more_local_workers_than_cores_are_capped_to_the_cores_with_a_warning(capsys):
    cores = executors.cpu_cores()
    many = parse({"n_jobs": cores + 14})
    executors.check(many)
    assert many.n_jobs == cores
    assert capsys.readouterr().err == (
        f"warning: hydra.launcher.n_jobs={cores + 14} is more than the {cores} CPU cores "
        f"here: capped to {cores}\n"
    )
    enough = parse({"n_jobs": cores})
    executors.check(enough)
    assert enough.n_jobs == cores and capsys.readouterr().err == ""


def test_a_sweep_asking_for_more_workers_than_cores_runs_on_the_cores(tmp_path):
    cores = executors.cpu_cores()
    done = sweep(
        "smoke",
        f"hydra.launcher.n_jobs={cores + 30}",
        f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "seed=0",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"capped to {cores}") == 1
    assert f"on {cores} CPU worker(s)" in done.stdout


def test_the_owner_of_a_run_in_a_slurm_job_names_the_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    token = owners.owner_token()
    assert token.endswith("@slurm:4242")
    assert owners.is_alive(token)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not owners.is_alive(owners.owner_token(dead.pid))
    elsewhere = f"{socket.gethostname()}-node7:12:34@slurm:4242"
    assert owners.is_alive(elsewhere)  # no squeue here: nothing proves it gone


# ----------------------------------------------------------------------------- engines


def experiment_runs(uri: str, experiment: str) -> list:
    """Every grid-point run of ``experiment`` (the sweep's parent left out)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=5000) if found else []
    return [run for run in runs if "fingerprint" in run.data.tags]


@pytest.fixture(scope="module")
def local_smoke(tmp_path_factory) -> dict:
    """The smoke study's records from the local executor, into sqlite."""
    folder = tmp_path_factory.mktemp("local")
    uri = f"sqlite:///{folder / 'm.db'}"
    done = sweep("smoke", f"tracking.uri={uri}", f"hydra.sweep.dir={folder}")
    assert done.returncode == 0, done.stdout + done.stderr
    return point_records(uri, "smoke")


@pytest.mark.cluster
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_smoke_study_through_an_engine_into_the_server_matches_a_local_run(
    engine, postgres_server, local_smoke, tmp_path
):
    experiment = f"smoke_{engine}"
    args = (
        "smoke",
        *ENGINES[engine],
        f"tracking.uri={postgres_server}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp_path}",
    )
    done = sweep(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_same_records(point_records(postgres_server, experiment), local_smoke, points=8)
    again = sweep(*args)  # nothing left to run: no job is started
    assert again.returncode == 0, again.stdout + again.stderr
    assert "8 skipped" in again.stdout and "0 to run" in again.stdout
    assert len(experiment_runs(postgres_server, experiment)) == 8
    owners = {run.data.tags["owner"] for run in experiment_runs(postgres_server, experiment)}
    assert len(owners) > 1  # trained in the engine's processes, one per cohort


def first_running_owner(uri: str, experiment: str, deadline: float) -> tuple[int, set[str]]:
    """The pid of the first process with two RUNNING runs (a whole cohort created), and the
    fingerprints of its runs."""
    while time.monotonic() < deadline:
        running = [r for r in experiment_runs(uri, experiment) if r.info.status == "RUNNING"]
        for owner in {r.data.tags["owner"] for r in running}:
            mine = {r.data.tags["fingerprint"] for r in running if r.data.tags["owner"] == owner}
            if len(mine) == 2:
                return int(owner.split(":")[1]), mine
        time.sleep(0.2)
    raise AssertionError("no run started in time")


@pytest.mark.cluster
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_killed_job_leaves_exactly_its_points_to_the_next_sweep(
    engine, postgres_server, tmp_path
):
    experiment = f"killed_{engine}"
    args = [
        "smoke",
        *ENGINES[engine],
        "trainer.steps=10000",
        "hydra.launcher.max_cohort=2",
        f"tracking.uri={postgres_server}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp_path}",
    ]
    command = [sys.executable, "-m", "harness.sweep", *args]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pid, killed = first_running_owner(postgres_server, experiment, time.monotonic() + 120)
    os.kill(pid, signal.SIGKILL)
    output = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 1, output  # a job failed; the sweep went on
    runs = experiment_runs(postgres_server, experiment)
    status = {r.data.tags["fingerprint"]: r.info.status for r in runs}
    assert len(status) == 8 and len(killed) == 2
    assert {status[f] for f in killed} == {"FAILED"}
    assert {s for f, s in status.items() if f not in killed} == {"FINISHED"}

    again = sweep(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "6 skipped" in again.stdout and "2 to run" in again.stdout
    runs = experiment_runs(postgres_server, experiment)
    finished = [r.data.tags["fingerprint"] for r in runs if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(status)  # each point finished once, none twice
    assert len(runs) == 10


@pytest.mark.cluster
def test_a_preempted_slurm_job_checkpoints_and_the_next_sweep_resumes_it(postgres_server, tmp_path):
    """SIGUSR2 (SLURM's warning before preemption) to the job: it checkpoints its cohort and
    records its runs KILLED; the next sweep resumes the cohort, and the resumed runs replace
    the stopped ones through the server."""
    experiment = "preempted"
    args = [
        "smoke",
        *ENGINES["slurm"],
        "optimizer=adam",
        "seed=0,1",
        "trainer.steps=20000",
        "trainer.checkpoint_every=1000",  # only the signal writes one
        f"trainer.checkpoint_dir={tmp_path}/checkpoints",
        f"tracking.uri={postgres_server}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp_path}",
    ]
    command = [sys.executable, "-m", "harness.sweep", *args]
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pid, points = first_running_owner(postgres_server, experiment, time.monotonic() + 120)
    time.sleep(2.0)
    os.kill(pid, signal.SIGUSR2)
    output = first.communicate(timeout=300)[0].decode()
    assert first.returncode == 1, output  # the job failed; the sweep went on
    stopped = experiment_runs(postgres_server, experiment)
    assert {r.info.status for r in stopped} == {"KILLED"} and len(stopped) == 2
    assert len(list((tmp_path / "checkpoints").glob("*.ckpt"))) == 1

    again = sweep(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming 1 cohort(s) of 2 point(s) from checkpoints" in again.stdout
    runs = experiment_runs(postgres_server, experiment)  # active runs: the stopped are deleted
    assert {r.data.tags["fingerprint"] for r in runs} == points and len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["resumed_from"] for r in runs} == {r.info.run_id for r in stopped}
    assert 0 < int(runs[0].data.tags["resumed_step"]) < 20000
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


@pytest.mark.cluster
def test_four_workers_write_200_runs_through_the_server_and_lose_none(postgres_server, tmp_path):
    done = sweep(
        "smoke",
        "seed=range(50)",
        "hydra.launcher.n_jobs=4",
        "hydra.launcher.max_cohort=50",
        f"tracking.uri={postgres_server}",
        "tracking.experiment=many_writers",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tables = records.read_experiment(postgres_server, "many_writers")
    grid = tables.tags[tables.tags.key == "fingerprint"]
    assert grid.value.nunique() == len(grid) == 200
    finished = tables.runs[tables.runs.run_id.isin(grid.run_id)]
    assert set(finished.status) == {"FINISHED"}
    points = tables.metrics[tables.metrics.run_id.isin(grid.run_id)]
    per_run = points.groupby("run_id").size()
    assert len(per_run) == 200 and per_run.nunique() == 1  # every curve complete


@pytest.mark.cluster
def test_a_ray_ask_the_cluster_cannot_meet_stops_the_sweep_before_any_run(tmp_path):
    store = tmp_path / "m.db"
    done = sweep(
        "smoke",
        *ENGINES["ray"],
        "hydra.launcher.ray.num_cpus=3",
        f"tracking.uri=sqlite:///{store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "hydra.launcher.ray.num_cpus" in done.stderr and "2 CPU" in done.stderr
    client = MlflowClient(f"sqlite:///{store}")
    assert not client.search_runs([client.get_experiment_by_name("smoke").experiment_id])


@pytest.mark.cluster
@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_stopped_sweep_stops_its_jobs_and_records_their_runs_killed(engine, tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    args = [*ENGINES[engine], "trainer.steps=1000000", "hydra.launcher.max_cohort=2"]
    command = [sys.executable, "-m", "harness.sweep", "smoke", *args, f"tracking.uri={uri}"]
    command.append(f"hydra.sweep.dir={tmp_path}")
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pid, _ = first_running_owner(uri, "smoke", time.monotonic() + 120)
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0].decode()
    assert first.returncode == 130, output
    assert "| killed | 8 |" in output
    runs = experiment_runs(uri, "smoke")
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    wait_for(lambda: process_is_gone(pid), timeout=30)  # the job's process is gone
