"""The image problems' networks: DeepOBS's 2c2d and 3c3d layouts, and the digits CNN."""

from __future__ import annotations

import pytest
import torch

from harness import nets
from harness.compose import compose_spec


@pytest.mark.parametrize(
    ("net", "input_shape", "parameters"),
    [
        # 2c2d: conv 1->32 5x5, conv 32->64 5x5, dense 7*7*64 -> 1024 -> 10
        (nets.Conv2Dense2, (1, 28, 28), 832 + 51_264 + 3_212_288 + 10_250),
        # 3c3d: conv 3->64 5x5, 64->96 3x3, 96->128 3x3, dense 3*3*128 -> 512 -> 256 -> 10
        (nets.Conv3Dense3, (3, 32, 32), 4_864 + 55_392 + 110_720 + 590_336 + 131_328 + 2_570),
        (nets.SmallCnn, (1, 8, 8), 80 + 1_168 + 8_224 + 330),
    ],
)
def test_each_network_has_its_papers_layout(net, input_shape, parameters):
    module = net(input_shape, 10)
    assert sum(p.numel() for p in module.parameters()) == parameters
    assert module(torch.zeros(5, *input_shape)).shape == (5, 10)


def test_same_pooling_pads_like_tensorflow():
    pool = nets.SamePool(3, 2)
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    # out = ceil(6 / 2) = 3 per side; padding 1 on the right and bottom only
    assert pool(x).tolist() == [[[[14.0, 16.0, 17.0], [26.0, 28.0, 29.0], [32.0, 34.0, 35.0]]]]


def test_the_deepobs_initialisation():
    module = nets.Conv2Dense2((1, 28, 28), 10)
    conv, dense = module.layers[0], module.layers[7]
    assert torch.all(conv.bias == 0.05) and torch.all(dense.bias == 0.05)
    bound = (6 / (3136 + 1024)) ** 0.5  # Xavier uniform
    assert dense.weight.abs().max() <= bound
    assert torch.all(nets.Conv3Dense3((3, 32, 32), 10).layers[0].bias == 0)


@pytest.mark.parametrize(
    ("problem", "dataset", "target"),
    [
        ("digits_cnn", "digits", "harness.nets.SmallCnn"),
        ("mnist_2c2d", "mnist", "harness.nets.Conv2Dense2"),
        ("fmnist_2c2d", "fashion_mnist", "harness.nets.Conv2Dense2"),
        ("cifar10_3c3d", "cifar10", "harness.nets.Conv3Dense3"),
    ],
)
def test_the_image_problems_take_deepobs_settings(problem, dataset, target):
    assert compose_spec(f"+problem={problem}", "optimizer=adam").optimizer.name == "adam"
    spec = compose_spec(f"+problem={problem}")
    assert spec.optimizer.name == "sgd"
    assert (spec.dataset.name, spec.model.name, spec.model.target) == (dataset, "module", target)
    assert (spec.loss.name, spec.loss.reduction) == ("cross_entropy", "mean")
    assert spec.trainer.batch_size == 128 and spec.trainer.dtype == "float32"
    assert spec.dataset.val_fraction > 0
