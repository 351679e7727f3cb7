"""Shared fixtures: real Hydra composition of the project's conf/, and real MLflow sqlite
stores in temporary folders (migrated once per session, then copied for each test)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from harness import config, train

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")


def compose_spec(*overrides: str) -> config.RunConfig:
    """The validated spec of ``conf/config.yaml`` with ``overrides``."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return config.to_spec(compose("config", overrides=list(overrides)))


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


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
