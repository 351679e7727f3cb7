"""A sweep's grid points: each job of the multirun composed (once per combination of config
groups, see ``harness.compose``), validated (spec, data, optimizer, device) and named."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness import compose, config, devices, train
from harness import problem as problem_module
from harness.config import ConfigError, RunConfig
from harness.problem import Problem
from harness.sweep.summary import Timing


@dataclass
class Point:
    """One grid point: its Hydra job number and overrides, its composed config (without the
    ``hydra`` node, unresolved, as YAML), its job's output folder and its validated spec;
    ``alone``: why it trains one run at a time, never in a cohort (a module with buffers or
    random layers); "" when it trains in cohorts. ``objective``: the metric its ``objective``
    key names (see ``harness.objectives``)."""

    index: int
    overrides: tuple[str, ...]
    config_yaml: str
    job_dir: Path
    spec: RunConfig
    fingerprint: str
    name: str
    alone: str = ""
    objective: str = "train_loss"


def varying_keys(job_overrides: Sequence[Sequence[str]]) -> set[str]:
    """The override keys whose values differ between jobs: the grid's axes."""
    values: dict[str, set[str]] = {}
    for overrides in job_overrides:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    return {key for key, seen in values.items() if len(seen) > 1}


def point_name(spec: RunConfig, overrides: Sequence[str], axes: set[str]) -> str:
    """``run_name`` if set, else the job's values on the grid's axes (``optimizer=sgd seed=1``),
    else the usual optimizer-model-dataset-lr-seed name."""
    if spec.run_name:
        return spec.run_name
    picks = [o for o in overrides if o.partition("=")[0] in axes]
    return " ".join(picks) or train.run_name(spec)


class Checker:
    """Validates points, loading each distinct problem's data once."""

    def __init__(self):
        self.problems: dict[str, Problem] = {}
        self.devices: set[tuple[str, str]] = set()

    @staticmethod
    def problem_key(spec: RunConfig) -> str:
        """The identity of the point's problem: its dataset, model and loss configs."""
        tree = config.as_dict(spec)
        parts = {k: tree[k] for k in ("dataset", "model", "loss")}
        return json.dumps(parts, sort_keys=True, default=str)

    def check(self, spec: RunConfig) -> tuple[str, str]:
        """Validate ``spec``; why its runs train alone, if they do, and its objective's
        metric (see :class:`Point`)."""
        key = self.problem_key(spec)
        if key not in self.problems:
            self.problems[key] = problem_module.build(spec)
        else:  # data, model and loss fit; the batch size and schedule may not
            problem_module.check_training(spec, self.problems[key].data)
        metric = self.problems[key].objective(spec.objective)
        device = (spec.trainer.device, spec.trainer.dtype)
        if device not in self.devices:
            devices.resolve(*device)
            self.devices.add(device)
        return self.problems[key].model.alone_because, metric


def compose_points(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    composer: compose.Composer,
    timing: Timing,
) -> list[Point]:
    """Compose and validate the jobs one at a time (a point keeps its spec and its config's
    text, not the composed config); raises ConfigError naming the first bad point."""
    checker, points, axes = Checker(), [], varying_keys(job_overrides)
    for offset, overrides in enumerate(job_overrides):
        started = time.perf_counter()
        job = composer.job(initial_job_idx + offset, overrides)
        job_dir = composer.job_dir(job).absolute()  # the same on every node
        checked = time.perf_counter()
        timing.compose += checked - started
        try:
            spec = config.to_spec(job.task)
            alone, metric = checker.check(spec)
        except ConfigError as error:
            error.add_note(f"in grid point #{job.index}: {' '.join(job.overrides)}")
            raise
        text = config.yaml_text(OmegaConf.to_container(job.task))
        name = point_name(spec, job.overrides, axes)
        points.append(
            Point(
                job.index,
                job.overrides,
                text,
                job_dir,
                spec,
                config.fingerprint(spec),
                name,
                alone,
                metric,
            )
        )
        timing.validate += time.perf_counter() - checked
    targets = {(p.spec.tracking.uri, p.spec.tracking.experiment) for p in points}
    if len(targets) > 1:
        raise ConfigError(
            "tracking.experiment", sorted(map(str, targets)), "a sweep writes to one experiment"
        )
    return points
