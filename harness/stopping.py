"""How a signal stops work: SIGTERM (and, in workers and jobs, SIGINT and SIGUSR2) becomes a
KeyboardInterrupt, so that the runs it cuts short are recorded KILLED on the way out.

While a cohort trains with checkpoints (``deferred``), a stop signal is only noted: the
training loop sees it between two updates (``requested``), writes a checkpoint of a state
that is whole, then raises (``check``). One noted after the last update is left for the next
``check``: the cohort's training is whole, and is recorded."""

from __future__ import annotations

import contextlib
import signal

_pending: list[int] = []  # stop signals received; see check
_deferring = False


def interrupt(signum: int, frame) -> None:
    """Raise KeyboardInterrupt, naming the signal (inside ``deferred``: only note it)."""
    _pending.append(signum)
    if not _deferring:
        raise KeyboardInterrupt(f"stopped by signal {signum}")


def requested() -> bool:
    """Whether a stop signal is waiting to be raised."""
    return bool(_pending)


def check() -> None:
    """Raise KeyboardInterrupt for a stop signal not raised yet: one noted inside
    ``deferred``, or one whose exception Python swallowed (a signal handled while a weakref
    callback or a ``__del__`` runs, SQLAlchemy's say, only prints "Exception ignored", and
    the work would go on). Training calls this between updates; once the interrupt has
    propagated, nothing calls it again."""
    if _pending:
        signum = _pending.pop()
        _pending.clear()  # one interrupt for them all
        raise KeyboardInterrupt(f"stopped by signal {signum}")


@contextlib.contextmanager
def deferred():
    """Inside, stop signals are noted, not raised (``requested`` and ``check`` see them)."""
    global _deferring
    outer, _deferring = _deferring, True
    try:
        yield
    finally:
        _deferring = outer


def forget() -> None:
    """Drop the stop signals noted so far (a worker that goes on to other work: Ray's)."""
    _pending.clear()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def interrupt_once(signum: int, frame) -> None:
    """Raise KeyboardInterrupt for the first stop signal (SIGINT, SIGTERM, SIGUSR2) and
    ignore the ones after it."""
    for each in STOP_SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    interrupt(signum, frame)
