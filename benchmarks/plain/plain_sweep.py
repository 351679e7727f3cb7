"""Plain reference script for the launcher benchmark.

This is what a user would write without the harness: a Hydra app run with Hydra's
default basic launcher and basic sweeper, one ``torch.optim.SGD`` training of the
Gabor toy model (Understanding Deep Learning, chapter 6) per job, and one MLflow run
per job with its parameters and final metrics (no per-step logging). It does not
import the ``harness`` package.

Run the full 1000-point grid (10 lr x 10 seeds x 10 starting points, declared in
``conf/plain.yaml``)::

    python benchmarks/plain/plain_sweep.py --multirun \
        tracking_uri=sqlite:////tmp/p/plain.db hydra.sweep.dir=/tmp/p/out

A smaller grid can be given on the command line; it replaces the declared values::

    python benchmarks/plain/plain_sweep.py --multirun \
        tracking_uri=sqlite:////tmp/p/plain.db hydra.sweep.dir=/tmp/p/out \
        lr=0.1 seed=0,1 init='[1,12]'

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


@hydra.main(version_base="1.3", config_path="conf", config_name="plain")
def main(cfg: DictConfig) -> float:
    x, y = load_data()
    phi = nn.Parameter(torch.tensor(list(cfg.init), dtype=torch.float64))
    optimizer = torch.optim.SGD([phi], lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)

    losses: list[float] = []
    batches: list[torch.Tensor] = []
    for _ in range(cfg.steps):
        if not batches:  # new epoch: fresh permutation, split into mini-batches
            batches = list(torch.randperm(len(x), generator=generator).split(cfg.batch_size))
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
                "lr": cfg.lr,
                "seed": cfg.seed,
                "init": list(cfg.init),
                "steps": cfg.steps,
                "batch_size": cfg.batch_size,
                "envelope": cfg.envelope,
            }
        )
        mlflow.log_metrics({"final_loss": final_loss, "min_loss": min_loss})
    return final_loss


if __name__ == "__main__":
    main()
