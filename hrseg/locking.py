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
_HELD_PATHS: set[str] = set()  # locks this process holds: taking one again (a nested call) is a no-op


def _drop_inherited_locks() -> None:
    """In a forked child (a data-loader worker), close the copies of the parent's lock descriptors.

    A worker that outlives its parent by a moment would otherwise keep the
    folder locked; closing the child's copy leaves the parent's lock in place.
    """
    for fd in list(_HELD_LOCKS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()
    _HELD_PATHS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], busy: str, *, name: str = LOCK_NAME,
                option: str = "--out", place: str = "output folder",
                read_only_ok: bool = False) -> Iterator[Path | None]:
    """Hold ``folder/name`` exclusively for the block (creating the folder); ``busy`` is the refusal's text.

    The refusal reads ``FOLDER: <busy> (its lock is held); wait for it or use another --out``.
    ``read_only_ok``: an existing folder where no lock file can be made (read-only media) is used
    unlocked, since nobody can write there either. A lock this process already holds is not taken again.
    """
    path = Path(folder)
    key = os.path.abspath(path / name)
    if key in _HELD_PATHS:
        yield path / name
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if read_only_ok and path.is_dir() and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            yield None
            return
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
        _HELD_PATHS.add(key)
        yield path / name
    finally:
        _HELD_LOCKS.discard(fd)
        _HELD_PATHS.discard(key)
        os.close(fd)
