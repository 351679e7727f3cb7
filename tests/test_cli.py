"""``python -m harness.train`` as a user runs it: every optimizer on the toy and real problems,
and bad input refused before any MLflow run exists."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, runs_in

OPTIMIZERS = ["gd", "gd_linesearch", "sgd", "momentum", "nesterov", "normalized", "adam", "torch"]
PROBLEMS = {
    "gabor_toy": ["dataset=gabor_toy", "model=gabor", "model.envelope=32"],
    "digits": ["dataset=digits", "model=mlp", "loss=cross_entropy"],
    "breast_cancer": ["dataset=breast_cancer", "model=logistic", "loss=bce"],
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("problem", PROBLEMS)
def test_every_optimizer_runs_on_toy_and_real_problems(run_cli, store_uri, optimizer, problem):
    batch = [] if optimizer.startswith("gd") else ["trainer.batch_size=16"]
    code, out, err = run_cli(
        *PROBLEMS[problem], f"optimizer={optimizer}", "trainer.steps=15", *batch
    )
    assert code == 0, err
    (run,) = runs_in(store_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.name"] == optimizer
    assert run.data.params["dataset.name"] == problem
    assert "train_loss" in run.data.metrics and "finished" in out


BAD_INPUTS = [
    (["optimizer=rmsprop"], "Available options in 'optimizer'"),
    (["dataset=cifar"], "Available options in 'dataset'"),
    (["schedule=linear"], "Available options in 'schedule'"),
    (["optimizer.lr=fast"], "optimizer.lr"),
    (["trainer.steps=1.5"], "trainer.steps"),
    (["trainer.reshuffle=maybe"], "trainer.reshuffle"),
    (["optimizer.momentum=0.9"], "momentum"),
    (["optimizer.lr=0"], "optimizer.lr=0.0 is not allowed: expected a value > 0"),
    (["optimizer=adam", "optimizer.lr=-1e-3"], "optimizer.lr"),
    (["optimizer=momentum", "optimizer.beta=1.0"], "optimizer.beta=1.0 is not allowed"),
    (["optimizer=adam", "optimizer.gamma=-0.1"], "optimizer.gamma"),
    (["optimizer=sgd", "trainer.batch_size=0"], "trainer.batch_size=0"),
    (["optimizer=sgd", "trainer.batch_size=31"], "at most the training split's 30 points"),
    (["trainer.steps=0"], "trainer.steps=0"),
    (["trainer.steps=10", "trainer.epochs=5"], "set one of trainer.steps and trainer.epochs"),
    (["trainer.device=tpu"], "trainer.device='tpu'"),
    (["trainer.device=cuda:7"], "CUDA devices"),
    (["trainer.dtype=float16"], "trainer.dtype"),
    (["trainer.device=mps"], "MPS is not available"),
    (["loss=cross_entropy"], "model gabor takes loss least_squares"),
    (["dataset=diabetes", "model=mlp", "loss=cross_entropy"], "regression task"),
    (["dataset=digits", "model=logistic", "loss=bce"], "binary targets"),
    (["dataset=diabetes", "model=gabor"], "Gabor model takes one input feature"),
    (["model=rosenbrock", "loss=surface"], "surface models"),
    (["optimizer=gd", "trainer.batch_size=5"], "full batch"),
    (["model.init=[1.0]"], "model.init"),
    (
        ["dataset=mnist", "model=mlp", "loss=cross_entropy", "dataset.root=/dev/null/cache"],
        "dataset.root='/dev/null/cache' is not allowed: expected a writable folder",
    ),
    (["optimizer=torch", "optimizer.class_name=Sgd"], "expected a torch.optim optimizer"),
    (["optimizer=torch", "+optimizer.kwargs.momentum_typo=0.9"], "momentum_typo"),
    (["schedule=step", "schedule.factor=2"], "schedule.factor"),
    (["dataset=wine", "dataset.val_fraction=0.6", "dataset.test_fraction=0.5"], "training data"),
    (["tracking.log_every=-5"], "tracking.log_every"),
    (
        [
            "dataset=regression1d",
            "model=linear",
            "dataset.size=4",
            "dataset.val_fraction=0.4",
            "dataset.test_fraction=0.4",
        ],
        "leaves no training point",
    ),
    (
        [
            "dataset=regression1d",
            "model=linear",
            "dataset.size=20",
            "dataset.val_fraction=0.01",
            "schedule=plateau",
            "schedule.monitor=val",
        ],
        "validation split of regression1d is empty",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS]
)
def test_bad_input_is_refused_before_any_run(run_cli, store_uri, overrides, message):
    code, out, err = run_cli(*overrides)
    assert code != 0
    assert message in err
    assert runs_in(store_uri) == []


@pytest.mark.parametrize(
    "uri", ["file:///tmp/mlruns", "sqlite:////no/such/folder/m.db", "http://127.0.0.1:9"]
)
def test_an_unusable_tracking_uri_is_refused(run_cli, uri):
    code, _, err = run_cli(uri=uri)
    assert code == 2 and err.startswith("error: tracking.uri=")


def test_a_terminated_run_is_recorded_killed(tmp_path, store_uri):
    command = [
        sys.executable,
        "-m",
        "harness.train",
        "trainer.steps=10000000",
        "tracking.log_every=1000",
        f"tracking.uri={store_uri}",
        f"hydra.run.dir={tmp_path}/h",
    ]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for _ in range(300):
        if runs_in(store_uri):
            break
        time.sleep(0.1)
    process.terminate()
    _, err = process.communicate(timeout=60)
    assert process.returncode != 0 and "KeyboardInterrupt" in err
    (run,) = runs_in(store_uri)
    assert run.info.status == "KILLED" and "signal 15" in run.data.tags["error"]


def test_the_module_runs_as_a_program(tmp_path, store_uri):
    """The real entry point in a fresh interpreter, as ``make run`` calls it."""
    command = [
        sys.executable,
        "-m",
        "harness.train",
        "optimizer=adam",
        "optimizer.lr=0.05",
        "trainer.steps=20",
        f"tracking.uri={store_uri}",
        "tracking.experiment=cli",
        f"hydra.run.dir={tmp_path}/h",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    (run,) = runs_in(store_uri, "cli")
    assert run.data.params["optimizer.name"] == "adam"
    bad = subprocess.run(
        command[:3] + ["optimizer.beta=2"] + command[3:],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: optimizer.beta=2.0 is not allowed: expected a value in [0, 1)"
    ]
    assert len(runs_in(store_uri, "cli")) == 1


APP = """import hydra
{imports}

@hydra.main(version_base=None, config_path={config_path!r}, config_name="config")
def mine(cfg):
    print("my task ran")


mine()
"""


def run_app(folder, config_path: str, *args: str, imports: str = "") -> subprocess.CompletedProcess:
    """A Hydra app of its own in ``folder`` (task ``mine``), run as a multirun there."""
    (folder / "app.py").write_text(APP.format(imports=imports, config_path=config_path))
    return subprocess.run(
        [sys.executable, "app.py", "--multirun", *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_harness_launcher_under_another_apps_config_stops_with_one_line(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(
        "defaults:\n  - override hydra/launcher: harness\n  - _self_\nx: 1\n"
    )
    done = run_app(tmp_path, "conf", "x=1,2", f"hydra.sweep.dir={tmp_path}/m")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: hydra/launcher='harness' is not allowed: it runs only harness.train's task on "
        f"the harness's config ({ROOT / 'conf'}); this app's config is {tmp_path / 'conf'}: "
        "choose another launcher (e.g. hydra/launcher=basic)"
    ]
    assert "my task ran" not in done.stdout and not list(tmp_path.rglob("*.db"))


def test_the_harness_launcher_refuses_a_task_that_is_not_the_harnesss(tmp_path, store_uri):
    """The harness's config with a task of the app's own: the launcher would never call it."""
    imports = "import harness.train  # noqa: F401 (registers the config's schemas)"
    done = run_app(
        tmp_path, str(ROOT / "conf"), "seed=1,2", f"tracking.uri={store_uri}", imports=imports
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: hydra/launcher='harness' is not allowed: it runs only")
    assert line.endswith(
        "this app's task is mine: choose another launcher (e.g. hydra/launcher=basic)"
    )
    assert runs_in(store_uri) == [] and runs_in(store_uri, "lecture") == []
