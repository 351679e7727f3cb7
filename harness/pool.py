"""Worker processes for a sweep: the sweep process hands each worker one item (a cohort of grid
points) at a time over its own pipe, and the worker answers with the item's outcome; a worker
that dies is replaced and its item reported lost.

Workers run in slots, each with an environment of its own, set in the worker before it does
anything else: a GPU slot's ``CUDA_VISIBLE_DEVICES`` names its one GPU, set before CUDA starts
in that process. An item may be pinned to a slot; the others go to whichever slot is free.

Workers are forked from a fork server (multiprocessing's ``forkserver``) that has imported the
modules they need but never trained anything: a process forked after torch has run parallel
CPU kernels can hang or crawl in its OpenMP runtime, and the sweep's own process has (it loads
and checks every problem). So workers start in milliseconds, with clean thread pools. Each
worker has a pipe of its own and sends synchronously, so a worker that dies abruptly loses
nothing it reported and can block nobody else. Ctrl-C (SIGINT to the process group, or
SIGINT/SIGTERM to the sweep process, which passes it on) makes each worker record its current
run as KILLED and stop; a second signal is ignored, so that recording is never cut short.
"""

from __future__ import annotations

import atexit
import gc
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from harness.stopping import STOP_SIGNALS, interrupt_once

STOP_GRACE_SECONDS = 60.0  # how long stopping workers may take to record their runs KILLED
TRACKER_WAIT_SECONDS = 2.0  # how long a sweep's exit waits for the resource tracker to end


class Work(Protocol):
    """What a worker does (pickled into each worker): ``run(item)`` returns the item's outcome;
    ``close()`` releases what ``run`` opened, at the worker's exit."""

    def run(self, item: Any) -> Any: ...

    def close(self) -> None: ...


def _orders(pipe: Connection, sweep_pid: int):
    """(index, item) pairs from the sweep process until it says stop (None) or is gone."""
    while True:
        if not pipe.poll(1.0):
            try:
                os.kill(sweep_pid, 0)
            except ProcessLookupError:
                return
            continue
        order = pipe.recv()
        if order is None:
            return
        yield order


def _worker(work: Work, pipe: Connection, sweep_pid: int, environment: dict[str, str]) -> None:
    os.environ.update(environment)
    for signum in STOP_SIGNALS:
        signal.signal(signum, interrupt_once)
    try:
        for index, item in _orders(pipe, sweep_pid):
            pipe.send(("started", index, os.getpid()))
            try:
                outcome = work.run(item)
            except KeyboardInterrupt:
                pipe.send(("interrupted", index, None))
                return
            pipe.send(("done", index, outcome))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return
    finally:
        work.close()


@dataclass
class _Worker:
    process: Any
    pipe: Connection
    slot: int
    index: int | None = None  # the item it runs


def start_server(preload: list[str] | None = None) -> None:
    """Start the fork server now (``preload``: the modules it imports), so that it gets ready
    while this process does other work. It ignores SIGTERM and SIGUSR2, which it keeps across
    its exec: such a signal to the process group (``timeout``, systemd, ``docker stop``,
    SLURM's warning) must reach the workers, which checkpoint and record their runs KILLED,
    without killing the server through which the sweep learns how they ended. It is stopped
    when the sweep's process exits (``_at_exit``)."""
    if preload is not None:
        multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
    ignored = (signal.SIGTERM, signal.SIGUSR2)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in ignored}
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    atexit.unregister(_at_exit)  # once, and after multiprocessing's own handler, so before it
    atexit.register(_at_exit)


def stop_server(tracker_wait: float = TRACKER_WAIT_SECONDS) -> None:
    """Stop the fork server and multiprocessing's resource tracker, so that no process of the
    sweep outlives it. The server is idle by now (every worker has been reaped) and holds
    nothing to save, so it is killed: its own exit, with torch loaded, would take about a
    second. The tracker ends once every process that holds its pipe has closed it: it is
    waited for ``tracker_wait`` seconds at most (a writer orphaned by a killed worker may
    hold the pipe while it finishes its writes). (Python keeps both processes' ids in
    private attributes of its ``forkserver`` and ``resource_tracker`` modules, the same in
    3.11 to 3.13.)"""
    server = multiprocessing.forkserver._forkserver
    pid, alive = server._forkserver_pid, server._forkserver_alive_fd
    if pid is not None:
        server._forkserver_pid = server._forkserver_alive_fd = None
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(alive)
    tracker = multiprocessing.resource_tracker._resource_tracker
    pid, pipe = tracker._pid, tracker._fd
    if pid is None:
        return
    tracker._pid = tracker._fd = None
    os.close(pipe)
    deadline = time.monotonic() + tracker_wait
    while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.005)


def _at_exit() -> None:
    """At the sweep process's exit: stop the server and the tracker, then freeze what is
    left for the garbage collector, which Python's shutdown would otherwise walk whole
    (about a second with torch and MLflow loaded)."""
    stop_server()
    gc.freeze()


class Pool:
    """Workers running ``work`` over ``{index: item}``, one per slot (``environments``: each
    slot's environment variables).

    ``run`` calls ``on_event(kind, index, payload)`` in this process for each event:
    ``started`` (payload: the worker's pid), ``done`` (the outcome), ``interrupted`` (None),
    ``lost`` (the worker's exit code, when it died running the item). Items in ``pins``
    (index -> slot) run only in that slot. It returns when every index is done, and raises
    KeyboardInterrupt, after the workers have stopped, when the sweep was interrupted: by a
    signal to this process, or to a worker (then this process may not have seen it: a process
    started with SIGINT ignored keeps ignoring it).
    """

    def __init__(self, environments: list[dict[str, str]], work: Work):
        self.environments = environments
        self.work = work
        self.context = multiprocessing.get_context("forkserver")
        self.pending: deque[tuple[int, Any]] = deque()
        self.pins: dict[int, int] = {}
        self.workers: list[_Worker] = []
        self.stopping = False

    def run(
        self,
        items: dict[int, Any],
        on_event: Callable[[str, int, Any], None],
        pins: dict[int, int] | None = None,
    ) -> None:
        self.pending, self.pins = deque(items.items()), pins or {}
        start_server()
        for slot in range(len(self.environments)):
            if self._has_work(slot):
                self._spawn(slot)
        try:
            self._collect(on_event)
        except KeyboardInterrupt:
            self._stop(on_event)
            raise
        if self.stopping:
            raise KeyboardInterrupt("a worker was interrupted")

    def _fits(self, index: int, slot: int) -> bool:
        return self.pins.get(index, slot) == slot

    def _has_work(self, slot: int) -> bool:
        return any(self._fits(index, slot) for index, _ in self.pending)

    def _spawn(self, slot: int) -> None:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(  # not a daemon: it forks a tracking writer of its own
            target=_worker, args=(self.work, theirs, os.getpid(), self.environments[slot])
        )
        process.start()
        theirs.close()
        worker = _Worker(process, ours, slot)
        self.workers.append(worker)
        self._feed(worker)

    def _feed(self, worker: _Worker) -> None:
        """Give the worker the next item its slot may run, or tell it to stop. An item sent to
        a worker that has died goes back to the queue (``_collect`` reaps the worker)."""
        order = next((o for o in self.pending if self._fits(o[0], worker.slot)), None)
        if order is not None:
            self.pending.remove(order)
        try:
            worker.pipe.send(order)
        except (BrokenPipeError, EOFError):
            if order is not None:
                self.pending.appendleft(order)

    def _collect(self, on_event, deadline: float | None = None) -> None:
        """Handle events until every worker has exited (replacing dead ones unless stopping)."""
        while self.workers:
            if deadline is not None and time.monotonic() > deadline:
                for worker in self.workers:
                    worker.process.kill()
                deadline = None
            handles = [w.pipe for w in self.workers] + [w.process.sentinel for w in self.workers]
            ready = wait(handles, timeout=0.5)
            for worker in list(self.workers):
                if worker.pipe in ready:
                    self._read(worker, on_event)
                if worker.process.sentinel in ready:
                    self._reap(worker, on_event)

    def _read(self, worker: _Worker, on_event) -> None:
        while worker.pipe.poll():
            try:
                kind, index, payload = worker.pipe.recv()
            except (EOFError, OSError):  # it died; its sentinel says so
                return
            worker.index = index if kind == "started" else None
            on_event(kind, index, payload)
            if kind == "done":
                self._feed(worker)
            elif kind == "interrupted" and not self.stopping:
                self._interrupt_all()

    def _reap(self, worker: _Worker, on_event) -> None:
        """Forget an exited worker; a point it died running is reported ``lost``."""
        self._read(worker, on_event)
        worker.process.join()
        worker.pipe.close()
        self.workers.remove(worker)
        if worker.index is not None:
            on_event("lost", worker.index, worker.process.exitcode)
        if self._has_work(worker.slot) and not self.stopping:
            self._spawn(worker.slot)

    def _interrupt_all(self) -> None:
        """Hand out no more items and pass the interrupt on to every live worker."""
        self.stopping = True
        self.pending.clear()
        for worker in self.workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGINT)

    def _stop(self, on_event) -> None:
        """After an interrupt here: stop the workers and wait for them to record their runs."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._interrupt_all()
            self._collect(on_event, deadline=time.monotonic() + STOP_GRACE_SECONDS)
        finally:
            signal.signal(signal.SIGINT, previous)
