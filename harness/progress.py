"""A one-line live progress display for a sweep, drawn only on a terminal.

``[ 12/40]  30%  ETA 0:01:05  diverged 1  failed 0  (last: sgd-gabor-gabor_toy-lr0.8-seed2)``
The ETA stretches the time elapsed over the points done to the points left (with N workers,
points already finish about N at a time). Where the stream is not a terminal (CI logs, pipes)
nothing is drawn.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() and total > 0
        self.total = total
        self.done = self.diverged = self.failed = 0
        self.started = time.monotonic()
        self.last = ""

    def line(self) -> str:
        """The status line (no redraw codes)."""
        width = len(str(self.total))
        elapsed = time.monotonic() - self.started
        left = self.total - self.done
        eta = clock(elapsed / self.done * left) if self.done else "?"
        text = (
            f"[{self.done:>{width}}/{self.total}] {100 * self.done // max(self.total, 1):3d}%"
            f"  ETA {eta}  diverged {self.diverged}  failed {self.failed}"
        )
        return f"{text}  (last: {self.last})" if self.last else text

    def update(self, status: str, name: str) -> None:
        """Count one finished point (``status`` finished | diverged | failed | ...)."""
        self.done += 1
        self.diverged += status == "diverged"
        self.failed += status == "failed"
        self.last = name
        self.draw()

    def draw(self) -> None:
        if self.live:
            columns = shutil.get_terminal_size().columns
            self.stream.write("\r" + self.line()[: columns - 1].ljust(columns - 1))
            self.stream.flush()

    def close(self) -> None:
        """End the line so the summary starts on a fresh one."""
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
