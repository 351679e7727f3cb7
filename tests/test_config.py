"""Every option of every config group composes into a valid spec."""

from __future__ import annotations

import pytest
from conftest import ROOT, compose_spec

from harness import config

GROUP_OPTIONS = sorted(
    (group, path.stem)
    for group in config.SCHEMAS
    for path in (ROOT / "conf" / group).glob("*.yaml")
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


def test_every_schema_has_an_option_file_and_back():
    assert sorted(GROUP_OPTIONS) == sorted(
        (group, option) for group, options in config.SCHEMAS.items() for option in options
    )


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_validates(group, option):
    spec = compose_spec(f"{group}={option}", *COMPANIONS.get((group, option), []))
    assert getattr(spec, group).name == option
    assert isinstance(getattr(spec, group), config.SCHEMAS[group][option])


def test_params_flatten_with_dotted_names():
    flat = config.flatten(config.as_dict(compose_spec("optimizer=adam")))
    assert flat["optimizer.lr"] == 0.001 and flat["optimizer.gamma"] == 0.999
    assert flat["trainer.dtype"] == "float64" and flat["seed"] == 0
