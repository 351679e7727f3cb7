"""What the datasets, the objective and the solvers share: the model and the training loop."""

import torch
from benchopt import BaseSolver

ENVELOPE = 8.0  # the slide's envelope, the harness's default
STEPS = 200
RATES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.2]


def gabor(phi, x, envelope):
    """f = sin(phi0 + 0.06 phi1 x) exp(-(phi0 + 0.06 phi1 x)^2 / envelope)."""
    z = phi[0] + 0.06 * phi[1] * x
    return torch.sin(z) * torch.exp(-(z**2) / envelope)


def loss(phi, x, y, envelope):
    return ((gabor(phi, x, envelope) - y) ** 2).sum()


def train(make_optimizer, x, y, init):
    """STEPS full-batch steps of ``torch.optim`` from ``init``; the parameters at the end."""
    phi = torch.nn.Parameter(init.clone())
    optimizer = make_optimizer([phi])
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss(phi, x, y, ENVELOPE).backward()
        optimizer.step()
    return phi.detach()


class TorchSolver(BaseSolver):
    """A solver that runs ``optimizer(params)`` (the subclass's ``torch.optim`` choice) from
    the dataset's starting point for STEPS steps, once per learning rate of RATES."""

    parameters = {"lr": RATES}
    sampling_strategy = "run_once"

    def set_objective(self, x, y, init):
        self.x, self.y, self.init = x, y, init

    def run(self, _):
        self.phi = train(self.optimizer, self.x, self.y, self.init)

    def get_result(self):
        return dict(phi=self.phi)
