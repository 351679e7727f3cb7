"""Structured configs: the schema of every config group, validated once.

Each option of a group (``conf/<group>/<option>.yaml``) starts from a dataclass stored in
Hydra's ConfigStore under ``schema/<group>/<option>`` by :func:`register` (which importing
:mod:`harness.registry` calls with every :class:`Option`), so OmegaConf checks types and unknown
keys while composing. Ranges are checked in ``__post_init__``, which runs when
:func:`to_spec` turns the composed config into these dataclasses; :func:`to_spec` then refuses
numbers that are not finite and keys added with ``+`` (free-form keys belong only in a
``dict`` field, such as a torch optimizer's or a module's ``kwargs``), lets the optimizer's
option check what only it knows (a user rule's hyperparameters, a torch optimizer's keyword
arguments), and cross-group fits (model and loss, optimizer and batch size) are checked by
:func:`check_combination`. Every
failure is a :class:`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration value that cannot be used: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")

    def __reduce__(self):
        """Pickled whole (notes too), for another process to raise."""
        return type(self), (self.key, self.value, self.allowed), self.__dict__


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def _one_of(key: str, value: Any, choices: tuple) -> None:
    _require(value in choices, key, value, f"expected one of {', '.join(map(str, choices))}")


def _positive(key: str, value: float | None) -> None:
    _require(value is None or value > 0, key, value, "expected a value > 0")


def _non_negative(key: str, value: float) -> None:
    _require(value >= 0, key, value, "expected a value >= 0")


def _fraction(key: str, value: float) -> None:
    _require(0.0 <= value < 1.0, key, value, "expected a value in [0, 1)")


def _pair(key: str, value: list[float] | None) -> None:
    _require(value is None or len(value) == 2, key, value, "expected two numbers [phi0, phi1]")


# ----------------------------------------------------------------------------- dataset


@dataclass
class DatasetConfig:
    """Common split settings: fractions of the data held out, drawn with ``split_seed``."""

    name: str = MISSING
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    split_seed: int = 0
    standardize: bool = False

    def __post_init__(self) -> None:
        _fraction("dataset.val_fraction", self.val_fraction)
        _fraction("dataset.test_fraction", self.test_fraction)
        total = self.val_fraction + self.test_fraction
        _require(
            total < 1.0, "dataset.val_fraction+test_fraction", total, "must leave training data"
        )


@dataclass
class ToyDatasetConfig(DatasetConfig):
    """The lecture's toy sets (package data): trained on all points by default, like the book."""


@dataclass
class SklearnDatasetConfig(DatasetConfig):
    """A real data set bundled with scikit-learn; regression targets standardised on request."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    standardize: bool = True
    standardize_target: bool = True


MAX_GENERATED_VALUES = 10**8  # 0.8 GB of float64 features


@dataclass
class GeneratedDatasetConfig(DatasetConfig):
    """A synthetic set drawn with ``seed``: ``regression1d``, ``blobs`` or ``moons``; at most
    ``MAX_GENERATED_VALUES`` feature values in all (size x features) and ``size`` classes."""

    size: int = 200
    noise: float = 0.1
    seed: int = 0
    classes: int = 2
    features: int = 2
    val_fraction: float = 0.2
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.size >= 4, "dataset.size", self.size, "expected at least 4 points")
        _require(self.noise >= 0, "dataset.noise", self.noise, "expected a value >= 0")
        _require(self.classes >= 2, "dataset.classes", self.classes, "expected at least 2")
        _require(self.features >= 1, "dataset.features", self.features, "expected at least 1")
        _require(
            self.size * self.features <= MAX_GENERATED_VALUES,
            "dataset.size*features",
            (self.size, self.features),
            f"expected at most {MAX_GENERATED_VALUES:,} values in all (0.8 GB as float64)",
        )
        _require(
            self.classes <= self.size,
            "dataset.classes",
            self.classes,
            f"expected at most dataset.size ({self.size})",
        )


MIRROR_SCHEMES = ("http://", "https://")  # what torchvision's downloader reads


@dataclass
class ImageDatasetConfig(DatasetConfig):
    """An image set of torchvision's (MNIST, Fashion-MNIST, CIFAR-10), downloaded into
    ``root`` on first use (null: the user's cache folder, see :func:`harness.paths.dataset_cache`)
    from ``mirror``, a base URL standing in for torchvision's own (null: torchvision's);
    ``limit`` keeps the first N training images; the validation split comes from the training
    set, the test split is the set's own test files; ``standardize`` works per channel."""

    root: str | None = None
    mirror: str | None = None
    limit: int | None = None
    val_fraction: float = 0.1
    standardize: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("dataset.limit", self.limit)
        _require(
            self.root is None or self.root.strip() != "",
            "dataset.root",
            self.root,
            "expected a folder, or null for the user's cache folder",
        )
        _require(
            self.mirror is None or self.mirror.startswith(MIRROR_SCHEMES),
            "dataset.mirror",
            self.mirror,
            f"expected a base URL starting with {', '.join(MIRROR_SCHEMES)}, or null",
        )


@dataclass
class NoDatasetConfig(DatasetConfig):
    """No data: the model is itself a loss surface."""


# ----------------------------------------------------------------------------- model


@dataclass
class ModelConfig:
    """``init`` fixes [phi0, phi1] of a two-parameter model; otherwise the init is seeded."""

    name: str = MISSING
    init: list[float] | None = None

    def __post_init__(self) -> None:
        _pair("model.init", self.init)


@dataclass
class GaborModelConfig(ModelConfig):
    """f[x, phi] = sin(phi0 + 0.06 phi1 x) exp(-(phi0 + 0.06 phi1 x)^2 / envelope)."""

    envelope: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("model.envelope", self.envelope)


@dataclass
class MlpModelConfig(ModelConfig):
    """``depth`` hidden layers of ``width`` units with ``activation``."""

    depth: int = 1
    width: int = 64
    activation: str = "relu"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.depth >= 1, "model.depth", self.depth, "expected at least 1 hidden layer")
        _require(self.width >= 1, "model.width", self.width, "expected at least 1 unit")
        _one_of("model.activation", self.activation, ("relu", "tanh", "sigmoid", "gelu"))


@dataclass
class ModuleModelConfig(ModelConfig):
    """Any ``torch.nn.Module`` class by import path (``target``: ``package.module.Class``)
    built with the keyword arguments ``kwargs``; the harness adds ``inputs``, ``input_shape``
    and ``outputs`` (the data set's sizes) where the constructor takes them and ``kwargs``
    does not set them (see :mod:`harness.modules`)."""

    target: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class RosenbrockModelConfig(ModelConfig):
    """L(phi) = (a - phi0)^2 + b (phi1 - phi0^2)^2, minimum 0 at (a, a^2)."""

    a: float = 1.0
    b: float = 100.0


# ----------------------------------------------------------------------------- loss


@dataclass
class LossConfig:
    """``reduction``: ``sum`` over the batch (the book) or ``mean`` (the PyTorch habit)."""

    name: str = MISSING
    reduction: str = "sum"

    def __post_init__(self) -> None:
        _one_of("loss.reduction", self.reduction, ("sum", "mean"))


@dataclass
class LeastSquaresLossConfig(LossConfig):
    """L = scale * reduce_i (f[x_i, phi] - y_i)^2; the lecture's snippet uses scale 0.5, mean."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("loss.scale", self.scale)


# ----------------------------------------------------------------------------- optimizer


@dataclass
class OptimizerConfig:
    """Every optimizer but the line search has a learning rate ``lr`` (alpha); every rule has
    a ``weight_decay`` (lambda, see ``optim.with_weight_decay``), 0 by default."""

    name: str = MISSING
    lr: float = 0.1
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _positive("optimizer.lr", self.lr)
        _non_negative("optimizer.weight_decay", self.weight_decay)


@dataclass
class LineSearchConfig:
    """Bracketing line search along -grad over [0, max_dist]."""

    name: str = MISSING
    max_dist: float = 1.0
    tol: float = 1e-4
    max_iter: int = 10
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _non_negative("optimizer.weight_decay", self.weight_decay)
        _positive("optimizer.max_dist", self.max_dist)
        _positive("optimizer.tol", self.tol)
        _require(self.max_iter >= 1, "optimizer.max_iter", self.max_iter, "expected at least 1")


@dataclass
class MomentumConfig(OptimizerConfig):
    """m <- beta m + (1 - beta) g; ``m0``: ``zero`` (lecture) or ``gradient`` (torch dampening)."""

    beta: float = 0.9
    m0: str = "zero"

    def __post_init__(self) -> None:
        super().__post_init__()
        _fraction("optimizer.beta", self.beta)
        _one_of("optimizer.m0", self.m0, ("zero", "gradient"))


@dataclass
class NesterovConfig(OptimizerConfig):
    """Gradient at phi - alpha beta m (``lookahead: book``) or phi - alpha m (``slide``)."""

    beta: float = 0.9
    lookahead: str = "book"

    def __post_init__(self) -> None:
        super().__post_init__()
        _fraction("optimizer.beta", self.beta)
        _one_of("optimizer.lookahead", self.lookahead, ("book", "slide"))


@dataclass
class NormalizedConfig(OptimizerConfig):
    """phi <- phi - alpha g / (sqrt(g^2) + eps)."""

    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive("optimizer.eps", self.eps)


@dataclass
class AdamConfig(OptimizerConfig):
    """Adam (and AdamW) with the lecture's names: beta (first moment), gamma (second moment),
    eps; the defaults are torch's."""

    lr: float = 0.001
    beta: float = 0.9
    gamma: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        _fraction("optimizer.beta", self.beta)
        _fraction("optimizer.gamma", self.gamma)
        _positive("optimizer.eps", self.eps)


@dataclass
class RuleConfig(OptimizerConfig):
    """A rule of the user's by import path (``target``), with its hyperparameters ``hp`` (the
    names it declares; those left out take its defaults, see ``user_rules``)."""

    target: str = ""
    hp: dict[str, Any] = field(default_factory=dict)


@dataclass
class TorchOptimizerConfig:
    """Any ``torch.optim.Optimizer`` subclass: a name in ``torch.optim`` or an import path,
    with its keyword arguments (its own ``weight_decay`` among them, if it has one)."""

    name: str = MISSING
    lr: float = 0.001
    class_name: str = "AdamW"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive("optimizer.lr", self.lr)


# ----------------------------------------------------------------------------- schedule


@dataclass
class ScheduleConfig:
    """A learning-rate multiplier; step counts are optimizer updates."""

    name: str = MISSING


@dataclass
class StepScheduleConfig(ScheduleConfig):
    """Multiply by ``factor`` every ``step_size`` updates."""

    step_size: int = 100
    factor: float = 0.1

    def __post_init__(self) -> None:
        _require(self.step_size >= 1, "schedule.step_size", self.step_size, "expected >= 1")
        _require(0 < self.factor <= 1, "schedule.factor", self.factor, "expected (0, 1]")


@dataclass
class ExponentialScheduleConfig(ScheduleConfig):
    """Multiply by ``factor`` after every update."""

    factor: float = 0.99

    def __post_init__(self) -> None:
        _require(0 < self.factor <= 1, "schedule.factor", self.factor, "expected (0, 1]")


@dataclass
class CosineScheduleConfig(ScheduleConfig):
    """Half a cosine from 1 down to ``min_factor`` over the run, after ``warmup_steps`` of ramp."""

    min_factor: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _require(
            0 <= self.min_factor <= 1, "schedule.min_factor", self.min_factor, "expected [0, 1]"
        )
        _require(
            self.warmup_steps >= 0, "schedule.warmup_steps", self.warmup_steps, "expected >= 0"
        )


@dataclass
class PlateauScheduleConfig(ScheduleConfig):
    """Multiply by ``factor`` when the monitored loss has not improved by ``threshold``
    (relative) for ``patience`` evaluations; wait ``cooldown`` evaluations after a cut."""

    monitor: str = "train"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        _one_of("schedule.monitor", self.monitor, ("train", "val"))
        _require(0 < self.factor < 1, "schedule.factor", self.factor, "expected (0, 1)")
        _require(self.patience >= 0, "schedule.patience", self.patience, "expected >= 0")
        _require(self.threshold >= 0, "schedule.threshold", self.threshold, "expected >= 0")
        _require(self.cooldown >= 0, "schedule.cooldown", self.cooldown, "expected >= 0")
        _require(
            0 <= self.min_factor <= 1, "schedule.min_factor", self.min_factor, "expected [0, 1]"
        )


# ----------------------------------------------------------------------------- trainer


DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_STEPS = 100


@dataclass
class TrainerConfig:
    """Budget in ``steps`` or ``epochs`` (one of them; ``DEFAULT_STEPS`` steps when neither
    is set, resolved here so that the spec and its fingerprint hold 100 steps either way);
    ``batch_size`` null means full batch.

    ``eval_every`` (updates) sets how often validation and test metrics are computed; null
    means once per epoch, or at every logged step when training by ``steps``. A run diverges
    when its loss is not finite or exceeds ``divergence_factor`` times its initial loss (times
    1 when the initial loss is below 1).

    A sweep checkpoints each cohort every ``checkpoint_every`` seconds of training (0: never)
    into ``checkpoint_dir`` (null: beside the store's artifacts; see ``harness.checkpoints``).
    Neither changes a run's numbers, so neither is part of its identity (``fingerprint``).
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    reshuffle: bool = True
    eval_every: int | None = None
    device: str = "auto"
    dtype: str = "float64"
    divergence_factor: float | None = 1e6
    deterministic: bool = False
    checkpoint_every: float = 60.0
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        _require(
            self.steps is None or self.epochs is None,
            "trainer.steps/epochs",
            (self.steps, self.epochs),
            "set one of trainer.steps and trainer.epochs, not both",
        )
        if self.steps is None and self.epochs is None:
            self.steps = DEFAULT_STEPS
        _positive("trainer.steps", self.steps)
        _positive("trainer.epochs", self.epochs)
        _positive("trainer.batch_size", self.batch_size)
        _positive("trainer.eval_every", self.eval_every)
        _require(
            self.divergence_factor is None or self.divergence_factor > 1,
            "trainer.divergence_factor",
            self.divergence_factor,
            "expected null or > 1",
        )
        _one_of("trainer.dtype", self.dtype, ("float32", "float64"))
        _require(
            math.isfinite(self.checkpoint_every) and self.checkpoint_every >= 0,
            "trainer.checkpoint_every",
            self.checkpoint_every,
            "expected seconds >= 0 (0: no checkpoints)",
        )
        _require(
            self.checkpoint_dir is None or self.checkpoint_dir.strip() != "",
            "trainer.checkpoint_dir",
            self.checkpoint_dir,
            "expected null (beside the store's artifacts) or a folder",
        )
        base = self.device.split(":")[0]
        _require(
            base in DEVICES and (":" not in self.device or self.device.split(":")[1].isdigit()),
            "trainer.device",
            self.device,
            "expected auto, cpu, cuda, cuda:N or mps",
        )


@dataclass
class TrackingConfig:
    """Where runs go. ``uri`` null: ``$MLFLOW_TRACKING_URI`` if set, else ``mlflow.db`` at the
    project root. ``log_every`` null keeps a curve to about 250 points. ``tags``: tags set on
    each run besides the harness's own (``+tracking.tags.team=vision``; a tuning search sets
    ``stage``); names that MLflow or the harness use are refused where the runs are opened
    (``records.check_tags``)."""

    uri: str | None = None
    experiment: str = "runs"
    log_every: int | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive("tracking.log_every", self.log_every)
        _require(
            bool(self.experiment.strip()),
            "tracking.experiment",
            self.experiment,
            "expected a non-empty name",
        )


@dataclass
class RunConfig:
    """One grid point: a choice in every group plus the run's ``seed``."""

    dataset: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    schedule: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    run_name: str | None = None
    objective: str = "auto"  # what the run reports to a tuning sweeper: harness.objectives


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One option of a config group (``conf/<group>/<name>.yaml``): the ``schema`` its config
    starts from and ``build``, which makes what the config names. Each group's table of options
    lives beside its builders (``data.OPTIONS``, ``models.OPTIONS``, ...), the only place an
    option's name is written in code."""

    schema: type
    build: Callable[..., Any]


@dataclass(frozen=True)
class ModelOption(Option):
    """A model and the ``losses`` it takes; a ``surface`` is itself the loss and takes no data."""

    losses: tuple[str, ...]
    surface: bool = False


@dataclass(frozen=True)
class OptimizerOption(Option):
    """An optimizer; ``build(configs, shapes, lr_keys)`` makes the rule of a cohort from its
    runs' configs, the model's parameter shapes and which runs always share their learning
    rate (equal keys; see ``engine.learning_rate_keys``). A ``full_batch`` one takes the whole
    training split at every update. ``check(cfg)``, if given, validates what the schema cannot
    (and may complete ``cfg``, e.g. with a user rule's default hyperparameters)."""

    full_batch: bool = False
    check: Callable[[Any], None] | None = None


_OPTIONS: dict[str, dict[str, Option]] = {}


def register(options: dict[str, dict[str, Option]]) -> None:
    """Store the run schema and each option's schema, as ``schema/<group>/<name>``, in Hydra's
    ConfigStore, and keep ``options`` (group -> name -> option) for :func:`check_combination`.
    Composing a config needs this done first: importing :mod:`harness.registry` does it."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    for group, named in options.items():
        for name, option in named.items():
            store.store(group=f"schema/{group}", name=name, node=option.schema(name=name))
    _OPTIONS.update(options)


# ----------------------------------------------------------------------------- validation


def to_spec(cfg: DictConfig) -> RunConfig:
    """Turn a composed config into dataclasses, running every range check, and refuse numbers
    that are not finite and keys its schema lacks (see :func:`check_values`); then the
    optimizer's own check and the checks across groups."""
    try:
        spec = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "config")
        raise ConfigError(key, "", str(error).split("\n")[0]) from error
    check_values(spec, "")
    check_optimizer = _OPTIONS["optimizer"][spec.optimizer.name].check
    if check_optimizer is not None:
        check_optimizer(spec.optimizer)
    check_combination(spec)
    return spec


def check_values(node: Any, key: str) -> None:
    """Refuse, anywhere in ``node`` (found at ``key``), a float that is inf or NaN (alone or
    in a list) and an attribute that is not a field of its dataclass: ``OmegaConf.to_object``
    sets a key added with ``+`` as such an attribute, which nothing would read. Keys inside
    a ``dict`` field (a torch optimizer's or a module's ``kwargs``, a rule's ``hp``) are
    free-form and only their values are checked."""
    if is_dataclass(node):
        names = [f.name for f in fields(node)]
        for extra in sorted(vars(node).keys() - set(names)):
            owner = f"{key} {node.name}" if hasattr(node, "name") else key or "the run"
            allowed = ", ".join(name for name in names if name != "name")
            raise ConfigError(
                _dotted(key, extra),
                getattr(node, extra),
                f"{owner} takes {allowed}; + adds keys only to a free-form dict "
                "(optimizer.hp of optimizer=rule, optimizer.kwargs of optimizer=torch, "
                "model.kwargs of model=module)",
            )
        children = {name: getattr(node, name) for name in names}
    elif isinstance(node, dict):
        children = node
    else:
        _require(_finite(node), key, node, "expected a finite number")
        return
    for name, child in children.items():
        check_values(child, _dotted(key, str(name)))


def _finite(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_finite(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_combination(spec: RunConfig) -> None:
    """Checks across groups that need no data: model/loss, surfaces, full-batch optimizers.
    The facts come from the options given to :func:`register`."""
    models = _OPTIONS["model"]
    model, loss = spec.model.name, spec.loss.name
    allowed = models[model].losses
    _require(loss in allowed, "loss", loss, f"model {model} takes loss {', '.join(allowed)}")
    surface = models[model].surface
    surfaces = ", ".join(name for name, option in models.items() if option.surface)
    _require(
        surface == isinstance(spec.dataset, NoDatasetConfig),
        "dataset",
        spec.dataset.name,
        f"surface models ({surfaces}) take dataset=none, and only they do",
    )
    if _OPTIONS["optimizer"][spec.optimizer.name].full_batch:
        _require(
            spec.trainer.batch_size is None,
            "trainer.batch_size",
            spec.trainer.batch_size,
            f"optimizer {spec.optimizer.name} is full batch: expected null",
        )
    if surface:
        _require(
            spec.trainer.batch_size is None,
            "trainer.batch_size",
            spec.trainer.batch_size,
            "a loss surface has no data: expected null",
        )
        _require(
            spec.trainer.epochs is None,
            "trainer.epochs",
            spec.trainer.epochs,
            "a loss surface has no data: train by trainer.steps",
        )
    if getattr(spec.schedule, "monitor", None) == "val":
        _require(
            spec.dataset.val_fraction > 0,
            "schedule.monitor",
            "val",
            "needs a validation split (dataset.val_fraction > 0)",
        )


# ----------------------------------------------------------------------------- identity


RUN_IDENTITY_EXCLUDES = ("tracking", "run_name", "objective")
# Keys of a group that do not change a run's numbers: left out of its identity.
SETTINGS_KEYS = (("trainer", "checkpoint_every"), ("trainer", "checkpoint_dir"))
# Keys added after runs were recorded without them: left out of the identity while they hold
# this value, so that those runs are still found (a rerun of an old study resumes).
LATER_KEYS = {("optimizer", "weight_decay"): 0.0}


def as_dict(spec: RunConfig) -> dict[str, Any]:
    """The spec as plain nested dicts."""
    return asdict(spec)


def yaml_text(tree: dict[str, Any]) -> str:
    """A config tree as YAML, in its own key order (libyaml's emitter where installed)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(tree, Dumper=dumper, sort_keys=False, default_flow_style=False)


def fingerprint(spec: RunConfig) -> str:
    """SHA-256 (first 16 hex digits) of the run's config without tracking keys or its name,
    the ``SETTINGS_KEYS``, nor the ``LATER_KEYS`` at their neutral values."""
    content = {k: v for k, v in as_dict(spec).items() if k not in RUN_IDENTITY_EXCLUDES}
    for group, key in SETTINGS_KEYS:
        content[group].pop(key)
    for (group, key), neutral in LATER_KEYS.items():
        if content[group].get(key, neutral) == neutral:
            content[group].pop(key, None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"optimizer.lr": 0.1, ...}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def hyperparameters(node: Any) -> dict[str, float]:
    """The values a cohort may vary in an optimizer or schedule config, each run its own: the
    numeric fields, and the entries of a user rule's ``hp`` under their own names."""
    values = {f.name: getattr(node, f.name) for f in fields(node)}
    values |= values.pop("hp", {})
    return {name: float(value) for name, value in values.items() if is_number(value)}
