"""Data sets: the lecture's toy sets, generated sets, scikit-learn's bundled sets and IDX files.

Every loader returns all (x, y) pairs; :func:`load` then draws the seeded train/validation/test
split and standardises features (and regression targets, where asked) with statistics of the
training split only. Nothing is downloaded: toy sets ship as package data, the real sets come
with scikit-learn, and MNIST-style sets are read from files the user placed in ``root``. A data
file that cannot be used (a value that is not a finite number, a corrupt or truncated IDX file)
is a :class:`DataFileError` naming the file (and the line), which :func:`load` refuses as a
ConfigError on ``dataset``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from harness.config import (
    ConfigError,
    DatasetConfig,
    GeneratedDatasetConfig,
    IdxDatasetConfig,
    NoDatasetConfig,
    Option,
    SklearnDatasetConfig,
    ToyDatasetConfig,
)

REGRESSION, BINARY, MULTICLASS, NO_DATA = "regression", "binary", "multiclass", "none"


@dataclass(frozen=True)
class Dataset:
    """Tensors of one split of a data set; ``y`` is float for regression, int64 for classes."""

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

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

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
    """Raw arrays of a data set, before splitting; ``test`` holds a fixed test set if any."""

    x: np.ndarray
    y: np.ndarray
    task: str
    test: tuple[np.ndarray, np.ndarray] | None = None


# ----------------------------------------------------------------------------- loaders


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file (and the line)."""


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


def _sklearn(loader_name: str, task: str) -> Callable[[DatasetConfig], Arrays]:
    def load(_: DatasetConfig) -> Arrays:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        return Arrays(np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), task)

    return load


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX array of ``ndim`` dimensions (optionally gzipped): magic 0,0,type,ndim;
    big-endian int32 dims; data. Anything else is a DataFileError naming the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as error:
        raise DataFileError(f"{path} cannot be read: {error}") from error
    if len(raw) < 4 or raw[:3] != bytes([0, 0, 0x08]) or raw[3] != ndim:
        raise DataFileError(f"{path} is not an unsigned-byte IDX file of ndim {ndim}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise DataFileError(f"{path} holds {len(raw) - header} values, its header says {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(root: Path, base: str) -> Path | None:
    for candidate in (root / base, root / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx(cfg: DatasetConfig, source: str) -> Arrays:
    """Images scaled to [0, 1] and flattened; the t10k files are the test split. Missing files
    are an error that says where to download them: ``source``."""
    root = Path(cfg.root).expanduser()
    parts = {}
    for part, (images_name, labels_name) in IDX_FILES.items():
        images, labels = _find_idx(root, images_name), _find_idx(root, labels_name)
        if images is None or labels is None:
            names = ", ".join(n for pair in IDX_FILES.values() for n in pair)
            raise ConfigError(
                "dataset.root",
                str(root),
                f"expected the four {cfg.name} IDX files ({names}, optionally .gz) there; "
                f"download them from {source} and set dataset.root to their folder",
            )
        pixels, targets = read_idx(images, 3), read_idx(labels, 1)
        if len(pixels) != len(targets):
            raise DataFileError(
                f"{images} holds {len(pixels)} images, {labels} {len(targets)} labels"
            )
        x = pixels.reshape(len(pixels), -1).astype(np.float64) / 255.0
        parts[part] = (x, targets.astype(np.int64))
    x, y = parts["train"]
    if cfg.limit is not None:
        x, y = x[: cfg.limit], y[: cfg.limit]
    return Arrays(x, y, MULTICLASS, test=parts["test"])


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
    "digits": Option(SklearnDatasetConfig, _sklearn("load_digits", MULTICLASS)),
    "wine": Option(SklearnDatasetConfig, _sklearn("load_wine", MULTICLASS)),
    "mnist": Option(
        IdxDatasetConfig,
        partial(_idx, source="the MNIST page (yann.lecun.com/exdb/mnist) or any mirror of it"),
    ),
    "fashion_mnist": Option(
        IdxDatasetConfig,
        partial(_idx, source="github.com/zalandoresearch/fashion-mnist (data/fashion)"),
    ),
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
    if cfg.standardize and len(train):
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
    return Dataset(cfg.name, arrays.task, classes, split_digest=digest, **tensors)
