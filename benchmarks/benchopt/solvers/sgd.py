"""sgd: 200 full-batch steps of `torch.optim.SGD(params, lr=self.lr)`."""

import torch
from benchmark_utils import TorchSolver


class Solver(TorchSolver):
    name = "sgd"

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr)
