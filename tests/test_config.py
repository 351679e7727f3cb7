"""Every option of every config group has one registry entry, composes into a valid spec
and trains."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, compose_spec
from test_problems import write_mnist

from harness import config, engine, registry

GROUPS = ("dataset", "model", "loss", "optimizer", "schedule")
GROUP_OPTIONS = sorted(
    (group, path.stem) for group in GROUPS for path in (ROOT / "conf" / group).glob("*.yaml")
)
# Options that need other groups to fit (model/loss/dataset combinations).
COMPANIONS = {
    ("dataset", "digits"): ["model=mlp", "loss=cross_entropy"],
    ("dataset", "wine"): ["model=mlp", "loss=cross_entropy"],
    ("dataset", "breast_cancer"): ["model=logistic", "loss=bce"],
    ("dataset", "moons"): ["model=logistic", "loss=bce"],
    ("dataset", "blobs"): ["model=softmax", "loss=cross_entropy"],
    ("dataset", "mnist"): ["model=mlp", "loss=cross_entropy"],
    ("dataset", "fashion_mnist"): ["model=mlp", "loss=cross_entropy"],
    ("dataset", "diabetes"): ["model=linear"],
    ("dataset", "regression1d"): ["model=linear"],
    ("dataset", "none"): ["model=rosenbrock", "loss=surface"],
    ("model", "linear"): ["dataset=linear_toy"],
    ("model", "logistic"): ["dataset=moons", "loss=bce"],
    ("model", "softmax"): ["dataset=wine", "loss=cross_entropy"],
    ("model", "mlp"): ["dataset=wine", "loss=cross_entropy"],
    ("model", "adam_demo"): ["dataset=none", "loss=surface"],
    ("model", "rosenbrock"): ["dataset=none", "loss=surface"],
    ("loss", "gaussian_nll"): ["dataset=regression1d", "model=mlp"],
    ("loss", "bce"): ["dataset=moons", "model=logistic"],
    ("loss", "cross_entropy"): ["dataset=wine", "model=softmax"],
    ("loss", "surface"): ["dataset=none", "model=adam_demo"],
}


def test_every_option_file_has_one_registry_entry_and_back():
    assert tuple(registry.OPTIONS) == GROUPS
    registered = sorted(
        (group, name) for group, names in registry.OPTIONS.items() for name in names
    )
    assert registered == GROUP_OPTIONS
    for group, option in GROUP_OPTIONS:
        defaults = yaml.safe_load((ROOT / "conf" / group / f"{option}.yaml").read_text())
        schemas = [d for d in defaults["defaults"] if str(d).startswith("/schema/")]
        assert schemas == [f"/schema/{group}/{option}@_here_"], (group, option)


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_validates_and_trains(group, option, tmp_path):
    overrides = [*COMPANIONS.get((group, option), []), "trainer.steps=2"]
    if registry.OPTIONS[group][option].schema is config.IdxDatasetConfig:
        write_mnist(tmp_path)
        overrides.append(f"dataset.root={tmp_path}")
    spec = compose_spec(f"{group}={option}", *overrides)
    assert getattr(spec, group).name == option
    assert isinstance(getattr(spec, group), registry.OPTIONS[group][option].schema)
    (result,) = engine.train_cohort([spec])
    assert "train_loss" in result.curves


def test_params_flatten_with_dotted_names():
    flat = config.flatten(config.as_dict(compose_spec("optimizer=adam")))
    assert flat["optimizer.lr"] == 0.001 and flat["optimizer.gamma"] == 0.999
    assert flat["trainer.dtype"] == "float64" and flat["seed"] == 0
