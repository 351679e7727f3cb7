"""The launcher's settings (``hydra.launcher.*``), written once: these dataclasses are the
Hydra plugin's structured config (``hydra/launcher=harness``), what the sweep reads and what
the executors take. ``parse`` turns the plugin's values into them and ``check`` validates
them; every bad value is a ConfigError naming its ``hydra.launcher.*`` key.

(Kept light: Hydra's plugin scan imports this module at every start.)"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from harness.config import ConfigError

KINDS = ("local", "slurm", "ray")
KEY = "hydra.launcher"
EXIT_FAILED, EXIT_INTERRUPTED, EXIT_BAD_INPUT = 1, 130, 2  # a sweep's exit statuses
# What a local worker needs, imported once by the fork server that forks the workers.
WORKER_MODULES = ["harness.sweep.work", "harness.records.backends.sql"]


def start_workers_early(argv: list[str]) -> None:
    """For a multirun (``argv``: its command line) through the harness launcher on this
    machine, start the fork server of its workers now, so that it imports their modules
    while Hydra starts and composes the grid here."""
    from harness import pool

    multirun = "-m" in argv or "--multirun" in argv
    elsewhere = ("hydra/launcher=", "hydra.launcher.executor=")
    if multirun and not any(arg.startswith(elsewhere) for arg in argv):
        pool.start_server(WORKER_MODULES)


@dataclass
class SlurmSettings:
    """``hydra.launcher.slurm``: the resources of each job (one cohort per job)."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: int = 16
    time_min: int = 60
    array_parallelism: int = 32  # jobs of the array running at once
    setup: list[str] = field(default_factory=list)  # shell lines run before each job
    folder: str | None = None  # submitit's scripts and logs; None: <sweep dir>/.submitit
    cluster: str = "slurm"  # or "local": submitit runs the jobs as processes on this machine


@dataclass
class RaySettings:
    """``hydra.launcher.ray``: the cluster and what each task (one cohort) asks for."""

    address: str | None = None  # None: a local Ray instance; "auto", "ray://head:10001"
    num_cpus: float = 1
    num_gpus: float | None = None  # None: 1 where the cluster has GPUs, else 0
    resources: dict[str, float] = field(default_factory=dict)
    local_cpus: int | None = None  # CPUs of a local instance (None: all of them)


@dataclass
class LauncherSettings:
    """``hydra.launcher``: how a sweep runs its grid."""

    n_jobs: int = 1  # CPU workers; where points train on CUDA, one worker per GPU instead
    force: bool = False  # rerun points already recorded
    max_cohort: int = 1000  # most runs trained as one batch; 1 trains one job at a time
    max_points: int = 50_000  # a larger grid is refused before it is composed, unless raised
    memory_fraction: float = 0.5  # of the free memory a worker's cohorts may take
    executor: str = "local"  # local | slurm | ray (see harness.executors)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    ray: RaySettings = field(default_factory=RaySettings)

    def check(self) -> None:
        """Validate every value (ranges, choices); raises ConfigError."""
        _at_least(f"{KEY}.n_jobs", self.n_jobs, 1, "an integer")
        _at_least(f"{KEY}.max_cohort", self.max_cohort, 1, "an integer")
        _at_least(f"{KEY}.max_points", self.max_points, 1, "an integer")
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError(
                f"{KEY}.memory_fraction", self.memory_fraction, "expected a number in (0, 1]"
            )
        if self.executor not in KINDS:
            allowed = f"expected one of {', '.join(KINDS)}"
            raise ConfigError(f"{KEY}.executor", self.executor, allowed)
        if self.slurm.cluster not in ("slurm", "local"):
            raise ConfigError(f"{KEY}.slurm.cluster", self.slurm.cluster, "expected slurm or local")
        slurm, ray = self.slurm, self.ray
        _at_least(f"{KEY}.slurm.gpus_per_job", slurm.gpus_per_job, 0)
        for name in ("cpus_per_job", "mem_gb", "time_min", "array_parallelism"):
            _at_least(f"{KEY}.slurm.{name}", getattr(slurm, name), 1)
        if ray.local_cpus is not None:
            _at_least(f"{KEY}.ray.local_cpus", ray.local_cpus, 1)
        if ray.num_gpus is not None:
            _at_least(f"{KEY}.ray.num_gpus", ray.num_gpus, 0)
        for name, amount in ray.resources.items():
            _at_least(f"{KEY}.ray.resources.{name}", amount, 0)
        if not _is_number(ray.num_cpus) or ray.num_cpus <= 0:
            raise ConfigError(f"{KEY}.ray.num_cpus", ray.num_cpus, "expected a number > 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _at_least(key: str, value: Any, least: float, kind: str = "a number") -> None:
    if not _is_number(value) or value < least:
        raise ConfigError(key, value, f"expected {kind} >= {least}")


def parse(values: dict[str, Any], cls: type = LauncherSettings, key: str = KEY) -> Any:
    """``cls`` from plain ``values`` (nested dicts for nested settings), unchecked; an unknown
    key is a ConfigError naming it."""
    defaults, built = cls(), {}
    known = [f.name for f in fields(cls)]
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{key}.{name}", value, f"expected one of {', '.join(known)}")
        default = getattr(defaults, name)
        nested = is_dataclass(default)
        built[name] = parse(value or {}, type(default), f"{key}.{name}") if nested else value
    return cls(**built)
