"""``hydra/sweeper=harness``: Hydra's BasicSweeper (the same grid, params and batches) whose
up-front validation of a batch composes once per combination of config-group choices
(``harness.compose.Composer``) instead of once per job, and is skipped when the launcher
validates every job itself (``validates_jobs = True``, as the harness launcher does). With a
``search`` (``harness.search``) it runs the two-stage tuning protocol instead of the grid
(``harness.sweep.tuning``). A job that failed does not stop the others: at the end the exit
status is 1 (2 where a job's config was refused under another launcher).

(No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
``sys.modules``, where dataclasses cannot resolve string annotations. The scan also reloads
Hydra's BasicSweeper module: a HarnessSweeper class imported before the scan fails in
``BasicSweeper.__init__``; Hydra instantiates the class of its scan, which works.)"""

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

if TYPE_CHECKING:
    from harness.compose import Composer


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    search: Any = None  # harness.search.SearchSettings as plain values; None: the grid


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf)


class HarnessSweeper(BasicSweeper):
    def __init__(self, max_batch_size=None, params=None, search=None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.search = OmegaConf.to_container(search) if OmegaConf.is_config(search) else search

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

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        """Run the grid in batches, or the search; then exit 1 if a job failed."""
        if self.search is None:
            returns = self.grid(arguments)
        else:
            from harness.sweep import tuning  # imported here, as the composer

            returns = tuning.run(self, arguments)
        self.exit_on_failures(returns)
        return returns

    def grid(self, arguments: list[str]) -> list[JobReturn]:
        """BasicSweeper's grid, batch after batch, without stopping at a failed job."""
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        batches = self.split_arguments(parser.parse_overrides(lines), self.max_batch_size)
        self.save_config()
        returns, first = [], 0
        for batch in batches:
            self.validate_batch_is_legal(batch)
            returns += self.launcher.launch(batch, initial_job_idx=first)
            first += len(batch)
        return returns

    def save_config(self) -> None:
        """The multirun's config as ``multirun.yaml`` in the sweep folder, as Hydra's sweepers
        keep it."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

    def exit_on_failures(self, returns: Sequence[JobReturn]) -> None:
        """Exit 1 when a job failed (2 when each failure is a refused config), saying why
        unless the harness launcher's summary has said it already."""
        from harness.config import ConfigError
        from harness.sweep.settings import EXIT_BAD_INPUT, EXIT_FAILED

        failed = [r for r in returns if r.status == JobStatus.FAILED]
        if not failed:
            return
        if not getattr(self.launcher, "validates_jobs", False):
            for job in failed:
                print(f"error: job {' '.join(job.overrides)}: {job._return_value}", file=sys.stderr)
        refused = all(isinstance(job._return_value, ConfigError) for job in failed)
        raise SystemExit(EXIT_BAD_INPUT if refused else EXIT_FAILED)
