"""``hydra/launcher=harness``: runs a multirun grid as one sweep of ``harness.sweep``: composed
once per combination of config groups and validated up front, resumed by fingerprint, trained
in batched cohorts on worker processes (one per GPU where points train on CUDA), with failures
isolated and a summary at the end.

Settings: ``n_jobs`` CPU workers; ``force: true`` reruns points already recorded;
``max_cohort`` the most runs trained as one batch (1: one job at a time); ``memory_fraction``
of a device's free memory a worker's cohort may take (larger cohorts train in pieces).

(No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
``sys.modules``, where dataclasses cannot resolve string annotations.)"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class HarnessLauncherConf:
    _target_: str = "hydra_plugins.harness_launcher.harness_launcher.HarnessLauncher"
    n_jobs: int = 1
    force: bool = False
    max_cohort: int = 1000
    memory_fraction: float = 0.5


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
        from harness import sweep  # imported here: Hydra scans plugins at every start

        options = sweep.Options(**self.settings)
        return sweep.launch(
            job_overrides, initial_job_idx, self.config, self.hydra_context, options
        )
