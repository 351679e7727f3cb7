"""``hydra/launcher=harness``: runs a multirun grid as one sweep of ``harness.sweep``: composed
once per combination of config groups and validated up front, resumed by fingerprint, trained
in batched cohorts on worker processes (one per GPU where points train on CUDA), with failures
isolated and a summary at the end. Each job returns its run's objective, and the batches of a
sweeper that launches several (the harness's search, Optuna's) share one parent run. Its
settings are ``harness.sweep.settings.LauncherSettings`` (``n_jobs``, ``force``,
``max_cohort``, ``memory_fraction``, ``executor`` and the ``slurm`` and ``ray`` executors'
settings); ``hydra/launcher=slurm`` and ``hydra/launcher=ray`` are presets. It runs only the
harness's own multirun: ``harness.train``'s task on the harness's ``conf/``; under another app
it stops with one line naming what is not the harness's, and exit status 2.

(No ``from __future__ import annotations`` here: Hydra's plugin scan runs this module outside
``sys.modules``, where dataclasses cannot resolve string annotations.)"""

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from harness.config import ConfigError
from harness.paths import CONFIG_DIR, PACKAGE_ROOT
from harness.sweep.settings import LauncherSettings, parse

TASK = (PACKAGE_ROOT / "harness" / "train.py", "run")  # harness.train.run: its file and name


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
        self.session = None  # launch.Session: what the multirun's batches share
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """The task function is not called: the points are trained by ``harness.sweep``."""
        self.config, self.hydra_context = config, hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from harness.sweep import launch  # imported here: Hydra scans plugins at every start

        try:
            check_harness_app(self.task_function, self.config)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(launch.EXIT_BAD_INPUT) from None
        if self.session is None:
            self.session = launch.Session()
        return launch.launch(
            job_overrides,
            initial_job_idx,
            self.config,
            self.hydra_context,
            self.settings,
            self.session,
        )


def check_harness_app(task_function: TaskFunction, config: DictConfig) -> None:
    """Raise ConfigError unless the multirun's primary config is the harness's ``conf/`` and
    its task ``harness.train.run``: the launcher composes harness points and trains them
    itself, so under another app it would fail on its config or silently skip its task."""
    sources = config.hydra.runtime.config_sources
    main = [Path(source.path).resolve() for source in sources if source.provider == "main"]
    code = getattr(task_function, "__code__", None)
    task = (Path(code.co_filename).resolve(), task_function.__name__) if code else None
    if main != [CONFIG_DIR.resolve()]:
        found = f"this app's config is {', '.join(map(str, main)) or 'none'}"
    elif task != TASK:
        found = f"this app's task is {getattr(task_function, '__qualname__', task_function)}"
    else:
        return
    allowed = (
        f"it runs only harness.train's task on the harness's config ({CONFIG_DIR}); {found}: "
        "choose another launcher (e.g. hydra/launcher=basic)"
    )
    raise ConfigError("hydra/launcher", "harness", allowed)
