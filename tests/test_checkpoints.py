"""Checkpoints of cohorts: a cohort stopped by a signal and resumed from its checkpoint trains
the numbers of an uninterrupted one; files are whole or refused; a full disk keeps the last
checkpoint; the sweep's planner picks the checkpoints it can apply and says why not the
others."""

from __future__ import annotations

import importlib
import os
import resource
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_spec
from test_engine import cohort_specs

from harness import checkpoints, engine, stopping
from harness.checkpoints import CheckpointError, Checkpointing, Header
from harness.config import ConfigError, fingerprint
from harness.sweep.points import Point
from harness.sweep.resuming import check_folders, resumed_cohorts

CPU = torch.device("cpu")
DIGITS = ["dataset=digits", "model=mlp", "loss=cross_entropy", "tracking.log_every=1"]


def minibatch_sgd_specs():
    return [
        compose_spec(
            *DIGITS,
            "optimizer=sgd",
            f"optimizer.lr={lr}",
            f"seed={seed}",
            "trainer.batch_size=64",
            "trainer.steps=90",
        )
        for lr in (0.05, 0.3)
        for seed in (0, 1)
    ]


def torch_adam_specs():
    base = [*DIGITS, "optimizer=torch", "optimizer.class_name=Adam", "trainer.batch_size=64"]
    return [
        compose_spec(*base, f"optimizer.lr={lr}", "seed=3", "trainer.steps=70")
        for lr in (1e-3, 1e-2)
    ]


def dropout_specs():
    module = ["model=module", "model.target=user_nets.DroppedMlp", "optimizer=sgd"]
    module += ["trainer.batch_size=32"]
    return [compose_spec(*DIGITS[:1], *DIGITS[2:], *module, "seed=5", "trainer.steps=80")]


COHORTS = {
    "minibatch_sgd": minibatch_sgd_specs,
    "plateau": cohort_specs,  # momentum, batches of 5, a plateau schedule with patience 2
    "torch_adam": torch_adam_specs,
    "dropout_module": dropout_specs,
}


def header_for(specs, total_steps: int) -> Header:
    prints = [fingerprint(spec) for spec in specs]
    runs = [f"run{index}" for index in range(len(specs))]
    return Header(
        checkpoints.code_version(), "split", "sqlite:////x.db", "e", prints, runs,
        [[]] * len(specs), 0, total_steps, 0.0,
    )  # fmt: skip


def stopped_by_sigterm(specs, path: Path, every: float = 1e9) -> checkpoints.Checkpointer:
    """Train until the sink's first hand-over, where SIGTERM arrives; the cohort checkpoints
    at the next update and raises KeyboardInterrupt."""
    total = engine.make_plan(specs[0], 1).total_steps  # batch-free plans only need the steps
    checkpointer = checkpoints.Checkpointer(path, every, header_for(specs, total))

    def sink(chunks, seconds_at):
        if not stopping.requested():
            signal.raise_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stopping.interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.train_cohort(specs, sink=sink, checkpointer=checkpointer)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return checkpointer


def assert_same_runs(resumed, uninterrupted) -> None:
    for mine, theirs in zip(resumed, uninterrupted, strict=True):
        assert mine.curves.keys() == theirs.curves.keys()
        for metric, (steps, values) in theirs.curves.items():
            assert mine.curves[metric][0] == steps, metric
            np.testing.assert_allclose(mine.curves[metric][1], values, rtol=1e-6, err_msg=metric)
        assert mine.diverged_step == theirs.diverged_step
        np.testing.assert_allclose(mine.final_params, theirs.final_params, rtol=1e-6)


@pytest.mark.parametrize("kind", sorted(COHORTS))
def test_a_cohort_stopped_and_resumed_trains_the_numbers_of_an_uninterrupted_one(tmp_path, kind):
    specs = COHORTS[kind]()
    uninterrupted = engine.train_cohort(specs)
    path = tmp_path / "cohort.ckpt"
    assert stopped_by_sigterm(specs, path).written == 1
    header, state = checkpoints.read(path, CPU)
    assert 0 < header.step < uninterrupted[0].plan.total_steps
    handed = []
    resumed = engine.train_cohort(specs, sink=lambda chunks, _: handed.append(chunks), resume=state)
    assert_same_runs(resumed, uninterrupted)
    assert {r.resumed_step for r in resumed} == {header.step}
    # the resumed runs' records get their curves from step 0, each point once
    for index, run in enumerate(uninterrupted):
        for metric, (steps, _) in run.curves.items():
            written = [s for chunks in handed for s in chunks[index].get(metric, ((), ()))[0]]
            assert written == steps, metric


def test_checkpoints_are_written_every_interval_and_the_cohort_is_unchanged(tmp_path):
    specs = minibatch_sgd_specs()
    path = tmp_path / "cohort.ckpt"
    checkpointer = checkpoints.Checkpointer(path, 1e-9, header_for(specs, 90))
    results = engine.train_cohort(specs, checkpointer=checkpointer)
    assert checkpointer.written == 90  # due before every update
    assert_same_runs(results, engine.train_cohort(specs))
    assert checkpoints.read(path, CPU)[0].step == 89
    assert 0 < results[0].checkpoint_seconds == checkpointer.seconds


def test_a_truncated_or_corrupt_checkpoint_is_refused_in_one_line(tmp_path):
    specs = minibatch_sgd_specs()
    path = tmp_path / "cohort.ckpt"
    stopped_by_sigterm(specs, path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoints.read(path, CPU)
    flipped = bytearray(whole)
    flipped[-50] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoints.read(path, CPU)
    path.write_bytes(b"\x00\x01 not a header\n" + whole)
    with pytest.raises(CheckpointError, match="unreadable header"):
        checkpoints.read(path, CPU)


def test_a_checkpoint_that_cannot_be_applied_is_reported_removed_and_training_starts_over(
    tmp_path, capsys
):
    specs = minibatch_sgd_specs()
    path = tmp_path / "cohort.ckpt"
    stopped_by_sigterm(specs, path)
    path.write_bytes(path.read_bytes()[:-10])
    setting = Checkpointing(tmp_path, 60.0, "sqlite:////x.db", "e", path)
    prints = [fingerprint(spec) for spec in specs]
    cohort = setting.open(prints, ["a", "b", "c", "d"], 90, "split", "", CPU)
    assert cohort.state is None and not path.exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "truncated" in line and "4 point(s) train from the start" in line


def test_a_full_disk_keeps_the_previous_checkpoint_and_training_goes_on(tmp_path, capsys):
    """A file size limit (RLIMIT_FSIZE) makes every write past it fail, as a full disk does."""
    specs = minibatch_sgd_specs()
    path = tmp_path / "cohort.ckpt"
    checkpointer = checkpoints.Checkpointer(path, 1e-9, header_for(specs, 90))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def sink(chunks, seconds_at):  # after 33 checkpoints: the disk is full from now on
        if checkpointer.written == 33:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))

    try:
        results = engine.train_cohort(specs, sink=sink, checkpointer=checkpointer)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert_same_runs(results, engine.train_cohort(specs))
    header, _ = checkpoints.read(path, CPU)  # the last one written before the disk filled
    assert header.step == 32 and checkpointer.written == 33
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "not written at update 33" in line and "the previous one is kept" in line
    assert [p.name for p in tmp_path.iterdir()] == ["cohort.ckpt"]  # nothing half-written


def points_of(specs) -> list[Point]:
    return [
        Point(i, (), "", Path("."), spec, fingerprint(spec), f"p{i}")
        for i, spec in enumerate(specs)
    ]


def test_checkpoint_settings_are_checked_and_leave_a_points_identity_alone(tmp_path):
    base = compose_spec("trainer.steps=5")
    assert base.trainer.checkpoint_every == 60 and base.trainer.checkpoint_dir is None
    other = compose_spec(
        "trainer.steps=5", "trainer.checkpoint_every=0", "trainer.checkpoint_dir=x"
    )
    assert fingerprint(base) == fingerprint(other)
    with pytest.raises(ConfigError, match="trainer.checkpoint_every=-1"):
        compose_spec("trainer.checkpoint_every=-1")
    blocker = tmp_path / "a file"
    blocker.write_text("")
    spec = compose_spec(f"trainer.checkpoint_dir={blocker}/checkpoints")
    with pytest.raises(ConfigError, match="trainer.checkpoint_dir=.*a folder this user can write"):
        check_folders(points_of([spec]), "sqlite:////x.db")
    check_folders(points_of([compose_spec(f"trainer.checkpoint_dir={tmp_path}/new/sub")]), "")


def write_checkpoint(folder: Path, uri: str, specs, step: int, code: str | None = None) -> Path:
    prints = [fingerprint(spec) for spec in specs]
    header = Header(
        code or checkpoints.code_version(), "split", uri, specs[0].tracking.experiment, prints,
        ["r"] * len(specs), [[]] * len(specs), step, 100, 1.0,
    )  # fmt: skip
    path = folder / checkpoints.file_name(uri, header.experiment, prints)
    checkpoints.write(path, header, {"step": step})
    return path


def test_the_planner_resumes_whole_checkpoints_of_points_to_run_and_says_why_not_others(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    specs = [compose_spec("trainer.steps=100", f"seed={seed}") for seed in range(9)]
    points = points_of(specs)
    folder = checkpoints.folder(uri, "runs", None)
    assert folder == tmp_path / "mlartifacts" / "runs" / "checkpoints"
    folder.mkdir(parents=True)
    whole = write_checkpoint(folder, uri, specs[0:2], 40)
    behind = write_checkpoint(folder, uri, specs[1:3], 10)  # point 1 resumes from `whole`
    partial = write_checkpoint(folder, uri, specs[3:5], 50)  # point 4 is recorded
    done = write_checkpoint(folder, uri, specs[5:6], 50)  # its point is recorded
    old = write_checkpoint(folder, uri, specs[6:7], 50, code="0.0.1+000000000000")
    elsewhere = write_checkpoint(folder, "sqlite:////other.db", specs[7:8], 50)
    running = write_checkpoint(folder, uri, specs[8:9], 50)  # another live sweep trains it
    broken = folder / ("0" * 24 + ".ckpt")
    broken.write_bytes(b"garbage")
    todo, finished = [0, 1, 2, 3, 6, 7], {points[4].fingerprint, points[5].fingerprint}
    cohorts, rest, lines = resumed_cohorts(points, todo, finished, uri)
    assert [(c.positions, c.checkpoint) for c in cohorts] == [([0, 1], str(whole))]
    assert rest == [2, 3, 6, 7]
    assert len(lines) == 5

    def said(path, words):
        return any(path.name in line and words in line for line in lines)

    assert said(behind, "a further one holds its points")
    assert said(partial, "only 1 of its points are to run; they start over")
    assert said(old, "another harness (0.0.1+000000000000); its points start over")
    assert said(running, "only 0 of its points are to run, 1 running elsewhere")
    assert said(broken, "unreadable header")
    kept = [whole, partial, old, elsewhere, running]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in kept)
    assert not done.exists() and not behind.exists()
    # a forced sweep redoes recorded points: their checkpoint resumes
    cohorts, _, _ = resumed_cohorts(points, [3, 4], finished, uri)
    assert [(c.positions, c.checkpoint) for c in cohorts] == [([3, 4], str(partial))]


def test_a_stop_signal_inside_deferred_waits_for_the_loop_to_take_it():
    previous = signal.signal(signal.SIGTERM, stopping.interrupt)
    try:
        with stopping.deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert stopping.requested()
        assert stopping.requested()  # left for the next check: what trained is whole
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            stopping.check()
        assert not stopping.requested()  # one interrupt for both
    finally:
        signal.signal(signal.SIGTERM, previous)
        stopping.forget()


def test_a_checkpoint_of_other_parameters_or_another_split_is_not_used(tmp_path, capsys):
    specs = minibatch_sgd_specs()
    uninterrupted = engine.train_cohort(specs)
    resumed = engine.train_cohort(specs, resume={"theta": torch.zeros(4, 3)})
    assert_same_runs(resumed, uninterrupted)
    assert {r.resumed_step for r in resumed} == {None}
    assert "its parameters are (4, 3)" in capsys.readouterr().err
    path = tmp_path / "cohort.ckpt"
    stopped_by_sigterm(specs, path)
    setting = Checkpointing(tmp_path, 60.0, "sqlite:////x.db", "e", path)
    prints = [fingerprint(spec) for spec in specs]
    assert setting.open(prints, ["a", "b", "c", "d"], 90, "another", "", CPU).state is None
    assert "the data set's split has changed" in capsys.readouterr().err


def test_a_checkpoint_is_applied_only_with_the_same_source_of_the_users_rule(
    tmp_path, monkeypatch, capsys
):
    package = tmp_path / "checkpointed_rules"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(ROOT / "examples" / "lion.py", package / "lion.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    target = "optimizer.target=checkpointed_rules.lion"
    spec = compose_spec(*DIGITS, "optimizer=rule", target, "trainer.steps=90")
    importlib.import_module("checkpointed_rules.lion")
    before = checkpoints.user_code(spec)
    assert before and checkpoints.user_code(compose_spec(*DIGITS)) == ""
    with open(package / "lion.py", "a") as source:
        source.write("# changed\n")
    assert checkpoints.user_code(spec) not in (before, "")
    path = tmp_path / "cohort.ckpt"
    checkpoints.write(path, replace(header_for([spec], 90), user_code=before), {"theta": None})
    setting = Checkpointing(tmp_path, 60.0, "sqlite:////x.db", "e", path)
    cohort = setting.open([fingerprint(spec)], ["a"], 90, "split", checkpoints.user_code(spec), CPU)
    assert cohort.state is None and not path.exists()
    assert "the source of its model or optimizer has changed" in capsys.readouterr().err


def test_files_left_aside_by_a_killed_write_are_removed_after_an_hour(tmp_path):
    old, fresh = tmp_path / ".key.ckpt.123.tmp", tmp_path / ".key.ckpt.456.tmp"
    for aside in (old, fresh):
        aside.write_bytes(b"partial")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    checkpoints.remove_partials(tmp_path)
    assert not old.exists() and fresh.exists()
