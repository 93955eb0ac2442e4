"""Progress of long work, alike in a terminal and in a log file: a tqdm bar where stderr is a
terminal, else plain lines (one at the start, one per tenth of the work at most every few seconds,
one at the end), so that a log shows how far a run got instead of one line of carriage returns."""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar", "LineProgress"]

LINE_EVERY = 5.0  # seconds between two lines of a log file, at least


class LineProgress:
    """tqdm's ``update``/``set_postfix_str``/``close`` as plain lines on ``file``."""

    def __init__(self, total: int, desc: str, unit: str, file=None, clock=time.monotonic):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, 0
        self.file, self.clock = file or sys.stderr, clock
        self.postfix, self.t0 = "", clock()
        self._last_t, self._last_tenth = self.t0, 0
        self._write()

    def _write(self) -> None:
        pct = f" ({self.n / self.total:.0%})" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{pct}{post}, {self.clock() - self.t0:.0f} s",
              file=self.file, flush=True)

    def update(self, k: int = 1) -> None:
        self.n += k
        tenth = int(10 * self.n / self.total) if self.total else 0
        now = self.clock()
        if tenth > self._last_tenth and now - self._last_t >= LINE_EVERY:
            self._last_t, self._last_tenth = now, tenth
            self._write()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        self._write()


def progress_bar(total: int, desc: str, unit: str = "step", file=None):
    """A tqdm bar on a terminal (gone when done), else a ``LineProgress`` of plain lines."""
    f = file or sys.stderr
    if getattr(f, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=f)
    return LineProgress(total, desc, unit, file=f)
