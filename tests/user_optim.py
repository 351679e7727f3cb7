"""Optimizers and rules of a user's own, for the tests (importable as ``user_optim``: pytest
puts tests/ on sys.path)."""

from types import SimpleNamespace

import torch


class SignSgd(torch.optim.Optimizer):
    """phi <- phi - lr * scale * sign(g), per parameter tensor."""

    def __init__(self, params, lr=0.01, scale=1.0):
        super().__init__(params, {"lr": lr, "scale": scale})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad.sign(), alpha=-group["lr"] * group["scale"])


class NeedsClosure(SignSgd):
    @torch.no_grad()
    def step(self, closure):
        return super().step()


class NoLearningRate(torch.optim.Optimizer):
    def __init__(self, params, step_size=0.1):
        super().__init__(params, {"step_size": step_size})

    def step(self, closure=None):
        pass


def _zeros(params):
    return torch.zeros_like(params)


def _plain_update(grads, state, params, hp, lr, loss_at):
    return -lr * grads * hp["scale"], state


scaled_sgd = SimpleNamespace(init=_zeros, update=_plain_update, hyperparameters={"scale": 1.0})
no_update = SimpleNamespace(init=_zeros, hyperparameters={})
no_hyperparameters = SimpleNamespace(init=_zeros, update=_plain_update)
text_default = SimpleNamespace(init=_zeros, update=_plain_update, hyperparameters={"scale": "big"})
sideways_decay = SimpleNamespace(
    init=_zeros, update=_plain_update, hyperparameters={"scale": 1.0}, weight_decay="sideways"
)
wrong_shape = SimpleNamespace(
    init=_zeros,
    update=lambda grads, state, params, hp, lr, loss_at: (-lr, state),
    hyperparameters={},
)


def _raise(grads, state, params, hp, lr, loss_at):
    raise FloatingPointError("this rule gives up")


raises = SimpleNamespace(init=_zeros, update=_raise, hyperparameters={})
claims_lr = SimpleNamespace(init=_zeros, update=_plain_update, hyperparameters={"lr": 0.1})


class LooksBack:
    """A rule whose gradient is taken one unit below the parameters; records those points."""

    hyperparameters: dict = {}
    seen: list = []

    @staticmethod
    def init(params):
        LooksBack.seen.clear()
        return 0

    @staticmethod
    def lookahead(params, state, hp, lr):
        LooksBack.seen.append(params[0] - 1.0)
        return params - 1.0

    @staticmethod
    def update(grads, state, params, hp, lr, loss_at):
        return -lr * grads, state + 1


looks_back = LooksBack
