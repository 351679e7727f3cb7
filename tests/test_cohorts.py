"""Cohorts against one job at a time: a study swept by the cohort launcher leaves the records
that the same points leave when each trains alone (Hydra's basic launcher calling the training
task, or the harness launcher with ``max_cohort=1``), into real sqlite stores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_same_records, point_records

from harness import records


def sweep(tmp_path: Path, name: str, *args: str, module: str = "harness.sweep") -> str:
    """Run a sweep into a store of its own; returns the store's URI."""
    uri = f"sqlite:///{tmp_path / name}.db"
    command = [sys.executable, "-m", module, *args, f"tracking.uri={uri}"]
    command.append(f"hydra.sweep.dir={tmp_path / name}")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return uri


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
    assert_same_records(point_records(batched, "smoke"), point_records(alone, "smoke"), 8)


@pytest.mark.parametrize(
    "study, sample, points",
    [
        pytest.param(  # about 20 s; the smoke study is compared the two ways by default
            "gabor_valleys",
            [
                "+book=gabor_gd,gabor_sgd,gabor_momentum,gabor_adam",
                "model.init=[-9,3],[0,15],[9,21]",
            ],
            12,
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "lr_sensitivity",
            [
                "+problem=digits_mlp,breast_cancer_logistic,diabetes_linear",
                "optimizer=sgd,adam",
                "optimizer.lr=1e-3,0.215",
                "seed=0,1",
            ],
            24,
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "cnn",
            [
                "optimizer=momentum,adam",
                "optimizer.lr=1e-3,0.1",
                "seed=0,1",
                "trainer.epochs=3",
                "trainer.dtype=float64",  # float32 roundings differ between the two ways
            ],
            8,
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_sample_of_a_large_study_records_the_same_runs_batched_and_one_by_one(
    tmp_path, study, sample, points
):
    batched = sweep(tmp_path, "cohorts", study, *sample)
    alone = sweep(tmp_path, "alone", study, *sample, "hydra.launcher.max_cohort=1")
    assert_same_records(point_records(batched, study), point_records(alone, study), points)
    sizes = {
        r for r in records.read_experiment(batched, study).tags.query("key == 'cohort_size'").value
    }
    assert max(map(int, sizes)) > 1  # the sample did train in cohorts


def test_cohorts_over_the_memory_budget_train_in_pieces_with_the_same_records(tmp_path):
    batched = sweep(tmp_path, "cohorts", "smoke")
    pieces = sweep(tmp_path, "pieces", "smoke", "hydra.launcher.memory_fraction=1e-12")
    assert_same_records(point_records(batched, "smoke"), point_records(pieces, "smoke"), 8)
    tags = records.read_experiment(pieces, "smoke").tags
    assert set(tags[tags.key == "cohort_size"].value) == {"1"}
    tags = records.read_experiment(batched, "smoke").tags
    assert set(tags[tags.key == "cohort_size"].value) == {"2"}


@pytest.mark.gpu
def test_a_sweep_places_its_cohorts_on_the_gpus_and_records_them(tmp_path):
    import torch

    uri = sweep(tmp_path, "gpu", "smoke", "trainer.device=auto")
    tables = records.read_experiment(uri, "smoke")
    tags = tables.tags
    devices = set(tags[tags.key == "device"].value)
    gpus = {f"cuda:{i}" for i in range(torch.cuda.device_count())}
    assert devices and devices <= gpus
    names = set(tags[tags.key == "device_name"].value)
    assert names <= {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    alone = sweep(tmp_path, "cpu", "smoke", "trainer.device=cpu")
    assert_same_records(point_records(uri, "smoke"), point_records(alone, "smoke"), 8)
