"""The records layer when processes misbehave: claims on grid points, status changes only from
RUNNING, a writer that dies or is left open, every run with an owner, and MLflow's limits kept
by the direct writes as by its client."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, compose_spec, process_is_gone, runs_in
from mlflow.tracking import MlflowClient

from harness import config, owners, records, train
from harness import problem as problem_module
from harness.config import ConfigError
from harness.records import Ledger
from harness.records.backends import Held

STEPS = "trainer.steps=5"


def gabor_specs(seeds, steps: int = 5):
    return [compose_spec(f"seed={s}", f"trainer.steps={steps}") for s in seeds]


def start(store: records.Store, seeds, claim=None):
    """Start runs of the default Gabor problem, one per seed; returns the claims."""
    specs = gabor_specs(seeds)
    params = [records.run_params(spec) for spec in specs]
    names = [f"seed {s}" for s in seeds]
    return store.start_runs(specs, names, params, [{}] * len(specs), (), claim)


def run_ids(uri: str) -> dict[int, str]:
    """The run id of each seed's run (one each)."""
    specs = gabor_specs(range(8))
    by_fingerprint = {config.fingerprint(spec): seed for seed, spec in enumerate(specs)}
    return {by_fingerprint[r.data.tags["fingerprint"]]: r.info.run_id for r in runs_in(uri)}


def dead_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owners.owner_token(child.pid)
    child.wait()
    return token


@pytest.mark.parametrize("bulk", [True, False], ids=["direct", "client"])
def test_a_claim_skips_points_held_by_live_or_finished_runs(store_uri, bulk):
    """Held: a point RUNNING in a live process, or FINISHED (unless the claimant redoes that
    very run: ``force``). Not held: FAILED, or RUNNING in a process that died."""
    other = records.Store(store_uri, "runs", bulk=bulk)
    mine = records.Store(store_uri, "runs", bulk=bulk)
    try:
        claim = records.Claim(int(1000 * time.time()))
        start(other, [0, 1, 2, 3])  # all RUNNING, owned by this (live) process
        client, ids = MlflowClient(tracking_uri=store_uri), run_ids(store_uri)
        client.set_terminated(ids[1], "FINISHED")
        client.set_terminated(ids[2], "FAILED")
        client.set_tag(ids[3], "owner", dead_owner())
        claims = start(mine, [0, 1, 2, 3], claim)
        assert claims[0] == Held(ids[0], "RUNNING")
        assert claims[1] == Held(ids[1], "FINISHED")
        assert all(isinstance(claim, str) for claim in claims[2:])
        forced = records.Claim(int(1000 * time.time()), frozenset({ids[1]}))
        assert isinstance(start(mine, [1], forced)[0], str)  # a forced sweep redoes it
    finally:
        mine.close()
        other.close()
    assert len(runs_in(store_uri)) == 4 + 2 + 1


def test_a_run_ended_meanwhile_keeps_its_status(store_uri):
    """A sweep that marks a run it found RUNNING changes it only if it still is."""
    store = records.Store(store_uri, "runs")
    try:
        start(store, [0, 1])
    finally:
        store.close()
    ids = run_ids(store_uri)
    MlflowClient(tracking_uri=store_uri).set_terminated(ids[0], "FINISHED")
    ledger = Ledger(store_uri, "runs")
    assert not ledger.mark(ids[0], "FAILED", "its worker process died")
    assert ledger.mark(ids[1], "KILLED", "interrupted")
    runs = {r.info.run_id: r for r in runs_in(store_uri)}
    assert runs[ids[0]].info.status == "FINISHED" and "error" not in runs[ids[0]].data.tags
    assert runs[ids[1]].info.status == "KILLED" and runs[ids[1]].data.tags["error"] == "interrupted"


def test_every_run_carries_its_owner(run_cli, store_uri):
    code, _, _ = run_cli(STEPS)
    assert code == 0
    (run,) = runs_in(store_uri)
    assert owners.owner_token() == run.data.tags["owner"]  # run_cli trains in this process


def test_a_writer_that_dies_is_replaced_and_its_runs_end_failed(store_uri):
    """As the OOM killer would: the writer is killed while its runs train. The next call
    raises, the runs it held open end FAILED with the reason, and the store goes on."""
    specs = gabor_specs([0, 1], steps=50)
    problem = problem_module.build(specs[0])
    store = records.Store(store_uri, "runs")
    try:
        start(store, [0, 1], records.Claim(0))  # a claim: created by the time it returns
        store.writer.process.kill()
        store.writer.process.join()
        with pytest.raises(records.TrackingError, match="writer process died"):
            train.record_cohort(specs, problem, store, ["a", "b"])
        assert {r.info.status for r in runs_in(store_uri)} == {"FAILED"}
        assert all("writer process died" in r.data.tags["error"] for r in runs_in(store_uri))
        ((recorded, _),) = train.record_cohort(specs[:1], problem, store, ["again"])
        assert recorded.error is None
    finally:
        store.close()
    statuses = sorted(r.info.status for r in runs_in(store_uri))
    assert statuses == ["FAILED", "FAILED", "FINISHED"]


def test_a_single_run_whose_writer_dies_fails_in_one_line(tmp_path, store_uri):
    """``python -m harness.train`` with its writer killed midway: one error line, exit 1,
    its run FAILED."""
    command = [
        sys.executable,
        "-m",
        "harness.train",
        f"tracking.uri={store_uri}",
        f"hydra.run.dir={tmp_path}/run",
        "trainer.steps=200000",
        "tracking.log_every=1000",
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not runs_in(store_uri):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    for writer in children:
        subprocess.run(["kill", "-9", writer])
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "writer process died" in lines[0], err
    assert "Traceback" not in err
    (run,) = runs_in(store_uri)
    assert run.info.status == "FAILED" and "writer process died" in run.data.tags["error"]


def test_a_writer_ends_when_its_owner_closes_forgets_or_exits(store_uri):
    store = records.Store(store_uri, "runs")
    writer = store.writer.process.pid
    store.close()
    assert process_is_gone(writer)
    store = records.Store(store_uri, "runs")
    writer = store.writer.process.pid
    del store
    gc.collect()
    assert process_is_gone(writer)
    left_open = f"from harness import records\nstore = records.Store({store_uri!r}, 'runs')\n"
    done = subprocess.run(
        [sys.executable, "-c", left_open], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def check_as_nobody(uri: str) -> str:
    """``records.check_uri(uri)`` in a forked child running as user nobody (root writes
    anywhere); returns its ConfigError's text, or "" when it passed."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.close(reader)
        os.setgid(65534)
        os.setuid(65534)
        try:
            records.check_uri(uri)
            message = ""
        except ConfigError as error:
            message = str(error)
        os.write(writer, message.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as answer:
        message = answer.read()
    os.waitpid(child, 0)
    return message


@pytest.mark.skipif(os.geteuid() != 0, reason="checks as user nobody, which takes root")
def test_a_store_the_user_cannot_write_is_refused_before_any_work(tmp_path):
    """A folder the user cannot write (MLflow retried for minutes, then raised an
    AttributeError), or a database file they cannot write, is refused in one line."""
    for path in (tmp_path, *tmp_path.parents):
        path.chmod(path.stat().st_mode | 0o005)  # nobody may reach it, not write in it
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    readonly.chmod(0o555)
    message = check_as_nobody(f"sqlite:///{readonly}/mlflow.db")
    assert message.startswith("tracking.uri=") and "a folder this user can write" in message
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "mlflow.db").write_bytes(b"")
    (shared / "mlflow.db").chmod(0o644)
    message = check_as_nobody(f"sqlite:///{shared}/mlflow.db")
    assert "a database file this user can write" in message
    (shared / "mlflow.db").chmod(0o666)
    assert check_as_nobody(f"sqlite:///{shared}/mlflow.db") == ""


def test_a_live_sweeps_parent_run_is_never_shared(store_uri):
    """A second sweep of the same grid while the first runs gets a parent of its own; an
    ended parent is taken over by one process only (a conditional change of its owner)."""
    ledger = Ledger(store_uri, "runs")
    first = ledger.open_sweep("grid", "first", {}, {})
    second = ledger.open_sweep("grid", "second", {}, {})
    assert first != second  # the first is RUNNING under this live process
    ledger.close_sweep(first, "KILLED", {}, {}, "")
    seen = MlflowClient(tracking_uri=store_uri).get_run(first).data.tags["owner"]
    assert ledger.backend.swap_tag(first, "owner", seen, "elsewhere:1:1")
    assert not ledger.backend.swap_tag(first, "owner", seen, "another:2:2")  # came second
    assert ledger.open_sweep("grid", "third", {}, {}) == first  # its owner is gone: reopened
