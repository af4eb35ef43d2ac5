"""Streaming newc cpio archives, byte for byte as ``cpio -H newc --create --reproducible -R +0:+0``.

Initramfs parts are built from files on disk (squashfs images of hundreds of MiB), so members are
copied in chunks and read back as bounded streams: no archive is ever held in memory. GNU cpio's
``--reproducible`` output is matched exactly (inodes renumbered from 0, device numbers 0, trailer with
mtime 0, zero padding to a 512-byte block), except that every mtime is the one given to the writer
and a directory's link count is computed (2 + subdirectories, what ext4 reports) so the bytes do not
depend on the filesystem the staging tree lives on.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = [
    "BLOCK_SIZE",
    "TRAILER",
    "CpioError",
    "Member",
    "NewcReader",
    "NewcWriter",
    "skip_padding",
    "walk",
    "write_tree",
]

MAGIC = b"070701"
MAGIC_CRC = b"070702"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
#: GNU cpio's default I/O block: the archive is zero-padded to a multiple of it.
BLOCK_SIZE = 512
_CHUNK = 1 << 20
#: newc fields are 8 hex digits.
_MAX_FIELD = 0xFFFFFFFF


class CpioError(ValueError):
    """Malformed archive, or a member newc cannot represent."""


def _pad4(n: int) -> int:
    return -n % 4


@dataclass(frozen=True)
class Member:
    """One newc header (the data is read separately, see :class:`NewcReader`)."""

    name: str
    mode: int
    size: int
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    ino: int = 0
    rdev_major: int = 0
    rdev_minor: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, len(name) + 1, 0)
    if any(f > _MAX_FIELD or f < 0 for f in fields):
        raise CpioError(f"member {name!r} does not fit a newc header (size {size}, mtime {mtime})")
    raw = MAGIC + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return raw + b"\0" * _pad4(len(raw))


class NewcWriter:
    """Writes one archive member by member in the order given, then the trailer (:meth:`close`)."""

    def __init__(self, out: IO[bytes], *, mtime: int) -> None:
        self._out = out
        self._mtime = mtime
        self._ino = 0
        self._written = 0
        self._closed = False

    def __enter__(self) -> NewcWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _begin(self, name: str, mode: int, nlink: int, size: int) -> None:
        if self._closed:
            raise CpioError("archive already closed")
        raw = os.fsencode(name.strip("/"))
        if not raw or raw == b"." or b".." in raw.split(b"/") or b"\0" in raw:
            raise CpioError(f"bad member name {name!r}")
        self._emit(_header(self._ino, mode, nlink, self._mtime, size, raw))
        self._ino += 1

    def _end_data(self, size: int) -> None:
        self._emit(b"\0" * _pad4(size))

    def add_directory(self, name: str, perm: int = 0o755, *, nlink: int = 2) -> None:
        self._begin(name, stat.S_IFDIR | (perm & 0o7777), nlink, 0)

    def add_bytes(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._begin(name, stat.S_IFREG | (perm & 0o7777), 1, len(data))
        self._emit(data)
        self._end_data(len(data))

    def add_symlink(self, name: str, target: str) -> None:
        raw = os.fsencode(target)
        self._begin(name, stat.S_IFLNK | 0o777, 1, len(raw))
        self._emit(raw)
        self._end_data(len(raw))

    def add_file(self, name: str, path: Path, perm: int | None = None) -> None:
        """A regular file copied from ``path`` in chunks (its own permissions unless ``perm``)."""
        with open(path, "rb") as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise CpioError(f"{path} is not a regular file")
            mode = st.st_mode & 0o7777 if perm is None else perm
            self._begin(name, stat.S_IFREG | mode, 1, st.st_size)
            left = st.st_size
            while left:
                chunk = src.read(min(left, _CHUNK))
                if not chunk:
                    raise CpioError(f"{path} shrank while it was archived")
                self._emit(chunk)
                left -= len(chunk)
        self._end_data(st.st_size)

    def add_path(self, name: str, path: Path) -> None:
        """Whatever ``path`` is (directory, file, symlink), as ``cpio -o`` would archive it."""
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            subdirs = sum(1 for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
            self.add_directory(name, st.st_mode, nlink=2 + subdirs)
        elif stat.S_ISREG(st.st_mode):
            self.add_file(name, path)
        elif stat.S_ISLNK(st.st_mode):
            self.add_symlink(name, os.readlink(path))
        else:
            raise CpioError(f"{path}: only directories, regular files and symlinks can be archived")

    def close(self) -> None:
        """The trailer (inode 0, mtime 0, as GNU cpio) and zero padding to a 512-byte block."""
        if self._closed:
            return
        trailer = _header(0, 0, 1, 0, 0, TRAILER.encode())
        self._emit(trailer)
        self._emit(b"\0" * (-self._written % BLOCK_SIZE))
        self._closed = True


def walk(root: Path) -> Iterator[str]:
    """Paths under ``root`` (relative, ``/``-separated), each directory before its children.

    Names are sorted bytewise per directory, as Go's ``os.ReadDir``; this is upstream's file list for
    cpio (``buildInitramfsContents``). Symlinks are listed, never followed.
    """

    def visit(directory: Path, prefix: str) -> Iterator[str]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            yield rel
            if entry.is_dir(follow_symlinks=False):
                yield from visit(Path(entry.path), rel + "/")

    yield from visit(root, "")


def write_tree(out: IO[bytes], root: Path, names: Iterable[str], *, mtime: int) -> None:
    """One archive of ``names`` (relative to ``root``), like ``cpio -o`` fed that list."""
    with NewcWriter(out, mtime=mtime) as writer:
        for name in names:
            writer.add_path(name, root / name)


class _Limited:
    """Reads at most ``size`` bytes of a member's data from the archive stream."""

    def __init__(self, reader: NewcReader, size: int) -> None:
        self._reader = reader
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        # n < 0: everything left, as file.read()
        data = self._reader._read(self.left) if n < 0 else self._reader._read(min(n, self.left), exact=False)
        self.left -= len(data)
        return data


class NewcReader:
    """Reads one archive from a stream (a pipe works: nothing is seeked) up to and including its trailer.

    Iterating yields each :class:`Member`; while it is current, :meth:`read_data` / :meth:`copy_data`
    give its content (whatever is left unread is skipped when the iteration moves on). ``position``
    counts the bytes consumed from where the archive started.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.position = 0
        self._data: _Limited | None = None

    def _read(self, n: int, *, exact: bool = True) -> bytes:
        chunks = []
        left = n
        while left:
            chunk = self._stream.read(min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            if not exact:
                break
        data = b"".join(chunks)
        if exact and len(data) != n:
            raise CpioError(f"archive truncated at offset {self.position + len(data)}")
        self.position += len(data)
        return data

    def _skip(self, n: int) -> None:
        while n:
            n -= len(self._read(min(n, _CHUNK)))

    def __iter__(self) -> Iterator[Member]:
        while True:
            if self._data is not None:
                self._skip(self._data.left)
                self._data = None
                self._skip(_pad4(self.position))
            start = self.position
            raw = self._read(HEADER_SIZE)
            if raw[:6] not in (MAGIC, MAGIC_CRC):
                raise CpioError(f"no newc header at offset {start}")
            try:
                f = [int(raw[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
            except ValueError as exc:
                raise CpioError(f"corrupt newc header at offset {start}") from exc
            name_raw = self._read(f[11])
            self._skip(_pad4(self.position))
            if not name_raw.endswith(b"\0"):
                raise CpioError(f"member name at offset {start} is not NUL-terminated")
            name = os.fsdecode(name_raw[:-1])
            member = Member(
                name=name,
                mode=f[1],
                uid=f[2],
                gid=f[3],
                nlink=f[4],
                mtime=f[5],
                size=f[6],
                ino=f[0],
                rdev_major=f[9],
                rdev_minor=f[10],
            )
            if name == TRAILER:
                self._skip(member.size + _pad4(member.size))
                return
            self._data = _Limited(self, member.size)
            yield member

    def read_data(self) -> bytes:
        """The rest of the current member's data (meant for small members)."""
        if self._data is None:
            raise CpioError("no current member")
        return self._data.read()

    def copy_data(self, out: IO[bytes]) -> None:
        """Streams the rest of the current member's data into ``out``."""
        if self._data is None:
            raise CpioError("no current member")
        shutil.copyfileobj(self._data, out, _CHUNK)


def skip_padding(stream: IO[bytes]) -> int:
    """Skips the zero bytes after an archive in a seekable stream; returns how many there were."""
    skipped = 0
    while True:
        chunk = stream.read(BLOCK_SIZE)
        if not chunk:
            return skipped
        stripped = chunk.lstrip(b"\0")
        skipped += len(chunk) - len(stripped)
        if stripped:
            stream.seek(-len(stripped), os.SEEK_CUR)
            return skipped
