"""``hydra/launcher=harness``: runs a multirun grid as one sweep of ``harness.sweep``: validated
up front, resumed by fingerprint, on ``n_jobs`` worker processes, with failures isolated and a
summary at the end. ``force: true`` reruns points already recorded.

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


ConfigStore.instance().store(group="hydra/launcher", name="harness", node=HarnessLauncherConf)


class HarnessLauncher(Launcher):
    def __init__(self, n_jobs: int = 1, force: bool = False) -> None:
        self.n_jobs, self.force = n_jobs, force
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """The task function is not called: each point is trained by ``harness.sweep``."""
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from harness import sweep  # imported here: Hydra scans plugins at every start

        return sweep.launch(
            job_overrides,
            initial_job_idx,
            self.config,
            self.hydra_context,
            self.n_jobs,
            self.force,
        )
