"""The two ways runs reach a store: ``sql`` (direct writes on MLflow's tables, for database
stores of a verified schema) and ``client`` (MLflow's client: servers, and databases of any
other schema). Both take the types below: runs to create, and batches of writes."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.records.schema import DatasetInput


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


# A stretch of one metric's curve: (key, steps, values, timestamps in ms), lists of equal length
Series = tuple[str, list[int], list[float], list[int]]


@dataclass
class Writes:
    """One batch of writes, by MLflow run id: metrics and tags to add, and the runs to end
    (status, end time in ms)."""

    metrics: dict[str, list[Series]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    ended: dict[str, tuple[str, int]] = field(default_factory=dict)
