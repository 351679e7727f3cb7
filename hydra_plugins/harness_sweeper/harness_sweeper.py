"""``hydra/sweeper=harness``: Hydra's BasicSweeper (the same grid, params and batches) whose
up-front validation of a batch composes once per combination of config-group choices
(``harness.compose.Composer``) instead of once per job, and is skipped when the launcher
validates every job itself (``validates_jobs = True``, as the harness launcher does).

(No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
``sys.modules``, where dataclasses cannot resolve string annotations. The scan also reloads
Hydra's BasicSweeper module: a HarnessSweeper class imported before the scan fails in
``BasicSweeper.__init__``; Hydra instantiates the class of its scan, which works.)"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

if TYPE_CHECKING:
    from harness.compose import Composer


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf)


class HarnessSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Raise Hydra's exception for the first job of ``batch`` that cannot be composed;
        nothing to do when the launcher validates its jobs before running any."""
        if getattr(self.launcher, "validates_jobs", False):
            return
        self.composer.jobs(batch, initial_job_idx=0)

    @cached_property
    def composer(self) -> "Composer":
        """One composer for the sweep, so that batches share compositions."""
        from harness.compose import Composer  # imported here: Hydra scans plugins at every start

        return Composer(self.hydra_context.config_loader, self.config)
