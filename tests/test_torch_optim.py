"""Any torch.optim.Optimizer as a cohort rule: one parameter group per run (or per set of runs
an element-wise class can share), checked against each run trained alone."""

from __future__ import annotations

import pytest
import torch

from harness import engine, torch_optim
from harness import problem as problem_module
from harness.compose import compose_spec
from harness.config import ConfigError, TorchOptimizerConfig

BASE = (
    "+problem=digits_mlp",
    "optimizer=torch",
    "trainer.dtype=float64",
    "trainer.device=cpu",
    "trainer.epochs=null",
    "trainer.steps=40",
    "trainer.eval_every=5",
)


def specs_of(class_name: str, *grid: tuple[str, ...], extra: tuple[str, ...] = ()):
    return [
        compose_spec(*BASE, f"optimizer.class_name={class_name}", *extra, *point) for point in grid
    ]


def assert_alone_equals_cohort(specs) -> None:
    """Every run of ``specs`` trained as one cohort equals it trained alone: final parameters
    and every curve within 1e-6 relative (float64)."""
    problem = problem_module.build(specs[0])
    together = engine.train_cohort(specs, problem)
    for spec, ours in zip(specs, together, strict=True):
        (alone,) = engine.train_cohort([spec], problem)
        torch.testing.assert_close(ours.final_params, alone.final_params, rtol=1e-6, atol=1e-12)
        assert ours.curves.keys() == alone.curves.keys()
        for metric, (steps, values) in alone.curves.items():
            assert ours.curves[metric][0] == steps, metric
            torch.testing.assert_close(
                torch.tensor(ours.curves[metric][1]), torch.tensor(values), rtol=1e-6, atol=1e-12
            )
        assert ours.final_params.ne(spec_start(spec, problem)).any()  # it trained


def spec_start(spec, problem):
    return engine.initial_parameters([spec], problem.model)[0]


# interleaved, so that runs sharing a group are not side by side in the cohort
COHORTS = {
    "SGD": [
        ("optimizer.lr=0.05", "+optimizer.kwargs.momentum=0.9", "seed=0"),
        ("optimizer.lr=0.01", "+optimizer.kwargs.momentum=0.5", "seed=1"),
        ("optimizer.lr=0.05", "+optimizer.kwargs.momentum=0.9", "seed=2"),
    ],
    "Adam": [
        ("optimizer.lr=0.003", "+optimizer.kwargs.betas=[0.9,0.999]", "seed=0"),
        ("optimizer.lr=0.001", "+optimizer.kwargs.betas=[0.5,0.99]", "seed=1"),
        ("optimizer.lr=0.003", "+optimizer.kwargs.betas=[0.9,0.999]", "seed=2"),
        ("optimizer.lr=0.003", "+optimizer.kwargs.betas=[0.5,0.99]", "seed=3"),
    ],
    "RMSprop": [
        ("optimizer.lr=0.001", "+optimizer.kwargs.alpha=0.9", "seed=0"),
        ("optimizer.lr=0.003", "+optimizer.kwargs.alpha=0.99", "seed=1"),
        ("optimizer.lr=0.001", "+optimizer.kwargs.alpha=0.9", "seed=2"),
    ],
    "Adagrad": [
        ("optimizer.lr=0.05", "+optimizer.kwargs.lr_decay=0.01", "seed=0"),
        ("optimizer.lr=0.01", "+optimizer.kwargs.lr_decay=0.0", "seed=1"),
    ],
    # not element-wise: a group per run, the model's shapes
    "Adafactor": [("optimizer.lr=0.01", "seed=0"), ("optimizer.lr=0.03", "seed=1")],
    "user_optim.SignSgd": [
        ("optimizer.lr=0.001", "+optimizer.kwargs.scale=1.0", "seed=0"),
        ("optimizer.lr=0.001", "+optimizer.kwargs.scale=2.0", "seed=1"),
    ],
}


@pytest.mark.parametrize("class_name", sorted(COHORTS))
def test_a_cohort_of_torch_optimizers_trains_each_run_as_it_trains_alone(class_name):
    specs = specs_of(class_name, *COHORTS[class_name])
    assert len({engine.cohort_key(spec) for spec in specs}) == 1  # one cohort
    assert_alone_equals_cohort(specs)


@pytest.mark.parametrize(
    "schedule", [("schedule=cosine",), ("schedule=plateau", "schedule.patience=0")]
)
def test_scheduled_learning_rates_reach_each_runs_group(schedule):
    """A plateau cuts each run's rate on its own losses: runs of equal settings then part."""
    grid = [("optimizer.lr=0.003", f"seed={seed}") for seed in range(3)]
    assert_alone_equals_cohort(specs_of("RMSprop", *grid, extra=schedule))


def test_element_wise_classes_share_groups_and_others_keep_the_models_shapes():
    spec = compose_spec(*BASE)
    shapes = problem_module.build(spec).model.shapes
    configs = [
        TorchOptimizerConfig(name="torch", class_name="RMSprop", lr=lr, kwargs={"alpha": alpha})
        for lr, alpha in ((1e-3, 0.9), (1e-3, 0.99), (1e-3, 0.9), (2e-3, 0.9))
    ]
    keys = [c.lr for c in configs]
    assert torch_optim.run_groups(configs, keys, torch.optim.RMSprop) == [[0, 2], [1], [3]]
    assert torch_optim.run_groups(configs, [0, 1, 2, 3], torch.optim.RMSprop) == [
        [0],
        [1],
        [2],
        [3],
    ]
    size = sum(torch.Size(shape).numel() for shape in shapes)
    state = torch_optim.build(configs, shapes, keys).init(torch.zeros(4, size))
    assert [[tuple(p.shape) for p in g["params"]] for g in state.optimizer.param_groups] == [
        [(2, size)],
        [(1, size)],
        [(1, size)],
    ]
    assert [g["alpha"] for g in state.optimizer.param_groups] == [0.9, 0.99, 0.9]
    rule = torch_optim.build(configs[:1] * 2, shapes, [0, 0])  # told: always the same rate
    params = torch.zeros(2, size)
    with pytest.raises(RuntimeError, match="different learning rates"):
        rule.update(params, rule.init(params), params, {}, torch.tensor([[1e-3], [2e-3]]), None)
    factored = [TorchOptimizerConfig(name="torch", class_name="Adafactor")] * 2
    state = torch_optim.build(factored, shapes, [0, 0]).init(torch.zeros(2, size))
    assert len(state.optimizer.param_groups) == 2
    assert [tuple(p.shape) for p in state.optimizer.param_groups[1]["params"]] == list(shapes)


def test_every_usable_torch_optimizer_trains_a_cohort():
    names = torch_optim.torch_optimizers().keys() - torch_optim.UNUSABLE.keys()
    assert {"SGD", "Adam", "AdamW", "RMSprop", "Adafactor"} <= names and "Optimizer" not in names
    for name in sorted(names):
        specs = [
            compose_spec(
                "optimizer=torch", f"optimizer.class_name={name}", f"seed={seed}", "trainer.steps=3"
            )
            for seed in range(2)
        ]
        for result in engine.train_cohort(specs):
            assert torch.isfinite(result.final_params).all(), name
            assert not result.diverged, name


REFUSED = [
    (
        ["optimizer.class_name=Optimizer"],
        "optimizer.class_name",
        "expected a torch.optim optimizer",
    ),
    (["optimizer.class_name=SparseAdam"], "optimizer.class_name", "sparse gradients only"),
    (["optimizer.class_name=LBFGS"], "optimizer.class_name", "use gd_linesearch"),
    (["optimizer.class_name=Muon"], "optimizer.class_name", "2-D parameters only"),
    (["optimizer.class_name=user_optim.NeedsClosure"], "optimizer.class_name", "needs a closure"),
    (["optimizer.class_name=no_such_pkg.Opt"], "optimizer.class_name", "cannot be imported"),
    (["optimizer.class_name=user_optim.Missing"], "optimizer.class_name", "no attribute Missing"),
    (
        ["optimizer.class_name=user_optim.scaled_sgd"],
        "optimizer.class_name",
        "a rule goes with optimizer=rule",
    ),
    (["optimizer.class_name=torch.nn.Linear"], "optimizer.class_name", "Optimizer subclass"),
    (["optimizer.class_name=user_optim.NoLearningRate"], "optimizer.class_name", "takes lr"),
    (
        ["optimizer.class_name=SGD", "+optimizer.kwargs.momentum_typo=0.9"],
        "optimizer.kwargs.momentum_typo",
        "SGD takes",
    ),
    (
        ["optimizer.class_name=user_optim.SignSgd", "+optimizer.kwargs.alpha=0.9"],
        "optimizer.kwargs.alpha",
        "SignSgd takes scale",
    ),
    (["+optimizer.kwargs.lr=0.1"], "optimizer.kwargs.lr", "as optimizer.lr"),
    (
        ["optimizer.class_name=Adam", "+optimizer.kwargs.betas=[0.9,1.5]"],
        "optimizer.kwargs",
        "Invalid beta parameter",
    ),
    (["+optimizer.kwargs.weight_decay=lots"], "optimizer.kwargs", "AdamW refuses them"),
]


@pytest.mark.parametrize(("overrides", "key", "message"), REFUSED, ids=[r[0][-1] for r in REFUSED])
def test_a_torch_optimizer_that_cannot_train_is_refused(overrides, key, message):
    with pytest.raises(ConfigError, match=message) as error:
        compose_spec("optimizer=torch", *overrides)
    assert error.value.key == key


def test_a_torch_optimizer_from_an_import_path_is_recorded_by_its_path():
    spec = compose_spec("optimizer=torch", "optimizer.class_name=user_optim.SignSgd")
    assert spec.optimizer.class_name == "user_optim.SignSgd"
    assert torch_optim.optimizer_class("RMSprop") is torch.optim.RMSprop
