"""Any torch.nn.Module as a model (``model=module``): cohorts equal lone runs, a lone run is a
plain PyTorch model's training, BatchNorm and Dropout train alone with their own streams, bad
modules are refused before anything trains, and the digits CNN learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import user_nets
from conftest import runs_in

from harness import engine, loop
from harness import problem as problem_module
from harness.compose import compose_spec
from harness.config import ConfigError
from harness.sweep import cli

DIGITS = ("dataset=digits", "loss=cross_entropy", "model=module")


def module_specs(target: str, seeds_and_rates, *extra: str):
    """Float64 specs of ``target`` on digits, mini-batches of 32, one per (seed, lr)."""
    return [
        compose_spec(
            *DIGITS,
            f"model.target={target}",
            "optimizer=momentum",
            f"optimizer.lr={lr}",
            f"seed={seed}",
            "trainer.batch_size=32",
            "trainer.steps=30",
            "trainer.eval_every=10",
            *extra,
        )
        for seed, lr in seeds_and_rates
    ]


def assert_same_curves(one, other, rtol=1e-6):
    assert one.curves.keys() == other.curves.keys()
    for name, (steps, values) in one.curves.items():
        other_steps, other_values = other.curves[name]
        assert steps == other_steps, name
        np.testing.assert_allclose(values, other_values, rtol=rtol, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(
    "target",
    ["user_nets.TinyMlp", "user_nets.TinyCnn", "user_nets.TiedMlp", "harness.nets.SmallCnn"],
)
def test_a_cohort_of_modules_trains_each_run_as_it_trains_alone(target):
    specs = module_specs(target, [(0, 0.05), (1, 0.05), (2, 0.2), (0, 0.2)])
    problem = problem_module.build(specs[0])
    together = engine.train_cohort(specs, problem)
    assert {r.cohort_size for r in together} == {4}
    for spec, batched in zip(specs, together, strict=True):
        alone = engine.train_cohort([spec], problem)[0]
        assert_same_curves(batched, alone)
        torch.testing.assert_close(batched.final_params, alone.final_params, rtol=1e-6, atol=0)
    assert "val_accuracy" in together[0].curves
    # each run starts from its own seed's module: runs 0 and 3 share seed 0, not run 1
    starts = engine.initial_parameters(specs, problem.model)
    assert torch.equal(starts[0], starts[3]) and not torch.equal(starts[0], starts[1])


def test_a_lone_run_is_a_plain_pytorch_training_of_the_module():
    (spec,) = module_specs("user_nets.TinyCnn", [(3, 0.1)], "optimizer=sgd")
    problem = problem_module.build(spec)
    result = engine.train_cohort([spec], problem)[0]

    torch.manual_seed(engine.derive_seed(3, "init"))
    net = user_nets.TinyCnn((1, 8, 8), 10).double()
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    data = problem.data
    order = loop.BatchOrder([3], data.sizes["train"], 32, True, torch.device("cpu"))
    for step in range(30):
        index = order.indices(step)[0]
        loss = F.cross_entropy(net(data.x_train[index].reshape(-1, 1, 8, 8)), data.y_train[index])
        sgd.zero_grad()
        loss.backward()
        sgd.step()
    plain = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(result.final_params, plain, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        accuracy = (net(data.x_test.reshape(-1, 1, 8, 8)).argmax(1) == data.y_test).double()
    assert result.final("test_accuracy") == pytest.approx(accuracy.mean().item(), rel=1e-12)


def test_the_module_learns_the_data_sizes_and_its_kwargs():
    (spec,) = module_specs("user_nets.TinyMlp", [(0, 0.1)], "+model.kwargs.width=7")
    model = problem_module.build(spec).model
    assert model.arguments == {"inputs": 64, "outputs": 10, "width": 7}
    assert model.shapes == ((7, 64), (7,), (10, 7), (10,))
    (cnn,) = module_specs("user_nets.TinyCnn", [(0, 0.1)])
    assert problem_module.build(cnn).model.arguments["input_shape"] == (1, 8, 8)


def test_evaluation_in_passes_gives_the_whole_splits_outputs():
    specs = module_specs("user_nets.TinyCnn", [(0, 0.1), (1, 0.1)])
    problem = problem_module.build(specs[0])
    theta = engine.initial_parameters(specs, problem.model)
    assert problem.model.eval_batch(2) >= problem.data.sizes["test"]
    whole = problem.evaluate(theta, "test")
    problem.model.eval_values = 2 * problem.model.activations * 7
    assert problem.model.eval_batch(2) == 7
    for name, value in problem.evaluate(theta, "test").items():
        torch.testing.assert_close(value, whole[name], rtol=1e-12, atol=0)


@pytest.mark.parametrize("target", ["user_nets.NormedMlp", "user_nets.DroppedMlp"])
def test_buffers_and_random_layers_train_alone_and_depend_on_their_seed_alone(target):
    specs = module_specs(target, [(0, 0.1), (1, 0.1)])
    problem = problem_module.build(specs[0])
    assert problem.model.trains_alone
    with pytest.raises(ValueError, match="train one at a time"):
        engine.train_cohort(specs, problem)
    state = torch.get_rng_state()
    first = engine.train_cohort(specs[:1], problem)[0]
    other = engine.train_cohort(specs[1:], problem)[0]
    again = engine.train_cohort(specs[:1], problem)[0]
    assert torch.equal(torch.get_rng_state(), state)  # the global stream is left as it was
    assert_same_curves(first, again, rtol=0)
    assert first.final("val_loss") != other.final("val_loss")


def test_evaluation_leaves_batchnorm_statistics_alone_and_uses_them():
    (spec,) = module_specs("user_nets.NormedMlp", [(0, 0.1)])
    problem = problem_module.build(spec)
    result = engine.train_cohort([spec], problem)[0]
    norm = problem.model.module.layers[2]
    before = norm.running_mean.clone()
    theta = result.final_params.unsqueeze(0).double()
    once = problem.evaluate(theta, "val")["loss"]
    assert torch.equal(norm.running_mean, before)
    assert torch.equal(problem.evaluate(theta, "val")["loss"], once)


@pytest.mark.parametrize(
    ("overrides", "key", "message"),
    [
        (["model.target=user_nets.Missing"], "model.target", "has no attribute Missing"),
        (["model.target=no_such_package.Net"], "model.target", "cannot be imported"),
        (["model.target=user_nets.NotAModule"], "model.target", "torch.nn.Module subclass"),
        ([], "model.target", "expected the import path"),
        (["model.target=user_nets.NeedsDepth"], "model.kwargs", "missing a required argument"),
        (
            ["model.target=user_nets.TinyMlp", "+model.kwargs.depth=3"],
            "model.kwargs",
            "unexpected keyword argument 'depth'",
        ),
        (
            ["model.target=user_nets.TinyMlp", "+model.kwargs.width=-1"],
            "model.kwargs",
            "fails to build",
        ),
        (["model.target=user_nets.ThreeOutputs"], "model.target", r"shape \(3,\).*needs \(10,\)"),
        (
            ["model.target=user_nets.ThreeOutputs", "dataset=diabetes", "loss=least_squares"],
            "model.target",
            r"shape \(3,\).*needs \(1,\)",
        ),
        (
            ["model.target=harness.nets.SmallCnn", "dataset=breast_cancer", "loss=bce"],
            "model.target",
            r"SmallCnn\(input_shape=\(30,\), outputs=1\) fails to build for examples of shape",
        ),
    ],
)
def test_a_module_that_cannot_be_trained_is_refused_by_key(overrides, key, message):
    spec = compose_spec(*DIGITS, *overrides)
    with pytest.raises(ConfigError, match=message) as refused:
        problem_module.build(spec)
    assert refused.value.key == key


def test_a_bad_module_on_the_command_line_is_one_line_and_no_run(run_cli, store_uri):
    code, _, err = run_cli(*DIGITS, "model.target=user_nets.ThreeOutputs")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: model.target='user_nets.ThreeOutputs' is not allowed")
    assert runs_in(store_uri) == []


def test_a_sweep_trains_modules_as_cohorts_and_says_once_which_train_alone(
    tmp_path, store_uri, capsys
):
    args = [
        "cnn",
        "model=module",
        "model.target=user_nets.TinyMlp,user_nets.NormedMlp",
        "optimizer=adam",
        "optimizer.lr=0.01",
        "seed=0,1",
        "trainer.epochs=null",
        "trainer.steps=5",
        "trainer.batch_size=16",
        f"tracking.uri={store_uri}",
        f"hydra.sweep.dir={tmp_path}",
    ]
    try:
        cli.main(args)
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert "108 points" not in out and "4 points" in out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: 2 point(s) train one run at a time, not in cohorts: "
        "model user_nets.NormedMlp has buffers (e.g. BatchNorm's running statistics)"
    ]
    runs = runs_in(store_uri, "cnn")
    sizes = {
        (r.data.params["model.target"], r.data.params["seed"]): r.data.tags["cohort_size"]
        for r in runs
        if "model.target" in r.data.params
    }
    assert sizes == {
        ("user_nets.TinyMlp", "0"): "2",
        ("user_nets.TinyMlp", "1"): "2",
        ("user_nets.NormedMlp", "0"): "1",
        ("user_nets.NormedMlp", "1"): "1",
    }


def test_the_digits_cnn_with_adam_at_its_defaults_reaches_97_percent_test_accuracy():
    spec = compose_spec("+problem=digits_cnn", "optimizer=adam")
    result = engine.train_cohort([spec])[0]
    assert result.final("test_accuracy") >= 0.97


@pytest.mark.gpu
def test_a_module_cohort_on_the_gpu_equals_the_cpus():
    rates = [(0, 0.05), (1, 0.1), (2, 0.2)]
    cpu = engine.train_cohort(module_specs("user_nets.TinyCnn", rates, "trainer.device=cpu"))
    gpu = engine.train_cohort(module_specs("user_nets.TinyCnn", rates, "trainer.device=cuda"))
    for on_cpu, on_gpu in zip(cpu, gpu, strict=True):
        assert on_gpu.device.startswith("cuda") and on_gpu.cohort_size == 3
        assert_same_curves(on_gpu, on_cpu, rtol=1e-6)


@pytest.mark.gpu
def test_a_sweep_places_module_cohorts_on_the_gpu(tmp_path, store_uri):
    args = ["cnn", "optimizer=adam", "seed=0,1", "trainer.epochs=2", "trainer.device=auto"]
    args += [f"tracking.uri={store_uri}", f"hydra.sweep.dir={tmp_path}"]
    try:
        cli.main(args)
    except SystemExit as exit_:
        assert exit_.code == 0
    runs = runs_in(store_uri, "cnn")
    assert len(runs) == 18 and {r.data.tags["device"] for r in runs} <= {
        f"cuda:{i}" for i in range(torch.cuda.device_count())
    }
