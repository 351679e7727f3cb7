"""The record's contract: what the harness writes into MLflow and reads back.

A **grid point** is one configuration of a study (a resolved ``RunConfig``). Its identity is
its fingerprint (``config.fingerprint``: the config without tracking keys and run name). Each
attempt at a grid point is one MLflow run in the study's experiment, tagged ``fingerprint``
and without a ``role``; a sweep's parent run has role ``sweep``, a study's report run role
``report``. A run's params are the flattened resolved config (``optimizer.lr``) plus the data
split's sizes (``data.n_train``), its metrics the engine's curves (``train_loss``, ``lr``, ...)
plus the end-of-run summaries below, its data set the splits it saw (MLflow dataset inputs).

Train, the sweep and the reports import the names from here, never spell them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.config import ConfigError, RunConfig, as_dict, flatten


class Tag:
    """Run tags."""

    FINGERPRINT = "fingerprint"  # the grid point's identity
    DIVERGED = "diverged"  # "true" | "false"
    ROLE = "role"  # absent on grid points; see Role
    SWEEP_ID = "sweep_id"  # the sweep that ran it (on its parent run too)
    OWNER = "owner"  # the writing process: host:pid:start ticks[@slurm:job]
    STUDY = "study"  # on a sweep's parent run
    ERROR = "error"  # why a run FAILED or was KILLED
    SPLIT_DIGEST = "split_digest"  # the data split (see harness.data)
    GIT_COMMIT = "git_commit"  # and the versions: harness_version, torch_version, ...
    DEVICE = "device"
    DEVICE_NAME = "device_name"
    COHORT_SIZE = "cohort_size"  # runs trained in the same batch
    STAGE = "stage"  # a tuning search's runs: tune | rerun (set through tracking.tags)
    RESUMED_STEP = "resumed_step"  # the update a resumed run continued its checkpoint from
    RESUMED_FROM = "resumed_from"  # the runs it replaces (deleted once it is FINISHED)
    # MLflow's own tags, which its UI shows
    PARENT = "mlflow.parentRunId"  # nests a sweep's runs under its parent run
    RUN_NAME = "mlflow.runName"
    NOTE = "mlflow.note.content"  # the run's description (Markdown)
    USER = "mlflow.user"
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    SOURCE_COMMIT = "mlflow.source.git.commit"


# Tag values: flags, and MLflow's source type of a program run on this machine.
TRUE, FALSE = "true", "false"
LOCAL_SOURCE = "LOCAL"
# The experiment tag MLflow reads as the kind of experiment, and its model-training value.
KIND_TAG, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
# A dataset's source type: a data set the code makes or loads (its config is the source).
CODE_SOURCE = "code"


class Role:
    """Values of ``Tag.ROLE``."""

    SWEEP = "sweep"
    REPORT = "report"


class Summary:
    """Metrics logged once per run, at its last step."""

    WALL_SECONDS = "wall_seconds"  # training time (a cohort's, shared by its runs)
    DIVERGED_STEP = "diverged_step"  # only on diverged runs

    ALL = (WALL_SECONDS, DIVERGED_STEP)


class Status:
    """MLflow run statuses the harness uses."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"  # it raised, its writes failed, or its process died
    KILLED = "KILLED"  # interrupted (Ctrl-C, SIGTERM, a cancelled job)


# A sweep's parent run logs ``runs_<outcome>`` (points per outcome) and ``seconds_<phase>``.
OUTCOME_PREFIX, SECONDS_PREFIX = "runs_", "seconds_"

# The tag of a dataset input that names its use: the split (train, val, test).
DATASET_CONTEXT = "mlflow.data.context"

# MLflow's limit on params plus tags in one log_batch call.
PARAM_TAG_LIMIT = 100


class Stage:
    """Values of ``Tag.STAGE``: a trial of a tuning search, or a rerun of its best setting."""

    TUNE = "tune"
    RERUN = "rerun"


HARNESS_TAGS = frozenset(
    value for name, value in vars(Tag).items() if name.isupper() and value != Tag.STAGE
)


def check_tags(tags: Mapping[str, str]) -> None:
    """Refuse a user's tag (``tracking.tags``) that MLflow or the harness sets itself."""
    for key in tags:
        if key in HARNESS_TAGS or key.startswith("mlflow."):
            allowed = "a tag name the harness and MLflow do not use themselves"
            raise ConfigError(f"tracking.tags.{key}", tags[key], allowed)


def is_grid_point(tags: Mapping[str, str]) -> bool:
    """Whether a run with ``tags`` records a grid point (not a parent or report run)."""
    return Tag.FINGERPRINT in tags and Tag.ROLE not in tags


def param_value(value: Any) -> str:
    """Strings as they are; everything else as JSON, so numbers read back as numbers."""
    return value if isinstance(value, str) else json.dumps(value)


def run_params(spec: RunConfig, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The flattened resolved config (``tracking.tags`` left out: they are the run's tags),
    plus ``extra`` (e.g. the data split's sizes)."""
    tree = as_dict(spec)
    tree["tracking"].pop("tags")
    flat = flatten(tree)
    flat.update(extra or {})
    return {key: param_value(value) for key, value in flat.items()}


@dataclass(frozen=True)
class DatasetInput:
    """One split a run saw, as an MLflow dataset input: the data set's ``name``, a ``digest``
    of the split (derived from the harness's split digest), where the data comes from
    (``source_type`` and ``source``, JSON, as MLflow's dataset sources serialise), a
    ``profile`` (JSON: the split's rows) and the ``context``: the split's name."""

    name: str
    digest: str
    source_type: str
    source: str
    profile: str
    context: str


def dataset_inputs(
    name: str, split_digest: str, sizes: Mapping[str, int], source: Mapping[str, Any]
) -> list[DatasetInput]:
    """The inputs of a run on data set ``name`` split as ``split_digest`` into ``sizes``
    (split -> rows; empty splits are left out). Each split's digest is the first 16 hex
    digits of SHA-256 over ``<split digest>/<split>``; ``source`` is the data set's config."""
    text = json.dumps({"tags": {f"dataset.{k}": str(v) for k, v in source.items()}})
    return [
        DatasetInput(
            name,
            hashlib.sha256(f"{split_digest}/{split}".encode()).hexdigest()[:16],
            CODE_SOURCE,
            text,
            json.dumps({"num_rows": rows}),
            split,
        )
        for split, rows in sizes.items()
        if rows > 0
    ]


@dataclass(frozen=True)
class Recorded:
    """What became of a run's record: its MLflow run id (None if it was never created) and
    the error that stopped its writes, if any; ``held``: no run was made, because another
    attempt holds the grid point (``run_id`` is that attempt's run)."""

    run_id: str | None
    error: str | None = None
    held: bool = False


@dataclass(frozen=True)
class RunRecord:
    """What a sweep needs to know of a grid point's run already in the store."""

    run_id: str
    fingerprint: str
    status: str  # a Status
    owner: str  # its Tag.OWNER, "" if unknown
    diverged: bool = False
    sweep: str = ""  # its Tag.SWEEP_ID
    parent: str = ""  # its Tag.PARENT: the run id of the sweep that made it
    error: str = ""  # its Tag.ERROR
    finals: Mapping[str, float] = field(default_factory=dict, compare=False)  # last values

    @classmethod
    def of(
        cls,
        run_id: str,
        status: str,
        tags: Mapping[str, str],
        finals: Mapping[str, float] | None = None,
    ) -> RunRecord:
        return cls(
            run_id,
            tags.get(Tag.FINGERPRINT, ""),
            status,
            tags.get(Tag.OWNER, ""),
            tags.get(Tag.DIVERGED) == TRUE,
            tags.get(Tag.SWEEP_ID, ""),
            tags.get(Tag.PARENT, ""),
            tags.get(Tag.ERROR, ""),
            dict(finals or {}),
        )


@dataclass
class ExperimentTables:
    """An experiment's records as long tables (pandas DataFrames), read in bulk:
    ``runs`` (run_id, run_name, status, start_time, end_time; times in ms), ``params`` and
    ``tags`` (run_id, key, value), ``metrics`` (run_id, key, value, step, timestamp; NaN as
    NaN)."""

    runs: Any
    params: Any
    tags: Any
    metrics: Any
