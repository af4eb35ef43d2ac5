"""Reading a "docker save" archive (an installer image as ``/image`` serves it) in place.

Installer images are built once, as ``installer-<arch>.tar`` cache entries; the registry frontend
pushes the same image to a registry. The archive is read where it lies, by byte ranges of the
cached asset: its tar headers (a handful of 512-byte reads), then each member streamed straight
into a blob upload, so an API process never holds an image in memory or on disk. The layout is
go-containerregistry's ``tarball.Write``
(``google/go-containerregistry:pkg/v1/tarball/write.go``): a config named by its digest, one
``<hex>.tar.gz`` per layer, ``manifest.json`` last.

Hand-written because ``tarfile`` reads sequentially from the start; random access by range is
what lets a member be uploaded again (after a registry's 401) without rereading the archive.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from common.errors import FactoryError

BLOCK = 512
MAX_MEMBERS = 256
MAX_SMALL = 4 * 1024 * 1024  # manifest.json, the config, PAX headers

#: ``read(start, length)``: the bytes of the archive in that window, in chunks.
Reader = Callable[[int, int], Iterator[bytes]]


class ArchiveError(FactoryError):
    """The cached archive is not a docker-save tarball we can publish (a corrupt cache entry)."""


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # where the member's data starts
    size: int


@dataclass(frozen=True)
class ImageArchive:
    """The members of one docker-save archive and its parsed ``manifest.json`` (first image)."""

    read: Reader
    members: dict[str, Member]
    config_name: str
    layer_names: list[str]
    layer_sources: dict[str, dict[str, Any]]

    def small(self, name: str) -> bytes:
        member = self.members.get(name)
        if member is None:
            raise ArchiveError(f"the archive has no member {name!r}")
        if member.size > MAX_SMALL:
            raise ArchiveError(f"member {name!r} is implausibly large ({member.size} bytes)")
        return b"".join(self.read(member.offset, member.size))

    def chunks(self, name: str) -> Callable[[], Iterator[bytes]]:
        member = self.members[name]
        return lambda: self.read(member.offset, member.size)


def _pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def list_members(read: Reader, size: int) -> dict[str, Member]:
    """Every regular file of the archive with its data window (PAX ``path``/``size`` honoured)."""
    members: dict[str, Member] = {}
    pos = 0
    pending: dict[str, str] = {}
    while pos + BLOCK <= size:
        header = b"".join(read(pos, BLOCK))
        if header == bytes(BLOCK):
            break
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise ArchiveError(f"bad tar header at offset {pos}: {exc}") from exc
        data = pos + BLOCK
        length = int(pending.get("size", info.size)) if info.type not in (tarfile.XHDTYPE,) else info.size
        if info.type == tarfile.XHDTYPE:
            if length > MAX_SMALL:
                raise ArchiveError("implausibly large PAX header")
            pending = _pax(b"".join(read(data, length)))
        elif info.type == tarfile.XGLTYPE:
            pass
        else:
            if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                name = pending.get("path", info.name)
                members[name] = Member(name, data, length)
                if len(members) > MAX_MEMBERS:
                    raise ArchiveError("the archive has too many members")
            pending = {}
        pos = data + -(-length // BLOCK) * BLOCK
    return members


def open_archive(read: Reader, size: int) -> ImageArchive:
    members = list_members(read, size)
    probe = ImageArchive(read, members, "", [], {})
    try:
        manifest = json.loads(probe.small("manifest.json"))
        first = manifest[0]
        config = str(first["Config"])
        layers = [str(name) for name in first["Layers"]]
        sources = {str(k): dict(v) for k, v in (first.get("LayerSources") or {}).items()}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ArchiveError(f"unreadable manifest.json: {exc}") from exc
    return ImageArchive(read, members, config, layers, sources)
