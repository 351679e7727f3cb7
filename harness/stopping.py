"""How a signal stops work: SIGTERM (and, in workers and jobs, SIGINT and SIGUSR2) becomes a
KeyboardInterrupt, so that the runs it cuts short are recorded KILLED on the way out."""

from __future__ import annotations

import signal


def interrupt(signum: int, frame) -> None:
    """Raise KeyboardInterrupt, naming the signal."""
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def interrupt_once(signum: int, frame) -> None:
    """Raise KeyboardInterrupt for the first SIGINT/SIGTERM and ignore the ones after it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    interrupt(signum, frame)
