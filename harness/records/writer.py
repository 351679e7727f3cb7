"""Where a Recorder runs: in a forked writer process (so that MLflow's writes overlap
training) or inline, in the caller's process. Both take the same calls: a Recorder method's
name, the run handles it concerns and its arguments, optionally waiting for the reply."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from multiprocessing.util import Finalize

from harness.records.backends import opening
from harness.records.recorder import Recorder
from harness.records.schema import Status


class TrackingError(RuntimeError):
    """MLflow refused a write, or the writer process died."""


def _messages(inbox, parent: int):
    """The parent's messages until it says stop (None) or dies (the writer is then orphaned)."""
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if message is None:
            return
        yield message


def _serve(uri: str, inbox, outbox, parent: int, options: dict) -> None:
    """The writer process: run Recorder calls in order; reply where asked, with the errors met
    for the call's handles. A run whose writes failed is ended FAILED at its finish. Ctrl-C is
    left to the parent, which records KILLED, and so are SIGTERM and SIGUSR2 (a SLURM job's
    end: SLURM signals every process of the job); the writer ends when its parent does."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    opening.forget_inherited_stores()
    calls = _Calls(uri, options)
    for method, handles, args, reply in _messages(inbox, parent):
        answer = calls.call(method, handles, args, reply)
        if reply:
            outbox.put(answer)


class _Calls:
    """Recorder calls with their errors kept by handle: a call that raises records the error
    for each of its runs, which the next call that replies returns (and ``finish`` ends those
    runs FAILED instead of FINISHED). The Recorder is made on the first call."""

    def __init__(self, uri: str, options: dict):
        self.uri, self.options = uri, options
        self.recorder: Recorder | None = None
        self.errors: dict[str, str] = {}

    def call(self, method: str, handles: list[str], args: tuple, reply: bool):
        """With ``reply``: (result, the errors met so far for these handles), else None."""
        result = None
        try:
            self.recorder = self.recorder or Recorder(self.uri, **self.options)
            result = self._perform(method, handles, args)
        except Exception as error:  # reported at the runs' finish or fail
            for handle in handles:
                self.errors.setdefault(handle, f"{type(error).__name__}: {error}")
        if not reply:
            return None
        return result, {h: self.errors.pop(h) for h in handles if h in self.errors}

    def _perform(self, method: str, handles: list[str], args: tuple):
        """A Recorder call; at ``finish``, runs with an earlier error are ended FAILED."""
        recorder, errors = self.recorder, self.errors
        if method != "finish" or not any(h in errors for h in handles):
            return getattr(recorder, method)(handles, *args)
        for handle in [h for h in handles if h in errors]:
            recorder.fail([handle], Status.FAILED, errors[handle], errors[handle])
        fine = [i for i, h in enumerate(handles) if h not in errors]
        summaries, tags = args
        done = recorder.finish(
            [handles[i] for i in fine], [summaries[i] for i in fine], [tags[i] for i in fine]
        )
        run_ids = dict(zip([handles[i] for i in fine], done, strict=True))
        return [run_ids.get(handle) for handle in handles]


class WriterDied(TrackingError):
    """The writer process is gone (killed, say by the OOM killer): what it was given last may
    not be written."""


WRITER_STOP_SECONDS = 300.0  # how long a closing writer may take to write what it holds


class Writer:
    """Recorder calls in a forked process; calls that ask for a reply wait until that call
    and all before it are done. The process ends when its owner closes it, forgets it
    (garbage collection) or exits; a call to a writer that died raises ``WriterDied``."""

    def __init__(self, uri: str, **options):
        context = multiprocessing.get_context("fork")
        self.inbox, self.outbox = context.Queue(), context.Queue()
        self.process = context.Process(
            target=_serve, args=(uri, self.inbox, self.outbox, os.getpid(), options), daemon=True
        )
        self.process.start()
        # Run when this object is collected, and at exit by multiprocessing's exit handler
        # before it joins its children (it would join a writer waiting for work for ever)
        # and before the queues' own exit handlers (priority 10) stop their feeder threads.
        self.stop = Finalize(self, _stop, (self.inbox, self.process), exitpriority=20)

    def call(self, method: str, handles: list[str], *args, reply: bool = False):
        """Queue the call; with ``reply``, wait and return (result, errors by handle)."""
        self._check_alive()
        self.inbox.put((method, handles, args, reply))
        if not reply:
            return None
        while True:
            try:
                return self.outbox.get(timeout=1.0)
            except queue.Empty:
                self._check_alive()

    def _check_alive(self) -> None:
        if not self.process.is_alive():
            code = self.process.exitcode
            raise WriterDied(f"the tracking writer process died (exit code {code})")

    def close(self) -> None:
        self.stop()


def _stop(inbox, process) -> None:
    """Ask the writer to write what it holds and stop; one that died, or does not stop within
    ``WRITER_STOP_SECONDS``, is killed, and its queue is dropped unflushed (flushing into a
    pipe nobody reads blocks for ever)."""
    if process.is_alive():
        inbox.put(None)
        process.join(timeout=WRITER_STOP_SECONDS)
    if process.is_alive():
        process.kill()
        process.join()
    if process.exitcode != 0:
        inbox.cancel_join_thread()
    inbox.close()


class InlineWriter:
    """Recorder calls in this process (where fork is not available, or not safe)."""

    def __init__(self, uri: str, **options):
        self.calls = _Calls(uri, options)

    def call(self, method: str, handles: list[str], *args, reply: bool = False):
        return self.calls.call(method, handles, args, reply)

    def close(self) -> None:
        """Nothing runs in the background."""
