"""Executors: where a sweep's cohorts train. The sweep hands each one its cohorts (items: a
list of grid points each) and hears back through ``on_event(kind, number, payload)``:
``done`` (the cohort's report), ``interrupted`` (None) or ``lost`` (why, as text: the worker or
job died before reporting). ``run`` returns when every cohort is accounted for, and raises
KeyboardInterrupt, after stopping what still runs, when the sweep is interrupted.

- ``local``: the slot pool of ``harness.pool`` on this machine (one worker per GPU, else
  ``n_jobs`` CPU workers);
- ``slurm``: one SLURM job per cohort, submitted as a job array through submitit (its
  ``local`` cluster runs the same jobs as processes on this machine);
- ``ray``: one Ray task per cohort, each asking for ``num_cpus`` and ``num_gpus``.

A cluster job trains its cohort and writes its runs to the tracking store itself, as a local
worker does; a job that is killed records its runs KILLED when it can (SIGTERM, Ray's cancel),
and the sweep marks the runs of a job that died without a word (see ``sweep.settle``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import pool
from harness.config import ConfigError

KINDS = ("local", "slurm", "ray")
EXTRAS = {"slurm": "submitit", "ray": "ray"}  # the module each cluster executor needs
POLL_SECONDS = 1.0  # how often cluster jobs are asked whether they are done
STOP_GRACE_SECONDS = 60.0  # how long cancelled jobs may take to record their runs KILLED

OnEvent = Callable[[str, int, Any], None]


@dataclass(frozen=True)
class SlurmSettings:
    """``hydra.launcher.slurm``: the resources of each job (one cohort per job)."""

    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: int = 16
    time_min: int = 60
    array_parallelism: int = 32  # jobs of the array running at once
    setup: tuple[str, ...] = ()  # shell lines run before each job (modules, venv)
    folder: str | None = None  # submitit's scripts and logs; None: <sweep dir>/.submitit
    cluster: str = "slurm"  # or "local": submitit runs the jobs as processes on this machine


@dataclass(frozen=True)
class RaySettings:
    """``hydra.launcher.ray``: the cluster and what each task (one cohort) asks for."""

    address: str | None = None  # None: a local Ray instance; "auto", "ray://head:10001"
    num_cpus: float = 1
    num_gpus: float | None = None  # None: 1 where the cluster has GPUs, else 0
    resources: dict[str, float] = field(default_factory=dict)
    local_cpus: int | None = None  # CPUs of a local instance (None: all of them)


def _settings(cls, key: str, values: dict) -> Any:
    """``cls(**values)``, with unknown keys and wrong types reported as ConfigError."""
    known = {f.name: f for f in fields(cls)}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{key}.{name}", value, f"expected one of {', '.join(known)}")
    built = cls(**{k: tuple(v) if k == "setup" else v for k, v in values.items()})
    for name, value in vars(built).items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and value < 0:
            raise ConfigError(f"{key}.{name}", value, "expected a number >= 0")
    return built


def check(kind: str, slurm: dict, ray: dict) -> tuple[SlurmSettings, RaySettings]:
    """Validate the executor's choice and settings; the cluster ones need their extra."""
    if kind not in KINDS:
        raise ConfigError("hydra.launcher.executor", kind, f"expected one of {', '.join(KINDS)}")
    slurm_settings = _settings(SlurmSettings, "hydra.launcher.slurm", slurm)
    ray_settings = _settings(RaySettings, "hydra.launcher.ray", ray)
    if slurm_settings.cluster not in ("slurm", "local"):
        raise ConfigError(
            "hydra.launcher.slurm.cluster", slurm_settings.cluster, "expected slurm or local"
        )
    if kind in EXTRAS and importlib.util.find_spec(EXTRAS[kind]) is None:
        allowed = f"needs {EXTRAS[kind]}: pip install -e '.[{kind}]'"
        raise ConfigError("hydra.launcher.executor", kind, allowed)
    return slurm_settings, ray_settings


def remote(kind: str, slurm: SlurmSettings, ray: RaySettings) -> bool:
    """Whether the executor's jobs may run on other machines (then they cannot share a
    sqlite file with this one)."""
    return (kind == "slurm" and slurm.cluster == "slurm") or (
        kind == "ray" and ray.address is not None
    )


def run_cohort(work, points: list) -> Any:
    """A cluster job's body: train one cohort with ``work`` (a ``sweep.CohortWork``) and return
    its report. SIGTERM (SLURM's preemption, time limit, scancel) and SIGINT stop training and
    record the runs KILLED, then the job fails."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pool.interrupt_once)
    try:
        return work.run(points)
    finally:
        work.close()


class LocalExecutor:
    """The slot pool on this machine: one worker per slot, each with its environment."""

    def __init__(self, environments: list[dict[str, str]], work):
        self.environments, self.work = environments, work

    def run(self, items: dict[int, list], on_event: OnEvent, pins: dict[int, int]) -> None:
        def translate(kind: str, number: int, payload) -> None:
            if kind == "lost":
                payload = f"worker died (exit code {payload})"
            if kind != "started":
                on_event(kind, number, payload)

        environments = self.environments[: max(len(items), 1)]
        pool.Pool(environments, self.work).run(items, translate, pins)


class _Jobs:
    """Waits on cluster jobs (``handles``: number -> job) until each is done, reporting each
    as it ends; on KeyboardInterrupt, cancels the rest and waits for them to stop."""

    def __init__(self, done: Callable, outcome: Callable, cancel: Callable):
        self.done, self.outcome, self.cancel = done, outcome, cancel

    def wait(self, handles: dict[int, Any], on_event: OnEvent) -> None:
        try:
            self._drain(handles, on_event)
        except KeyboardInterrupt:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                for handle in handles.values():
                    self.cancel(handle)
                deadline = time.monotonic() + STOP_GRACE_SECONDS
                self._drain(handles, on_event, deadline, interrupted=True)
            finally:
                signal.signal(signal.SIGINT, previous)
            raise

    def _drain(self, handles, on_event, deadline=None, interrupted=False) -> None:
        while handles and (deadline is None or time.monotonic() < deadline):
            for number, handle in list(handles.items()):
                if self.done(handle):
                    kind, payload = self.outcome(handle)
                    if interrupted and kind == "lost":
                        kind, payload = "interrupted", None
                    on_event(kind, number, payload)
                    del handles[number]
            if handles:
                time.sleep(POLL_SECONDS)
        for number in handles:
            on_event("interrupted", number, None)


class SlurmExecutor:
    """Each cohort is one task of a SLURM job array, submitted through submitit with the
    settings' partition, GPUs, CPUs, memory, time limit, array parallelism and setup lines."""

    def __init__(self, settings: SlurmSettings, folder: Path, work):
        import submitit

        self.work = work
        self.executor = submitit.AutoExecutor(folder=folder, cluster=settings.cluster)
        parameters = {
            "name": "harness-cohort",
            "timeout_min": settings.time_min,
            "cpus_per_task": settings.cpus_per_job,
            "gpus_per_node": settings.gpus_per_job,
            "mem_gb": settings.mem_gb,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        if settings.cluster == "slurm":
            parameters |= {
                "slurm_array_parallelism": settings.array_parallelism,
                "slurm_setup": list(settings.setup),
            }
            if settings.partition:
                parameters["slurm_partition"] = settings.partition
        self.executor.update_parameters(**parameters)

    @staticmethod
    def _outcome(job) -> tuple[str, Any]:
        try:
            return "done", job.result()
        except Exception as error:  # the job failed, was killed, or timed out
            lines = str(error).strip().splitlines() or [type(error).__name__]
            return "lost", f"job {job.job_id} ({job.state}): {lines[-1][:300]}"

    def run(self, items: dict[int, list], on_event: OnEvent, pins: dict[int, int]) -> None:
        numbers = list(items)
        jobs = self.executor.map_array(
            run_cohort, [self.work] * len(numbers), [items[n] for n in numbers]
        )
        print(f"submitted {len(jobs)} job(s) to {self.executor.cluster}: {jobs[0].job_id}...")
        waiter = _Jobs(lambda job: job.done(), self._outcome, lambda job: job.cancel(check=False))
        waiter.wait(dict(zip(numbers, jobs, strict=True)), on_event)


class RayExecutor:
    """Each cohort is one Ray task asking for the settings' CPUs, GPUs and custom resources;
    connects to ``address`` (a local instance when None) and disconnects at the end."""

    def __init__(self, settings: RaySettings, work):
        self.settings, self.work = settings, work

    def _connect(self):
        import ray

        if not ray.is_initialized():
            local = {"num_cpus": self.settings.local_cpus} if self.settings.address is None else {}
            ray.init(
                address=self.settings.address,
                include_dashboard=False,
                log_to_driver=False,
                **local,
            )
        return ray

    def _task(self, ray):
        gpus = self.settings.num_gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        return ray.remote(run_cohort).options(
            num_cpus=self.settings.num_cpus,
            num_gpus=gpus,
            resources=dict(self.settings.resources),
            max_retries=0,
        )

    @staticmethod
    def _outcome(ray, ref) -> tuple[str, Any]:
        try:
            return "done", ray.get(ref)
        except Exception as error:  # the task raised, its worker died, or it was cancelled
            lines = str(error).strip().splitlines() or [type(error).__name__]
            return "lost", f"Ray task {ref.task_id().hex()[:12]}: {lines[-1][:300]}"

    def run(self, items: dict[int, list], on_event: OnEvent, pins: dict[int, int]) -> None:
        ray = self._connect()
        try:
            task = self._task(ray)
            refs = {number: task.remote(self.work, points) for number, points in items.items()}
            waiter = _Jobs(
                lambda ref: bool(ray.wait([ref], timeout=0)[0]),
                lambda ref: self._outcome(ray, ref),
                lambda ref: ray.cancel(ref),
            )
            waiter.wait(refs, on_event)
        finally:
            ray.shutdown()


def parallel_cohorts(kind: str, slots: int) -> int:
    """How many cohorts the sweep should make at least, so that no worker idles: the local
    slots; cluster jobs are sized by ``max_cohort`` alone."""
    return slots if kind == "local" else 1


def threads(kind: str, slots: int, slurm: SlurmSettings, ray: RaySettings) -> int:
    """CPU threads each worker or job may use."""
    if kind == "slurm":
        return max(1, slurm.cpus_per_job)
    if kind == "ray":
        return max(1, int(ray.num_cpus))
    return max(1, len(os.sched_getaffinity(0)) // slots)


def check_store(kind: str, slurm: SlurmSettings, ray: RaySettings, uri: str) -> None:
    """Jobs on other machines need a store they can all reach: a server or a database."""
    if remote(kind, slurm, ray) and uri.startswith("sqlite:"):
        allowed = (
            f"a store every node reaches (tracking=server, or a database URI): {kind} jobs on "
            "other machines cannot share a sqlite file"
        )
        raise ConfigError("tracking.uri", uri, allowed)


def describe(kind: str, slots, slurm: SlurmSettings, ray: RaySettings) -> str:
    """Where the cohorts run, for the sweep's first line."""
    if kind == "slurm":
        where = f"partition {slurm.partition}" if slurm.partition else "the default partition"
        return f"SLURM jobs ({slurm.cluster}) on {where}"
    if kind == "ray":
        return f"Ray tasks on {ray.address or 'a local Ray instance'}"
    gpus = slots.gpus
    return f"GPUs {', '.join(gpus)}" if gpus else f"{slots.count} CPU worker(s)"


def build(kind: str, slots, slurm: SlurmSettings, ray: RaySettings, folder: Path, work):
    """The executor of ``kind`` over ``work`` (local: ``slots``' environments)."""
    if kind == "slurm":
        return SlurmExecutor(slurm, Path(slurm.folder or folder), work)
    if kind == "ray":
        return RayExecutor(ray, work)
    return LocalExecutor(slots.environments(), work)
