"""MNIST, Fashion-MNIST and CIFAR-10 as torchvision keeps them, in a cache folder.

:func:`read_images` returns a set's training and test images as uint8 arrays (N, C, H, W) with
int64 labels. The files sit in torchvision's layout under a root folder (``MNIST/raw``,
``FashionMNIST/raw``, ``cifar-10-batches-py``). Those missing are downloaded with torchvision's
own machinery (its resource lists, mirrors and MD5 checksums, ``download_and_extract_archive``),
quietly, into a temporary folder inside the root, and only then moved into place: an
interrupted download never leaves a partial file where a later load would take it as whole.
A root that is not a writable folder, or a download that fails on every mirror, is a
ConfigError on ``dataset.root``; a data file that cannot be used is a :class:`DataFileError`
naming it.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import math
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import urllib.error
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from harness.config import ConfigError
from harness.paths import dataset_cache

DOWNLOAD_TIMEOUT = 60.0  # seconds a mirror may keep a connection waiting
DOWNLOAD_ERRORS = (
    RuntimeError,  # torchvision's: the file does not match its MD5 checksum
    OSError,  # urllib's URLError and HTTPError, refused or timed-out connections, a full disk
    http.client.HTTPException,  # a body cut short
    tarfile.TarError,
    EOFError,
)


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file (and the line)."""


_STAND_IN_OPS: list[torch.library.Library] = []  # kept alive: dropping one drops its ops


def torchvision_datasets() -> ModuleType:
    """``torchvision.datasets``, imported on first use.

    PyPI's torchvision wheels for Linux are CUDA builds, whose C++ ops cannot load over a
    CPU-only torch; torchvision 0.28 then fails on import where it registers fake kernels for
    ``torchvision::nms`` and ``torchvision::qnms``. The data sets use none of its C++ ops, so
    in that case those two ops are declared (without kernels: calling them still fails) and
    the import is tried once more.
    """
    try:
        import torchvision.datasets
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        library = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _STAND_IN_OPS.append(library)
        import torchvision.datasets
    return torchvision.datasets


# ----------------------------------------------------------------------------- IDX files


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


Split = tuple[np.ndarray, np.ndarray]


class _Idx:
    """MNIST and Fashion-MNIST: four gzipped IDX files in ``<root>/<class name>/raw``, each
    taken gzipped or not (torchvision keeps both)."""

    def __init__(self, source: type):
        self.source = source  # torchvision's MNIST or FashionMNIST

    def folder(self, root: Path) -> Path:
        return root / self.source.__name__ / "raw"

    def download_root(self, root: Path) -> Path:
        return self.folder(root)

    def hint(self, root: Path) -> str:
        names = ", ".join(name for name, _ in self.source.resources)
        return f"{names} (gzipped or not) into {self.folder(root)}"

    def downloads(self, root: Path, mirror: str | None) -> list[tuple[str, str, list[str]]]:
        mirrors = [mirror] if mirror else self.source.mirrors
        return [
            (name, md5, [_url(base, name) for base in mirrors])
            for name, md5 in self.source.resources
            if self._path(root, name) is None
        ]

    def _path(self, root: Path, name: str) -> Path | None:
        for path in (self.folder(root) / name.removesuffix(".gz"), self.folder(root) / name):
            if path.is_file():
                return path
        return None

    def read(self, root: Path) -> tuple[Split, Split]:
        parts = []
        for part in ("train", "t10k"):
            images = self._path(root, f"{part}-images-idx3-ubyte.gz")
            labels = self._path(root, f"{part}-labels-idx1-ubyte.gz")
            pixels, targets = read_idx(images, 3), read_idx(labels, 1)
            if len(pixels) != len(targets):
                raise DataFileError(
                    f"{images} holds {len(pixels)} images, {labels} {len(targets)} labels"
                )
            parts.append((pixels[:, None], targets.astype(np.int64)))
        return parts[0], parts[1]


class _Cifar:
    """CIFAR-10: pickled batches in ``<root>/cifar-10-batches-py``, from one archive; each
    batch is checked against torchvision's MD5 checksum before it is read."""

    def __init__(self, source: type):
        self.source = source  # torchvision's CIFAR10

    def folder(self, root: Path) -> Path:
        return root / self.source.base_folder

    def download_root(self, root: Path) -> Path:
        return root  # the archive unpacks into its own folder

    def hint(self, root: Path) -> str:
        names = ", ".join(name for name, _ in self.source.train_list + self.source.test_list)
        return f"{names} (from {self.source.filename}) into {self.folder(root)}"

    def downloads(self, root: Path, mirror: str | None) -> list[tuple[str, str, list[str]]]:
        batches = self.source.train_list + self.source.test_list
        if all((self.folder(root) / name).is_file() for name, _ in batches):
            return []
        url = _url(mirror, self.source.filename) if mirror else self.source.url
        return [(self.source.filename, self.source.tgz_md5, [url])]

    def read(self, root: Path) -> tuple[Split, Split]:
        train, test = self.source.train_list, self.source.test_list
        return self._batches(root, train), self._batches(root, test)

    def _batches(self, root: Path, batches: list[list[str]]) -> Split:
        check_integrity = torchvision_datasets().utils.check_integrity
        pixels, labels = [], []
        for name, md5 in batches:
            path = self.folder(root) / name
            if not check_integrity(path, md5):
                raise DataFileError(
                    f"{path} does not match torchvision's MD5 checksum {md5}: "
                    "delete it to download it again"
                )
            with open(path, "rb") as stream:
                entry = pickle.load(stream, encoding="latin1")
            pixels.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry["labels"], dtype=np.int64))
        return np.concatenate(pixels), np.concatenate(labels)


def _url(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _layout(name: str) -> _Idx | _Cifar:
    datasets = torchvision_datasets()
    if name == "cifar10":
        return _Cifar(datasets.CIFAR10)
    return _Idx({"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name])


# ----------------------------------------------------------------------------- download


def read_images(name: str, root: str | None, mirror: str | None) -> tuple[Split, Split]:
    """The training and test split of ``name`` (``mnist``, ``fashion_mnist`` or ``cifar10``)
    as (uint8 images (N, C, H, W), int64 labels), from ``root`` (None: the user's cache
    folder), its missing files downloaded first from ``mirror`` (a base URL; None:
    torchvision's mirrors)."""
    folder = Path(root).expanduser() if root is not None else dataset_cache()
    layout = _layout(name)
    downloads = layout.downloads(folder, mirror)
    if downloads:
        _download(name, folder, layout, downloads)
    return layout.read(folder)


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if need be; a ConfigError on ``dataset.root`` unless it is then a
    folder this process may write to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            "dataset.root", str(folder), f"expected a writable folder: {error.strerror}"
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("dataset.root", str(folder), "expected a writable folder: it is not")


def _download(
    name: str, folder: Path, layout: _Idx | _Cifar, downloads: list[tuple[str, str, list[str]]]
) -> None:
    """Download (and unpack) ``downloads`` into a temporary folder inside ``folder``, then move
    each file into place. The temporary folder goes in any case, and so do the folders made
    for it when nothing was moved into them."""
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        _writable_folder(folder)
        print(f"downloading {name} into {folder}", flush=True)
        scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
        try:
            for file_name, md5, urls in downloads:
                failures = _fetch(layout.download_root(scratch), file_name, md5, urls)
                if failures:
                    raise ConfigError(
                        "dataset.root",
                        str(folder),
                        f"{name}'s files are not there and downloading them failed "
                        f"({'; '.join(failures)}); without a network, put {layout.hint(folder)}",
                    )
            for path in sorted(scratch.rglob("*")):
                target = folder / path.relative_to(scratch)
                if path.is_file() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        for path in created:  # deepest first; a folder holding files stays
            with contextlib.suppress(OSError):
                path.rmdir()


def _fetch(into: Path, file_name: str, md5: str, urls: list[str]) -> list[str]:
    """Download ``file_name`` into ``into`` from the first of ``urls`` that gives it with
    checksum ``md5``, and unpack it there (torchvision's ``download_and_extract_archive``);
    returns why each URL failed when all did, else nothing."""
    download = torchvision_datasets().utils.download_and_extract_archive
    failures = []
    for url in urls:
        try:
            with _quiet():
                download(url, download_root=into, filename=file_name, md5=md5)
            return []
        except DOWNLOAD_ERRORS as error:
            failures.append(f"{url}: {_reason(error, md5)}")
    return failures


@contextlib.contextmanager
def _quiet():
    """No prints or progress bars from torchvision, and no connection waiting for ever."""
    timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        socket.setdefaulttimeout(timeout)


def _reason(error: BaseException, md5: str) -> str:
    """Why one URL failed, on one line."""
    if isinstance(error, urllib.error.HTTPError):
        text = f"HTTP {error.code} {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        text = str(error.reason)
    elif isinstance(error, RuntimeError):
        text = f"not the expected file (MD5 checksum {md5})"
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())
