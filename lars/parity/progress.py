"""The parity run's progress on stderr, drawn by rich: a live bar on a terminal; in a log (CI),
where a redrawn bar would be a line per redraw, a line per tenth of the work instead."""

from __future__ import annotations

import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bar


class Progress:
    """`advance(label)` after each unit of `total`; `close()` at the end."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done = max(total, 1), 0
        self.console = Console(file=stream, stderr=stream is None, highlight=False)
        self.interactive = self.console.is_terminal
        self._last_tenth, self.started = -1, time.perf_counter()
        self._bar: Bar | None = None
        if self.interactive:
            self._bar = Bar(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=self.console, transient=False)
            self._task = self._bar.add_task("", total=self.total)
            self._bar.start()

    def advance(self, label: str, units: int = 1) -> None:
        self.done = min(self.done + units, self.total)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=label)
            return
        tenth = int(10 * self.done / self.total)
        if tenth == self._last_tenth and self.done < self.total:
            return
        self._last_tenth = tenth
        elapsed = time.perf_counter() - self.started
        self.console.print(f"{self.done}/{self.total} {elapsed:5.0f}s  {label}", markup=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
