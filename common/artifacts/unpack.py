"""Applies image layers onto a directory the way container runtimes do, without trusting them.

Whiteouts (``.wh.<name>``, ``.wh..wh..opq``) are honoured; names that would leave the destination
(absolute, ``..``, or through a symlink planted by an earlier entry) are refused, and so are hard
links to anything but a regular file inside the destination; nothing is chowned, so no privileges
are needed. SELinux labels from PAX records (``SCHILY.xattr.security.selinux``) are returned rather
than set, for the imager to re-apply.

Layers are bounded (:class:`UnpackLimits`): uncompressed bytes (the decompressed tar stream, counted
as it is read, and each entry's declared size checked before it is written, so a one-file bomb is
refused at its header) and entries, per layer and per image; PAX and GNU long-name headers, which
``tarfile`` reads into memory whole, are bounded on their own. A compression ratio is no bound: a
layer of many small, well-compressed files passes any ratio test and still fills the disk. In
``strict`` mode (extension and overlay images, which nothing but the build reads) device files,
FIFOs and symlinks whose relative target climbs out of the image root are refused too; otherwise
devices are skipped, as before, and such symlinks are kept (container runtimes clamp them at the
root, and every reader here resolves links inside the tree: ``worker/imager/extensions/rootfs.py``).

Compression is detected from the stream's first bytes: gzip, zstd (``zstandard``), xz, bzip2, or none.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import zstandard

from common.config.options import SourceLimitsOptions
from common.errors import BadSourceError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
SELINUX_XATTR = "SCHILY.xattr.security.selinux"
#: The largest PAX extended or GNU long-name/link header read (``tarfile`` reads them whole).
MAX_HEADER = 1 << 20
_HEADER_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
_GZIP, _ZSTD, _XZ, _BZIP2 = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00", b"BZh"


class UnpackError(BadSourceError):
    """A layer is malformed, too large, or tries to write outside its destination (502: the source
    image is at fault). ``layer`` is the index of the layer in the list given to :func:`apply_layers`."""

    def __init__(self, message: str, layer: int | None = None) -> None:
        super().__init__(message)
        self.layer = layer


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on one image's layers; the defaults are ``artifacts.limits``'."""

    layer_bytes: int = 8 * 1024**3
    layer_entries: int = 1_000_000
    image_bytes: int = 16 * 1024**3
    image_entries: int = 2_000_000
    strict: bool = False

    @classmethod
    def from_options(cls, options: SourceLimitsOptions, *, strict: bool) -> UnpackLimits:
        return cls(
            layer_bytes=options.maxLayerSize,
            layer_entries=options.maxLayerEntries,
            image_bytes=options.maxImageSize,
            image_entries=options.maxImageEntries,
            strict=strict,
        )


@dataclass
class UnpackStats:
    """What the layers of one image unpacked to: tar stream bytes and entries."""

    bytes: int = 0
    entries: int = 0


def apply_layers(
    layers: Iterable[IO[bytes]],
    dest: Path,
    limits: UnpackLimits | None = None,
    stats: UnpackStats | None = None,
) -> dict[str, str]:
    """Applies compressed or plain tar streams in order; returns ``{path: selinux label}``.

    ``stats`` (when given) is filled with what was unpacked. Raises :class:`UnpackError` (with the
    layer's index) for a layer that breaks a bound or a rule.
    """
    limits = limits or UnpackLimits()
    stats = stats if stats is not None else UnpackStats()
    labels: dict[str, str] = {}
    root = dest.resolve()
    for index, stream in enumerate(layers):
        budget = _Budget(limits, stats, index)
        try:
            counted = _Counted(_decompressed(stream), budget)
            # tarinfo=: PAX/GNU long headers are bounded before tarfile reads them into memory
            with tarfile.open(fileobj=counted, mode="r|", tarinfo=_BoundedTarInfo) as archive:  # type: ignore[call-overload]
                while (member := archive.next()) is not None:
                    archive.members.clear()  # stream mode keeps every member otherwise: constant memory
                    budget.entry(member)
                    _apply(archive, member, root, labels, limits.strict)
        except UnpackError as exc:
            exc.layer = index if exc.layer is None else exc.layer
            raise
        except (
            tarfile.TarError,
            EOFError,
            gzip.BadGzipFile,
            zlib.error,
            lzma.LZMAError,
            zstandard.ZstdError,
        ) as exc:
            raise UnpackError(f"layer is not a readable tar stream: {exc}", index) from exc
    return labels


def _decompressed(stream: IO[bytes]) -> IO[bytes]:
    head = stream.read(6)
    source: Any = _Prefixed(head, stream)  # read() is all the decompressors need
    if head.startswith(_GZIP):
        unzipped: Any = gzip.GzipFile(fileobj=source, mode="rb")
        return unzipped  # a BufferedIOBase, not an IO[bytes] to typeshed
    if head.startswith(_ZSTD):
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
        return reader
    if head.startswith(_XZ):
        return lzma.LZMAFile(source)
    if head.startswith(_BZIP2):
        return bz2.BZ2File(source)
    plain: IO[bytes] = source
    return plain


class _Prefixed:
    """``head`` (bytes already read to sniff the compression) followed by the rest of ``stream``."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head, self.stream = head, stream

    def read(self, size: int = -1) -> bytes:
        if self.head:
            if size < 0:
                data, self.head = self.head + self.stream.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.stream.read(size)


class _Budget:
    def __init__(self, limits: UnpackLimits, stats: UnpackStats, index: int) -> None:
        self.limits, self.stats, self.index = limits, stats, index
        self.bytes = 0
        self.entries = 0

    def consume(self, size: int) -> None:
        """``size`` more bytes of the decompressed tar stream (or announced by an entry's header)."""
        if self.bytes + size > self.limits.layer_bytes:
            raise UnpackError(
                f"layer unpacks to more than {self.limits.layer_bytes} bytes "
                "(artifacts.limits.maxLayerSize): refused",
                self.index,
            )
        if self.stats.bytes + size > self.limits.image_bytes:
            raise UnpackError(
                f"the image's layers unpack to more than {self.limits.image_bytes} bytes "
                "(artifacts.limits.maxImageSize): refused",
                self.index,
            )
        self.bytes += size
        self.stats.bytes += size

    def entry(self, member: tarfile.TarInfo) -> None:
        self.entries += 1
        self.stats.entries += 1
        if self.entries > self.limits.layer_entries:
            raise UnpackError(
                f"layer holds more than {self.limits.layer_entries} entries "
                "(artifacts.limits.maxLayerEntries): refused",
                self.index,
            )
        if self.stats.entries > self.limits.image_entries:
            raise UnpackError(
                f"the image's layers hold more than {self.limits.image_entries} entries "
                "(artifacts.limits.maxImageEntries): refused",
                self.index,
            )
        if member.isreg():
            # the bytes are counted again as they stream; checking the declared size first refuses a
            # one-file bomb at its header, before anything is decompressed or written
            for left, bound in (
                (self.limits.layer_bytes - self.bytes, "artifacts.limits.maxLayerSize"),
                (self.limits.image_bytes - self.stats.bytes, "artifacts.limits.maxImageSize"),
            ):
                if member.size > left:
                    raise UnpackError(
                        f"layer entry {member.name!r} declares {member.size} bytes, more than the "
                        f"{max(left, 0)} left of {bound}: refused",
                        self.index,
                    )


class _Counted:
    """The decompressed stream, every byte counted against the budget as ``tarfile`` reads it."""

    def __init__(self, stream: IO[bytes], budget: _Budget) -> None:
        self.stream, self.budget = stream, budget

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.budget.consume(len(data))
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses PAX and GNU long-name headers above :data:`MAX_HEADER` before they are read."""

    def _proc_member(self, tarfile: Any) -> Any:
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER:
            raise UnpackError(f"layer has a {self.size}-byte extended header (at most {MAX_HEADER}): refused")
        return super()._proc_member(tarfile)  # type: ignore[misc]


def _safe_name(name: str) -> str | None:
    path = PurePosixPath(name.lstrip("/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnpackError(f"layer entry {name!r} leaves the image root")
    return "/".join(parts) or None


def _target(root: Path, relative: str) -> Path:
    target = root / relative
    parent = target.parent.resolve()
    if parent != root and root not in parent.parents:
        raise UnpackError(f"layer entry {relative!r} resolves outside the image root")
    return target


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _apply(
    archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path, labels: dict[str, str], strict: bool
) -> None:
    relative = _safe_name(member.name)
    if relative is None:
        return
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        if strict:
            kind = (
                "a FIFO" if member.isfifo() else "a device file" if member.isdev() else "of an unknown type"
            )
            raise UnpackError(f"layer entry {relative!r} is {kind}: refused")
        return  # character/block devices and FIFOs: nothing the factory uses, and they need root
    if strict and member.issym() and not member.linkname.startswith("/"):
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), member.linkname))
        if resolved == ".." or resolved.startswith("../"):
            raise UnpackError(f"symlink {relative!r} -> {member.linkname!r} leaves the image root: refused")
    base = relative.rsplit("/", 1)[-1]
    if base == OPAQUE:
        directory = _target(root, relative).parent
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                _remove(child)
        return
    if base.startswith(WHITEOUT):
        hidden = relative[: -len(base)] + base[len(WHITEOUT) :]
        target = _target(root, hidden)
        if target.exists() or target.is_symlink():
            _remove(target)
        return
    target = _target(root, relative)
    label = member.pax_headers.get(SELINUX_XATTR)
    if label:
        labels[relative] = label
    if member.isdir():
        if target.exists() and not target.is_dir():
            _remove(target)
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, (member.mode & 0o7777) | stat.S_IRWXU)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        _remove(target)
    if member.issym():
        os.symlink(member.linkname, target)
    elif member.islnk():
        source_name = _safe_name(member.linkname)
        if source_name is None:
            raise UnpackError(f"hard link {relative!r} has no target")
        source = _target(root, source_name)
        if source.is_symlink() or not source.is_file():
            raise UnpackError(f"hard link {relative!r} points at {member.linkname!r}, not a regular file")
        os.link(source, target)
    elif member.isreg():
        extracted = archive.extractfile(member)
        if extracted is None:
            raise UnpackError(f"cannot read layer entry {relative!r}")
        with extracted, open(target, "wb") as out:
            shutil.copyfileobj(extracted, out, 1 << 20)
        os.chmod(target, (member.mode & 0o7777) | stat.S_IRUSR | stat.S_IWUSR)
