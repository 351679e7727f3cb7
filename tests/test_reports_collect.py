"""Collecting a study from a real MLflow store into the tidy frame."""

from __future__ import annotations

import shutil
import sys

import pandas as pd
import pytest
from conftest import runs_in, tidy_frame

from harness.config import ConfigError
from harness.sweep import cli
from reports.collect import collect, model_names, typed


def run_sweep(tmp_path, uri: str, *args: str) -> int:
    try:
        cli.main(["smoke", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path}/m", *args])
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory, migrated_store) -> str:
    """The smoke study, its sgd points swept again with force=true (newer runs), and a
    point that fails (a rule of tests/user_optim.py that raises at its first update)."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    store_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert run_sweep(tmp_path, store_uri) == 0
    assert run_sweep(tmp_path, store_uri, "optimizer=sgd", "force=true") == 0
    failing = ["optimizer=rule", "optimizer.target=user_optim.raises"]
    assert run_sweep(tmp_path, store_uri, *failing, "seed=0") == 1
    return store_uri


def test_the_frame_has_a_row_per_run_and_step_with_typed_config(smoke_store):
    frame = collect(smoke_store, "smoke")
    assert not frame.duplicated(["run_id", "step"]).any()
    runs = frame.drop_duplicates("run_id")
    assert len(runs) == 9 and runs["fingerprint"].is_unique  # 8 points + the failing one
    assert frame["optimizer.lr"].dtype == float and str(frame["seed"].dtype) == "Int64"
    assert frame["optimizer.name"].dtype == object or pd.api.types.is_string_dtype(
        frame["optimizer.name"]
    )
    assert set(frame["problem"]) == {"gabor_toy/gabor"}
    assert frame["status"].notna().all() and frame["diverged"].notna().all()
    finished = frame[frame["status"] == "FINISHED"]
    for _, curve in finished.groupby("run_id"):
        assert curve["step"].tolist() == sorted(curve["step"]) and curve["step"].iloc[0] == 0
        assert curve["train_loss"].notna().all() and curve["seconds"].is_monotonic_increasing
        assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert (finished["step"].max()) == 20 and finished["wall_seconds"].gt(0).all()


def test_a_rerun_point_is_represented_by_its_newest_finished_run(smoke_store):
    frame = collect(smoke_store, "smoke")
    points = [r for r in runs_in(smoke_store, "smoke") if r.data.tags.get("role") != "sweep"]
    newest = {}
    for run in points:
        fingerprint = run.data.tags["fingerprint"]
        if run.info.status == "FINISHED" and run.info.start_time > newest.get(fingerprint, (0,))[0]:
            newest[fingerprint] = (run.info.start_time, run.info.run_id)
    assert len(points) == 11  # 8 + 2 sgd reruns + 1 failure
    chosen = frame.drop_duplicates("run_id").set_index("fingerprint")["run_id"]
    for fingerprint, (_, run_id) in newest.items():
        assert chosen[fingerprint] == run_id


def test_a_failed_run_keeps_its_status_on_every_row(smoke_store):
    frame = collect(smoke_store, "smoke")
    failed = frame[frame["status"] == "FAILED"]
    assert len(failed["run_id"].unique()) == 1
    assert (failed["optimizer.name"] == "rule").all() and not failed["diverged"].any()


def test_an_unknown_study_is_refused(store_uri):
    with pytest.raises(ConfigError, match="study='nope'"):
        collect(store_uri, "nope")


@pytest.mark.parametrize(
    "values, expected",
    [
        (["0.1", "1e-05", "null"], [0.1, 1e-05, None]),
        (["1", "2", None], [1, 2, None]),
        (["sgd", "adam"], ["sgd", "adam"]),
        (["[1.6, -0.5]", "[3.5, 6.5]"], ["[1.6, -0.5]", "[3.5, 6.5]"]),
        (["true", "false"], ["true", "false"]),
        (["1", "2.5"], [1.0, 2.5]),
    ],
)
def test_params_are_typed_by_column(values, expected):
    column = typed(pd.Series(values, dtype=object))
    assert [None if pd.isna(v) else v for v in column] == expected
    if expected == [1, 2, None]:
        assert str(column.dtype) == "Int64"


def test_a_run_diverged_at_step_0_keeps_its_point_with_nan_and_infinities(run_cli, store_uri):
    """Rosenbrock from (1e200, 1e200) in float32 starts at infinity: the loss is NaN there;
    the infinite parameters come back as the largest float, as MLflow keeps them."""
    start = ["model=rosenbrock", "dataset=none", "loss=surface", "trainer.dtype=float32"]
    code, out, _ = run_cli("tracking.experiment=lost", *start, "model.init=[1e200,1e200]")
    assert code == 0 and "diverged at step 0" in out
    (point,) = collect(store_uri, "lost").to_dict("records")
    assert point["step"] == 0 and point["diverged"] and point["diverged_step"] == 0
    assert pd.isna(point["train_loss"]) and point["phi0"] == point["phi1"] == sys.float_info.max


def test_module_models_are_named_by_their_class_and_told_apart():
    """Runs of ``model=module`` are named by class, by import path where two classes share a
    name; the built-in models keep their names."""
    targets = ["harness.nets.SmallCnn", "user_nets.TinyMlp", "a.Net", "b.Net", None]
    runs = tidy_frame(
        [
            {
                "model.name": "mlp" if target is None else "module",
                "model.target": target,
                "curve": [{"step": 0}],
            }
            for target in targets
        ]
    )
    assert model_names(runs).tolist() == ["SmallCnn", "TinyMlp", "a.Net", "b.Net", "mlp"]
    assert model_names(runs.drop(columns="model.target")).tolist() == ["module"] * 4 + ["mlp"]
