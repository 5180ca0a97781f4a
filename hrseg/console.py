"""The rich console and progress bar every command shares."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress(rate_unit: str = "img") -> Progress:
    """A progress bar that shows done/total, elapsed, remaining and a rate field.

    Callers update the task with ``rate=...`` (a preformatted string) so the bar
    can show images/s or iterations/s.
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
    )
