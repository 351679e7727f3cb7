"""Modules as a user would write them, for the tests of ``model=module`` (importable as
``user_nets``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn


class TinyMlp(nn.Module):
    """An MLP taking the flat input size and the outputs from the harness (flattening the
    examples, which come in their ``input_shape``: (1, 8, 8) for digits)."""

    def __init__(self, inputs: int, outputs: int, width: int = 16):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(inputs, width), nn.Tanh(), nn.Linear(width, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TinyCnn(nn.Module):
    """A CNN with max-pooling, for images of ``input_shape``."""

    def __init__(self, input_shape: tuple[int, int, int], outputs: int, channels: int = 4):
        super().__init__()
        c, h, w = input_shape
        self.layers = nn.Sequential(
            nn.Conv2d(c, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(channels * (h // 2) * (w // 2), outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class NormedMlp(nn.Module):
    """An MLP with BatchNorm (buffers: running statistics)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(inputs, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DroppedMlp(nn.Module):
    """An MLP with Dropout (a random layer)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(inputs, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ThreeOutputs(nn.Module):
    """Always three outputs, whatever the data."""

    def __init__(self, inputs: int):
        super().__init__()
        self.linear = nn.Linear(inputs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class NeedsDepth(nn.Module):
    """A constructor argument the harness cannot fill in."""

    def __init__(self, inputs: int, outputs: int, depth: int):
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class NotAModule:
    """A class that is not a torch.nn.Module."""


class TiedMlp(nn.Module):
    """Two hidden layers sharing one weight matrix (a tied parameter)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.embed = nn.Linear(inputs, 12)
        self.first, self.second = nn.Linear(12, 12), nn.Linear(12, 12)
        self.second.weight = self.first.weight
        self.head = nn.Linear(12, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x.flatten(1)))
        return self.head(torch.tanh(self.second(torch.tanh(self.first(h)))))
