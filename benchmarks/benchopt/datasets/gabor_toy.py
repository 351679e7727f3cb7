"""The lecture's 30 Gabor points (the harness's ``harness/toydata/udl_gabor_toy.csv``) and a
starting point per seed, uniform over the book's range (phi0 in [-10, 10], phi1 in [2.5,
22.5])."""

from pathlib import Path

import torch
from benchopt import BaseDataset

DATA = Path(__file__).resolve().parents[3] / "harness" / "toydata" / "udl_gabor_toy.csv"


class Dataset(BaseDataset):
    name = "gabor_toy"
    parameters = {"seed": list(range(10))}

    def get_data(self):
        rows = [line.split(",") for line in DATA.read_text().splitlines()[1:] if line.strip()]
        x = torch.tensor([float(r[0]) for r in rows], dtype=torch.float64)
        y = torch.tensor([float(r[1]) for r in rows], dtype=torch.float64)
        generator = torch.Generator().manual_seed(self.seed)
        low = torch.tensor([-10.0, 2.5], dtype=torch.float64)
        init = low + torch.rand(2, generator=generator, dtype=torch.float64) * 20.0
        return dict(x=x, y=y, init=init)
