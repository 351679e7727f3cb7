"""A run's objective: the one number it reports back to a sweeper that tunes (the harness's
search, Hydra's Optuna sweeper), chosen by the config key ``objective``.

``objective=auto`` (the default) is the final validation loss where the problem has a
validation split, else the final training loss. Otherwise one of the metrics the run records
at its end: ``train_loss`` and ``val_loss`` (where there is a validation split), and for a
problem that classifies ``train_accuracy`` and ``val_accuracy``. The test split is never an
objective: what is tuned on it is no longer a test.

A loss is minimised, an accuracy maximised. A run that diverged reports the worst value there
is: +inf for a loss, -inf for an accuracy (Optuna takes both as a completed trial, ranked
last); a run that failed reports nothing (a failed trial).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from harness.config import ConfigError

AUTO = "auto"
KEY = "objective"


def recorded(has_validation: bool, classifies: bool) -> tuple[str, ...]:
    """The metrics a run of such a problem records at its end that may be objectives."""
    splits = ("train", "val") if has_validation else ("train",)
    kinds = ("loss", "accuracy") if classifies else ("loss",)
    return tuple(f"{split}_{kind}" for kind in kinds for split in splits)


def resolve(name: str, has_validation: bool, classifies: bool) -> str:
    """The metric ``objective=name`` names for such a problem; raises ConfigError for one its
    runs do not record."""
    if name == AUTO:
        return "val_loss" if has_validation else "train_loss"
    allowed = recorded(has_validation, classifies)
    if name not in allowed:
        why = f"expected {AUTO} or a metric these runs record at their end: {', '.join(allowed)}"
        if name.startswith("test_"):
            why += " (the test split is never tuned on)"
        raise ConfigError(KEY, name, why)
    return name


def maximized(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (an accuracy)."""
    return metric.endswith("accuracy")


def worst(metric: str) -> float:
    """The value of a run that diverged: -inf for an accuracy, +inf for a loss."""
    return -math.inf if maximized(metric) else math.inf


def value(metric: str, finals: Mapping[str, float], diverged: bool) -> float:
    """The objective of a run whose final metric values are ``finals``: ``worst`` when it
    diverged or has no finite value of ``metric``."""
    found = finals.get(metric)
    if diverged or found is None or not math.isfinite(found):
        return worst(metric)
    return float(found)


def of_run(metric: str, result) -> float:
    """The objective of a trained run (an ``engine.RunResult``): ``value`` of its curves'
    last values."""
    finals = {name: result.final(name) for name in result.curves}
    return value(metric, finals, result.diverged)
