"""``hydra/launcher=harness``: runs a multirun grid as one sweep of ``harness.sweep``: composed
once per combination of config groups and validated up front, resumed by fingerprint, trained
in batched cohorts on worker processes (one per GPU where points train on CUDA), with failures
isolated and a summary at the end.

Settings: ``n_jobs`` CPU workers; ``force: true`` reruns points already recorded;
``max_cohort`` the most runs trained as one batch (1: one job at a time); ``memory_fraction``
of a device's free memory a worker's cohort may take (larger cohorts train in pieces);
``executor``: where cohorts train, ``local`` (this machine's workers), ``slurm`` (a SLURM job
per cohort through submitit, settings under ``slurm``) or ``ray`` (a Ray task per cohort,
settings under ``ray``); ``hydra/launcher=slurm`` and ``hydra/launcher=ray`` are presets.

(No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
``sys.modules``, where dataclasses cannot resolve string annotations.)"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Dict, List, Optional  # noqa: UP035 (OmegaConf's structured configs need them)

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class SlurmConf:  # harness.executors.SlurmSettings
    partition: Optional[str] = None  # noqa: UP045
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: int = 16
    time_min: int = 60
    array_parallelism: int = 32
    setup: List[str] = field(default_factory=list)  # noqa: UP006
    folder: Optional[str] = None  # noqa: UP045
    cluster: str = "slurm"


@dataclass
class RayConf:  # harness.executors.RaySettings
    address: Optional[str] = None  # noqa: UP045
    num_cpus: float = 1
    num_gpus: Optional[float] = None  # noqa: UP045
    resources: Dict[str, float] = field(default_factory=dict)  # noqa: UP006
    local_cpus: Optional[int] = None  # noqa: UP045


@dataclass
class HarnessLauncherConf:
    _target_: str = "hydra_plugins.harness_launcher.harness_launcher.HarnessLauncher"
    n_jobs: int = 1
    force: bool = False
    max_cohort: int = 1000
    memory_fraction: float = 0.5
    executor: str = "local"
    slurm: SlurmConf = field(default_factory=SlurmConf)
    ray: RayConf = field(default_factory=RayConf)


ConfigStore.instance().store(group="hydra/launcher", name="harness", node=HarnessLauncherConf)


class HarnessLauncher(Launcher):
    validates_jobs = True  # every job is composed and validated before any runs

    def __init__(self, **settings) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """The task function is not called: the points are trained by ``harness.sweep``."""
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from omegaconf import OmegaConf

        from harness import sweep  # imported here: Hydra scans plugins at every start

        settings = {
            key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            for key, value in self.settings.items()
        }
        options = sweep.Options(**settings)
        return sweep.launch(
            job_overrides, initial_job_idx, self.config, self.hydra_context, options
        )
