"""Every option of every config group has one registry entry, composes into a valid spec
and trains; values that cannot be trained (numbers not finite, keys added with ``+``, two
budgets, absurd sizes) are refused when the config is validated, by both entry points."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, compose_spec, runs_in
from test_image_data import IDX_SETS, write_cifar
from test_problems import dead_mirror, write_mnist

from harness import config, engine, registry
from harness.config import ConfigError
from harness.sweep import cli as sweep_cli

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
    ("dataset", "cifar10"): ["model=mlp", "loss=cross_entropy"],
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
    ("optimizer", "rule"): ["optimizer.target=examples.lion"],
}


IMAGE_SETS = ("mnist", "fashion_mnist", "cifar10")
IMAGE_MODELS = {"module": "digits", "small_cnn": "digits", "2c2d": "mnist", "3c3d": "cifar10"}
PRESETS = {  # option files that set values of another option's schema
    ("model", "small_cnn"): "module",
    ("model", "2c2d"): "module",
    ("model", "3c3d"): "module",
    ("optimizer", "lion"): "rule",
}


def test_every_option_file_has_one_registry_entry_and_back():
    assert tuple(registry.OPTIONS) == GROUPS
    registered = sorted(
        (group, name) for group, names in registry.OPTIONS.items() for name in names
    )
    assert registered == [option for option in GROUP_OPTIONS if option not in PRESETS]
    for group, option in GROUP_OPTIONS:
        defaults = yaml.safe_load((ROOT / "conf" / group / f"{option}.yaml").read_text())
        schemas = [d for d in defaults["defaults"] if str(d).startswith("/schema/")]
        schema = PRESETS.get((group, option), option)
        assert schemas == [f"/schema/{group}/{schema}@_here_"], (group, option)


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_validates_and_trains(group, option, tmp_path, monkeypatch):
    overrides = [*COMPANIONS.get((group, option), []), "trainer.steps=2"]
    dataset = option if group == "dataset" else None
    if group == "model" and option in IMAGE_MODELS:
        dataset = IMAGE_MODELS[option]
        overrides = [f"dataset={dataset}", "loss=cross_entropy", "trainer.steps=2"]
        overrides += ["model.target=harness.nets.SmallCnn"] if option == "module" else []
    if dataset in IMAGE_SETS:
        if dataset == "cifar10":
            write_cifar(tmp_path, monkeypatch)
        else:
            write_mnist(tmp_path, folder=IDX_SETS[dataset])
        overrides += [f"dataset.root={tmp_path}", dead_mirror()]
    spec = compose_spec(f"{group}={option}", *overrides)
    schema = PRESETS.get((group, option), option)
    assert getattr(spec, group).name == schema
    assert isinstance(getattr(spec, group), registry.OPTIONS[group][schema].schema)
    (result,) = engine.train_cohort([spec])
    assert "train_loss" in result.curves


def test_params_flatten_with_dotted_names():
    flat = config.flatten(config.as_dict(compose_spec("optimizer=adam")))
    assert flat["optimizer.lr"] == 0.001 and flat["optimizer.gamma"] == 0.999
    assert flat["trainer.dtype"] == "float64" and flat["seed"] == 0


NOT_FINITE = [
    (["optimizer.lr=inf"], "optimizer.lr"),
    (["optimizer=adam", "optimizer.eps=inf"], "optimizer.eps"),
    (["loss.scale=inf"], "loss.scale"),
    (["model.init=[nan,1.0]"], "model.init"),
    (["model.init=[inf,1.0]"], "model.init"),
    (["dataset=none", "model=rosenbrock", "loss=surface", "model.a=nan"], "model.a"),
    (["dataset=regression1d", "model=linear", "dataset.noise=inf"], "dataset.noise"),
    (["optimizer=torch", "optimizer.lr=inf"], "optimizer.lr"),
    (["optimizer=torch", "+optimizer.kwargs.eps=inf"], "optimizer.kwargs.eps"),
    (["optimizer=torch", "+optimizer.kwargs.betas=[0.9,nan]"], "optimizer.kwargs.betas"),
    (["trainer.divergence_factor=inf"], "trainer.divergence_factor"),
]


@pytest.mark.parametrize(("overrides", "key"), NOT_FINITE, ids=[" ".join(o) for o, _ in NOT_FINITE])
def test_numbers_that_are_not_finite_are_refused(overrides, key):
    with pytest.raises(ConfigError, match="expected a finite number") as error:
        compose_spec(*overrides)
    assert error.value.key == key


ADDED_KEYS = [
    (["+optimizer.learning_rate=0.1"], "optimizer.learning_rate", "optimizer gd takes lr"),
    (
        ["optimizer=adam", "+optimizer.alpha=0.1"],
        "optimizer.alpha",
        "lr, weight_decay, beta, gamma",
    ),
    (
        ["optimizer=rule", "+optimizer.beta1=0.9"],
        "optimizer.beta1",
        "optimizer.hp of optimizer=rule",
    ),
    (["optimizer=torch", "+optimizer.alpha=0.9"], "optimizer.alpha", "class_name, kwargs"),
    (["+trainer.epoch=3"], "trainer.epoch", "trainer takes steps, epochs"),
    (["+model.envelop=32"], "model.envelop", "model gabor takes init, envelope"),
    (["+sed=1"], "sed", "the run takes dataset, model"),
]


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"), ADDED_KEYS, ids=[" ".join(o) for o, *_ in ADDED_KEYS]
)
def test_keys_added_with_plus_are_refused_outside_free_form_dictionaries(overrides, key, allowed):
    with pytest.raises(ConfigError, match=allowed) as error:
        compose_spec(*overrides)
    assert error.value.key == key


def test_a_torch_optimizers_kwargs_take_added_keys():
    spec = compose_spec("optimizer=torch", "+optimizer.kwargs.weight_decay=0.1")
    assert spec.optimizer.kwargs == {"weight_decay": 0.1}


@pytest.mark.parametrize(
    ("overrides", "budget"),
    [
        ([], (100, None)),
        (["trainer.steps=7"], (7, None)),
        (["trainer.epochs=30"], (None, 30)),
        (["trainer.steps=null", "trainer.epochs=30"], (None, 30)),
        (["trainer.steps=null"], (100, None)),
    ],
)
def test_one_of_steps_and_epochs_is_enough_and_100_steps_the_default(overrides, budget):
    trainer = compose_spec(*overrides).trainer
    assert (trainer.steps, trainer.epochs) == budget


def test_both_steps_and_epochs_are_refused():
    with pytest.raises(ConfigError, match="set one of trainer.steps and trainer.epochs"):
        compose_spec("trainer.steps=100", "trainer.epochs=30")


def test_the_default_budget_is_fingerprinted_as_an_explicit_100_steps():
    explicit = compose_spec("trainer.steps=100", "trainer.epochs=null")
    assert config.fingerprint(compose_spec()) == config.fingerprint(explicit)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["dataset.size=100000000000"], "dataset.size*features"),
        (["dataset.features=100000000"], "dataset.size*features"),
        (["dataset.classes=100000000000"], "dataset.classes"),
    ],
)
def test_absurd_generated_sets_are_refused(overrides, key):
    with pytest.raises(ConfigError) as error:
        compose_spec("dataset=blobs", "model=softmax", "loss=cross_entropy", *overrides)
    assert error.value.key == key


def run_sweep(*args: str) -> int:
    """``python -m harness.sweep`` in this process; returns its exit status."""
    try:
        sweep_cli.main(list(args))
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.parametrize("override", ["optimizer.lr=inf", "+optimizer.learning_rate=0.1"])
def test_both_entry_points_refuse_in_one_line_before_any_run(
    override, run_cli, store_uri, tmp_path, capsys
):
    code, _, err = run_cli(override)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: optimizer.")
    sweep = [f"tracking.uri={store_uri}", f"hydra.sweep.dir={tmp_path}/m", override]
    assert run_sweep("smoke", *sweep) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: optimizer.")
    assert runs_in(store_uri) == runs_in(store_uri, "smoke") == []


def test_a_weight_decay_of_0_keeps_the_identity_runs_had_before_it_existed():
    """Fingerprints recorded before ``optimizer.weight_decay`` existed (harness 1684435): a
    store of those runs resumes; any other weight decay is another run."""
    before = {
        (): "f72d2d2f73b649aa",
        ("optimizer=adam", "+problem=digits_mlp"): "59f16acad11f4571",
        ("optimizer=torch", "optimizer.class_name=RMSprop", "+optimizer.kwargs.alpha=0.9"): (
            "9d7d5ad8b792655b"
        ),
    }
    for overrides, recorded in before.items():
        assert config.fingerprint(compose_spec(*overrides)) == recorded
    decayed = compose_spec("optimizer.weight_decay=0.01")
    assert config.fingerprint(decayed) != before[()]
    assert config.flatten(config.as_dict(compose_spec()))["optimizer.weight_decay"] == 0.0
