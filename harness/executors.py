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
and the sweep marks the runs of a job that died without a word (see
``harness.sweep.launch.settle``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import pool, stopping
from harness.config import ConfigError
from harness.sweep.settings import LauncherSettings, RaySettings, SlurmSettings

EXTRAS = {"slurm": "submitit", "ray": "ray"}  # the module each cluster executor needs
POLL_SECONDS = 1.0  # how often cluster jobs are asked whether they are done
STOP_GRACE_SECONDS = 60.0  # how long cancelled jobs may take to record their runs KILLED

OnEvent = Callable[[str, int, Any], None]


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check(settings: LauncherSettings) -> None:
    """Validate the settings (``LauncherSettings.check``) and that the chosen executor can
    run here: the cluster ones need their extra, SLURM its ``sbatch``. The local executor's
    ``n_jobs`` above this machine's cores is capped to them, with a one-line warning on stderr
    (more CPU workers than cores only share them, each with its own process and memory; where
    the points train on CUDA the workers are one per GPU anyway)."""
    settings.check()
    kind = settings.executor
    cores = cpu_cores()
    if kind == "local" and settings.n_jobs > cores:
        print(
            f"warning: hydra.launcher.n_jobs={settings.n_jobs} is more than the {cores} CPU "
            f"cores here: capped to {cores}",
            file=sys.stderr,
        )
        settings.n_jobs = cores
    if kind in EXTRAS and importlib.util.find_spec(EXTRAS[kind]) is None:
        allowed = f"needs {EXTRAS[kind]}: pip install -e '.[{kind}]'"
        raise ConfigError("hydra.launcher.executor", kind, allowed)
    if kind == "slurm" and settings.slurm.cluster == "slurm" and shutil.which("sbatch") is None:
        allowed = "a machine with SLURM's sbatch (or hydra.launcher.slurm.cluster=local)"
        raise ConfigError("hydra.launcher.executor", kind, allowed)


def remote(kind: str, slurm: SlurmSettings, ray: RaySettings) -> bool:
    """Whether the executor's jobs may run on other machines (then they cannot share a
    sqlite file with this one)."""
    ray_cluster = ray.address is not None or bool(os.environ.get("RAY_ADDRESS"))
    return (kind == "slurm" and slurm.cluster == "slurm") or (kind == "ray" and ray_cluster)


JOB_SIGNALS = stopping.STOP_SIGNALS  # SIGINT (Ray's cancel), SIGTERM and SIGUSR2


def run_cohort(work, job) -> Any:
    """A cluster job's body: train one cohort (``job``, a ``harness.sweep.work.Job``) with
    ``work`` (a ``harness.sweep.work.CohortWork``) and return its report. SIGTERM (scancel,
    the time limit, preemption), SIGUSR2 (submitit's warning before the time limit, which
    would otherwise requeue a preempted job and so run finished points again) and SIGINT
    (Ray's cancel) stop training (a cohort with checkpoints writes one first, which a rerun
    of the sweep resumes) and record the runs KILLED, then the job fails. The signal handlers
    are restored at the end (Ray reuses its workers)."""
    previous = {signum: signal.signal(signum, stopping.interrupt_once) for signum in JOB_SIGNALS}
    try:
        return work.run(job)
    except KeyboardInterrupt as stop:  # an Exception, so that the engines report it at once
        raise RuntimeError(f"interrupted: {stop}") from None
    finally:
        work.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stopping.forget()  # a signal to this task is not one to the next (Ray reuses workers)


class LocalExecutor:
    """The slot pool on this machine: one worker per slot, each with its environment."""

    def __init__(self, environments: list[dict[str, str]]):
        self.environments = environments

    def run(self, work, items: dict[int, Any], on_event: OnEvent, pins: dict[int, int]) -> None:
        def translate(kind: str, number: int, payload) -> None:
            if kind == "lost":
                payload = f"worker died (exit code {payload})"
            if kind != "started":
                on_event(kind, number, payload)

        environments = self.environments[: max(len(items), 1)]
        pool.Pool(environments, work).run(items, translate, pins)


class _Jobs:
    """Waits on cluster jobs (``handles``: number -> job) until each is done, reporting each
    as it ends; on KeyboardInterrupt, cancels the rest and waits for them to stop."""

    def __init__(self, done: Callable, outcome: Callable, cancel: Callable):
        self.done, self.outcome, self.cancel = done, outcome, cancel

    def wait(self, handles: dict[int, Any], on_event: OnEvent) -> None:
        try:
            self._drain(handles, on_event)
        except KeyboardInterrupt:
            # a second signal must not cut this short
            previous = {s: signal.signal(s, signal.SIG_IGN) for s in stopping.STOP_SIGNALS}
            try:
                for handle in handles.values():
                    self.cancel(handle)
                deadline = time.monotonic() + STOP_GRACE_SECONDS
                self._drain(handles, on_event, deadline, interrupted=True)
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            raise

    def _drain(self, handles, on_event, deadline=None, interrupted=False) -> None:
        while handles and (deadline is None or time.monotonic() < deadline):
            for number, handle in list(handles.items()):
                if self.done(handle):
                    kind, payload = ("interrupted", None) if interrupted else self.outcome(handle)
                    on_event(kind, number, payload)  # (settle counts a run that finished)
                    del handles[number]
            if handles:
                time.sleep(POLL_SECONDS)
        for number in handles:
            on_event("interrupted", number, None)


class SlurmExecutor:
    """Each cohort is one task of a SLURM job array, submitted through submitit with the
    settings' partition, GPUs, CPUs, memory, time limit, array parallelism and setup lines."""

    def __init__(self, settings: SlurmSettings, folder: Path):
        import submitit

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
        parameters |= {  # checked by submitit on its local cluster too, which ignores them
            "slurm_array_parallelism": settings.array_parallelism,
            "slurm_setup": list(settings.setup),
            # a requeued job would train its whole cohort again, finished points too
            "slurm_additional_parameters": {"no-requeue": True},
        }
        if settings.partition:
            parameters["slurm_partition"] = settings.partition
        self.executor.update_parameters(**parameters)

    @staticmethod
    def _cancel(job) -> None:
        """scancel on SLURM (SIGTERM to the job, SIGKILL after its KillWait). A local job is
        sent SIGTERM, which submitit's local controller passes on to the job's process (its own
        ``cancel`` sends SIGINT, which a process started in the background ignores)."""
        process = getattr(job, "_process", None)
        if process is None:
            job.cancel(check=False)
        elif process.poll() is None:
            process.send_signal(signal.SIGTERM)

    @staticmethod
    def _outcome(job) -> tuple[str, Any]:
        try:
            return "done", job.result()
        except Exception as error:  # the job failed, was killed, or timed out
            lines = str(error).strip().splitlines() or [type(error).__name__]
            return "lost", f"job {job.job_id} ({job.state}): {lines[-1][:300]}"

    def run(self, work, items: dict[int, Any], on_event: OnEvent, pins: dict[int, int]) -> None:
        numbers = list(items)
        jobs = self.executor.map_array(
            run_cohort, [work] * len(numbers), [items[n] for n in numbers]
        )
        print(f"submitted {len(jobs)} job(s) to {self.executor.cluster}: {jobs[0].job_id}...")
        waiter = _Jobs(lambda job: job.done(), self._outcome, self._cancel)
        waiter.wait(dict(zip(numbers, jobs, strict=True)), on_event)


class RayExecutor:
    """Each cohort is one Ray task asking for the settings' CPUs, GPUs and custom resources.
    Connects to ``address`` (a local instance when None) at once, and refuses an ask that no
    node of the cluster can meet (the tasks would wait forever); disconnects after ``run``."""

    def __init__(self, settings: RaySettings):
        import ray

        self.ray, self.settings = ray, settings
        if not ray.is_initialized():
            local = {"num_cpus": settings.local_cpus} if settings.address is None else {}
            ray.init(
                address=settings.address, include_dashboard=False, log_to_driver=False, **local
            )
        self.ask = {"CPU": settings.num_cpus, **settings.resources}
        has = ray.cluster_resources()
        self.ask["GPU"] = (
            (1 if has.get("GPU", 0) >= 1 else 0)
            if settings.num_gpus is None
            else (settings.num_gpus)
        )
        for name, amount in self.ask.items():
            if amount > has.get(name, 0):
                ray.shutdown()
                key = {"CPU": "num_cpus", "GPU": "num_gpus"}.get(name, f"resources.{name}")
                allowed = f"at most what the cluster has ({has.get(name, 0):g} {name})"
                raise ConfigError(f"hydra.launcher.ray.{key}", amount, allowed)

    def _outcome(self, ref) -> tuple[str, Any]:
        try:
            return "done", self.ray.get(ref)
        except Exception as error:  # the task raised, its worker died, or it was cancelled
            lines = str(error).strip().splitlines() or [type(error).__name__]
            return "lost", f"Ray task {ref.task_id().hex()[:12]}: {lines[-1][:300]}"

    def run(self, work, items: dict[int, Any], on_event: OnEvent, pins: dict[int, int]) -> None:
        ray, ask = self.ray, dict(self.ask)
        try:
            task = ray.remote(run_cohort).options(
                num_cpus=ask.pop("CPU"), num_gpus=ask.pop("GPU"), resources=ask, max_retries=0
            )
            refs = {number: task.remote(work, job) for number, job in items.items()}
            waiter = _Jobs(
                lambda ref: bool(ray.wait([ref], timeout=0)[0]), self._outcome, ray.cancel
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
    return max(1, cpu_cores() // slots)


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


def build(kind: str, slots, slurm: SlurmSettings, ray: RaySettings, folder: Path):
    """The executor of ``kind`` (local: ``slots``' environments; slurm: submitit's files in
    ``folder`` unless the settings name one), ready to run; raises ConfigError when it cannot
    start (no SLURM here, no Ray cluster at the address, an ask the cluster cannot meet)."""
    try:
        if kind == "slurm":
            return SlurmExecutor(slurm, Path(slurm.folder or folder))
        if kind == "ray":
            return RayExecutor(ray)
    except ConfigError:
        raise
    except Exception as error:
        key = "hydra.launcher.ray.address" if kind == "ray" else "hydra.launcher.executor"
        value = ray.address if kind == "ray" else kind
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(key, value, f"an engine that starts; it failed: {first}") from error
    return LocalExecutor(slots.environments())
