"""Data sets, models and losses: the lecture's check values and gradients against finite
differences."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_spec, free_port

from harness import data, problem
from harness.config import ConfigError


def loss_at(spec_overrides: list[str], phi: list[float]) -> float:
    spec = compose_spec(*spec_overrides)
    built = problem.build(spec)
    theta = torch.tensor([phi], dtype=torch.float64)
    return float(built.loss(theta, built.data.x_train, built.data.y_train))


def test_linear_toy_check_value():
    assert loss_at(["dataset=linear_toy", "model=linear"], [0.6, -0.2]) == pytest.approx(
        12.367, abs=5e-4
    )


def test_gabor_toy_check_value_with_the_books_envelope():
    assert loss_at(
        ["dataset=gabor_toy", "model=gabor", "model.envelope=32"], [0.6, -0.2]
    ) == pytest.approx(16.419, abs=5e-4)


def test_gabor_global_minimum_is_near_zero_sixteen():
    spec = compose_spec("model.envelope=32")
    built = problem.build(spec)
    phi0, phi1 = torch.meshgrid(
        torch.linspace(-10, 10, 201, dtype=torch.float64),
        torch.linspace(2.5, 22.5, 201, dtype=torch.float64),
        indexing="ij",
    )
    theta = torch.stack([phi0.reshape(-1), phi1.reshape(-1)], 1)
    losses = built.loss(theta, built.data.x_train, built.data.y_train)
    best = int(losses.argmin())
    assert float(losses[best]) == pytest.approx(0.646, abs=0.01)
    assert theta[best].tolist() == pytest.approx([0.0, 16.0], abs=0.5)


def test_half_mean_reduction_is_the_lecture_snippet():
    book = loss_at(["dataset=linear_toy", "model=linear"], [0.6, -0.2])
    snippet = loss_at(
        ["dataset=linear_toy", "model=linear", "loss.reduction=mean", "loss.scale=0.5"], [0.6, -0.2]
    )
    assert snippet == pytest.approx(0.5 * book / 12)


def test_toy_sets_have_the_books_sizes_and_no_held_out_points():
    for name, size in (("linear_toy", 12), ("gabor_toy", 30)):
        loaded = data.load(compose_spec(f"dataset={name}").dataset)
        assert loaded.sizes == {"train": size, "val": 0, "test": 0}


def test_splits_are_seeded_disjoint_and_cover_the_data():
    cfg = compose_spec("dataset=wine").dataset
    train, val, test = data.split_indices(178, cfg.val_fraction, cfg.test_fraction, 3)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(178))
    again = data.split_indices(178, cfg.val_fraction, cfg.test_fraction, 3)
    assert all((a == b).all() for a, b in zip((train, val, test), again, strict=True))
    other = data.split_indices(178, cfg.val_fraction, cfg.test_fraction, 4)
    assert not (train == other[0]).all()
    assert (len(val), len(test)) == (36, 36)


def test_standardisation_uses_training_statistics_only():
    loaded = data.load(compose_spec("dataset=breast_cancer").dataset)
    assert loaded.x_train.mean(0).abs().max() < 1e-10
    assert (loaded.x_train.std(0, unbiased=False) - 1).abs().max() < 1e-10
    assert loaded.x_test.mean(0).abs().max() > 1e-3  # the test split is not re-centred


def test_split_seed_changes_the_digest():
    first = data.load(compose_spec("dataset=digits").dataset)
    second = data.load(compose_spec("dataset=digits", "dataset.split_seed=1").dataset)
    assert first.split_digest != second.split_digest


@pytest.mark.parametrize(
    ("name", "task", "classes", "features"),
    [
        ("diabetes", "regression", 0, 10),
        ("breast_cancer", "binary", 2, 30),
        ("digits", "multiclass", 10, 64),
        ("wine", "multiclass", 3, 13),
        ("regression1d", "regression", 0, 1),
        ("moons", "binary", 2, 2),
        ("blobs", "multiclass", 3, 2),
    ],
)
def test_bundled_and_generated_sets_load(name, task, classes, features):
    loaded = data.load(compose_spec(f"dataset={name}").dataset)
    assert (loaded.task, loaded.classes, loaded.features) == (task, classes, features)
    assert sum(loaded.sizes.values()) > 0 and loaded.sizes["val"] > 0


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as stream:
            stream.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(root, train=40, test=10, gz=False, folder="MNIST"):
    """The four IDX files of a small MNIST-style set where torchvision keeps them
    (``root/<folder>/raw``, ``folder`` its class name); returns that folder."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (train, 28, 28)), gz)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(train) % 10, gz)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (test, 28, 28)), gz)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(test) % 10, gz)
    return raw


def dead_mirror() -> str:
    """A base URL on 127.0.0.1 where nothing listens: a download from it fails at once."""
    return f"dataset.mirror=http://127.0.0.1:{free_port()}/"


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_are_read(tmp_path, gz):
    write_mnist(tmp_path, gz=gz)
    spec = compose_spec("dataset=mnist", f"dataset.root={tmp_path}", dead_mirror())
    loaded = data.load(spec.dataset)
    assert loaded.features == 784 and loaded.classes == 10 and loaded.shape == (1, 28, 28)
    assert loaded.sizes == {"train": 36, "val": 4, "test": 10}


def test_idx_classes_count_the_test_labels_too(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(12) % 6)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10))
    spec = compose_spec("dataset=mnist", f"dataset.root={tmp_path}", dead_mirror())
    assert data.load(spec.dataset).classes == 10


def test_missing_idx_files_say_where_to_put_them(tmp_path):
    spec = compose_spec("dataset=fashion_mnist", f"dataset.root={tmp_path}", dead_mirror())
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte.gz .gzipped or not. into "):
        data.load(spec.dataset)


def _cut(path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


CORRUPT_IDX = {  # how each test spoils a good set, and the file the refusal names
    "empty": (lambda raw: _cut(raw / "train-labels-idx1-ubyte", 0), "train-labels"),
    "other type": (
        lambda raw: (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x0d\1\0\0\0\2ab"),
        "t10k-labels",
    ),
    "truncated": (lambda raw: _cut(raw / "train-images-idx3-ubyte", 1000), "train-images"),
    "labels for images": (
        lambda raw: write_idx(raw / "train-labels-idx1-ubyte", np.zeros((40, 28, 28))),
        "train-labels",
    ),
    "fewer labels": (
        lambda raw: write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(9)),
        "t10k-labels",
    ),
}


@pytest.mark.parametrize("spoil", CORRUPT_IDX)
def test_a_corrupt_idx_file_is_refused_by_name(tmp_path, spoil):
    raw = write_mnist(tmp_path)
    damage, name = CORRUPT_IDX[spoil]
    damage(raw)
    spec = compose_spec("dataset=mnist", f"dataset.root={tmp_path}", dead_mirror())
    with pytest.raises(ConfigError, match=f"dataset='mnist' is not allowed: .*{name}"):
        data.load(spec.dataset)


def test_a_truncated_gzipped_idx_file_is_refused_by_name(tmp_path):
    raw = write_mnist(tmp_path, gz=True)
    _cut(raw / "train-images-idx3-ubyte.gz", 2000)
    spec = compose_spec("dataset=mnist", f"dataset.root={tmp_path}", dead_mirror())
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.gz cannot be read"):
        data.load(spec.dataset)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("x,y\n1,2\nnan,3\n", 3),
        ("x,y\n1,2\n\n3,inf\n", 4),
        ("x,y\n1,2\n3,-Infinity\n", 3),
        ("x,y\n1,2\n3,two\n", 3),
        ("x,y\n1,2\n3\n", 3),
    ],
)
def test_a_csv_value_that_is_not_a_finite_number_is_refused_with_its_line(tmp_path, text, line):
    path = tmp_path / "toy.csv"
    path.write_text(text)
    with pytest.raises(data.DataFileError, match=f"{path} line {line}: expected finite numbers"):
        data.read_csv(path)


@pytest.mark.parametrize("name", ["udl_linear_toy.csv", "udl_gabor_toy.csv"])
def test_the_toy_files_read_as_numpy_reads_them(name):
    path = ROOT / "harness" / "toydata" / name
    np.testing.assert_array_equal(data.read_csv(path), np.loadtxt(path, delimiter=",", skiprows=1))


# --------------------------------------------------------------------- gradients

CASES = [
    ["dataset=linear_toy", "model=linear"],
    ["dataset=gabor_toy", "model=gabor", "model.envelope=32"],
    ["dataset=regression1d", "model=linear", "loss=gaussian_nll"],
    ["dataset=regression1d", "model=mlp", "loss=gaussian_nll", "model.activation=tanh"],
    ["dataset=moons", "model=logistic", "loss=bce"],
    ["dataset=moons", "model=mlp", "loss=bce", "model.activation=gelu"],
    ["dataset=wine", "model=softmax", "loss=cross_entropy"],
    [
        "dataset=wine",
        "model=mlp",
        "loss=cross_entropy",
        "model.depth=2",
        "model.width=5",
        "model.activation=sigmoid",
    ],
    ["dataset=diabetes", "model=mlp", "model.width=4", "loss.reduction=mean"],
    ["dataset=none", "model=adam_demo", "loss=surface"],
    ["dataset=none", "model=rosenbrock", "loss=surface"],
]


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: "-".join(v.split("=")[1] for v in o[:3]))
def test_gradients_match_finite_differences(overrides):
    built = problem.build(compose_spec(*overrides))
    generator = torch.Generator().manual_seed(0)
    theta = torch.stack([built.model.init(generator) for _ in range(2)]).requires_grad_(True)
    x, y = built.data.x_train[:20], built.data.y_train[:20]

    def total(t):
        return built.loss(t, x, y).sum()

    assert torch.autograd.gradcheck(total, (theta,), eps=1e-6, atol=1e-5, rtol=1e-4)
