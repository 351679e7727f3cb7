"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2), as a
rule of the harness: ``optimizer=rule optimizer.target=examples.lion``.

With g the gradient, m the momentum (starting at 0), lr the scheduled learning rate alpha and
lambda = ``optimizer.weight_decay``:

    c <- beta1 m + (1 - beta1) g
    phi <- phi - alpha (sign(c) + lambda phi)
    m <- beta2 m + (1 - beta2) g

Every value moves by alpha per step, whatever the gradient's size: Lion wants a learning rate
3-10x smaller than Adam's (the paper's advice) and a weight decay as many times larger. The
decay is decoupled (``weight_decay = "decoupled"``: the harness subtracts alpha lambda phi, as
for AdamW), so this rule holds only the sign step.

Every tensor has a leading run dimension: ``params``, ``grads`` and ``m`` are (R, P), each
``hp[name]`` and ``lr`` (R, 1), so each run of a cohort has its own values.
"""

import torch

from harness.user_rules import Hyperparameter

hyperparameters = {
    "beta1": Hyperparameter(0.9, low=0.0, high=1.0),
    "beta2": Hyperparameter(0.99, low=0.0, high=1.0),
}
weight_decay = "decoupled"


def init(params: torch.Tensor) -> torch.Tensor:
    """The momentum m, zero."""
    return torch.zeros_like(params)


def update(grads, m, params, hp, lr, loss_at):
    """The sign of the interpolation c, and the new momentum."""
    c = torch.lerp(grads, m, hp["beta1"])  # beta1 m + (1 - beta1) g
    return -lr * torch.sign(c), torch.lerp(grads, m, hp["beta2"])
