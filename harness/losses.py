"""Losses derived by maximum likelihood, one value per run.

Each loss maps model outputs ``f`` of shape (R, N, O) and targets ``y`` of shape (N,) or (R, N)
to a loss of shape (R,), summed over the N points (``reduction: sum``, the book) or averaged
(``mean``); a single run's outputs (N, O) and targets (N,) give a scalar.
``outputs(classes)`` says how many outputs the model must produce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.config import LeastSquaresLossConfig, LossConfig, Option


def _reduce(per_point: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_point.sum(-1) if reduction == "sum" else per_point.mean(-1)


@dataclass(frozen=True)
class LeastSquares:
    """L = scale * reduce_i (f[x_i, phi] - y_i)^2 (Gaussian likelihood, fixed sigma)."""

    reduction: str
    scale: float = 1.0
    targets: tuple[str, ...] = ("regression",)

    def outputs(self, classes: int) -> int:
        return 1

    def __call__(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.scale * _reduce((f[..., 0] - y) ** 2, self.reduction)


@dataclass(frozen=True)
class GaussianNll:
    """The model predicts mu = f_0 and sigma = softplus(f_1) + 1e-6;
    L = reduce_i [0.5 log(2 pi sigma_i^2) + (y_i - mu_i)^2 / (2 sigma_i^2)]."""

    reduction: str
    targets: tuple[str, ...] = ("regression",)

    def outputs(self, classes: int) -> int:
        return 2

    def __call__(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, sigma = f[..., 0], F.softplus(f[..., 1]) + 1e-6
        per_point = 0.5 * math.log(2 * math.pi) + torch.log(sigma) + (y - mu) ** 2 / (2 * sigma**2)
        return _reduce(per_point, self.reduction)


@dataclass(frozen=True)
class BinaryCrossEntropy:
    """lambda = sigmoid(f); L = -reduce_i [(1 - y_i) log(1 - lambda_i) + y_i log lambda_i]."""

    reduction: str
    targets: tuple[str, ...] = ("binary",)

    def outputs(self, classes: int) -> int:
        return 1

    def __call__(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = f[..., 0]
        per_point = F.binary_cross_entropy_with_logits(
            logits, y.to(logits.dtype).expand_as(logits), reduction="none"
        )
        return _reduce(per_point, self.reduction)

    def correct(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((f[..., 0] > 0).long() == y).to(f.dtype)


@dataclass(frozen=True)
class CrossEntropy:
    """Softmax over one output per class: L = reduce_i [-f_{y_i} + log sum_k exp f_k]."""

    reduction: str
    targets: tuple[str, ...] = ("binary", "multiclass")

    def outputs(self, classes: int) -> int:
        return classes

    def __call__(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        points = f.shape[:-1]
        labels = y.expand(points).reshape(-1)
        per_point = F.cross_entropy(f.reshape(-1, f.shape[-1]), labels, reduction="none")
        return _reduce(per_point.view(points), self.reduction)

    def correct(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (f.argmax(-1) == y).to(f.dtype)


@dataclass(frozen=True)
class Surface:
    """The model is itself the loss: L = f(phi)."""

    reduction: str
    targets: tuple[str, ...] = ("none",)

    def outputs(self, classes: int) -> int:
        return 0

    def __call__(self, f: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return f


OPTIONS: dict[str, Option] = {
    "least_squares": Option(
        LeastSquaresLossConfig, lambda cfg: LeastSquares(cfg.reduction, cfg.scale)
    ),
    "gaussian_nll": Option(LossConfig, lambda cfg: GaussianNll(cfg.reduction)),
    "bce": Option(LossConfig, lambda cfg: BinaryCrossEntropy(cfg.reduction)),
    "cross_entropy": Option(LossConfig, lambda cfg: CrossEntropy(cfg.reduction)),
    "surface": Option(LossConfig, lambda cfg: Surface(cfg.reduction)),
}
"""Every loss by name: its schema and ``build(cfg)``."""


def build(cfg: LossConfig):
    """The loss ``cfg`` names."""
    return OPTIONS[cfg.name].build(cfg)
