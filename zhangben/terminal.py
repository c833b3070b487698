"""The CLI's tables and progress bars (``rich``), readable in a terminal and in a pipe alike.

Tables go to standard output with plain column rules (no vertical bars), so
``zhangben apikey list | grep`` and ``| awk '{print $1}'`` keep working; in a
pipe they are wide and uncoloured.  Progress goes to standard error: a bar
with the rate and the time left when the total is known, a count with the
rate when it is not; in a pipe, one line when the work is done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

T = TypeVar("T")
PIPE_WIDTH = 240  # in a pipe nothing wraps: a line is a row


def out() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPE_WIDTH, highlight=False, soft_wrap=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None, right: Sequence[str] = ()
) -> None:
    """Print rows under column names; columns named in ``right`` are numbers (right-aligned)."""
    grid = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    for name in columns:
        grid.add_column(name, justify="right" if name in right else "left", overflow="fold")
    for row in rows:
        grid.add_row(*("" if value is None else str(value) for value in row))
    out().print(grid)


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


@contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress display; the callback takes how many are done so far."""
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
    else:
        columns += [TextColumn("{task.completed:,.0f}"), RateColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err(), transient=False) as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda done: bar.update(task, completed=done)


class Tally:
    """Counts rows as they pass through one or more iterables, reporting the running total every ``every``."""

    def __init__(self, report: Callable[[int], None], every: int = 1000) -> None:
        self.report = report
        self.every = every
        self.count = 0

    def through(self, rows: Iterable[T]) -> Iterator[T]:
        for row in rows:
            self.count += 1
            if self.count % self.every == 0:
                self.report(self.count)
            yield row
        self.report(self.count)
