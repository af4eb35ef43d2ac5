"""Reading sparse files by content: disks are mostly holes, and only their data should cost time.

The filesystem's holes are only a shortcut for what is certainly zero; what counts is the bytes
read, so results never depend on how a host allocated the file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

__all__ = ["data_extents", "nonzero_blocks"]


def data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Ranges of ``[start, end)`` that may hold non-zero bytes: all but the filesystem's holes.

    Only a shortcut: a filesystem without hole support reports everything, which changes how much
    is read, not what is decided.
    """
    pos = start
    while pos < end:
        try:
            lo = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from pos to the end of the file
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, end
                return
            raise
        if lo >= end:
            return
        hi = min(os.lseek(fd, lo, os.SEEK_HOLE), end)
        yield lo, hi
        pos = hi


def nonzero_blocks(fd: int, size: int, block: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` of every ``block``-aligned block of the first ``size`` bytes that is not all zero.

    Each block is read at most once, even where a data extent starts or ends inside it.
    """
    zero = bytes(block)
    done = 0  # every block below this offset has been looked at
    for lo, hi in data_extents(fd, 0, size):
        pos = max(lo - lo % block, done)
        while pos < hi:
            data = os.pread(fd, min(block, size - pos), pos)
            if data != zero[: len(data)]:
                yield pos, data
            pos += block
        done = pos
