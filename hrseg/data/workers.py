"""Worker process pools that never inherit a half-copied thread pool.

Workers are forked from a *fork server*, a fresh process that has imported
the data modules but never decoded an image, rather than from the caller.
Forking the caller directly deadlocks: OpenCV keeps a native thread pool, and
a child forked while it exists blocks forever in its first OpenCV call (seen
as a hung ``prepare`` after the parent had drawn scenes or resized images);
rich's progress thread holding a stream lock is a second way to hang. The
server starts once per Python process, so later pools start in milliseconds.
Where there is no fork server (Windows), spawn is used.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

PRELOAD = ["__main__", "hrseg.data.prepare", "hrseg.data.synthetic"]
_configured = False


def _noop() -> None:
    return None


def pool_context() -> Any:
    """The multiprocessing context for data workers (forkserver with the data modules preloaded)."""
    global _configured
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    if not _configured:
        ctx.set_forkserver_preload(PRELOAD)
        _configured = True
    return ctx


def start_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose first worker is already running (start-up errors surface here)."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(), initializer=initializer,
                               initargs=initargs)
    pool.submit(_noop).result()
    return pool
