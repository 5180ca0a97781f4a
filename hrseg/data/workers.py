"""Worker process pools that never inherit a half-copied thread pool, and running jobs on them.

Workers are forked from a *fork server*, a fresh process that has imported
the data modules but never decoded an image, rather than from the caller.
Forking the caller directly deadlocks: OpenCV keeps a native thread pool, and
a child forked while it exists blocks forever in its first OpenCV call (seen
as a hung ``prepare`` after the parent had drawn scenes or resized images);
rich's progress thread holding a stream lock is a second way to hang. The
server starts once per Python process, so later pools start in milliseconds.
Where there is no fork server (Windows), spawn is used.

Two costs are kept out of the work itself. Every worker starts when the pool
opens (``start_pool`` holds them at a barrier until all exist), so the
start-up is paid once, up front, in parallel, and measurable on its own; and
the workers skip re-running the caller's ``__main__`` script, which
multiprocessing does by default so that functions defined there can be
unpickled. The jobs here are all hrseg functions, and a script that imports
torch (a benchmark, a notebook, a user's pipeline) would otherwise cost
every worker a second or more before its first image.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

PRELOAD = ["__main__", "hrseg.data.prepare", "hrseg.data.synthetic"]
START_TIMEOUT_S = 300.0
_configured = False
_progress: Any = None

J = TypeVar("J")
R = TypeVar("R")
ProgressFn = Callable[[int], None]


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


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """While workers are spawned, make ``__main__`` look like ``python -c`` (nothing to re-run)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _start_worker(barrier: Any, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    # a worker waiting here has finished nothing, so each submit in start_pool spawns a new one
    barrier.wait(START_TIMEOUT_S)
    if initializer is not None:
        initializer(*initargs)


def start_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor with all ``workers`` processes running (start-up errors surface here)."""
    ctx = pool_context()
    barrier = ctx.Barrier(workers)
    with _main_script_hidden():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_start_worker,
                                   initargs=(barrier, initializer, initargs))
        try:
            for fut in [pool.submit(_noop) for _ in range(workers)]:
                fut.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return pool


def _watch_parent(pid: int) -> None:
    """Exit when the process that started us is gone (killed runs must not leave idle workers behind)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _init_data_worker(q: Any, parent_pid: int) -> None:
    global _progress
    import cv2

    _progress = q
    cv2.setNumThreads(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _report(n: int) -> None:
    _progress.put(n)


def _call(fn: Callable[[J, ProgressFn], R], job: J) -> R:
    return fn(job, _report)


@dataclass
class WorkerPool:
    """Worker processes plus the queue on which they report progress (e.g. each decoded image)."""

    executor: ProcessPoolExecutor
    queue: Any
    workers: int
    start_seconds: float

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def open_pool(workers: int) -> WorkerPool | None:
    """Start ``workers`` data workers now (before any progress thread); None for in-process work."""
    if workers <= 1:
        return None
    t0 = time.perf_counter()
    q = pool_context().Queue()
    executor = start_pool(workers, _init_data_worker, (q, os.getpid()))
    return WorkerPool(executor, q, workers, time.perf_counter() - t0)


def run_jobs(fn: Callable[[J, ProgressFn], R], jobs: list[J], pool: WorkerPool | None,
             on_progress: ProgressFn) -> list[R]:
    """``[fn(job, on_progress) for job in jobs]``, on the pool's workers when there is more than one job.

    ``fn`` must be a module-level function. The first error of any job is
    raised here, after the jobs already running have ended (so the caller can
    clean up knowing no worker still writes).
    """
    if pool is None or len(jobs) <= 1:
        return [fn(job, on_progress) for job in jobs]
    futures: list[Future[R]] = [pool.executor.submit(_call, fn, job) for job in jobs]
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(pool.queue, on_progress)
            for fut in done:
                fut.result()
    except BaseException:
        for fut in pending:
            fut.cancel()
        wait(pending)
        raise
    _drain(pool.queue, on_progress)
    return [fut.result() for fut in futures]


def _drain(q: Any, on_progress: ProgressFn) -> None:
    while True:
        try:
            on_progress(q.get_nowait())
        except queue.Empty:
            return
