"""``hydra/launcher=harness``: runs a multirun grid as one sweep of ``harness.sweep``: composed
once per combination of config groups and validated up front, resumed by fingerprint, trained
in batched cohorts on worker processes (one per GPU where points train on CUDA), with failures
isolated and a summary at the end. Its settings are ``harness.sweep.settings.LauncherSettings``
(``n_jobs``, ``force``, ``max_cohort``, ``memory_fraction``, ``executor`` and the ``slurm`` and
``ray`` executors' settings); ``hydra/launcher=slurm`` and ``hydra/launcher=ray`` are presets.

(No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
``sys.modules``, where dataclasses cannot resolve string annotations.)"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from harness.sweep.settings import LauncherSettings, parse


@dataclass
class HarnessLauncherConf(LauncherSettings):
    _target_: str = "hydra_plugins.harness_launcher.harness_launcher.HarnessLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="harness", node=HarnessLauncherConf)


class HarnessLauncher(Launcher):
    validates_jobs = True  # every job is composed and validated before any runs

    def __init__(self, **settings) -> None:
        values = {
            key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            for key, value in settings.items()
        }
        self.settings = parse(values)
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
        from harness.sweep import launch  # imported here: Hydra scans plugins at every start

        return launch.launch(
            job_overrides, initial_job_idx, self.config, self.hydra_context, self.settings
        )
