"""Progress bars that stay readable in a log file: :func:`progress_bar`.

On a terminal (or in a notebook) it is tqdm as usual. When the output is not a terminal — a
log file, a pipe, a batch job — tqdm's carriage-return redraws would fill the file with
thousands of updates; there the same bar prints whole lines instead: one when it starts, one
each time another tenth of the total is done (at least ``min_gap`` seconds apart), one at
least every ``max_gap`` seconds while it runs (the only rule when the total is unknown), and
the final state when it closes.
"""
from __future__ import annotations

import math
import sys
import time

from tqdm import tqdm
from tqdm.auto import tqdm as _auto_tqdm  # imports tqdm.autonotebook without its warning
from tqdm.autonotebook import tqdm as _notebook_or_console

__all__ = ["progress_bar"]

_NOTEBOOK = _notebook_or_console is not tqdm

_clock = time.monotonic  # module-level so tests can drive time


def progress_bar(iterable=None, *, total=None, desc=None, unit="it", leave=True,
                 disable=False, file=None, **kw) -> tqdm:
    """A tqdm bar (``update``, ``set_postfix``, ``close``, iteration) over ``iterable`` or
    ``total`` steps, written to ``file`` (default stderr); line by line when that is not a
    terminal (see the module docstring). Extra keywords go to tqdm."""
    file = sys.stderr if file is None else file
    interactive = _NOTEBOOK or getattr(file, "isatty", lambda: False)()
    cls = _auto_tqdm if interactive else _LogBar
    return cls(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable,
               file=file, **kw)


class _Lines:
    """A file for tqdm that turns each carriage-return redraw into one whole line."""

    def __init__(self, file):
        self.file = file

    def write(self, s: str) -> None:
        s = s.replace("\r", "").strip()
        if s:
            self.file.write(s + "\n")

    def flush(self) -> None:
        getattr(self.file, "flush", lambda: None)()


#: a log keeps the final state of every bar, has no cursor to move between nested bars, and
#: lets :meth:`_LogBar._due` alone decide when to draw
_LOG_STYLE = dict(leave=True, position=0, ascii=True, dynamic_ncols=False, mininterval=0,
                  miniters=1)


class _LogBar(tqdm):
    """tqdm that draws only when :meth:`_due` says so, as plain ASCII lines."""

    monitor_interval = 0  # no monitor thread: pacing is ours
    fraction, min_gap, max_gap = 0.1, 1.0, 30.0

    def __init__(self, iterable=None, *, file, **kw):
        self._last_t, self._next_n = -math.inf, 0.0
        super().__init__(iterable, file=_Lines(file), **{**kw, **_LOG_STYLE})

    def _due(self) -> bool:
        now, total = _clock(), self.total
        if total and self.n >= total:
            return False  # close() prints the final line
        marked = bool(total) and self.n >= self._next_n and now - self._last_t >= self.min_gap
        if not (marked or now - self._last_t >= self.max_gap):
            return False
        self._last_t = now
        if total:
            step = self.fraction * total
            self._next_n = (math.floor(self.n / step) + 1) * step
        return True

    def refresh(self, nolock=False, lock_args=None):
        if self._due():
            return super().refresh(nolock, lock_args)
        return False

    def moveto(self, n):
        pass
