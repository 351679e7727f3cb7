"""The two ways runs reach a store: ``sql`` (SQL on MLflow's tables, for database stores of a
verified schema, without importing MLflow) and ``client`` (MLflow's client: servers, and
databases of any other schema), chosen by ``opening.open_backend``. Both offer the same
operations on the types below (runs to create, batches of writes, runs read back) and claim
grid points the same way (``holders``)."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from harness import owners
from harness.records.schema import DatasetInput, Status


@dataclass
class NewRun:
    """A run to create: its name, tags, params (strings), resolved config (the artifact) and
    dataset inputs."""

    name: str
    tags: dict[str, str]
    params: dict[str, str]
    config: dict
    inputs: list[DatasetInput] = field(default_factory=list)


@dataclass(frozen=True)
class CreatedRun:
    run_id: str
    start_ms: int
    artifact_uri: str


@dataclass(frozen=True)
class Held:
    """A grid point that another attempt holds, so no run was created for it: the run that
    holds it and that run's status."""

    run_id: str
    status: str


@dataclass(frozen=True)
class Claim:
    """Runs created as claims on their grid points by a sweep that planned at ``planned_ms``:
    a point that another run holds gets no run (see ``holders``). ``redone``: the FINISHED
    runs the sweep saw and redoes (``force``), which hold nothing."""

    planned_ms: int
    redone: frozenset[str] = frozenset()


# A run that may hold a grid point: (run id, fingerprint, status, start time in ms, owner token)
Candidate = tuple[str, str, str, int, str]


def holders(candidates: Iterable[Candidate], claim: Claim) -> dict[str, Held]:
    """The runs that hold their grid points against ``claim``, by fingerprint: a run RUNNING
    in a live process (another sweep trains it), or one FINISHED that the claimant does not
    redo (another sweep trained it meanwhile). Each owner is asked about once."""
    held: dict[str, Held] = {}
    alive: dict[str, bool] = {}
    for run_id, fingerprint, status, _, owner in candidates:
        if status == Status.RUNNING and owner not in alive:
            alive[owner] = owners.is_alive(owner)
        running = status == Status.RUNNING and alive[owner]
        if running or (status == Status.FINISHED and run_id not in claim.redone):
            held.setdefault(fingerprint, Held(run_id, status))
    return held


# A stretch of one metric's curve: (key, steps, values, timestamps in ms), lists of equal length
Series = tuple[str, list[int], list[float], list[int]]


@dataclass
class Writes:
    """One batch of writes, by MLflow run id: metrics and tags to add, and the runs to end
    (status, end time in ms)."""

    metrics: dict[str, list[Series]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    ended: dict[str, tuple[str, int]] = field(default_factory=dict)


STOPPED = (Status.KILLED, Status.FAILED)  # the runs ``delete_runs`` may delete

THREADS = 4  # runs written at once through MLflow's client, artifacts uploaded at once


def in_threads(function, items: list) -> list:
    """``function`` over ``items`` on up to ``THREADS`` threads, results in order; the
    first error is raised."""
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(THREADS, len(items))) as threads:
        return list(threads.map(function, items))
