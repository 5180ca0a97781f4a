"""Reserve a file's disk space before HDF5 writes it, and give back what was not used.

HDF5 does not survive a full disk: its writes fail inside buffered metadata
flushes and object destructors, and the process ends in a segfault or a pool
of dead workers instead of an error. So a shard's space is allocated up front
with ``posix_fallocate``: a full disk then fails there, as a plain ENOSPC
naming the file, before HDF5 has written anything, and the writes that follow
land in blocks that already exist. HDF5 leaves the unused reservation at the
end of the file, so ``trim_hdf5`` cuts the file back to the end address
recorded in its superblock, which yields the same bytes as an unreserved
write.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_UNSUPPORTED = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def reserve(path: str | Path, nbytes: int, name: str | Path | None = None) -> bool:
    """Allocate ``nbytes`` for ``path``; False where the file system cannot (then nothing is reserved).

    A full disk raises ``OSError(ENOSPC)`` whose filename is ``name`` (the
    final file, rather than a temporary one).
    """
    if nbytes <= 0 or not hasattr(os, "posix_fallocate"):
        return False
    fd = os.open(path, os.O_WRONLY)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise OSError(exc.errno, os.strerror(exc.errno or 0), str(name or path)) from None
    finally:
        os.close(fd)
    return True


def hdf5_end_address(path: str | Path) -> int | None:
    """The end-of-file address from an HDF5 superblock at offset 0 (versions 0-3), or None."""
    with open(path, "rb") as fh:
        head = fh.read(48)
    if len(head) < 48 or not head.startswith(HDF5_SIGNATURE):
        return None
    version = head[8]
    if version in (0, 1):
        if head[13] != 8:  # size of offsets
            return None
        at = 40 if version == 0 else 44
    elif version in (2, 3):
        if head[9] != 8:
            return None
        at = 28
    else:
        return None
    return int(struct.unpack("<Q", head[at : at + 8])[0])


def trim_hdf5(path: str | Path) -> None:
    """Cut a closed HDF5 file back to its end address (drops an unused reservation)."""
    end = hdf5_end_address(path)
    if end is not None and 0 < end < os.path.getsize(path):
        os.truncate(path, end)
