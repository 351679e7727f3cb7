"""Who owns a run: a token naming the process that writes it (``host:pid:start``, plus the
SLURM job), and whether that process still runs. A run left RUNNING by a process that is gone
was cut short; one whose owner still runs is that process's to end."""

from __future__ import annotations

import os
import socket
import subprocess


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (Linux; empty where unreadable):
    [0] the state, [19] the start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), to tell a pid reused."""
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def _exited(pid: int) -> bool:
    """Whether the process has exited but is not yet reaped (a zombie): it writes nothing more,
    and where no init reaps orphans (a container's bare PID 1) it can stay one for good."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] in ("Z", "X")


def process_age() -> float:
    """Seconds since this process started (Linux; 0 where unknown)."""
    try:
        with open("/proc/uptime") as uptime:
            now = float(uptime.read().split()[0])
        return max(0.0, now - int(_start_ticks(os.getpid())) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return 0.0


def owner_token(pid: int | None = None) -> str:
    """``host:pid:start`` naming a live process (this one by default) on this host, followed by
    ``@slurm:<job id>`` in a SLURM job (``<array job id>_<task id>`` in a job array)."""
    pid = os.getpid() if pid is None else pid
    token = f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    return f"{token}@slurm:{job}" if job else token


def _slurm_job_alive(job: str) -> bool:
    """Whether SLURM still lists the job as queued, running, suspended or completing; True
    where squeue cannot say."""
    states = "PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING,REQUEUED,RESIZING,SIGNALING"
    command = ["squeue", "--noheader", "--jobs", job, "--states", states, "--format", "%i"]
    try:
        listed = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    if listed.returncode != 0:  # an unknown job id: long gone
        return "Invalid job id" not in listed.stderr
    return bool(listed.stdout.strip())


def is_alive(token: str) -> bool:
    """Whether the process named by ``owner_token`` still runs. On another host, only a SLURM
    job can be proven gone (by squeue); any other process there, or an unreadable token,
    counts as alive. No token (a run written before every run carried one) counts as gone:
    nothing could ever end such a run otherwise."""
    if not token:
        return False
    process, _, job = token.partition("@slurm:")
    host, _, rest = process.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return _slurm_job_alive(job) if job else True
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return (not ticks or _start_ticks(pid) == ticks) and not _exited(pid)
