"""adam: 200 full-batch steps of `torch.optim.Adam(params, lr=self.lr)`."""

import torch
from benchmark_utils import TorchSolver


class Solver(TorchSolver):
    name = "adam"

    def optimizer(self, params):
        return torch.optim.Adam(params, lr=self.lr)
