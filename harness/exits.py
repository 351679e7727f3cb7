"""A command's fast exit: ``run_and_exit(main)`` ends the process as Python would after
``main`` (its ``SystemExit`` status, non-daemon threads joined, ``atexit`` handlers run,
output flushed) but without tearing down every module and object, which takes a tenth of a
second or more with torch loaded. Any other exception takes Python's usual way out."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def status_of(code: object) -> int:
    """The exit status of ``SystemExit(code)``: None is 0, an int itself, anything else is
    printed to stderr and is 1 (as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    try:
        main()
        status = 0
    except SystemExit as stop:
        status = status_of(stop.code)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001  (what Python's own exit runs, in its order)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
