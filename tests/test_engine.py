"""The engine: batch order, cohort-versus-alone equality, seeds, divergence, schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_spec

from harness import engine, loop, problem, schedules
from harness.config import ConfigError


def curve(result, metric="train_loss"):
    return np.array(result.curves[metric][1])


def test_thirty_samples_in_batches_of_five_make_six_batches_per_epoch():
    order = loop.BatchOrder([0, 1], size=30, batch=5, reshuffle=True, device="cpu")
    assert order.per_epoch == 6
    for epoch in range(3):
        batches = [order.indices(epoch * 6 + k) for k in range(6)]
        assert all(b.shape == (2, 5) for b in batches)
        for run in range(2):
            seen = torch.cat([b[run] for b in batches]).tolist()
            assert sorted(seen) == list(range(30))


def test_last_batch_holds_the_remainder_and_reshuffle_false_keeps_the_order():
    order = loop.BatchOrder([0], size=12, batch=5, reshuffle=False, device="cpu")
    first = [order.indices(k) for k in range(3)]
    assert [b.shape[1] for b in first] == [5, 5, 2]
    second = [order.indices(3 + k) for k in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_reshuffle_draws_a_new_permutation_each_epoch():
    order = loop.BatchOrder([0], size=30, batch=30, reshuffle=True, device="cpu")
    assert not torch.equal(order.indices(0), order.indices(1))


def test_value_and_grad_of_the_pieces_is_the_flat_gradient():
    built = problem.build(compose_spec("dataset=wine", "model=mlp", "loss=cross_entropy"))
    generator = torch.Generator().manual_seed(1)
    theta = torch.stack([built.model.init(generator) for _ in range(3)])
    loss, grad = loop.value_and_grad(built, theta, built.data.x_train, built.data.y_train)
    flat = theta.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        built.loss(flat, built.data.x_train, built.data.y_train).sum(), flat
    )
    torch.testing.assert_close(grad, expected)
    assert loss.shape == (3,)


def test_gradient_descent_first_step_matches_the_hand_computed_gradient():
    """Linear toy data: dL/dphi0 = 2 sum(r), dL/dphi1 = 2 sum(r x), r = phi0 + phi1 x - y."""
    spec = compose_spec(
        "dataset=linear_toy",
        "model=linear",
        "model.init=[1.6,-0.5]",
        "optimizer=gd",
        "optimizer.lr=0.01",
        "trainer.steps=2",
        "tracking.log_every=1",
    )
    result = engine.train_cohort([spec])[0]
    built = problem.build(spec)
    x, y = built.data.x_train[:, 0], built.data.y_train
    phi0, phi1 = 1.6, -0.5
    for step in (1, 2):
        r = phi0 + phi1 * x - y
        phi0, phi1 = phi0 - 0.01 * float(2 * r.sum()), phi1 - 0.01 * float(2 * (r * x).sum())
        assert result.curves["phi0"][1][step] == pytest.approx(phi0)
        assert result.curves["phi1"][1][step] == pytest.approx(phi1)


def test_line_search_reaches_the_linear_minimum_like_the_book():
    spec = compose_spec(
        "dataset=linear_toy",
        "model=linear",
        "model.init=[1.6,-0.5]",
        "optimizer=gd_linesearch",
        "optimizer.max_dist=0.1",
        "trainer.steps=10",
    )
    result = engine.train_cohort([spec])[0]
    built = problem.build(spec)
    x = torch.cat([torch.ones_like(built.data.x_train), built.data.x_train], 1)
    best = torch.linalg.lstsq(x, built.data.y_train.unsqueeze(1)).solution
    residual = x @ best - built.data.y_train.unsqueeze(1)
    assert curve(result)[0] > 10 * float((residual**2).sum())
    assert curve(result)[-1] == pytest.approx(float((residual**2).sum()), rel=0.1)
    assert np.all(np.diff(curve(result)) <= 1e-12)
    assert 0 < max(result.curves["lr"][1]) <= 0.1


GRID = [
    "model.envelope=32",
    "optimizer=momentum",
    "optimizer.beta=0.6",
    "trainer.batch_size=5",
    "trainer.steps=60",
    "schedule=plateau",
    "schedule.patience=2",
    "tracking.log_every=1",
]


def cohort_specs():
    return [
        compose_spec(*GRID, f"optimizer.lr={lr}", f"seed={seed}", f"schedule.factor={factor}")
        for lr, factor in ((0.1, 0.5), (0.6, 0.1), (3.0, 0.5))
        for seed in (0, 1)
    ]


def test_a_run_trains_the_same_alone_and_inside_a_cohort():
    specs = cohort_specs()
    together = engine.train_cohort(specs)
    for spec, shared in zip(specs, together, strict=True):
        alone = engine.train_cohort([spec])[0]
        for metric in ("train_loss", "phi0", "phi1", "lr", "batch_loss"):
            np.testing.assert_allclose(curve(shared, metric), curve(alone, metric), rtol=1e-6)


def test_line_search_acts_per_run_inside_a_cohort():
    base = ["optimizer=gd_linesearch", "trainer.steps=21", "model.envelope=32"]
    specs = [
        compose_spec(*base, "model.init=[-1.5,8.5]", "optimizer.max_dist=2.0"),
        compose_spec(*base, "model.init=[0.5,12.0]", "optimizer.max_dist=0.5"),
    ]
    together = engine.train_cohort(specs)
    for spec, shared in zip(specs, together, strict=True):
        alone = engine.train_cohort([spec])[0]
        np.testing.assert_allclose(curve(shared), curve(alone), rtol=1e-6)
        np.testing.assert_allclose(curve(shared, "lr"), curve(alone, "lr"), rtol=1e-6)


def test_same_configuration_twice_gives_identical_curves_and_seeds_differ():
    spec = compose_spec(*GRID[:5], "trainer.steps=40", "seed=3")
    first, second = engine.train_cohort([spec])[0], engine.train_cohort([spec])[0]
    assert np.array_equal(curve(first), curve(second))
    other = engine.train_cohort([compose_spec(*GRID[:5], "trainer.steps=40", "seed=4")])[0]
    assert not np.array_equal(curve(first), curve(other))


def test_a_diverging_run_stops_and_the_rest_of_its_cohort_goes_on():
    base = [
        "dataset=linear_toy",
        "model=linear",
        "model.init=[1.6,-0.5]",
        "trainer.steps=50",
        "tracking.log_every=1",
    ]
    specs = [compose_spec(*base, "optimizer.lr=0.01"), compose_spec(*base, "optimizer.lr=0.5")]
    calm, wild = engine.train_cohort(specs)
    assert not calm.diverged and len(curve(calm)) == 51
    assert wild.diverged and wild.diverged_step < 50
    assert max(wild.curves["train_loss"][0]) <= wild.diverged_step
    no_factor = compose_spec(
        *base, "optimizer.lr=0.5", "trainer.divergence_factor=null", "trainer.steps=2000"
    )
    overflowed = engine.train_cohort([no_factor])[0]
    assert overflowed.diverged  # an infinite or NaN loss always counts
    assert not math.isfinite(overflowed.curves["train_loss"][1][-1])


def test_cohort_members_must_share_a_structure():
    with pytest.raises(ValueError, match="share everything"):
        engine.train_cohort([compose_spec("optimizer=adam"), compose_spec("optimizer=sgd")])


def test_a_torch_optimizer_trains():
    spec = compose_spec(
        "optimizer=torch",
        "optimizer.class_name=SGD",
        "optimizer.lr=0.01",
        "+optimizer.kwargs.momentum=0.5",
        "model.envelope=32",
        "trainer.steps=20",
    )
    result = engine.train_cohort([spec])[0]
    assert curve(result)[-1] < curve(result)[0]


def test_adam_on_digits_with_an_mlp_reaches_95_percent_test_accuracy():
    spec = compose_spec(
        "dataset=digits",
        "model=mlp",
        "loss=cross_entropy",
        "optimizer=adam",
        "optimizer.lr=0.003",
        "trainer.steps=null",
        "trainer.epochs=30",
        "trainer.batch_size=32",
        "trainer.dtype=float32",
    )
    result = engine.train_cohort([spec])[0]
    assert result.final("test_accuracy") >= 0.95
    assert len(result.curves["train_loss"][0]) == 31  # once per epoch, and at step 0


def test_schedules_match_torch_lr_schedulers():
    like = torch.zeros(1, 1, dtype=torch.float64)

    def ours(name, total=40, **hp):
        schedule = schedules.build(
            name,
            {k: torch.tensor([[float(v)]], dtype=torch.float64) for k, v in hp.items()},
            total,
            like,
        )
        return [float(schedule.factor(step)) for step in range(total)]

    def theirs(make, total=40):
        leaf = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.SGD([leaf], lr=1.0)
        scheduler = make(optimizer)
        values = []
        for _ in range(total):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    lr_scheduler = torch.optim.lr_scheduler
    assert ours("step", step_size=7, factor=0.5) == pytest.approx(
        theirs(lambda o: lr_scheduler.StepLR(o, 7, 0.5))
    )
    assert ours("exponential", factor=0.9) == pytest.approx(
        theirs(lambda o: lr_scheduler.ExponentialLR(o, 0.9))
    )
    assert ours("cosine", min_factor=0.1, warmup_steps=0) == pytest.approx(
        theirs(lambda o: lr_scheduler.CosineAnnealingLR(o, 40, eta_min=0.1))
    )
    warm = ours("warmup_cosine", min_factor=0.0, warmup_steps=4)
    assert warm[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0]) and warm[-1] < 0.01


def test_plateau_matches_torch_reduce_on_plateau():
    losses = [5, 4, 4, 4, 4, 4, 3.9999, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5]
    hp = {"factor": 0.5, "patience": 2, "threshold": 1e-4, "cooldown": 1, "min_factor": 0.2}
    schedule = schedules.build(
        "plateau",
        {k: torch.tensor([[float(v)]], dtype=torch.float64) for k, v in hp.items()},
        100,
        torch.zeros(1, 1),
    )
    leaf = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([leaf], lr=1.0)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=2, threshold=1e-4, cooldown=1, min_lr=0.2
    )
    for loss in losses:
        schedule.observe(torch.tensor([loss]))
        reference.step(loss)
        assert float(schedule.factor(0)) == pytest.approx(optimizer.param_groups[0]["lr"])
    assert float(schedule.factor(0)) < 1


def test_plateau_on_validation_needs_a_validation_split():
    with pytest.raises(ConfigError, match="validation split"):
        compose_spec("schedule=plateau", "schedule.monitor=val")


def test_float32_and_float64_agree_roughly():
    base = ["model.envelope=32", "optimizer=adam", "optimizer.lr=0.05", "trainer.steps=50"]
    single = engine.train_cohort([compose_spec(*base, "trainer.dtype=float32")])[0]
    double = engine.train_cohort([compose_spec(*base, "trainer.dtype=float64")])[0]
    np.testing.assert_allclose(curve(single), curve(double), rtol=1e-3)


@pytest.mark.gpu
def test_cuda_runs_equal_cpu_runs():
    base = ["model.envelope=32", "optimizer=adam", "optimizer.lr=0.05", "trainer.steps=50"]
    cpu = engine.train_cohort([compose_spec(*base, "trainer.device=cpu")])[0]
    gpu = engine.train_cohort([compose_spec(*base, "trainer.device=cuda")])[0]
    assert gpu.device.startswith("cuda")
    np.testing.assert_allclose(curve(gpu), curve(cpu), rtol=1e-6)


def test_a_sink_receives_the_curves_in_chunks_while_training_runs():
    base = [
        "dataset=linear_toy",
        "model=linear",
        "model.init=[1.6,-0.5]",
        "trainer.steps=300",
        "tracking.log_every=1",
    ]
    specs = [compose_spec(*base, "optimizer.lr=0.01"), compose_spec(*base, "optimizer.lr=0.5")]
    received = []
    results = engine.train_cohort(specs, sink=lambda chunks, seconds: received.append(chunks))
    assert len(received) == 300 // loop.FLUSH_EVERY + 1
    for index, result in enumerate(results):
        for metric, (steps, values) in result.curves.items():
            joined_steps = [s for chunk in received for s in chunk[index].get(metric, ([], []))[0]]
            joined = [v for chunk in received for v in chunk[index].get(metric, ([], []))[1]]
            assert joined_steps == steps and joined == values
    assert results[1].diverged
    assert all(s <= results[1].diverged_step for s in results[1].curves["train_loss"][0])


def test_an_mlp_trains_the_same_alone_and_inside_a_cohort():
    base = [
        "dataset=digits",
        "model=mlp",
        "loss=cross_entropy",
        "optimizer=adam",
        "trainer.batch_size=32",
        "trainer.steps=40",
        "tracking.log_every=1",
    ]
    specs = [
        compose_spec(*base, f"optimizer.lr={lr}", f"seed={seed}")
        for lr, seed in ((1e-3, 0), (1e-2, 1), (3e-2, 2))
    ]
    together = engine.train_cohort(specs)
    for spec, shared in zip(specs, together, strict=True):
        alone = engine.train_cohort([spec])[0]
        for metric in ("train_loss", "batch_loss", "val_accuracy"):
            np.testing.assert_allclose(curve(shared, metric), curve(alone, metric), rtol=1e-6)


def test_deterministic_mode_is_set_for_the_run_and_unset_after():
    deterministic = engine.train_cohort([compose_spec("trainer.deterministic=true")])[0]
    assert torch.are_deterministic_algorithms_enabled()
    plain = engine.train_cohort([compose_spec()])[0]
    assert not torch.are_deterministic_algorithms_enabled()
    assert curve(deterministic).tolist() == curve(plain).tolist()


def test_the_last_update_is_checked_for_divergence_too():
    spec = compose_spec("dataset=regression1d", "model=mlp", "optimizer.lr=50", "trainer.steps=1")
    (result,) = engine.train_cohort([spec])
    assert result.diverged and result.diverged_step == 1


def test_a_plateau_cut_applies_to_the_very_next_update():
    spec = compose_spec(
        "optimizer.lr=0.01",
        "schedule=plateau",
        "schedule.patience=0",
        "schedule.threshold=0.99",
        "schedule.factor=0.5",
        "trainer.steps=4",
        "tracking.log_every=1",
    )
    (result,) = engine.train_cohort([spec])
    assert result.curves["lr"][1] == pytest.approx([0.01, 0.005, 0.0025, 0.00125])


def test_the_updates_after_the_last_log_point_are_in_the_batch_loss():
    spec = compose_spec(
        "optimizer=sgd", "trainer.batch_size=5", "trainer.steps=100", "tracking.log_every=30"
    )
    (result,) = engine.train_cohort([spec])
    assert result.curves["batch_loss"][0] == [0, 30, 60, 90, 100]
