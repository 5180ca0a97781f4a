"""One writer per output folder: an flock on ``FOLDER/.lock`` held while a command writes there.

An flock belongs to the open file, so a crashed or killed process never leaves
a folder locked, and a second command into the same folder is refused at once
(one line) instead of both finishing with one set of files and the other's index.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator

from hrseg.errors import HrsegError

LOCK_NAME = ".lock"

_HELD_LOCKS: set[int] = set()


def _drop_inherited_locks() -> None:
    """In a forked child (a data-loader worker), close the copies of the parent's lock descriptors.

    A worker that outlives its parent by a moment would otherwise keep the
    folder locked; closing the child's copy leaves the parent's lock in place.
    """
    for fd in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], busy: str, *, name: str = LOCK_NAME,
                option: str = "--out", place: str = "output folder") -> Iterator[Path]:
    """Hold ``folder/name`` exclusively for the block (creating the folder); ``busy`` is the refusal's text.

    The refusal reads ``FOLDER: <busy> (its lock is held); wait for it or use another --out``.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise HrsegError(f"out of disk space writing {path / name}") from None
        raise HrsegError(f"{path}: cannot write to the {place} ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise HrsegError(f"{path}: {busy} (its lock is held); wait for it or use another {option}") from None
        _HELD_LOCKS.add(fd)
        yield path / name
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)
