"""Progress on the terminal: a live Rich bar on a TTY, else one plain line per change.

A line is `label: 12/40 done, 1 failed, 27 pending, 3.1 MB/10.0 MB` with no control
characters, so a CI log or a pipe reads it as it is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError


@dataclass
class Counts:
    done: int = 0
    failed: int = 0
    total: int | None = None  # items; None while unknown
    bytes_done: int = 0
    bytes_total: int | None = None  # None: bytes are not shown

    @property
    def pending(self) -> int | None:
        return None if self.total is None else max(self.total - self.done - self.failed, 0)

    def size(self) -> str:
        if self.bytes_total is None:
            return ""
        return f"{_size(self.bytes_done)}/{_size(self.bytes_total)}"

    def line(self, label: str) -> str:
        items = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        parts = [f"{items} done", f"{self.failed} failed"]
        if self.pending is not None:
            parts.append(f"{self.pending} pending")
        if self.bytes_total is not None:
            parts.append(self.size())
        return f"{label}: {', '.join(parts)}"


class Progress:
    """Counts shown as they change; `update` sets them, `advance` adds to them."""

    def __init__(self, label: str, console: Console, counts: Counts) -> None:
        self.label = label
        self.counts = counts
        self._console = console
        self._last_line = ""
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None
        if console.is_terminal:
            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[failed]} failed"),
            ]
            if counts.bytes_total is not None:
                columns.append(TextColumn("{task.fields[size]}"))
            columns.append(TimeElapsedColumn())
            self._bar = RichProgress(*columns, console=console, transient=False)

    def update(
        self,
        *,
        done: int | None = None,
        failed: int | None = None,
        total: int | None = None,
        bytes_done: int | None = None,
    ) -> None:
        c = self.counts
        c.done = c.done if done is None else done
        c.failed = c.failed if failed is None else failed
        c.total = c.total if total is None else total
        c.bytes_done = c.bytes_done if bytes_done is None else bytes_done
        self._show()

    def advance(self, *, done: int = 0, failed: int = 0, nbytes: int = 0) -> None:
        c = self.counts
        self.update(done=c.done + done, failed=c.failed + failed, bytes_done=c.bytes_done + nbytes)

    def _show(self) -> None:
        c = self.counts
        if self._bar is not None and self._task is not None:
            # The bar counts the items that ended, done or failed; bytes are shown beside it.
            self._bar.update(
                self._task,
                completed=c.done + c.failed,
                total=c.total,
                failed=c.failed,
                size=c.size(),
            )
            return
        line = c.line(self.label)
        if line != self._last_line:
            self._last_line = line
            self._console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, failed=0, size="")
        self._show()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._show()
            self._bar.stop()


@contextmanager
def progress(
    label: str,
    console: Console,
    *,
    total: int | None = None,
    bytes_total: int | None = None,
) -> Iterator[Progress]:
    with Progress(label, console, Counts(total=total, bytes_total=bytes_total)) as shown:
        yield shown
