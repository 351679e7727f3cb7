"""Data sets: the lecture's toy sets, generated sets, scikit-learn's bundled sets and
torchvision's image sets (MNIST, Fashion-MNIST, CIFAR-10).

Every loader returns all (x, y) pairs; :func:`load` then draws the seeded train/validation/test
split and standardises features (and regression targets, where asked) with statistics of the
training split only: per feature for tables, per channel for the image sets (whose pixels are
scaled to [0, 1] first). Toy sets ship as package data, the real tabular sets come with
scikit-learn, and the image sets are downloaded into a cache folder on first use (see
:mod:`harness.images`). A data file that cannot be used (a value that is not a finite number, a
corrupt or truncated IDX file or CIFAR batch) is a :class:`DataFileError` naming the file (and
the line), which :func:`load` refuses as a ConfigError on ``dataset``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from harness.config import (
    ConfigError,
    DatasetConfig,
    GeneratedDatasetConfig,
    ImageDatasetConfig,
    NoDatasetConfig,
    Option,
    SklearnDatasetConfig,
    ToyDatasetConfig,
)
from harness.images import DataFileError, read_images

REGRESSION, BINARY, MULTICLASS, NO_DATA = "regression", "binary", "multiclass", "none"


@dataclass(frozen=True)
class Dataset:
    """Tensors of one split of a data set; ``y`` is float for regression, int64 for classes.
    Inputs are flat, (N, features); ``shape`` is one example's shape before flattening (an
    image's (channels, height, width); ``(features,)`` for a table)."""

    name: str
    task: str
    classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    split_digest: str
    shape: tuple[int, ...] = ()

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: ``shape`` where the loader gave one, else ``(features,)``."""
        return self.shape or (self.features,)

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}

    def to(self, device: torch.device, dtype: torch.dtype) -> Dataset:
        """The same data on ``device``, features (and regression targets) in ``dtype``."""
        y_dtype = dtype if self.task == REGRESSION else torch.int64
        moved = {}
        for part in ("train", "val", "test"):
            moved[f"x_{part}"] = getattr(self, f"x_{part}").to(device, dtype)
            moved[f"y_{part}"] = getattr(self, f"y_{part}").to(device, y_dtype)
        return replace(self, **moved)


@dataclass(frozen=True)
class Arrays:
    """Raw arrays of a data set, before splitting; ``test`` holds a fixed test set if any;
    ``shape`` is one example's shape when its features are an image's pixels; with
    ``pixels`` the features are uint8 pixel values (channel after channel, as in ``shape``),
    to be scaled to [0, 1] and standardised per channel."""

    x: np.ndarray
    y: np.ndarray
    task: str
    test: tuple[np.ndarray, np.ndarray] | None = None
    shape: tuple[int, ...] = ()
    pixels: bool = False


# ----------------------------------------------------------------------------- loaders


def read_csv(path: Path) -> np.ndarray:
    """The rows of a comma-separated file of numbers after its header line, as a 2-D array;
    blank lines are skipped. A field that is not a finite number, or a row of another
    length than the first, is a DataFileError naming the file and the line."""
    rows: list[list[float]] = []
    for number, line in enumerate(path.read_text().splitlines()[1:], start=2):
        if not line.strip():
            continue
        try:
            row = [float(text) for text in line.split(",")]
        except ValueError:
            row = []
        width = len(rows[0]) if rows else len(row)
        if not row or len(row) != width or not all(map(math.isfinite, row)):
            raise DataFileError(
                f"{path} line {number}: expected finite numbers separated by commas, "
                f"as many as on the first row; found {line.strip()!r}"
            )
        rows.append(row)
    if not rows:
        raise DataFileError(f"{path} holds no rows of numbers after its header line")
    return np.array(rows, dtype=np.float64)


def _toy(file_name: str) -> Callable[[DatasetConfig], Arrays]:
    def load(_: DatasetConfig) -> Arrays:
        with resources.as_file(resources.files("harness.toydata").joinpath(file_name)) as path:
            table = read_csv(path)
        return Arrays(table[:, :1], table[:, 1], REGRESSION)

    return load


def _regression1d(cfg: DatasetConfig) -> Arrays:
    """y = sin(x) + noise * eps, x uniform on [-3, 3]."""
    rng = np.random.default_rng(cfg.seed)
    x = rng.uniform(-3.0, 3.0, size=(cfg.size, 1))
    y = np.sin(x[:, 0]) + cfg.noise * rng.standard_normal(cfg.size)
    return Arrays(x, y, REGRESSION)


def _blobs(cfg: DatasetConfig) -> Arrays:
    """``classes`` Gaussian blobs in ``features`` dimensions with standard deviation ``noise``."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(
        n_samples=cfg.size,
        centers=cfg.classes,
        n_features=cfg.features,
        cluster_std=cfg.noise,
        random_state=cfg.seed,
    )
    return Arrays(x, y, BINARY if cfg.classes == 2 else MULTICLASS)


def _moons(cfg: DatasetConfig) -> Arrays:
    """Two interleaving half circles with Gaussian ``noise``."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=cfg.size, noise=cfg.noise, random_state=cfg.seed)
    return Arrays(x, y, BINARY)


def _sklearn(
    loader_name: str, task: str, shape: tuple[int, ...] = ()
) -> Callable[[DatasetConfig], Arrays]:
    def load(_: DatasetConfig) -> Arrays:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        x = np.asarray(bunch.data, dtype=np.float64)
        return Arrays(x, np.asarray(bunch.target), task, shape=shape)

    return load


def _images(cfg: DatasetConfig) -> Arrays:
    """torchvision's image set ``cfg.name``, flattened; its test files are the test split;
    ``limit`` keeps the first training images."""
    (x, y), (x_test, y_test) = read_images(cfg.name, cfg.root, cfg.mirror)
    if cfg.limit is not None:
        x, y = x[: cfg.limit], y[: cfg.limit]
    features = math.prod(x.shape[1:])
    return Arrays(
        x.reshape(len(x), features),
        y,
        MULTICLASS,
        test=(x_test.reshape(len(x_test), features), y_test),
        shape=x.shape[1:],
        pixels=True,
    )


def _no_data(_: DatasetConfig) -> Arrays:
    return Arrays(np.zeros((0, 0)), np.zeros(0), NO_DATA)


OPTIONS: dict[str, Option] = {
    "linear_toy": Option(ToyDatasetConfig, _toy("udl_linear_toy.csv")),
    "gabor_toy": Option(ToyDatasetConfig, _toy("udl_gabor_toy.csv")),
    "regression1d": Option(GeneratedDatasetConfig, _regression1d),
    "blobs": Option(GeneratedDatasetConfig, _blobs),
    "moons": Option(GeneratedDatasetConfig, _moons),
    "diabetes": Option(SklearnDatasetConfig, _sklearn("load_diabetes", REGRESSION)),
    "breast_cancer": Option(SklearnDatasetConfig, _sklearn("load_breast_cancer", BINARY)),
    "digits": Option(SklearnDatasetConfig, _sklearn("load_digits", MULTICLASS, (1, 8, 8))),
    "wine": Option(SklearnDatasetConfig, _sklearn("load_wine", MULTICLASS)),
    "mnist": Option(ImageDatasetConfig, _images),
    "fashion_mnist": Option(ImageDatasetConfig, _images),
    "cifar10": Option(ImageDatasetConfig, _images),
    "none": Option(NoDatasetConfig, _no_data),
}
"""Every data set by name: its schema and its loader, which returns all (x, y) pairs."""


# ----------------------------------------------------------------------------- split


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int):
    """A seeded permutation of range(n) cut into (train, val, test) index arrays.

    With both fractions 0 the order is left as it is, so the toy sets keep the book's order.
    """
    if val_fraction == 0 and test_fraction == 0:
        return np.arange(n), np.arange(0), np.arange(0)
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """(a - mean_train) / std_train for every array; constant columns are only centred."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def _scale_pixels(parts: list[np.ndarray], channels: int, standardize: bool) -> list[np.ndarray]:
    """uint8 pixels (N, channels * pixels per channel) as float64 in [0, 1]; with
    ``standardize``, minus the mean and over the standard deviation of all pixels of that
    channel in ``parts[0]`` (the training split); a constant channel is only centred. Each
    part is copied once, into its float64 result."""
    per_channel = parts[0].shape[1] // channels
    train = parts[0].reshape(len(parts[0]), channels, per_channel)
    shift, scale = np.zeros(channels), np.full(channels, 255.0)
    if standardize and len(train):
        values = np.arange(256) / 255.0
        for channel in range(channels):
            counts = np.bincount(train[:, channel].ravel(), minlength=256)
            mean = counts @ values / counts.sum()
            std = math.sqrt(counts @ (values - mean) ** 2 / counts.sum())
            shift[channel], scale[channel] = 255.0 * mean, 255.0 * (std if std > 0 else 1.0)
    scaled = []
    for part in parts:
        x = part.reshape(len(part), channels, per_channel).astype(np.float64)
        x -= shift[:, None]
        x /= scale[:, None]
        scaled.append(x.reshape(len(part), channels * per_channel))
    return scaled


def load(cfg: DatasetConfig) -> Dataset:
    """Load, split and standardise the data set ``cfg`` names; a data file that cannot be used
    is a ConfigError on ``dataset``."""
    try:
        arrays = OPTIONS[cfg.name].build(cfg)
    except DataFileError as error:
        raise ConfigError("dataset", cfg.name, str(error)) from error
    if arrays.test is not None and cfg.test_fraction > 0:
        raise ConfigError(
            "dataset.test_fraction",
            cfg.test_fraction,
            f"{cfg.name} has its own test files: expected 0",
        )
    train, val, test = split_indices(
        len(arrays.y), cfg.val_fraction, cfg.test_fraction, cfg.split_seed
    )
    x_parts = [arrays.x[train], arrays.x[val], arrays.x[test]]
    y_parts = [arrays.y[train], arrays.y[val], arrays.y[test]]
    if arrays.test is not None:
        x_parts[2], y_parts[2] = arrays.test
    if arrays.pixels:
        x_parts = _scale_pixels(x_parts, arrays.shape[0], cfg.standardize)
    elif cfg.standardize and len(train):
        x_parts = _standardize(*x_parts)
        if arrays.task == REGRESSION and getattr(cfg, "standardize_target", False):
            y_parts = _standardize(*y_parts)
    digest = hashlib.sha256(
        b"".join(np.ascontiguousarray(i).tobytes() for i in (train, val, test))
    ).hexdigest()[:16]
    y_dtype = torch.float64 if arrays.task == REGRESSION else torch.int64
    labelled = [y for y in y_parts if len(y)]
    classes = int(max(y.max() for y in labelled)) + 1 if arrays.task in (BINARY, MULTICLASS) else 0
    features = arrays.x.shape[1] if arrays.x.ndim == 2 else 0
    tensors = {}
    for part, x, y in zip(("train", "val", "test"), x_parts, y_parts, strict=True):
        tensors[f"x_{part}"] = torch.as_tensor(x, dtype=torch.float64).reshape(len(y), features)
        tensors[f"y_{part}"] = torch.as_tensor(y).to(y_dtype)
    return Dataset(
        cfg.name, arrays.task, classes, split_digest=digest, shape=arrays.shape, **tensors
    )
