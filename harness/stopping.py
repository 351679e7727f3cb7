"""How a signal stops work: SIGTERM (and, in workers and jobs, SIGINT and SIGUSR2) becomes a
KeyboardInterrupt, so that the runs it cuts short are recorded KILLED on the way out."""

from __future__ import annotations

import signal

_pending: list[int] = []  # stop signals received; see check


def interrupt(signum: int, frame) -> None:
    """Raise KeyboardInterrupt, naming the signal."""
    _pending.append(signum)
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def check() -> None:
    """Raise KeyboardInterrupt again for a stop signal whose exception Python swallowed: a
    signal handled while a weakref callback or a ``__del__`` runs (SQLAlchemy's, say) only
    prints "Exception ignored", and the work would go on. Training calls this between
    updates; once the interrupt has propagated, nothing calls it again."""
    if _pending:
        raise KeyboardInterrupt(f"stopped by signal {_pending.pop()}")


def interrupt_once(signum: int, frame) -> None:
    """Raise KeyboardInterrupt for the first SIGINT/SIGTERM and ignore the ones after it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    interrupt(signum, frame)
