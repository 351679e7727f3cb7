"""Tuning end to end, into temporary sqlite stores: the harness's two-stage search (the
``tuning`` study made small), Hydra's Optuna sweeper through the harness launcher and through
Hydra's basic launcher, bad searches refused before any run, and the tuning report."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import CONF, ROOT, runs_in
from hydra import compose, initialize_config_dir

from harness import train
from harness.records import Role, Stage, Tag
from harness.sweep import launch
from harness.sweep.summary import Outcome
from reports import report

SMALL_SEARCH = (  # the tuning study on breast_cancer only, SGD and Adam, 3 trials, 2 reruns
    "hydra.sweeper.params={+problem:breast_cancer_logistic}",
    "~hydra.sweeper.search.spaces.momentum",
    "~hydra.sweeper.search.spaces.nesterov",
    "hydra.sweeper.search.budget=3",
    "hydra.sweeper.search.reruns=2",
)


def sweep(tmp_path: Path, uri: str, study: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m harness.sweep <study>`` into the store at ``uri`` (tests/ importable, for
    the rules of ``user_optim``)."""
    command = [sys.executable, "-m", "harness.sweep", study, f"tracking.uri={uri}"]
    command += [f"hydra.sweep.dir={tmp_path}/multirun", *args]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment
    )


def grid_runs(uri: str, study: str) -> list:
    return [r for r in runs_in(uri, study) if Tag.ROLE not in r.data.tags]


def parents(uri: str, study: str) -> list:
    return [r for r in runs_in(uri, study) if r.data.tags.get(Tag.ROLE) == Role.SWEEP]


def test_a_search_tunes_each_optimizer_then_reruns_its_best_setting(tmp_path, store_uri):
    done = sweep(tmp_path, store_uri, "tuning", *SMALL_SEARCH)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = grid_runs(store_uri, "tuning")
    (parent,) = parents(store_uri, "tuning")
    assert {r.data.tags[Tag.PARENT] for r in runs} == {parent.info.run_id}
    assert parent.data.metrics["runs_finished"] == 10
    results = yaml.safe_load((tmp_path / "multirun" / "search_results.yaml").read_text())["arms"]
    for arm in results:
        optimizer = arm["optimizer"]
        mine = [r for r in runs if r.data.params["optimizer.name"] == optimizer]
        trials = [r for r in mine if r.data.tags[Tag.STAGE] == Stage.TUNE]
        reruns = [r for r in mine if r.data.tags[Tag.STAGE] == Stage.RERUN]
        assert len(trials) == 3 and {r.data.params["seed"] for r in trials} == {"0"}
        best = min(trials, key=lambda r: r.data.metrics["val_loss"])
        assert arm["best"]["objective"] == best.data.metrics["val_loss"]
        assert sorted(r.data.params["seed"] for r in reruns) == ["1", "2"]
        for key in ("optimizer.lr", "optimizer.beta"):
            assert {r.data.params.get(key) for r in reruns} == {best.data.params.get(key)}
        assert arm["best"]["reruns"] == [
            r.data.metrics["val_loss"] for r in sorted(reruns, key=lambda r: r.data.params["seed"])
        ]
    lrs = {
        o: {r.data.params["optimizer.lr"] for r in runs if r.data.params["optimizer.name"] == o}
        for o in ("sgd", "adam")
    }
    assert lrs["sgd"] & lrs["adam"]  # drawn from one seed: the optimizers share their rates

    again = sweep(tmp_path, store_uri, "tuning", *SMALL_SEARCH)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "trained by this sweep: 0 of 10 points" in again.stdout
    assert len(grid_runs(store_uri, "tuning")) == 10 and len(parents(store_uri, "tuning")) == 1
    resumed = yaml.safe_load((tmp_path / "multirun" / "search_results.yaml").read_text())
    assert resumed["arms"] == results

    index = report.build(store_uri, "tuning", tmp_path / "report")
    tuning_table = (tmp_path / "report" / "tuning.md").read_text()
    assert "| breast_cancer/logistic | adam | 3 |" in tuning_table
    assert (tmp_path / "report" / "tuning_breast_cancer_logistic.png").exists()
    page = index.read_text()
    assert "(tuning budget)" in page and "<h2>Tuning</h2>" in page


@pytest.mark.parametrize(
    "args, key, folder",
    [  # a search is checked before the sweep folder is written, an objective as jobs compose
        (
            ("hydra.sweeper.search.spaces.sgd={optimizer.lr:'interval(1, 0.1)'}",),
            "spaces.sgd",
            False,
        ),
        (("objective=test_loss",), "objective='test_loss'", True),
    ],
)
def test_a_bad_search_is_refused_before_any_run(tmp_path, store_uri, args, key, folder):
    done = sweep(tmp_path, store_uri, "tuning", *SMALL_SEARCH, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and key in done.stderr
    assert "Traceback" not in done.stderr
    assert runs_in(store_uri, "tuning") == []
    assert (tmp_path / "multirun" / "multirun.yaml").exists() == folder


OPTUNA = ("hydra.sweeper.n_trials=12", "hydra.sweeper.n_jobs=2")


def optuna_results(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())


def test_optuna_tunes_through_the_harness_launcher_under_one_parent_run(tmp_path, store_uri):
    """The ``optuna`` study (TPE, sampler seed 0) made small: 12 trials, 2 per batch."""
    done = sweep(tmp_path, store_uri, "optuna", *OPTUNA)
    assert done.returncode == 0, done.stdout + done.stderr
    results = optuna_results(tmp_path)
    runs = grid_runs(store_uri, "optuna")
    assert len(runs) == 12
    objectives = [r.data.metrics["val_loss"] for r in runs]
    assert results["best_value"] == min(objectives)
    best = min(runs, key=lambda r: r.data.metrics["val_loss"])
    assert float(best.data.params["optimizer.lr"]) == results["best_params"]["optimizer.lr"]
    (parent,) = parents(store_uri, "optuna")
    assert {r.data.tags[Tag.PARENT] for r in runs} == {parent.info.run_id}
    assert parent.data.metrics["runs_finished"] == 12


@pytest.mark.slow
def test_optuna_tunes_through_hydras_basic_launcher_to_the_same_trials(tmp_path, store_uri):
    """Each job runs ``harness.train``'s task, which returns the objective: the same trials
    and values as through the harness launcher (which the trial seeds make deterministic)."""
    few = ("hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2")
    basic = sweep(tmp_path / "basic", store_uri, "optuna", *few, "hydra/launcher=basic")
    assert basic.returncode == 0, basic.stdout + basic.stderr
    ours = sweep(tmp_path / "ours", store_uri, "optuna", *few, "tracking.experiment=ours")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert optuna_results(tmp_path / "basic") == optuna_results(tmp_path / "ours")
    runs = grid_runs(store_uri, "optuna")
    assert len(runs) == 4
    assert optuna_results(tmp_path / "basic")["best_value"] == min(
        r.data.metrics["val_loss"] for r in runs
    )


@pytest.mark.slow
def test_a_failed_or_diverged_trial_does_not_end_an_optuna_study(tmp_path, store_uri):
    """As a new user types it: ``harness.train -m hydra/sweeper=optuna`` with the harness
    launcher. A rule that raises fails its trial, a huge rate diverges (+inf); the study goes
    on to its best finished trial and exits 0 (failures allowed: max_failure_rate 1)."""
    command = [
        sys.executable,
        "-m",
        "harness.train",
        "--multirun",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=3",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.max_failure_rate=1.0",
        "+problem=digits_mlp",
        "optimizer=rule",
        "optimizer.lr=choice(1e-2,1e12)",
        "optimizer.target=choice(user_optim.raises,user_optim.scaled_sgd)",
        f"tracking.uri={store_uri}",
        "tracking.experiment=optuna",
        f"hydra.sweep.dir={tmp_path}/multirun",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment
    )
    assert done.returncode == 0, done.stdout + done.stderr
    runs = grid_runs(store_uri, "optuna")
    statuses = {r.info.status for r in runs}
    assert "FAILED" in statuses and "FINISHED" in statuses
    assert any(r.data.tags.get(Tag.DIVERGED) == "true" for r in runs)
    values = [
        math.inf if r.data.tags.get(Tag.DIVERGED) == "true" else r.data.metrics["val_loss"]
        for r in runs
        if r.info.status == "FINISHED"
    ]
    assert optuna_results(tmp_path)["best_value"] == min(values)


def test_a_run_returns_its_objective_and_records_its_tags(store_uri, run_cli):
    """``harness.train``'s task returns the run's objective (what Optuna reads under Hydra's
    basic launcher); ``tracking.tags`` become the run's tags, not params, and leave its
    identity alone; the harness's own tag names are refused."""
    overrides = [f"tracking.uri={store_uri}", "+problem=breast_cancer_logistic", "optimizer=sgd"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        accuracy = compose(
            "config", [*overrides, "objective=val_accuracy", "+tracking.tags.team=x"]
        )
        loss = compose("config", overrides)
    assert train.run(accuracy) == pytest.approx(runs_in(store_uri)[0].data.metrics["val_accuracy"])
    (run,) = runs_in(store_uri)
    assert run.data.tags["team"] == "x" and "tracking.tags.team" not in run.data.params
    assert run.data.params["objective"] == "val_accuracy"
    assert train.run(loss) == runs_in(store_uri)[0].data.metrics["val_loss"]  # objective=auto
    fingerprints = {r.data.tags[Tag.FINGERPRINT] for r in runs_in(store_uri)}
    assert len(fingerprints) == 1  # the same point: neither objective nor tags count
    code, _, err = run_cli("+tracking.tags.fingerprint=mine")
    assert code == 2 and "tracking.tags.fingerprint='mine' is not allowed" in err


def test_a_point_repeated_in_a_batch_returns_the_objective_of_the_run_it_repeats():
    """Optuna may ask for the same trial twice: the repeat is skipped, yet returns a value."""
    points = [SimpleNamespace(fingerprint="a", objective="val_loss") for _ in range(2)]
    outcomes = {
        0: Outcome("finished", "run-a", objective=0.25),
        1: Outcome("skipped", error="the same run as grid point #0", trained=False),
    }
    launch.objectives_of(points, outcomes, [], ledger=None)
    assert outcomes[1].objective == 0.25 and outcomes[1].status == "skipped"
    assert launch.job_return(SimpleNamespace(overrides=("x=1",)), outcomes[1]).return_value == 0.25
