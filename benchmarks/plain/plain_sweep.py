"""Plain reference script for the launcher benchmark.

This is what a user would write without the harness: a Hydra app run with Hydra's
default basic launcher and basic sweeper, one ``torch.optim`` training of the
Gabor toy model (Understanding Deep Learning, chapter 6) per job (``optimizer``: sgd,
momentum or adam; ``batch_size=null``: full batch; ``init=null``: a starting point per
seed, uniform over the book's range), and one MLflow run per job with its parameters and
final metrics (no per-step logging). It does not import the ``harness`` package.

Run the full 1000-point grid (10 lr x 10 seeds x 10 starting points, declared in
``conf/plain.yaml``)::

    python benchmarks/plain/plain_sweep.py --multirun \
        tracking_uri=sqlite:////tmp/p/plain.db hydra.sweep.dir=/tmp/p/out

A smaller grid can be given on the command line; it replaces the declared values::

    python benchmarks/plain/plain_sweep.py --multirun \
        tracking_uri=sqlite:////tmp/p/plain.db hydra.sweep.dir=/tmp/p/out \
        lr=0.1 seed=0,1 init='[1,12]'

The 300-point grid of ``make bench`` (three optimizers x ten rates x ten seeds, full batch,
the slide's envelope)::

    python benchmarks/plain/plain_sweep.py --multirun tracking_uri=... hydra.sweep.dir=... \
        optimizer=sgd,momentum,adam lr=0.01,0.02,0.05,0.1,0.2,0.3,0.5,0.8,1.0,1.2 \
        'seed=range(10)' init=null batch_size=null envelope=8.0

Without ``hydra.sweep.dir`` the jobs go under ``$PLAIN_OUT`` (default
``outputs/plain``).
"""

import math
from pathlib import Path

import hydra
import mlflow
import torch
from omegaconf import DictConfig
from torch import nn

DATA = Path(__file__).resolve().parents[2] / "harness/toydata/udl_gabor_toy.csv"


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    rows = [line.split(",") for line in DATA.read_text().splitlines()[1:] if line.strip()]
    x = torch.tensor([float(r[0]) for r in rows], dtype=torch.float64)
    y = torch.tensor([float(r[1]) for r in rows], dtype=torch.float64)
    return x, y


def gabor(phi: torch.Tensor, x: torch.Tensor, envelope: float) -> torch.Tensor:
    z = phi[0] + 0.06 * phi[1] * x
    return torch.sin(z) * torch.exp(-(z**2) / envelope)


def least_squares(phi: torch.Tensor, x: torch.Tensor, y: torch.Tensor, envelope: float):
    return ((gabor(phi, x, envelope) - y) ** 2).sum()


OPTIMIZERS = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "momentum": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def starting_point(cfg: DictConfig, generator: torch.Generator) -> torch.Tensor:
    """``init``, or one drawn uniformly over phi0 in [-10, 10], phi1 in [2.5, 22.5]."""
    if cfg.init is not None:
        return torch.tensor(list(cfg.init), dtype=torch.float64)
    low = torch.tensor([-10.0, 2.5], dtype=torch.float64)
    return low + torch.rand(2, generator=generator, dtype=torch.float64) * 20.0


@hydra.main(version_base="1.3", config_path="conf", config_name="plain")
def main(cfg: DictConfig) -> float:
    x, y = load_data()
    generator = torch.Generator().manual_seed(cfg.seed)
    phi = nn.Parameter(starting_point(cfg, generator))
    optimizer = OPTIMIZERS[cfg.optimizer]([phi], cfg.lr)
    batch_size = cfg.batch_size or len(x)

    losses: list[float] = []
    batches: list[torch.Tensor] = []
    for _ in range(cfg.steps):
        if not batches:  # new epoch: fresh permutation, split into mini-batches
            batches = list(torch.randperm(len(x), generator=generator).split(batch_size))
        idx = batches.pop(0)
        optimizer.zero_grad()
        loss = least_squares(phi, x[idx], y[idx], cfg.envelope)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            full = least_squares(phi, x, y, cfg.envelope).item()
        losses.append(full)  # a diverged run just carries on with inf/nan

    final_loss = losses[-1] if math.isfinite(losses[-1]) else float("nan")
    finite = [v for v in losses if math.isfinite(v)]
    min_loss = min(finite) if finite else float("nan")

    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    with mlflow.start_run():
        mlflow.log_params(
            {
                "optimizer": cfg.optimizer,
                "lr": cfg.lr,
                "seed": cfg.seed,
                "init": None if cfg.init is None else list(cfg.init),
                "steps": cfg.steps,
                "batch_size": cfg.batch_size,
                "envelope": cfg.envelope,
            }
        )
        mlflow.log_metrics({"final_loss": final_loss, "min_loss": min_loss})
    return final_loss


if __name__ == "__main__":
    main()
