"""Write files so that a reader never sees a half-written one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hrseg.errors import HrsegError

SPACE_ERRORS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; it replaces ``path`` only if the block succeeds."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f"{suffix}.tmp", dir=final.parent)
    except OSError as exc:  # a file where a folder should be, a read-only or full disk: the user's to fix
        if exc.errno in SPACE_ERRORS:
            raise HrsegError(f"out of disk space writing {final}") from None
        raise HrsegError(f"{final}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be as readable as any file
    try:
        yield tmp
        os.replace(tmp, final)
        if tmp.exists():  # rename(2) does nothing when both names are already one file: drop the extra name
            tmp.unlink()
    except OSError as exc:
        full = exc.errno in SPACE_ERRORS
        tmp.unlink(missing_ok=True)
        if full:
            raise HrsegError(f"out of disk space writing {final}") from None
        raise
    except RuntimeError as exc:  # torch.save reports a failed write as a RuntimeError without an errno
        full = _free_bytes(final.parent) < max(tmp.stat().st_size if tmp.exists() else 0, 1) + (1 << 20)
        tmp.unlink(missing_ok=True)
        if full:
            raise HrsegError(f"out of disk space writing {final}") from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries killed writes left in ``folder`` (``.NAME.XXXX[.suffix].tmp``); returns them.

    Only for folders a caller owns and holds the lock of: nobody else can be writing there.
    """
    removed = []
    for p in Path(folder).glob(".*.tmp"):
        if p.is_file() and not p.is_symlink():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def is_space_error(exc: BaseException) -> bool:
    """A full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in SPACE_ERRORS


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def ensure_dir(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Create an output folder up front, so a bad ``--out`` fails in one line before any work is done."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HrsegError(f"{option} {folder}: cannot write here ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):
        raise HrsegError(f"{option} {folder}: cannot write here (Permission denied)")
    return folder
