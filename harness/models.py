"""Models as functions of a flat parameter tensor with a leading run dimension.

A model holds no parameters. Its parameters are one tensor ``theta`` of shape (R, P), one row
per run; ``split(theta)`` cuts it into the pieces of ``shapes`` (each with the run dimension
in front) and ``forward(pieces, x)`` evaluates the model, so the engine can differentiate with
respect to the pieces without slicing inside the autograd graph. ``model(theta, x)`` does both.
Inputs ``x`` are (N, D), shared by all runs, or (R, N, D), one batch per run; outputs are
(R, N, O). Loss surfaces take no inputs and return the loss (R,).

``forward`` also takes the pieces of a single run without the run dimension, with inputs
(N, D), and then returns (N, O) (a surface: a scalar): the engine trains a lone run that way,
with the same operations as a plain PyTorch model. ``init(generator)`` draws one
run's P starting values from that run's own generator.

Any ``torch.nn.Module`` joins as a :class:`FlatModel` too (:mod:`harness.modules`), and uses
the hooks the built-in models leave empty: evaluating in passes (``eval_batch``) and in
``eval()`` mode (``evaluating``), moving its buffers (``on``), seeding its random layers
(``seeded``), and training alone (``alone_because``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from harness.config import (
    GaborModelConfig,
    MlpModelConfig,
    ModelConfig,
    ModelOption,
    RosenbrockModelConfig,
)

Tensor = torch.Tensor
ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
}


def _uniform_box(generator: torch.Generator, low: tuple[float, ...], high: tuple[float, ...]):
    low_t, high_t = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    u = torch.rand(len(low), generator=generator, dtype=torch.float64)
    return low_t + (high_t - low_t) * u


def _uniform(generator: torch.Generator, size: int, bound: float) -> Tensor:
    return (2 * torch.rand(size, generator=generator, dtype=torch.float64) - 1) * bound


def _affine(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """h W + b. One run: h (N, I), weight (I, O), bias (O,) -> (N, O). A cohort: h (R, N, I)
    or shared (N, I), weight (R, I, O), bias (R, O) -> (R, N, O)."""
    if weight.dim() == 2:
        return torch.addmm(bias, h, weight)
    if h.dim() == 2:
        return bias.unsqueeze(1) + torch.matmul(h, weight)
    return torch.baddbmm(bias.unsqueeze(1), h, weight)


class FlatModel:
    """Cuts flat parameters, (R, P) or one run's (P,), into the pieces listed in ``shapes``."""

    shapes: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)

    @property
    def activations(self) -> int:
        """Values a forward pass computes per example (what a cohort holds per run)."""
        return max(getattr(self, "outputs", 1), 1)

    alone_because = ""  # why its runs train one at a time; "": they train as cohorts

    @property
    def trains_alone(self) -> bool:
        return bool(self.alone_because)

    def eval_batch(self, runs: int) -> int | None:
        """Examples per evaluation pass of ``runs`` runs; None: a whole split at once."""
        return None

    def evaluating(self):
        """A context in which the model evaluates (a module switches to ``eval()`` mode)."""
        return contextlib.nullcontext()

    def seeded(self, seed: int):
        """A context in which the model's own randomness, if any, is seeded with ``seed``."""
        return contextlib.nullcontext()

    def training_state(self) -> dict:
        """What training changes in the model besides its parameters (a checkpoint's part):
        nothing here."""
        return {}

    def restore(self, state: dict) -> None:
        """Set what ``training_state`` returned; inside ``seeded``."""

    def on(self, device: torch.device, dtype: torch.dtype) -> FlatModel:
        """The model for ``device`` and ``dtype`` (it holds no tensors: itself)."""
        return self

    def split(self, theta: Tensor) -> list[Tensor]:
        pieces, offset = [], 0
        for shape in self.shapes:
            count = math.prod(shape)
            pieces.append(theta[..., offset : offset + count].reshape(*theta.shape[:-1], *shape))
            offset += count
        return pieces

    def __call__(self, theta: Tensor, x: Tensor | None = None) -> Tensor:
        return self.forward(self.split(theta), x)


@dataclass(frozen=True)
class Affine(FlatModel):
    """f[x, phi] = b + x W with phi = [b (O values), W (D x O, row-major)].

    With one input and one output this is the lecture's phi0 + phi1 x. A two-parameter model
    starts uniform on the book's plot range, phi0 in [0, 2] and phi1 in [-1, 1]; larger ones
    start like ``torch.nn.Linear``, uniform in +-1/sqrt(D).
    """

    inputs: int
    outputs: int

    @property
    def shapes(self):
        return ((self.outputs,), (self.inputs, self.outputs))

    def init(self, generator: torch.Generator) -> Tensor:
        if self.size == 2:
            return _uniform_box(generator, (0.0, -1.0), (2.0, 1.0))
        return _uniform(generator, self.size, 1.0 / math.sqrt(self.inputs))

    def forward(self, pieces: list[Tensor], x: Tensor) -> Tensor:
        bias, weight = pieces
        return _affine(x, weight, bias)


@dataclass(frozen=True)
class Gabor(FlatModel):
    """f[x, phi] = sin(phi0 + 0.06 phi1 x) exp(-(phi0 + 0.06 phi1 x)^2 / envelope).

    The seeded init is uniform over the book's plot range, phi0 in [-10, 10], phi1 in [2.5, 22.5].
    """

    envelope: float
    shapes: tuple = ((2,),)
    outputs: int = 1

    def init(self, generator: torch.Generator) -> Tensor:
        return _uniform_box(generator, (-10.0, 2.5), (10.0, 22.5))

    def forward(self, pieces: list[Tensor], x: Tensor) -> Tensor:
        (phi,) = pieces
        z = phi[..., :1] + 0.06 * phi[..., 1:2] * x[..., 0]
        return (torch.sin(z) * torch.exp(-z * z / self.envelope)).unsqueeze(-1)


@dataclass(frozen=True)
class Mlp(FlatModel):
    """``depth`` hidden layers h <- act(h W + b), then a linear read-out to ``outputs``.

    Layers start like ``torch.nn.Linear``: uniform in +-1/sqrt(fan_in).
    """

    inputs: int
    outputs: int
    depth: int
    width: int
    activation: str

    @property
    def activations(self) -> int:
        return self.depth * self.width + self.outputs

    @property
    def layer_sizes(self) -> list[tuple[int, int]]:
        sizes = [self.inputs] + [self.width] * self.depth + [self.outputs]
        return list(zip(sizes[:-1], sizes[1:], strict=True))

    @property
    def shapes(self):
        return tuple(
            shape
            for fan_in, fan_out in self.layer_sizes
            for shape in ((fan_in, fan_out), (fan_out,))
        )

    def init(self, generator: torch.Generator) -> Tensor:
        parts = [
            _uniform(generator, (fan_in + 1) * fan_out, 1.0 / math.sqrt(fan_in))
            for fan_in, fan_out in self.layer_sizes
        ]
        return torch.cat(parts)

    def forward(self, pieces: list[Tensor], x: Tensor) -> Tensor:
        act = ACTIVATIONS[self.activation]
        h = x
        for layer in range(self.depth + 1):
            h = _affine(h, pieces[2 * layer], pieces[2 * layer + 1])
            if layer < self.depth:
                h = act(h)
        return h


@dataclass(frozen=True)
class AdamDemoSurface(FlatModel):
    """The lecture's Adam demo: L = 1 - exp(-0.5 * 4 phi1^2) exp(-0.5 (phi0 - 0.7)^2 / 4),
    minimum 0 at (0.7, 0). The seeded init is uniform on [-1, 2] x [-1, 1]."""

    shapes: tuple = ((2,),)
    outputs: int = 0

    def init(self, generator: torch.Generator) -> Tensor:
        return _uniform_box(generator, (-1.0, -1.0), (2.0, 1.0))

    def forward(self, pieces: list[Tensor], x: Tensor | None = None) -> Tensor:
        phi0, phi1 = pieces[0][..., 0], pieces[0][..., 1]
        return 1 - torch.exp(-0.5 * 4 * phi1**2) * torch.exp(-0.5 * (phi0 - 0.7) ** 2 / 4)


@dataclass(frozen=True)
class RosenbrockSurface(FlatModel):
    """L = (a - phi0)^2 + b (phi1 - phi0^2)^2, minimum 0 at (a, a^2); init on [-2, 2] x [-1, 3]."""

    a: float
    b: float
    shapes: tuple = ((2,),)
    outputs: int = 0

    def init(self, generator: torch.Generator) -> Tensor:
        return _uniform_box(generator, (-2.0, -1.0), (2.0, 3.0))

    def forward(self, pieces: list[Tensor], x: Tensor | None = None) -> Tensor:
        phi0, phi1 = pieces[0][..., 0], pieces[0][..., 1]
        return (self.a - phi0) ** 2 + self.b * (phi1 - phi0**2) ** 2


OPTIONS: dict[str, ModelOption] = {
    "linear": ModelOption(
        ModelConfig,
        lambda cfg, shape, outputs: Affine(math.prod(shape), outputs),
        losses=("least_squares", "gaussian_nll"),
    ),
    "gabor": ModelOption(
        GaborModelConfig,
        lambda cfg, shape, outputs: Gabor(cfg.envelope),
        losses=("least_squares",),
    ),
    "logistic": ModelOption(
        ModelConfig,
        lambda cfg, shape, outputs: Affine(math.prod(shape), outputs),
        losses=("bce",),
    ),
    "softmax": ModelOption(
        ModelConfig,
        lambda cfg, shape, outputs: Affine(math.prod(shape), outputs),
        losses=("cross_entropy",),
    ),
    "mlp": ModelOption(
        MlpModelConfig,
        lambda cfg, shape, outputs: Mlp(
            math.prod(shape), outputs, cfg.depth, cfg.width, cfg.activation
        ),
        losses=("least_squares", "gaussian_nll", "bce", "cross_entropy"),
    ),
    "adam_demo": ModelOption(
        ModelConfig,
        lambda cfg, shape, outputs: AdamDemoSurface(),
        losses=("surface",),
        surface=True,
    ),
    "rosenbrock": ModelOption(
        RosenbrockModelConfig,
        lambda cfg, shape, outputs: RosenbrockSurface(cfg.a, cfg.b),
        losses=("surface",),
        surface=True,
    ),
}
"""The built-in models by name: schema, ``build(cfg, input_shape, outputs)`` and the losses
each takes; ``modules.OPTIONS`` adds any torch.nn.Module (``model=module``)."""
