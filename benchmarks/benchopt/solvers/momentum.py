"""momentum: 200 full-batch steps of `torch.optim.SGD(params, lr=self.lr, momentum=0.9)`."""

import torch
from benchmark_utils import TorchSolver


class Solver(TorchSolver):
    name = "momentum"

    def optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
