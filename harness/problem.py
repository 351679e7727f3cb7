"""A test problem: data, model and loss declared in one place, checked to fit together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness import data as data_module
from harness import losses, modules, objectives, registry
from harness.config import ConfigError, RunConfig
from harness.data import Dataset


@dataclass(frozen=True)
class Problem:
    """``loss(theta, x, y)`` is the per-run loss (R,) of parameters ``theta`` (R, P)."""

    data: Dataset
    model: Any
    loss_fn: Any

    @property
    def is_surface(self) -> bool:
        return self.data.task == data_module.NO_DATA

    @property
    def classifies(self) -> bool:
        return hasattr(self.loss_fn, "correct")

    def objective(self, name: str) -> str:
        """The metric ``objective=name`` names on this problem; raises ConfigError for one
        its runs do not record (see ``harness.objectives``)."""
        has_validation = not self.is_surface and self.data.sizes.get("val", 0) > 0
        return objectives.resolve(name, has_validation, self.classifies)

    def loss(self, theta: torch.Tensor, x: torch.Tensor | None, y: torch.Tensor | None):
        return self.loss_of_pieces(self.model.split(theta), x, y)

    def loss_of_pieces(self, pieces: list[torch.Tensor], x, y) -> torch.Tensor:
        """The loss from the model's parameter pieces (see ``models.FlatModel.split``)."""
        return self.loss_fn(self.model.forward(pieces, x), y)

    def evaluate(self, theta: torch.Tensor, part: str, skip_loss: bool = False):
        """Loss (and accuracy when classifying) of every run on a whole split, shape (R,);
        ``skip_loss`` leaves out the loss, for a caller that has it already."""
        if self.is_surface:
            return {"loss": self.model(theta)} if part == "train" and not skip_loss else {}
        x, y = getattr(self.data, f"x_{part}"), getattr(self.data, f"y_{part}")
        if len(x) == 0 or (skip_loss and not self.classifies):
            return {}
        outputs = self.outputs(theta, x)
        metrics = {} if skip_loss else {"loss": self.loss_fn(outputs, y)}
        if self.classifies:
            metrics["accuracy"] = self.loss_fn.correct(outputs, y).mean(-1)
        return metrics

    def outputs(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs on ``x`` in evaluation mode, in passes of the model's
        ``eval_batch`` examples (a whole split at once for the built-in models)."""
        step = self.model.eval_batch(len(theta))
        with self.model.evaluating():
            if step is None or step >= len(x):
                return self.model(theta, x)
            passes = [self.model(theta, x[i : i + step]) for i in range(0, len(x), step)]
        return torch.cat(passes, dim=-2)

    def on(self, device: torch.device, dtype: torch.dtype) -> Problem:
        return Problem(self.data.to(device, dtype), self.model.on(device, dtype), self.loss_fn)


def build(spec: RunConfig, dataset: Dataset | None = None) -> Problem:
    """Load the data (unless given) and build model and loss; reject pieces that do not fit."""
    dataset = dataset if dataset is not None else data_module.load(spec.dataset)
    sizes = dataset.sizes
    if dataset.task != data_module.NO_DATA and sizes["train"] == 0:
        raise ConfigError(
            "dataset.val_fraction+test_fraction",
            spec.dataset.val_fraction + spec.dataset.test_fraction,
            f"leaves no training point of {dataset.name}'s {sum(sizes.values())}",
        )
    loss_fn = losses.build(spec.loss)
    if dataset.task not in loss_fn.targets:
        raise ConfigError(
            "loss",
            spec.loss.name,
            f"dataset {dataset.name} is a {dataset.task} task; "
            f"{spec.loss.name} takes {', '.join(loss_fn.targets)} targets",
        )
    if spec.model.name == "gabor" and dataset.features != 1:
        raise ConfigError(
            "model",
            "gabor",
            f"the Gabor model takes one input feature; {dataset.name} has {dataset.features}",
        )
    outputs = loss_fn.outputs(dataset.classes)
    model = registry.OPTIONS["model"][spec.model.name].build(
        spec.model, dataset.input_shape, outputs
    )
    if isinstance(model, modules.ModuleModel):
        fits = f"{dataset.name} with loss {spec.loss.name}"
        modules.check_fits(model, dataset.x_train[:1], spec.model.target, fits)
    if spec.model.init is not None and model.size != 2:
        raise ConfigError(
            "model.init",
            spec.model.init,
            f"only two-parameter models take an init; this one has {model.size}",
        )
    check_training(spec, dataset)
    return Problem(dataset, model, loss_fn)


def check_training(spec: RunConfig, dataset: Dataset) -> None:
    """What the trainer and schedule ask of the data: a validation split to monitor, a batch
    no larger than the training split."""
    if getattr(spec.schedule, "monitor", None) == "val" and dataset.sizes["val"] == 0:
        raise ConfigError(
            "schedule.monitor", "val", f"the validation split of {dataset.name} is empty"
        )
    batch = spec.trainer.batch_size
    if batch is not None and batch > dataset.sizes["train"]:
        raise ConfigError(
            "trainer.batch_size",
            batch,
            f"expected at most the training split's {dataset.sizes['train']} points",
        )
