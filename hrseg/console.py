"""The rich console and progress bar every command shares."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress(rate_unit: str = "img", disable: bool = False) -> Progress:
    """A progress bar that shows done/total, elapsed, remaining and a rate field.

    Callers update the task with ``rate=...`` (a preformatted string) so the bar
    can show images/s or iterations/s. ``disable=True`` draws nothing (rich's
    own switch), so callers keep one code path with or without a display.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}", style="cyan"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=disable,
    )


def rate(bar: Progress, task: TaskID, unit: str = "img/s") -> str:
    """The bar's measured speed as text ('' while it is still unknown)."""
    speed = bar.tasks[task].speed
    return f"{speed:.1f} {unit}" if speed else ""
