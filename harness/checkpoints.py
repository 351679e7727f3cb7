"""Checkpoints of cohorts: a cohort's whole training state at an update, written while it
trains so that a sweep killed or preempted resumes it there instead of from the start.

A checkpoint is one file, ``<key>.ckpt``, in the sweep's checkpoint folder (``folder``): a
first line of JSON, the ``Header`` (which store, experiment and grid points it belongs to, the
harness that wrote it, the update it holds, the SHA-256 and size of the rest), then the state
as ``torch.save`` writes it (see ``loop.Loop.snapshot``). Its key is a digest of the store,
the experiment and the fingerprints of the cohort's points, in order. It is written aside
and renamed over the previous one, so a reader finds the previous checkpoint or the new one,
whole. A sweep reads only headers to plan (``harness.sweep.resuming``); the worker that
resumes a cohort reads the whole file and checks its digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch

import harness
from harness.config import ConfigError
from harness.paths import folder_name

FORMAT = 1
SUFFIX = ".ckpt"
HEADER_LIMIT = 1 << 20  # bytes: a longer first line is not a header
DEFAULT_FOLDER = Path("~/.cache/optbench/checkpoints")  # for stores without local artifacts
PARTIAL_SECONDS = 3600.0  # a file written aside this long ago was left by a killed process


# Errors after which a cohort keeps its checkpoint (a rerun resumes it); any other error
# removes it, so that a cohort that failed starts over.
KEPT_ON = (KeyboardInterrupt, MemoryError, torch.OutOfMemoryError)


class CheckpointError(Exception):
    """A checkpoint that cannot be used: its message says why, in a few words."""


@dataclass(frozen=True)
class Header:
    """What a checkpoint holds. ``run_ids``: the MLflow runs that trained its points up to
    ``step``; ``replaces``: per point, the earlier runs of that point that a resumed cohort
    supersedes (the runs of earlier attempts); ``seconds``: training time up to ``step``."""

    code: str
    data: str  # the data split's digest
    store: str
    experiment: str
    fingerprints: list[str]
    run_ids: list[str]
    replaces: list[list[str]]
    step: int
    total_steps: int
    seconds: float
    user_code: str = ""  # see ``user_code``
    sha256: str = ""
    size: int = 0
    format: int = FORMAT

    def describe(self, path: Path) -> str:
        return (
            f"checkpoint {path.name} ({len(self.fingerprints)} point(s) at update "
            f"{self.step} of {self.total_steps})"
        )


@cache
def code_version() -> str:
    """The harness's version and a digest of its source files: a checkpoint is applied only by
    the code that wrote it."""
    root = Path(harness.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"{harness.__version__}+{digest.hexdigest()[:12]}"


def user_code(spec) -> str:
    """A digest of the files that define the user's own code a run uses (``model.target``,
    ``optimizer.target``, ``optimizer.class_name`` by import path), as imported when its
    problem and rule were built: a checkpoint is applied only with the same files. "" when
    the run uses none."""
    digest, found = hashlib.sha256(), False
    for owner, key in (("model", "target"), ("optimizer", "target"), ("optimizer", "class_name")):
        target = getattr(getattr(spec, owner), key, "")
        module = sys.modules.get(target) or sys.modules.get(target.rpartition(".")[0])
        path = getattr(module, "__file__", None)
        if path:
            digest.update(Path(path).read_bytes())
            found = True
    return digest.hexdigest()[:12] if found else ""


def remove_partials(path: Path, older_than: float = PARTIAL_SECONDS) -> None:
    """Remove the files a write left aside in the folder ``path`` when its process was
    killed (none is written for so long: ``older_than`` seconds)."""
    now = time.time()
    for aside in path.glob(f".*{SUFFIX}.*.tmp") if path.is_dir() else ():
        with contextlib.suppress(OSError):
            if now - aside.stat().st_mtime > older_than:
                aside.unlink()


def file_name(store: str, experiment: str, fingerprints: list[str]) -> str:
    """The checkpoint file of a cohort of these points in this store's experiment."""
    content = json.dumps([store, experiment, fingerprints])
    return hashlib.sha256(content.encode()).hexdigest()[:24] + SUFFIX


def folder(store: str, experiment: str, checkpoint_dir: str | None) -> Path:
    """Where a sweep's checkpoints go: ``trainer.checkpoint_dir`` when set; else beside the
    experiment's artifacts for a sqlite store (``<db folder>/mlartifacts/<experiment>/
    checkpoints``); else ``~/.cache/optbench/checkpoints/<experiment>``. Files of other stores
    and experiments may share a folder: their headers tell them apart."""
    if checkpoint_dir is not None:
        return Path(checkpoint_dir).expanduser().absolute()
    if store.startswith("sqlite:///"):
        database = Path(store[len("sqlite:///") :])
        return database.parent / "mlartifacts" / folder_name(experiment) / "checkpoints"
    return DEFAULT_FOLDER.expanduser() / folder_name(experiment)


def check_folder(path: Path, given: str | None) -> None:
    """Refuse a checkpoint folder this process could not write (the folder, else the nearest
    folder above it that exists): ConfigError naming ``trainer.checkpoint_dir``."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        allowed = f"a folder this user can write (for checkpoints); {existing} is not"
        raise ConfigError(
            "trainer.checkpoint_dir", given if given is not None else str(path), allowed
        )


def write(path: Path, header: Header, state: dict[str, Any]) -> None:
    """Write the checkpoint whole or not at all: into a file beside ``path``, flushed to disk,
    then renamed over it. Raises what writing raised (a full disk: OSError), leaving the
    previous checkpoint as it was."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getbuffer()
    sealed = replace(header, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(aside, "wb") as file:
            file.write(json.dumps(asdict(sealed)).encode() + b"\n")
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(aside, path)
    except BaseException:
        aside.unlink(missing_ok=True)
        raise


def read_header(path: Path) -> Header:
    """The checkpoint's header; CheckpointError when it is not one this harness reads."""
    try:
        with open(path, "rb") as file:
            line = file.readline(HEADER_LIMIT)
        fields = json.loads(line)
        if fields.get("format") != FORMAT:
            raise CheckpointError(f"format {fields.get('format')!r}, this harness reads {FORMAT}")
        return Header(**fields)
    except CheckpointError:
        raise
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"unreadable header ({type(error).__name__})") from None


def read(path: Path, device: torch.device) -> tuple[Header, dict[str, Any]]:
    """The header and the state, its tensors on ``device``; CheckpointError when the file is
    truncated, corrupt or unreadable."""
    header = read_header(path)
    try:
        with open(path, "rb") as file:
            file.readline(HEADER_LIMIT)
            payload = file.read()
    except OSError as error:
        raise CheckpointError(f"unreadable ({error.strerror})") from None
    if len(payload) != header.size:
        raise CheckpointError(f"truncated: {len(payload)} of {header.size} bytes")
    if hashlib.sha256(payload).hexdigest() != header.sha256:
        raise CheckpointError("corrupt: its digest does not match")
    try:
        state = torch.load(io.BytesIO(payload), map_location=device, weights_only=False)
    except Exception as error:  # a class it names is gone, say
        raise CheckpointError(f"unreadable state ({type(error).__name__}: {error})") from None
    return header, state


def headers(path: Path) -> list[tuple[Path, Header | CheckpointError]]:
    """Every checkpoint file in the folder ``path`` with its header, or why it has none."""
    if not path.is_dir():
        return []
    found: list[tuple[Path, Header | CheckpointError]] = []
    for file in sorted(path.glob(f"*{SUFFIX}")):
        try:
            found.append((file, read_header(file)))
        except CheckpointError as error:
            found.append((file, error))
    return found


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Checkpointer:
    """Writes one cohort's checkpoints to ``path`` every ``every`` seconds of training and
    when asked to stop (``loop.Loop.run`` calls ``due`` and ``save``). A write that
    fails (a full disk, a state that cannot be pickled) keeps the previous checkpoint, says so
    once, and training goes on. ``header``: the fields the caller knows (step, time and
    digest are filled in)."""

    path: Path
    every: float
    header: Header
    written: int = 0
    seconds: float = 0.0  # spent writing
    last: float = 0.0  # training time at the last write (or the start)
    failed: bool = field(default=False, repr=False)

    def due(self, training_seconds: float) -> bool:
        return training_seconds - self.last >= self.every

    def save(self, state: dict[str, Any], step: int, training_seconds: float) -> None:
        started = time.perf_counter()
        header = replace(self.header, step=step, seconds=training_seconds)
        try:
            write(self.path, header, state)
            self.written += 1
        except Exception as error:
            if not self.failed:
                say(
                    f"warning: checkpoint {self.path} not written at update {step} "
                    f"({type(error).__name__}: {error}); the previous one is kept and training "
                    "goes on"
                )
            self.failed = True
        self.last = training_seconds
        self.seconds += time.perf_counter() - started


@dataclass(frozen=True)
class Checkpointing:
    """A sweep's checkpoints for one cohort: the ``folder``, the interval (``every`` seconds
    of training), the store and experiment its runs go to, and the checkpoint it resumes
    (``resume``: a path the sweep found for exactly these points, else None)."""

    folder: Path
    every: float
    store: str
    experiment: str
    resume: Path | None = None

    def open(
        self,
        fingerprints: list[str],
        run_ids: list[str],
        total_steps: int,
        data: str,
        code: str,
        device: torch.device,
    ) -> CohortCheckpoints:
        """The cohort's checkpoints, once its runs ``run_ids`` exist: its checkpointer, and the
        state it resumes with the runs that state's runs replace (per point, every earlier
        attempt). ``data``: the data split's digest; ``code``: ``user_code`` of its runs. A
        checkpoint that cannot be applied is reported in one line and removed; the cohort
        then trains from the start."""
        state, replaced = None, [[] for _ in fingerprints]
        if self.resume is not None:
            try:
                header, state = read(self.resume, device)
                if header.code != code_version():
                    raise CheckpointError(f"written by another harness ({header.code})")
                if header.fingerprints != fingerprints or header.total_steps != total_steps:
                    raise CheckpointError("its points are not this cohort's")
                if header.data != data:
                    raise CheckpointError("the data set's split has changed")
                if header.user_code != code:
                    raise CheckpointError("the source of its model or optimizer has changed")
                replaced = [
                    [*old, run] for old, run in zip(header.replaces, header.run_ids, strict=True)
                ]
            except CheckpointError as error:
                say(
                    f"checkpoint {self.resume.name} not used: {error}; its "
                    f"{len(fingerprints)} point(s) train from the start"
                )
                self.resume.unlink(missing_ok=True)
                state = None
        path = self.folder / file_name(self.store, self.experiment, fingerprints)
        header = Header(
            code_version(),
            data,
            self.store,
            self.experiment,
            fingerprints,
            run_ids,
            replaced,
            0,
            total_steps,
            0.0,
            code,
        )
        files = {path} | ({self.resume} if self.resume is not None else set())
        return CohortCheckpoints(Checkpointer(path, self.every, header), state, replaced, files)


@dataclass
class CohortCheckpoints:
    """One cohort's checkpoints as it trains: the ``checkpointer``, the ``state`` it resumes
    (None: from the start), the runs its runs replace, and the ``files`` to remove once its
    runs are recorded FINISHED, or FAILED by an error not in ``KEPT_ON`` (it starts over)."""

    checkpointer: Checkpointer
    state: dict[str, Any] | None
    replaced: list[list[str]]
    files: set[Path]

    def remove(self) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)
