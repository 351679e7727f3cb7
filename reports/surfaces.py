"""Loss surfaces of two-parameter problems (linear regression, the Gabor model, the demo
surfaces) on a grid of (phi0, phi1), computed by the harness's own problem code as one batch of
parameter vectors; and the ranges the book plots them over."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from harness import config
from harness import problem as problem_module
from harness.compose import compose_spec

BOOK_RANGES = {"linear": ((0.0, 2.0), (-1.0, 1.0)), "gabor": ((-10.0, 10.0), (2.5, 22.5))}
GROUPS = ("dataset", "model", "loss")


def spec_of(run: pd.Series) -> config.RunConfig:
    """The run's dataset, model and loss, recomposed from its params (other groups default)."""
    overrides = [f"{group}={run[f'{group}.name']}" for group in GROUPS]
    for key, value in run.items():
        group, _, name = str(key).partition(".")
        if group in GROUPS and name not in ("name", "init") and not pd.isna(value):
            overrides.append(f"{key}={value}")
    return compose_spec(*overrides)


def plot_range(spec: config.RunConfig, runs: pd.DataFrame):
    """The book's range for linear and Gabor models, else the trajectories' extent + 10%."""
    if spec.model.name in BOOK_RANGES:
        return BOOK_RANGES[spec.model.name]
    spans = []
    for column in ("phi0", "phi1"):
        low, high = runs[column].min(), runs[column].max()
        pad = 0.1 * (high - low) or 1.0
        spans.append((low - pad, high + pad))
    return tuple(spans)


def losses(spec: config.RunConfig, theta: np.ndarray) -> np.ndarray:
    """The training loss at each row of ``theta`` (N, 2), as one batch of N parameter vectors."""
    problem = problem_module.build(spec).on(torch.device("cpu"), torch.float64)
    with torch.no_grad():
        return problem.evaluate(torch.as_tensor(theta, dtype=torch.float64), "train")[
            "loss"
        ].numpy()


def loss_grid(spec: config.RunConfig, phi0: np.ndarray, phi1: np.ndarray) -> np.ndarray:
    """The training loss at every (phi0[j], phi1[i]), shape (len(phi1), len(phi0))."""
    grid0, grid1 = np.meshgrid(phi0, phi1)
    return losses(spec, np.stack([grid0.ravel(), grid1.ravel()], axis=1)).reshape(grid0.shape)


def loss_at(spec: config.RunConfig, phi: np.ndarray) -> float:
    return float(losses(spec, np.asarray(phi, dtype=float).reshape(1, 2))[0])


def training_data(spec: config.RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """The training split's inputs (N, features) and targets (N,)."""
    data = problem_module.build(spec).data
    return data.x_train.numpy(), data.y_train.numpy().reshape(len(data.x_train))
