"""The networks of the image problems, as plain ``torch.nn.Module`` classes.

They reach the harness the way a user's own module does (``model=module
model.target=harness.nets.<Class>``, see :mod:`harness.modules`), and take the data's sizes as
``input_shape`` (channels, height, width) and ``outputs`` (classes).

- :class:`SmallCnn`: a small CNN for scikit-learn's 8x8 digits (no download needed).
- :class:`Conv2Dense2`: DeepOBS's ``2c2d`` for MNIST and Fashion-MNIST (Schneider et al.,
  ICLR 2019): two 5x5 convolutions with 32 and 64 channels, each followed by ReLU and a 2x2
  max-pool, then a dense layer of 1024 units and the class outputs.
- :class:`Conv3Dense3`: DeepOBS's ``3c3d`` for CIFAR-10: convolutions of 64 (5x5), 96 (3x3) and
  128 (3x3) channels, each followed by ReLU and a 3x3 max-pool of stride 2, then dense layers
  of 512 and 256 units and the class outputs.

The DeepOBS nets keep its layout, TensorFlow's "same" and "valid" padding included, and its
initialisation (Xavier weights; biases 0.05 in ``2c2d``, 0 in ``3c3d``). DeepOBS also adds an L2
penalty of 0.002 to ``3c3d``'s weights; that belongs to the optimizer's weight decay here and is
left out of the network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _same(size: int, stride: int) -> int:
    """The output size of a "same"-padded window of stride ``stride``: ceil(size / stride)."""
    return math.ceil(size / stride)


class SamePool(nn.Module):
    """Max-pooling with TensorFlow's "same" padding: the output is ceil(size / stride) wide,
    the missing border (on the right and bottom first) padded with -inf."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pads = []
        for size in (width, height):
            total = max((_same(size, self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=-math.inf), self.kernel, self.stride)


class SmallCnn(nn.Module):
    """3x3 convolution to 8 channels, ReLU; 3x3 convolution of stride 2 to 16 channels, ReLU;
    dense 32, ReLU; dense ``outputs``. About 10 000 parameters for 8x8 digits. Strided
    convolution instead of max-pooling keeps a cohort fast on a CPU (batched pooling is not)."""

    def __init__(self, input_shape: tuple[int, int, int], outputs: int):
        super().__init__()
        channels, height, width = input_shape
        flat = 16 * _same(height, 2) * _same(width, 2)
        self.layers = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(flat, 32),
            nn.ReLU(),
            nn.Linear(32, outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _initialise(net: nn.Module, bias: float) -> None:
    """Xavier-normal convolutions, Xavier-uniform dense layers, constant biases."""
    for layer in net.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_normal_(layer.weight)
            nn.init.constant_(layer.bias, bias)
        elif isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, bias)


class Conv2Dense2(nn.Module):
    """DeepOBS's ``2c2d`` (see the module docstring): 3.3 million parameters on MNIST."""

    def __init__(self, input_shape: tuple[int, int, int], outputs: int):
        super().__init__()
        channels, height, width = input_shape
        flat = 64 * _same(_same(height, 2), 2) * _same(_same(width, 2), 2)
        self.layers = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2),
            nn.ReLU(),
            SamePool(2, 2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            SamePool(2, 2),
            nn.Flatten(),
            nn.Linear(flat, 1024),
            nn.ReLU(),
            nn.Linear(1024, outputs),
        )
        _initialise(self, 0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Conv3Dense3(nn.Module):
    """DeepOBS's ``3c3d`` (see the module docstring): 0.9 million parameters on CIFAR-10."""

    def __init__(self, input_shape: tuple[int, int, int], outputs: int):
        super().__init__()
        channels, height, width = input_shape
        sizes = [height, width]
        for kernel, padding in ((5, "valid"), (3, "valid"), (3, "same")):
            sizes = [s - kernel + 1 if padding == "valid" else s for s in sizes]
            sizes = [_same(s, 2) for s in sizes]  # the pool after each convolution
        self.layers = nn.Sequential(
            nn.Conv2d(channels, 64, 5),
            nn.ReLU(),
            SamePool(3, 2),
            nn.Conv2d(64, 96, 3),
            nn.ReLU(),
            SamePool(3, 2),
            nn.Conv2d(96, 128, 3, padding=1),
            nn.ReLU(),
            SamePool(3, 2),
            nn.Flatten(),
            nn.Linear(128 * sizes[0] * sizes[1], 512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Linear(256, outputs),
        )
        _initialise(self, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
