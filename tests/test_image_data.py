"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision: downloaded from a local HTTP server
on 127.0.0.1 (``dataset.mirror``) serving small files in each set's own format, checked
against torchvision's MD5 checksums (set to those of the small files), cached under
``dataset.root`` and standardised per channel; without a network, with a wrong checksum, an
unwritable root or a corrupt file, one line says what to do and no partial file is left."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_spec, free_port, runs_in
from test_problems import write_idx

from harness import data, engine, images, paths
from harness import problem as problem_module
from harness.config import ConfigError

IDX_SETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's class names
TRAIN, TEST = 40, 10  # MNIST-style images
CIFAR_BATCH, CIFAR_TEST = 4, 10  # images in each of the 5 training batches, in the test batch


def md5(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


def idx_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    write_idx(tmp_path / "file", array, gz=True)
    return (tmp_path / "file.gz").read_bytes()


def mnist_files(tmp_path: Path) -> dict[str, bytes]:
    """The four gzipped IDX files of a small MNIST-style set, by torchvision's names."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (TRAIN, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(TRAIN) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (TEST, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(TEST) % 10,
    }
    return {name: idx_bytes(array, tmp_path) for name, array in arrays.items()}


def cifar_batches() -> dict[str, bytes]:
    """Small pickled CIFAR-10 batches (each channel drawn from its own range of values, so
    that per-channel and global standardisation differ) and the meta file, by name."""
    rng = np.random.default_rng(1)
    sizes = {f"data_batch_{i}": CIFAR_BATCH for i in range(1, 6)} | {"test_batch": CIFAR_TEST}
    files = {}
    for index, (name, size) in enumerate(sizes.items()):
        channels = [rng.integers(60 * c, 60 * c + 100, (size, 1024)) for c in range(3)]
        entry = {
            "batch_label": name,
            "labels": [(index * size + i) % 10 for i in range(size)],
            "data": np.concatenate(channels, axis=1).astype(np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(size)],
        }
        files[name] = pickle.dumps(entry)
    files["batches.meta"] = pickle.dumps({"label_names": [str(i) for i in range(10)]})
    return files


def cifar_archive(batches: dict[str, bytes]) -> bytes:
    """cifar-10-python.tar.gz: the batches in the folder cifar-10-batches-py."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def use_checksums_of(monkeypatch, name: str, files: dict[str, bytes]) -> None:
    """Set the MD5 checksums torchvision checks for ``name`` to those of ``files``."""
    datasets = images.torchvision_datasets()
    if name == "cifar10":
        source = datasets.CIFAR10
        if source.filename in files:
            monkeypatch.setattr(source, "tgz_md5", md5(files[source.filename]))
        for attribute in ("train_list", "test_list"):
            batches = [[batch, md5(files[batch])] for batch, _ in getattr(source, attribute)]
            monkeypatch.setattr(source, attribute, batches)
        meta = source.meta | {"md5": md5(files[source.meta["filename"]])}
        monkeypatch.setattr(source, "meta", meta)
    else:
        source = getattr(datasets, IDX_SETS[name])
        resources = [(file, md5(files[file])) for file, _ in source.resources]
        monkeypatch.setattr(source, "resources", resources)


def served_files(name: str, tmp_path: Path, monkeypatch) -> dict[str, bytes]:
    """What a mirror of ``name`` serves, its checksums made torchvision's."""
    if name == "cifar10":
        batches = cifar_batches()
        files = {"cifar-10-python.tar.gz": cifar_archive(batches), **batches}
    else:
        files = mnist_files(tmp_path)
    use_checksums_of(monkeypatch, name, files)
    return files


def write_cifar(root: Path, monkeypatch) -> Path:
    """Small CIFAR-10 batches where torchvision keeps them, its checksums made theirs;
    returns their folder."""
    batches = cifar_batches()
    use_checksums_of(monkeypatch, "cifar10", batches)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, content in batches.items():
        (folder / name).write_bytes(content)
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Mirror:
    """An HTTP server on a free port of 127.0.0.1, in a thread, serving ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        handler = partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def serve(self, files: dict[str, bytes]) -> None:
        for name, content in files.items():
            (self.folder / name).write_bytes(content)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = Mirror(folder)
    yield server
    server.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


def load(name: str, root: Path | None, mirror_url: str, *overrides: str) -> data.Dataset:
    root_override = [f"dataset.root={root}"] if root is not None else []
    spec = compose_spec(
        f"dataset={name}", *root_override, f"dataset.mirror={mirror_url}", *overrides
    )
    return data.load(spec.dataset)


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def channel_stats(x: torch.Tensor, channels: int) -> tuple[np.ndarray, np.ndarray]:
    per_channel = x.reshape(len(x), channels, -1).transpose(0, 1).reshape(channels, -1)
    return per_channel.mean(1).numpy(), per_channel.std(1, correction=0).numpy()


# ----------------------------------------------------------------------------- download


@pytest.mark.parametrize("name", IDX_SETS)
def test_an_mnist_style_set_is_downloaded_then_loaded(tmp_path, mirror, monkeypatch, name):
    mirror.serve(served_files(name, tmp_path, monkeypatch))
    loaded = load(name, tmp_path / "cache", mirror.url)
    assert loaded.sizes == {"train": 36, "val": 4, "test": TEST}
    assert (loaded.classes, loaded.shape, loaded.input_shape) == (10, (1, 28, 28), (1, 28, 28))
    assert loaded.x_train.shape == (36, 784) and loaded.x_train.dtype == torch.float64
    raw = tmp_path / "cache" / IDX_SETS[name] / "raw"
    assert [path.name for path in files_under(tmp_path / "cache")] == sorted(
        [*mnist_files(tmp_path), "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
        + ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    )
    assert all(path.parent == raw for path in files_under(tmp_path / "cache"))
    mean, std = channel_stats(loaded.x_train, 1)
    np.testing.assert_allclose(mean, 0, atol=1e-12)
    np.testing.assert_allclose(std, 1, rtol=1e-12)


def test_cifar10_is_downloaded_then_loaded_and_standardised_per_channel(
    tmp_path, mirror, monkeypatch
):
    mirror.serve(served_files("cifar10", tmp_path, monkeypatch))
    loaded = load("cifar10", tmp_path / "cache", mirror.url)
    assert loaded.sizes == {"train": 18, "val": 2, "test": CIFAR_TEST}
    assert (loaded.classes, loaded.shape, loaded.features) == (10, (3, 32, 32), 3072)
    cached = tmp_path / "cache" / "cifar-10-batches-py"
    assert {path.name for path in cached.iterdir()} == set(cifar_batches())
    mean, std = channel_stats(loaded.x_train, 3)
    np.testing.assert_allclose(mean, 0, atol=1e-12)
    np.testing.assert_allclose(std, 1, rtol=1e-12)
    # against the pixels: in [0, 1] without standardising, the test batch in its order
    plain = load("cifar10", tmp_path / "cache", mirror.url, "dataset.standardize=false")
    test_batch = pickle.loads(cifar_batches()["test_batch"])
    np.testing.assert_array_equal(plain.x_test.numpy(), test_batch["data"] / 255.0)
    np.testing.assert_array_equal(plain.y_test.numpy(), test_batch["labels"])
    assert plain.x_train.min() >= 0 and plain.x_train.max() <= 1
    train_mean, train_std = channel_stats(plain.x_train, 3)
    train_mean, train_std = torch.from_numpy(train_mean), torch.from_numpy(train_std)
    expected = (plain.x_test.reshape(-1, 3, 1024) - train_mean[:, None]) / train_std[:, None]
    torch.testing.assert_close(loaded.x_test, expected.reshape(-1, 3072), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_reads_the_cache_as_its_own(tmp_path, mirror, monkeypatch, name):
    mirror.serve(served_files(name, tmp_path, monkeypatch))
    ours = load(name, tmp_path, mirror.url, "dataset.standardize=false")
    datasets = images.torchvision_datasets()
    if name == "cifar10":
        theirs = datasets.CIFAR10(str(tmp_path), train=False)
        pixels = theirs.data.transpose(0, 3, 1, 2)  # theirs: height, width, channel
    else:
        theirs = datasets.MNIST(str(tmp_path), train=False)
        pixels = theirs.data.numpy()[:, None]
    np.testing.assert_array_equal(ours.x_test.numpy(), pixels.reshape(len(pixels), -1) / 255.0)
    np.testing.assert_array_equal(ours.y_test.numpy(), np.asarray(theirs.targets))


def test_a_second_load_reads_the_cache_without_a_server(tmp_path, mirror, monkeypatch):
    mirror.serve(served_files("mnist", tmp_path, monkeypatch))
    first = load("mnist", tmp_path / "cache", mirror.url)
    mirror.stop()
    second = load("mnist", tmp_path / "cache", mirror.url)
    torch.testing.assert_close(first.x_train, second.x_train, rtol=0, atol=0)
    assert first.split_digest == second.split_digest


def test_the_default_root_is_the_user_cache_folder(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.dataset_cache() == tmp_path / "xdg" / "optbench" / "datasets"
    mirror.serve(served_files("fashion_mnist", tmp_path, monkeypatch))
    assert load("fashion_mnist", None, mirror.url).sizes["test"] == TEST
    assert (paths.dataset_cache() / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.dataset_cache() == tmp_path / "home" / ".cache" / "optbench" / "datasets"


def test_limit_keeps_the_first_training_images(tmp_path, mirror, monkeypatch):
    mirror.serve(served_files("mnist", tmp_path, monkeypatch))
    loaded = load("mnist", tmp_path, mirror.url, "dataset.limit=20", "dataset.val_fraction=0")
    assert loaded.sizes == {"train": 20, "val": 0, "test": TEST}
    np.testing.assert_array_equal(loaded.y_train.numpy(), np.arange(20) % 10)


def test_the_tabular_digits_keep_their_per_feature_standardisation():
    from sklearn.datasets import load_digits

    loaded = data.load(compose_spec("dataset=digits").dataset)
    bunch = load_digits()
    train, _, test = data.split_indices(len(bunch.target), 0.2, 0.2, 0)
    mean, std = bunch.data[train].mean(axis=0), bunch.data[train].std(axis=0)
    expected = (bunch.data[test] - mean) / np.where(std > 0, std, 1.0)
    np.testing.assert_array_equal(loaded.x_test.numpy(), expected)
    assert loaded.shape == (1, 8, 8)


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_without_a_network_one_line_says_where_to_put_which_files(tmp_path, name):
    root = tmp_path / "cache"
    with pytest.raises(ConfigError) as refused:
        load(name, root, dead_url())
    message = str(refused.value)
    assert refused.value.key == "dataset.root" and "\n" not in message
    assert f"dataset.root='{root}'" in message and f"{name}'s files are not there" in message
    datasets = images.torchvision_datasets()
    if name == "cifar10":
        folder, names = "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch"]
    else:
        source = getattr(datasets, IDX_SETS[name])
        folder, names = f"{IDX_SETS[name]}/raw", [file for file, _ in source.resources]
    assert f"into {root / folder}" in message
    assert all(file in message for file in names)
    assert not root.exists()  # no partial file, no temporary folder, no folder made for them


def test_a_mirror_without_one_file_leaves_none_in_place(tmp_path, mirror, monkeypatch):
    files = served_files("mnist", tmp_path, monkeypatch)
    del files["t10k-labels-idx1-ubyte.gz"]
    mirror.serve(files)
    (tmp_path / "cache").mkdir()
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte.gz: HTTP 404"):
        load("mnist", tmp_path / "cache", mirror.url)
    assert list((tmp_path / "cache").iterdir()) == []  # the three files it got are gone too


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10"])
def test_a_download_with_another_checksum_is_refused(tmp_path, mirror, monkeypatch, name):
    files = served_files(name, tmp_path, monkeypatch)
    monkeypatch.undo()  # torchvision's own checksums again, which the small files miss
    mirror.serve(files)
    with pytest.raises(ConfigError, match=r"not the expected file \(MD5 checksum [0-9a-f]{32}"):
        load(name, tmp_path / "cache", mirror.url)
    assert files_under(tmp_path / "cache") == []


def test_a_mirror_that_never_answers_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "DOWNLOAD_TIMEOUT", 0.2)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(ConfigError, match="timed out"):
            load("mnist", tmp_path, url)
    assert socket.getdefaulttimeout() is None


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file"


def _under_a_file(tmp_path: Path) -> Path:
    return _a_file(tmp_path) / "cache"


def _read_only(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root may write to any folder")
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    return folder


@pytest.mark.parametrize("where", [_a_file, _under_a_file, _read_only])
def test_a_root_that_is_not_a_writable_folder_is_refused(tmp_path, where):
    root = where(tmp_path)
    with pytest.raises(ConfigError, match=f"dataset.root='{root}' is not allowed: expected a wr"):
        load("mnist", root, dead_url())


def test_a_read_only_root_holding_the_files_is_read(tmp_path, mirror, monkeypatch):
    mirror.serve(served_files("mnist", tmp_path, monkeypatch))
    load("mnist", tmp_path / "cache", mirror.url)
    (tmp_path / "cache").chmod(0o555)
    assert load("mnist", tmp_path / "cache", dead_url()).sizes["test"] == TEST


@pytest.mark.parametrize("spoil", ["truncated", "other bytes"])
def test_a_corrupt_cifar_batch_is_refused_by_name(tmp_path, monkeypatch, spoil):
    folder = write_cifar(tmp_path, monkeypatch)
    batch = folder / "data_batch_3"
    content = batch.read_bytes()
    batch.write_bytes(content[:100] if spoil == "truncated" else content[::-1])
    with pytest.raises(ConfigError, match=f"dataset='cifar10' is not allowed: {batch} does not"):
        load("cifar10", tmp_path, dead_url())


@pytest.mark.parametrize(
    ("override", "key"),
    [("dataset.mirror=file:///srv/mnist/", "dataset.mirror"), ("dataset.root=' '", "dataset.root")],
)
def test_a_mirror_or_root_of_the_wrong_form_is_refused(override, key):
    with pytest.raises(ConfigError, match=f"{key}="):
        compose_spec("dataset=mnist", override)


def test_the_cli_refuses_an_unreachable_mirror_before_any_run(tmp_path, run_cli, store_uri):
    code, out, err = run_cli(
        "dataset=mnist",
        "model=mlp",
        "loss=cross_entropy",
        f"dataset.mirror={dead_url()}",
        f"dataset.root={tmp_path / 'cache'}",
    )
    assert code == 2
    assert err.splitlines() == [err.strip()] and err.startswith("error: dataset.root=")
    assert "train-images-idx3-ubyte.gz" in err
    assert runs_in(store_uri) == []


@pytest.mark.parametrize(
    ("problem", "name"),
    [("mnist_2c2d", "mnist"), ("fmnist_2c2d", "fashion_mnist"), ("cifar10_3c3d", "cifar10")],
)
def test_each_deepobs_problem_downloads_its_data_and_trains_a_cohort(
    tmp_path, mirror, monkeypatch, problem, name
):
    mirror.serve(served_files(name, tmp_path, monkeypatch))
    overrides = [f"+problem={problem}", f"dataset.root={tmp_path / 'cache'}"]
    overrides += [f"dataset.mirror={mirror.url}", "trainer.epochs=null", "trainer.steps=2"]
    overrides += ["trainer.batch_size=8", "optimizer=momentum"]
    specs = [compose_spec(*overrides, f"seed={seed}") for seed in (0, 1)]
    results = engine.train_cohort(specs, problem_module.build(specs[0]))
    assert [r.cohort_size for r in results] == [2, 2]
    assert all(0 <= r.final("test_accuracy") <= 1 for r in results)
    assert results[0].curves["train_loss"][1] != results[1].curves["train_loss"][1]
