"""A progress bar that can be switched off without leaving blank lines behind."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.progress import Progress

from hrseg.console import progress


class _Silent:
    """The part of rich's Progress the evaluation loops use, doing nothing."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


@contextlib.contextmanager
def maybe_progress(show: bool, rate_unit: str = "img") -> Iterator[Progress | _Silent]:
    if not show:
        yield _Silent()
        return
    with progress(rate_unit) as bar:
        yield bar


def rate(bar: Progress | _Silent, task: int, unit: str = "img/s") -> str:
    """The bar's measured speed as text ('' while it is still unknown or the bar is silent)."""
    if isinstance(bar, _Silent):
        return ""
    speed = bar.tasks[task].speed
    return f"{speed:.1f} {unit}" if speed else ""
