"""A sweep's grid points: each job of the multirun composed (once per combination of config
groups, see ``harness.compose``), validated (spec, data, optimizer, device) and named."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import torch
from omegaconf import OmegaConf

from harness import compose, config, devices, train
from harness import problem as problem_module
from harness.config import ConfigError, RunConfig
from harness.executors import cpu_cores
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


SPLIT_AT = 64  # points: a grid this large is composed in two processes at once


def compose_points(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    composer: compose.Composer,
    timing: Timing,
    split: bool = False,
) -> list[Point]:
    """Compose and validate the jobs one at a time (a point keeps its spec and its config's
    text, not the composed config); raises ConfigError naming the first bad point. With
    ``split``, a grid of ``SPLIT_AT`` points or more on a machine of several cores is
    composed in two halves at once: the second by a forked copy of this process (``split``
    only where this process has not computed with torch yet, whose thread pool a fork
    would break). ``timing`` gets this process's wall times: its own, and its wait for the
    copy, shared as the copy spent its time."""
    axes = varying_keys(job_overrides)
    if split and len(job_overrides) >= SPLIT_AT and hasattr(os, "fork") and cpu_cores() > 1:
        points = _in_two(job_overrides, initial_job_idx, composer, timing, axes)
    else:
        points = _compose(job_overrides, initial_job_idx, composer, timing, axes)
    targets = {(p.spec.tracking.uri, p.spec.tracking.experiment) for p in points}
    if len(targets) > 1:
        raise ConfigError(
            "tracking.experiment", sorted(map(str, targets)), "a sweep writes to one experiment"
        )
    return points


def _compose(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    composer: compose.Composer,
    timing: Timing,
    axes: set[str],
) -> list[Point]:
    """The jobs composed and validated in this process, in order."""
    checker, points = Checker(), []
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
    return points


def _in_two(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    composer: compose.Composer,
    timing: Timing,
    axes: set[str],
) -> list[Point]:
    """The first half composed here while a forked copy composes the second and sends its
    points back (pickled, through a pipe); the first bad point is raised, whichever half
    holds it. A copy that dies leaves its half to this process."""
    half = len(job_overrides) // 2
    rest = (job_overrides[half:], initial_job_idx + half, composer, axes)
    sys.stdout.flush()
    sys.stderr.flush()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        _compose_and_send(writer, *rest)
    os.close(writer)
    try:
        first = _compose(job_overrides[:half], initial_job_idx, composer, timing, axes)
    except BaseException:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(reader)
        raise
    waiting = time.perf_counter()
    with os.fdopen(reader, "rb") as pipe:
        try:
            kind, found, spent = pickle.load(pipe)
        except EOFError:
            kind = "lost"
    os.waitpid(child, 0)
    if kind == "lost":
        return first + _compose(*rest[:3], timing, axes)
    waited = time.perf_counter() - waiting  # shared as the copy spent its own time
    share = spent.compose / max(spent.compose + spent.validate, 1e-9)
    timing.compose += share * waited
    timing.validate += (1 - share) * waited
    if kind == "refused":
        raise found
    return first + found


def _compose_and_send(writer: int, job_overrides, initial_job_idx, composer, axes) -> NoReturn:
    """The forked copy's part: compose and validate, send (kind, points or the refusal,
    times) and end, running none of the parent's exit handlers."""
    status = 1
    try:
        torch.set_num_threads(1)  # the parent's thread pool does not survive a fork
        spent = Timing()
        try:
            result = ("points", _compose(job_overrides, initial_job_idx, composer, spent, axes))
        except ConfigError as error:
            result = ("refused", error)
        with os.fdopen(writer, "wb") as pipe:
            pickle.dump((*result, spent), pipe)
        status = 0
    finally:
        os._exit(status)
