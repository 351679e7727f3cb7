"""Any ``torch.nn.Module`` as a harness model: a cohort of R runs trains as one batch.

``model=module model.target=my_pkg.nets.SmallNet +model.kwargs.width=32`` builds the class at
``target`` with ``kwargs``. The constructor learns the data's sizes through parameters of these
names, which the harness fills in when the constructor has them and ``kwargs`` does not set
them: ``input_shape`` (one example's shape, e.g. ``(1, 28, 28)``; a table's is
``(features,)``), ``inputs`` (the number of input values per example) and ``outputs`` (what
the loss needs: the number of classes for cross-entropy, 1 for least squares or bce, 2 for
the Gaussian NLL). The module maps a batch of examples (N, *input_shape) to outputs (N, O).

:class:`ModuleModel` is a :class:`~harness.models.FlatModel`: the module's parameters, in the
order of ``named_parameters()``, are the pieces of the flat ``theta``. A run's initial
parameters are those of a module built afresh with torch's global generator seeded from that
run's own generator, so they depend on the run's seed alone. ``forward`` calls the module
through ``torch.func.functional_call`` with a run's pieces; a cohort maps that over the runs
with ``torch.func.vmap`` (each run its own parameters, and its own batch or the shared split),
while a lone run calls the module directly, so its graph is a plain PyTorch model's.

Buffers and randomness: a module with buffers (BatchNorm's running statistics) or with random
layers (Dropout and its kin, RReLU) ``trains_alone``: its runs train one at a time, never in a
cohort. Such a run trains in ``train()`` mode and is evaluated in ``eval()`` mode; its buffers
start from a fresh module's at its init, and its random layers draw from torch's global
generator seeded from the run's seed (``seeded``), so its numbers depend on its seed alone.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math

import torch
from torch import nn
from torch.func import functional_call, vmap

from harness.config import ConfigError, ModelOption, ModuleModelConfig
from harness.imports import import_object
from harness.models import FlatModel

SIZE_ARGUMENTS = ("input_shape", "inputs", "outputs")
RANDOM_LAYERS = (nn.modules.dropout._DropoutNd, nn.RReLU)
# Activations one evaluation pass holds at a time, over all runs: on a CPU a pass that stays in
# the caches is fastest (2^22: 3x faster than 2^25 for 64 digits CNNs); a GPU wants large ones.
EVAL_VALUES = {"cpu": 2**22, "cuda": 2**25}


def import_class(target: str) -> type:
    """The class at ``target``; a ConfigError on ``model.target`` unless it imports and is
    a ``torch.nn.Module`` subclass."""
    found = import_object(
        target, "model.target", "a torch.nn.Module class, e.g. my_pkg.nets.SmallNet"
    )
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ConfigError("model.target", target, "expected a torch.nn.Module subclass")
    return found


def constructor_arguments(cls: type, cfg: ModuleModelConfig, sizes: dict) -> dict:
    """``cfg.kwargs`` plus the sizes the constructor takes and kwargs leaves out; a ConfigError
    on ``model.kwargs`` when an argument is unknown or a required one is missing."""
    signature = inspect.signature(cls)
    arguments = dict(cfg.kwargs)
    for name in SIZE_ARGUMENTS:
        if name in signature.parameters and name not in arguments:
            arguments[name] = sizes[name]
    try:
        signature.bind(**arguments)
    except TypeError as error:
        takes = ", ".join(signature.parameters) or "no arguments"
        raise ConfigError(
            "model.kwargs", dict(cfg.kwargs), f"{cls.__name__}({takes}): {error}"
        ) from error
    return arguments


class ModuleModel(FlatModel):
    """A ``torch.nn.Module`` as a flat-parameter model (see the module docstring)."""

    def __init__(self, cls: type, arguments: dict, input_shape: tuple[int, ...], outputs: int):
        self.cls, self.arguments = cls, arguments
        self.input_shape, self.outputs = tuple(input_shape), outputs
        self.module = self._fresh().to(torch.float64)
        named = list(self.module.named_parameters())
        if not named:
            raise ConfigError("model.target", _path(cls), "the module has no parameters to train")
        self.names = [name for name, _ in named]
        self.shapes = tuple(tuple(p.shape) for _, p in named)
        self.slots = _parameter_slots(self.module)
        self.has_buffers = any(True for _ in self.module.buffers())
        self.random = any(isinstance(m, RANDOM_LAYERS) for m in self.module.modules())
        self.per_example = 1  # activations per example, counted by ``probe``
        self.eval_values = EVAL_VALUES["cpu"]

    def _fresh(self) -> nn.Module:
        """A new module; a ConfigError when the constructor fails (on ``model.kwargs`` when
        the user gave some, else on ``model.target``: the data's sizes do not suit it)."""
        try:
            return self.cls(**self.arguments)
        except Exception as error:
            given = {k: v for k, v in self.arguments.items() if k not in SIZE_ARGUMENTS}
            key, value = ("model.kwargs", given) if given else ("model.target", _path(self.cls))
            call = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
            raise ConfigError(
                key,
                value,
                f"{self.cls.__name__}({call}) fails to build for examples of shape "
                f"{self.input_shape}: {error}",
            ) from error

    @property
    def activations(self) -> int:
        return self.per_example

    @property
    def alone_because(self) -> str:
        """Why runs of this module train one at a time ("" when they train as cohorts)."""
        kinds = [
            ("buffers (e.g. BatchNorm's running statistics)", self.has_buffers),
            ("random layers (e.g. Dropout)", self.random),
        ]
        found = " and ".join(kind for kind, present in kinds if present)
        return f"model {_path(self.cls)} has {found}" if found else ""

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """A fresh module's parameters, built with torch's global generator seeded from
        ``generator``'s seed; the model's buffers start from that module's."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator.initial_seed())
            fresh = self._fresh()
        with torch.no_grad():
            for name, buffer in fresh.named_buffers():
                self.module.get_buffer(name).copy_(buffer)
        return torch.cat([p.detach().reshape(-1).to(torch.float64) for p in fresh.parameters()])

    def forward(self, pieces: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """One run's pieces and x (N, D) -> (N, O); a cohort's pieces (R, ...) and x (N, D)
        shared or (R, N, D) per run -> (R, N, O)."""
        if pieces[0].dim() == len(self.shapes[0]):
            return self._call_alone(pieces, x)
        parameters = dict(zip(self.names, pieces, strict=True))
        per_run = x.dim() == 3
        if per_run and len(self.input_shape) == 3:
            x = _runs_beside_channels(x.reshape(*x.shape[:2], *self.input_shape))
        return vmap(self._call, in_dims=(0, 0 if per_run else None))(parameters, x)

    def _call(self, parameters: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, parameters, (x.reshape(len(x), *self.input_shape),))

    def _call_alone(self, pieces: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The module itself with one run's ``pieces`` as its parameters for the call: what
        ``functional_call`` does, without its per-call search of the module tree (a lone
        run calls this at every step)."""
        kept = [module._parameters[name] for module, name, _ in self.slots]
        for module, name, index in self.slots:
            module._parameters[name] = pieces[index]
        try:
            return self.module(x.reshape(len(x), *self.input_shape))
        finally:
            for (module, name, _), parameter in zip(self.slots, kept, strict=True):
                module._parameters[name] = parameter

    def eval_batch(self, runs: int) -> int | None:
        """Examples per evaluation pass: ``eval_values`` activations over all ``runs``
        (``EVAL_VALUES`` of the model's device)."""
        return max(1, self.eval_values // (runs * self.activations))

    @contextlib.contextmanager
    def evaluating(self):
        """The module in ``eval()`` mode (running statistics, no dropout) inside; then
        ``train()`` mode again."""
        self.module.eval()
        try:
            yield
        finally:
            self.module.train()

    def seeded(self, seed: int):
        """Torch's global generator seeded with ``seed`` inside (and restored after), for a
        module with random layers; nothing for one without."""
        if not self.random:
            return contextlib.nullcontext()
        return _seeded(seed, self.module)

    def training_state(self) -> dict:
        """The module's buffers and, for random layers, the state of the generator they draw
        from (inside ``seeded``)."""
        state = {"buffers": {name: b.detach().clone() for name, b in self.module.named_buffers()}}
        if self.random:
            state["rng"] = torch.get_rng_state()
            if (device := _cuda_device(self.module)) is not None:
                state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return state

    def restore(self, state: dict) -> None:
        """Set what ``training_state`` returned; inside ``seeded``."""
        with torch.no_grad():
            for name, buffer in state["buffers"].items():
                self.module.get_buffer(name).copy_(buffer)
        if "rng" in state:
            torch.set_rng_state(state["rng"].cpu())
        device = _cuda_device(self.module)
        if "cuda_rng" in state and device is not None:  # not when it resumes on a CPU
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)

    def on(self, device: torch.device, dtype: torch.dtype) -> ModuleModel:
        """The same model with its module (buffers) on ``device`` in ``dtype``."""
        moved = copy.copy(self)
        moved.module = copy.deepcopy(self.module).to(device, dtype)
        moved.slots = _parameter_slots(moved.module)
        moved.eval_values = EVAL_VALUES.get(device.type, EVAL_VALUES["cpu"])
        return moved

    def probe(self, example: torch.Tensor) -> tuple[int, ...]:
        """The output shape for one example (1, D) (in eval mode, no gradient), counting the
        activations per example (outputs of the leaf modules) on the way."""
        counted = []

        def count(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                counted.append(output.numel())

        leaves = [m for m in self.module.modules() if not list(m.children())]
        hooks = [leaf.register_forward_hook(count) for leaf in leaves]
        generator = torch.Generator().manual_seed(0)
        try:
            with torch.no_grad(), self.evaluating():
                output = self(self.init(generator).unsqueeze(0)[0], example)
        finally:
            for hook in hooks:
                hook.remove()
        self.per_example = max(sum(counted), self.outputs, 1)
        return tuple(output.shape)


def _parameter_slots(module: nn.Module) -> list[tuple[nn.Module, str, int]]:
    """Every place a parameter sits, (submodule, name, index of the parameter in
    ``named_parameters()``): a parameter shared by two submodules has two places."""
    index = {id(p): i for i, p in enumerate(module.parameters())}
    return [
        (owner, name, index[id(parameter)])
        for _, owner in module.named_modules(remove_duplicate=False)
        for name, parameter in owner._parameters.items()
        if parameter is not None
    ]


def _runs_beside_channels(images: torch.Tensor) -> torch.Tensor:
    """Images (R, N, C, H, W) laid out in memory as (N, H, W, R, C). ``vmap`` runs a
    convolution of R runs as one grouped convolution over N x (R C) x H x W; this layout
    makes that input channels-last, which the CPU's convolutions run faster (about 1.2x for
    a cohort of 64 digits CNNs), and the layout carries on through the layers."""
    return images.permute(1, 3, 4, 0, 2).contiguous().permute(3, 0, 4, 1, 2)


@contextlib.contextmanager
def _seeded(seed: int, module: nn.Module):
    devices = [module_device] if (module_device := _cuda_device(module)) is not None else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _cuda_device(module: nn.Module):
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None and tensor.device.type == "cuda" else None


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def build(cfg: ModuleModelConfig, input_shape: tuple[int, ...], outputs: int) -> ModuleModel:
    """The module ``cfg`` names for examples of ``input_shape`` and ``outputs`` outputs."""
    cls = import_class(cfg.target)
    sizes = {
        "input_shape": tuple(input_shape),
        "inputs": math.prod(input_shape),
        "outputs": outputs,
    }
    return ModuleModel(cls, constructor_arguments(cls, cfg, sizes), input_shape, outputs)


def check_fits(model: ModuleModel, example: torch.Tensor, target: str, fits: str) -> None:
    """Run the module on one example (1, D): a ConfigError on ``model.target`` when it fails,
    or when its output is not (1, model.outputs); ``fits`` names the data and loss."""
    try:
        shape = model.probe(example)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            "model.target",
            target,
            f"fails on one example of {fits} (shape {model.input_shape}): {reason}",
        ) from error
    if shape != (1, model.outputs):
        raise ConfigError(
            "model.target",
            target,
            f"gives outputs of shape {shape[1:]} per example; {fits} needs ({model.outputs},)",
        )


OPTIONS: dict[str, ModelOption] = {
    "module": ModelOption(
        ModuleModelConfig, build, losses=("least_squares", "gaussian_nll", "bce", "cross_entropy")
    ),
}
"""The module option (``model=module``), beside the built-in models of ``models.OPTIONS``."""
