"""The two-stage tuning protocol of a search (``hydra.sweeper.search``, see ``harness.search``),
run by the harness's sweeper through its launcher:

1. *tune*: for every combination of the grid's axes (``hydra.sweeper.params`` and the command
   line's overrides, e.g. the problems) and every optimizer of the search, its ``budget``
   trials, all launched as one batch (so they train in cohorts where they share structure),
   each run tagged ``stage=tune``;
2. *rerun*: the best trial of each (combination, optimizer), by its objective (the validation
   loss by default: ``harness.objectives``), trained again with the ``reruns`` seeds after the
   trials' seed, tagged ``stage=rerun``; an optimizer whose trials all failed or diverged has
   no rerun.

Both batches record under one parent run, and a search run again resumes like any sweep: the
trials it finds recorded are skipped and their objectives read back, so it picks the same
best settings. The outcome is printed and written to ``search_results.yaml`` in the sweep's
folder, beside Hydra's ``multirun.yaml``.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf

from harness import objectives, registry, search
from harness.compose import grid_jobs
from harness.config import ConfigError
from harness.paths import CONFIG_DIR
from harness.sweep.points import varying_keys
from harness.sweep.settings import EXIT_BAD_INPUT


@dataclass
class Arm:
    """One optimizer's search on one combination of the grid (``grid``: its overrides;
    ``label``: those on the grid's axes): its trials' overrides and objectives, the best
    trial's position and its reruns' objectives."""

    grid: list[str]
    label: str
    optimizer: str
    trials: list[list[str]]
    values: list[float | None] = field(default_factory=list)
    best: int | None = None
    reruns: list[list[str]] = field(default_factory=list)
    rerun_values: list[float | None] = field(default_factory=list)


def optimizer_schemas() -> dict[str, type | None]:
    """Every ``conf/optimizer`` option with its schema dataclass (None for a preset such as
    ``lion``, whose keys are checked when its trials are composed)."""
    options = registry.OPTIONS["optimizer"]
    names = sorted(path.stem for path in (CONFIG_DIR / "optimizer").glob("*.yaml"))
    return {name: options[name].schema if name in options else None for name in names}


def prepare(values: dict, master: DictConfig, loader) -> tuple[search.Search, list[Arm]]:
    """Validate the search and lay out its arms; raises ConfigError."""
    found = search.parse(values, optimizer_schemas())
    combinations = grid_jobs(master, loader)
    drawn = {d.key.lstrip("+~") for dims in found.spaces.values() for d in dims}
    for override in combinations[0]:
        key = override.partition("=")[0].lstrip("+~")
        if key == "optimizer" or key in drawn:
            allowed = "a search chooses the optimizers and draws their spaces' keys itself"
            raise ConfigError(key, override.partition("=")[2], allowed)
    declared = master.hydra.sweeper.params or {}
    axes = {key.lstrip("+~") for key in [*varying_keys(combinations), *declared]}
    arms = []
    for grid in combinations:
        label = " ".join(o for o in grid if o.partition("=")[0].lstrip("+~") in axes)
        for optimizer in found.spaces:
            trials = [list(grid) + t for t in search.trials(found, optimizer)]
            arms.append(Arm(list(grid), label, optimizer, trials))
    return found, arms


def launch_batch(launcher, jobs: list[list[str]], first: int) -> list[JobReturn]:
    """Launch ``jobs`` as one batch (job numbers from ``first``)."""
    return list(launcher.launch(jobs, initial_job_idx=first)) if jobs else []


def value_of(job: JobReturn) -> float | None:
    """A job's objective, None where it failed or returned none."""
    if job.status != JobStatus.COMPLETED or job._return_value is None:
        return None
    return float(job._return_value)


def run(sweeper, arguments: Sequence[str]) -> list[JobReturn]:
    """Run the search of ``sweeper`` (a HarnessSweeper) in its two stages; returns every
    job's return. Bad input exits with status 2 before any run."""
    master, loader = sweeper.config, sweeper.hydra_context.config_loader
    try:
        found, arms = prepare(sweeper.search, master, loader)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    sweeper.save_config()
    settings = found.settings
    print(
        f"search: {len(arms) // len(found.spaces)} combination(s) of the grid x "
        f"{len(found.spaces)} optimizer(s), {settings.budget} "
        f"{settings.sampler} trials each (seed {settings.seed}), best rerun with "
        f"{settings.reruns} further seed(s)",
        flush=True,
    )
    trial_jobs = [trial for arm in arms for trial in arm.trials]
    first = launch_batch(sweeper.launcher, trial_jobs, 0)
    values = iter(map(value_of, first))
    folder = Path(str(master.hydra.sweep.dir))
    for arm in arms:
        arm.values = [next(values) for _ in arm.trials]
        maximize = objectives.maximized(grid_value(arm.grid, "objective", master))
        arm.best = search.best(arm.values, maximize)
        if arm.best is not None:
            seed = int(grid_value(arm.grid, "seed", master))
            arm.reruns = search.reruns(arm.trials[arm.best], seed, settings.reruns)
    write_results(arms, folder)  # the first stage's outcome, kept if the reruns are cut short
    rerun_jobs = [job for arm in arms for job in arm.reruns]
    second = launch_batch(sweeper.launcher, rerun_jobs, len(trial_jobs))
    values = iter(map(value_of, second))
    for arm in arms:
        arm.rerun_values = [next(values) for _ in arm.reruns]
    write_results(arms, folder)
    show(arms)
    return first + second


def grid_value(grid: Sequence[str], key: str, master: DictConfig) -> str:
    """A top-level key's value in a grid combination (``seed``: the trials' seed,
    ``objective``): its override there, else the config's."""
    for override in grid:
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return value
    return str(master.get(key))


def show(arms: Sequence[Arm]) -> None:
    """Print each arm's best setting, its objective and its reruns' median."""
    print("search results:")
    for arm in arms:
        label = f"{arm.label} {arm.optimizer}".strip()
        if arm.best is None:
            print(f"  {label}: no trial finished with a finite objective", flush=True)
            continue
        finite = [v for v in arm.rerun_values if v is not None and math.isfinite(v)]
        reruns = f"; reruns median {statistics.median(finite):.6g} ({len(finite)} seeds)"
        print(
            f"  {label}: trial {arm.best} of {len(arm.trials)}, objective "
            f"{arm.values[arm.best]:.6g} at {' '.join(setting(arm))}{reruns if finite else ''}",
            flush=True,
        )


def setting(arm: Arm) -> list[str]:
    """The best trial's overrides of the optimizer's space (``key=value``)."""
    return arm.trials[arm.best][len(arm.grid) + 1 : -1]


def write_results(arms: Sequence[Arm], folder: Path) -> None:
    """Every arm's best trial, setting, objective and reruns' objectives, as
    ``search_results.yaml`` in ``folder`` (written whole, then moved into place)."""
    entries = []
    for arm in arms:
        best = None
        if arm.best is not None:
            best = {
                "trial": arm.best,
                "setting": dict(o.split("=", 1) for o in setting(arm)),
                "objective": arm.values[arm.best],
                "reruns": arm.rerun_values,
            }
        entries.append({"grid": arm.label, "optimizer": arm.optimizer, "best": best})
    folder.mkdir(parents=True, exist_ok=True)
    written = folder / "search_results.yaml.tmp"
    OmegaConf.save(OmegaConf.create({"arms": entries}), written)
    written.replace(folder / "search_results.yaml")
