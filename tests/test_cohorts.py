"""Cohorts against one job at a time: a study swept by the cohort launcher leaves the records
that the same points leave when each trains alone (Hydra's basic launcher calling the training
task, or the harness launcher with ``max_cohort=1``), into real sqlite stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from harness import tracking

SWEEP_TAGS = {"mlflow.parentRunId", "sweep_id", "owner", "cohort_size", "mlflow.runName"}
TIMES = {"wall_seconds"}
STORE = {
    "tracking.uri": "each sweep writes to a store of its own"
}  # a cohort's time is shared by its runs


def sweep(tmp_path: Path, name: str, *args: str, module: str = "harness.sweep") -> str:
    """Run a sweep into a store of its own; returns the store's URI."""
    uri = f"sqlite:///{tmp_path / name}.db"
    command = [sys.executable, "-m", module, *args, f"tracking.uri={uri}"]
    command.append(f"hydra.sweep.dir={tmp_path / name}")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return uri


def records(uri: str, experiment: str) -> dict[str, dict]:
    """Each grid point's FINISHED run by fingerprint: params, tag names and curves."""
    tables = tracking.read_experiment(uri, experiment)
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


def test_the_smoke_study_records_the_same_runs_batched_and_one_by_one(tmp_path):
    """The cohort launcher against Hydra's basic launcher, where every job calls the training
    task of ``python -m harness.train`` on its own."""
    batched = sweep(tmp_path, "cohorts", "smoke")
    alone = sweep(
        tmp_path,
        "basic",
        "--multirun",
        "+experiment=smoke",
        "hydra/launcher=basic",
        module="harness.train",
    )
    assert_same_records(records(batched, "smoke"), records(alone, "smoke"), 8)


@pytest.mark.parametrize(
    "study, sample, points",
    [
        (
            "gabor_valleys",
            [
                "+book=gabor_gd,gabor_sgd,gabor_momentum,gabor_adam",
                "model.init=[-9,3],[0,15],[9,21]",
            ],
            12,
        ),
        (
            "lr_sensitivity",
            [
                "+problem=digits_mlp,breast_cancer_logistic,diabetes_linear",
                "optimizer=sgd,adam",
                "optimizer.lr=1e-3,0.215",
                "seed=0,1",
            ],
            24,
        ),
    ],
)
def test_a_sample_of_a_large_study_records_the_same_runs_batched_and_one_by_one(
    tmp_path, study, sample, points
):
    batched = sweep(tmp_path, "cohorts", study, *sample)
    alone = sweep(tmp_path, "alone", study, *sample, "hydra.launcher.max_cohort=1")
    assert_same_records(records(batched, study), records(alone, study), points)
    sizes = {
        r for r in tracking.read_experiment(batched, study).tags.query("key == 'cohort_size'").value
    }
    assert max(map(int, sizes)) > 1  # the sample did train in cohorts


def test_cohorts_over_the_memory_budget_train_in_pieces_with_the_same_records(tmp_path):
    batched = sweep(tmp_path, "cohorts", "smoke")
    pieces = sweep(tmp_path, "pieces", "smoke", "hydra.launcher.memory_fraction=1e-12")
    assert_same_records(records(batched, "smoke"), records(pieces, "smoke"), 8)
    tags = tracking.read_experiment(pieces, "smoke").tags
    assert set(tags[tags.key == "cohort_size"].value) == {"1"}
    tags = tracking.read_experiment(batched, "smoke").tags
    assert set(tags[tags.key == "cohort_size"].value) == {"2"}


@pytest.mark.gpu
def test_a_sweep_places_its_cohorts_on_the_gpus_and_records_them(tmp_path):
    import torch

    uri = sweep(tmp_path, "gpu", "smoke", "trainer.device=auto")
    tables = tracking.read_experiment(uri, "smoke")
    tags = tables.tags
    devices = set(tags[tags.key == "device"].value)
    gpus = {f"cuda:{i}" for i in range(torch.cuda.device_count())}
    assert devices and devices <= gpus
    names = set(tags[tags.key == "device_name"].value)
    assert names <= {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    alone = sweep(tmp_path, "cpu", "smoke", "trainer.device=cpu")
    assert_same_records(records(uri, "smoke"), records(alone, "smoke"), 8)
