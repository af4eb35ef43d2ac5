"""The imager's one tar writer: header blocks, entries and the end of archive, in several dialects.

Every archive the imager makes must be byte-identical from build to build *and* match what the
program upstream (or a reference tool) writes, so each consumer names the tar implementation it
reproduces and this module writes exactly that implementation's bytes:

* :data:`GO` - Go's ``archive/tar`` for a bare ``tar.Header{Name, Mode, Size}`` (installer layers,
  Talos ``pkg/imager/filemap``; go-containerregistry's ``tarball.Write`` docker archive): USTAR,
  a name too long for USTAR is split into prefix/name or else carried by a PAX ``path`` record in a
  ``dir/PaxHeaders.0/base`` header, uid/gid/mtime 0, no padding to a record.
* :data:`PAX` - Python's ``tarfile`` ``PAX_FORMAT`` (extension trees streamed into ``tar2sqfs``,
  virtual extension tarballs): ``././@PaxHeader`` records for xattrs and whatever USTAR cannot hold,
  directory names ending in ``/``, archive padded to a 10240-byte record.
* :data:`USTAR` - Python's ``tarfile`` ``USTAR_FORMAT`` (the schematic extension tarball).
* :data:`GNU` - GNU tar / ``tarfile`` ``GNU_FORMAT`` (OVA members; the sparse ``disk.raw`` member of
  ``.tar.gz`` outputs builds on :func:`gnu_block`): ``ustar  `` magic, base-256 for large numbers.

What they share is here once: the field layout, octal/base-256 numbers, the checksum, PAX records,
data padding and the end-of-archive blocks. The dialect is the only parameter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from common.errors import FactoryError

__all__ = [
    "BLKTYPE",
    "BLOCK",
    "CHRTYPE",
    "DIRTYPE",
    "FIFOTYPE",
    "GNU",
    "GO",
    "LNKTYPE",
    "PAX",
    "RECORD",
    "REGTYPE",
    "SYMTYPE",
    "USTAR",
    "ArchiveError",
    "Dialect",
    "Member",
    "Sink",
    "TarWriter",
    "end_of_archive",
    "gnu_block",
    "number",
    "padding",
    "seal",
]

BLOCK = 512
#: tar's default blocking factor (``-b20``): GNU tar and Python pad the archive to this.
RECORD = 20 * BLOCK
REGTYPE, LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = b"0", b"1", b"2", b"3", b"4", b"5", b"6"
_PAXTYPE = b"x"
USTAR_MAGIC = b"ustar\x0000"
GNU_MAGIC = b"ustar  \x00"
_CHUNK = 1 << 20

#: offset and width of each USTAR header field.
_LAYOUT: dict[str, tuple[int, int]] = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 8),
    "uname": (265, 32),
    "gname": (297, 32),
    "devmajor": (329, 8),
    "devminor": (337, 8),
    "prefix": (345, 155),
}


class ArchiveError(FactoryError):
    """A source file changed size while it was being archived (the header already promised a size)."""


@dataclass(frozen=True)
class Member:
    """One entry's header; ``pax`` holds extra PAX records (xattrs), written before any the dialect adds."""

    name: str
    typeflag: bytes = REGTYPE
    mode: int = 0
    size: int = 0
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    pax: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dialect:
    """How one tar implementation writes a member's header block(s) and ends its archive."""

    name: str
    header: Callable[[Member], bytes]
    #: the archive is padded with zeros to a multiple of this at the end (``BLOCK``: not padded).
    record: int


# --- shared primitives -----------------------------------------------------------------------------


def number(value: int, width: int, *, overflow: Literal["error", "zero", "base256"] = "error") -> bytes:
    """A numeric field: zero-padded octal and a NUL; when it does not fit, per ``overflow``:

    ``zero`` writes 0 (Go's ``formatOctal``, the value then goes to a PAX record), ``base256`` writes
    GNU's ``0x80`` + big-endian form (GNU tar, ``tarfile.GNU_FORMAT``), ``error`` refuses.
    """
    if 0 <= value < 8 ** (width - 1):
        return f"{value:0{width - 1}o}".encode() + b"\0"
    if overflow == "zero":
        return number(0, width)
    if overflow == "base256" and 0 <= value < 256 ** (width - 1):
        return b"\x80" + value.to_bytes(width - 1, "big")
    raise ValueError(f"tar cannot store {value} in a {width}-byte field")


def header_block(**fields: bytes) -> bytearray:
    """A zeroed block with the given USTAR fields placed (each truncated to its width)."""
    block = bytearray(BLOCK)
    for key, data in fields.items():
        offset, width = _LAYOUT[key]
        chunk = data[:width]
        block[offset : offset + len(chunk)] = chunk
    return block


def seal(block: bytearray) -> bytes:
    """Fills in the checksum as every dialect writes it: six octal digits, NUL, space."""
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode() + b"\0 "
    return bytes(block)


def pax_records(items: Iterable[tuple[str, str]], *, binary_charset: bool = False) -> bytes:
    """``"<len> key=value\\n"`` records, in the order given.

    With ``binary_charset`` (Python's tarfile), values that are not valid UTF-8 (surrogate-escaped
    file names) are written as their original bytes after a ``hdrcharset=BINARY`` record.
    """
    pairs = list(items)
    binary = binary_charset and any(not _utf8_ok(value) for _, value in pairs)
    out = [b"21 hdrcharset=BINARY\n"] if binary else []
    for key, value in pairs:
        raw = value.encode("utf-8", "surrogateescape") if binary else value.encode("utf-8")
        body = b" " + key.encode("utf-8") + b"=" + raw + b"\n"
        size = 0
        while size != len(body) + len(str(size)):
            size = len(body) + len(str(size))
        out.append(str(size).encode() + body)
    return b"".join(out)


def padding(size: int) -> bytes:
    """Zeros after ``size`` bytes of data up to the next block."""
    return b"\0" * (-size % BLOCK)


def end_of_archive(written: int, record: int) -> bytes:
    """Two zero blocks, then zeros up to a multiple of ``record`` (``written``: bytes so far)."""
    end = written + 2 * BLOCK
    return b"\0" * (2 * BLOCK + (-end % record))


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- Go archive/tar --------------------------------------------------------------------------------


def _go_string(data: bytes, width: int) -> bytes:
    """Go's formatString: truncate; a truncated V7 name's trailing slash becomes NUL (buggy readers)."""
    chunk = data[:width]
    if len(data) > width and chunk.endswith(b"/"):
        i = len(chunk.rstrip(b"/"))
        chunk = chunk[:i] + b"\0" + chunk[i + 1 :]
    return chunk


def _go_split_ustar(name: str) -> tuple[str, str] | None:
    """Go's splitUSTARPath: a (prefix, name) split that fits 155/100 bytes, if any."""
    raw = name.encode()
    if len(raw) <= 100 or not name.isascii():
        return None
    length = len(raw)
    if length > 156:
        length = 156
    elif raw[length - 1 : length] == b"/":
        length -= 1
    i = name.rfind("/", 0, length)
    nlen = len(raw) - i - 1
    if i <= 0 or nlen > 100 or nlen == 0 or i > 155:
        return None
    return name[:i], name[i + 1 :]


def _go_block(
    name: bytes, mode: int, size: int, typeflag: bytes, *, devices: bool, prefix: bytes = b""
) -> bytes:
    """templateV7Plus (devices=True) / writeRawFile (devices=False) with uid/gid/mtime 0, sealed."""
    fields = {
        "name": name,
        "mode": number(mode, 8, overflow="zero"),
        "uid": number(0, 8),
        "gid": number(0, 8),
        "size": number(size, 12, overflow="zero"),
        "mtime": number(0, 12),
        "typeflag": typeflag,
        "magic": USTAR_MAGIC,
    }
    if devices:
        fields |= {"devmajor": number(0, 8), "devminor": number(0, 8)}
    if prefix:
        fields["prefix"] = prefix
    return seal(header_block(**fields))


def go_header(member: Member) -> bytes:
    """The block(s) Go's ``tar.Writer.WriteHeader`` emits for a bare Name/Mode/Size header."""
    if member.mtime or member.uid or member.gid or member.uname or member.gname or member.linkname:
        raise ValueError("the Go dialect writes bare Name/Mode/Size headers only")
    if member.pax or member.devmajor or member.devminor:
        raise ValueError("the Go dialect writes bare Name/Mode/Size headers only")
    name, mode, size, typeflag = member.name, member.mode, member.size, member.typeflag
    raw = name.encode()
    pax: dict[str, str] = {}
    split = None
    if len(raw) > 100 or not name.isascii():
        split = _go_split_ustar(name)
        if split is None:
            pax["path"] = name
    if size >= 8**11:
        pax["size"] = str(size)
    if not pax:
        if split is not None:
            return _go_block(
                _go_string(split[1].encode(), 100),
                mode,
                size,
                typeflag,
                devices=True,
                prefix=_go_string(split[0].encode(), 155),
            )
        return _go_block(_go_string(raw, 100), mode, size, typeflag, devices=True)
    data = pax_records(sorted(pax.items()))
    head, _, tail = name.rpartition("/")
    pax_name = f"{head}/PaxHeaders.0/{tail}" if head else f"PaxHeaders.0/{tail}"
    pax_name_raw = pax_name.encode("ascii", "ignore")[:100].rstrip(b"/")
    ext = _go_block(pax_name_raw, 0, len(data), _PAXTYPE, devices=False) + data + padding(len(data))
    main = _go_block(_go_string(name.encode("ascii", "ignore"), 100), mode, size, typeflag, devices=True)
    return ext + main


# --- Python tarfile (PAX and USTAR formats) --------------------------------------------------------


def _tarfile_block(
    m: Member,
    *,
    name: bytes,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
    size: int,
    mtime: int,
    uid: int,
    gid: int,
    prefix: bytes = b"",
) -> bytes:
    """``TarInfo._create_header`` (Python 3.11): device numbers only for device nodes."""
    devices = m.typeflag in (CHRTYPE, BLKTYPE)
    return seal(
        header_block(
            name=name,
            mode=number(m.mode & 0o7777, 8),
            uid=number(uid, 8),
            gid=number(gid, 8),
            size=number(size, 12),
            mtime=number(mtime, 12),
            typeflag=m.typeflag,
            linkname=linkname,
            magic=USTAR_MAGIC,
            uname=uname,
            gname=gname,
            devmajor=number(m.devmajor, 8) if devices else b"",
            devminor=number(m.devminor, 8) if devices else b"",
            prefix=prefix,
        )
    )


def _tarfile_name(m: Member) -> str:
    """``TarInfo.get_info``: a directory's name ends with ``/``."""
    if m.typeflag == DIRTYPE and not m.name.endswith("/"):
        return m.name + "/"
    return m.name


def pax_header(m: Member) -> bytes:
    """``TarInfo.create_pax_header``: a ``././@PaxHeader`` for what USTAR cannot hold, then USTAR."""
    name = _tarfile_name(m)
    pax = dict(m.pax)
    for key, value, width in (
        ("path", name, 100),
        ("linkpath", m.linkname, 100),
        ("uname", m.uname, 32),
        ("gname", m.gname, 32),
    ):
        if key not in pax and (not value.isascii() or len(value) > width):
            pax[key] = value
    numbers: dict[str, int] = {"uid": m.uid, "gid": m.gid, "size": m.size, "mtime": m.mtime}
    for key, digits in (("uid", 8), ("gid", 8), ("size", 12), ("mtime", 12)):
        number_value = numbers[key]
        if not 0 <= number_value < 8 ** (digits - 1):
            numbers[key] = 0
            pax.setdefault(key, str(number_value))
    out = b""
    if pax:
        records = pax_records(pax.items(), binary_charset=True)
        out = _tarfile_block(
            Member("././@PaxHeader", _PAXTYPE),
            name=b"././@PaxHeader",
            linkname=b"",
            uname=b"",
            gname=b"",
            size=len(records),
            mtime=0,
            uid=0,
            gid=0,
        )
        out += records + padding(len(records))

    def ascii(text: str) -> bytes:
        return text.encode("ascii", "replace")

    return out + _tarfile_block(
        m,
        name=ascii(name),
        linkname=ascii(m.linkname),
        uname=ascii(m.uname),
        gname=ascii(m.gname),
        size=numbers["size"],
        mtime=numbers["mtime"],
        uid=numbers["uid"],
        gid=numbers["gid"],
    )


def ustar_header(m: Member) -> bytes:
    """``TarInfo.create_ustar_header``: long names split into prefix/name, nothing else extended."""
    name = _tarfile_name(m)

    def enc(text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape")

    if len(enc(m.linkname)) > 100:
        raise ValueError("linkname is too long")
    prefix = ""
    if len(enc(name)) > 100:
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix, rest = "/".join(parts[:i]), "/".join(parts[i:])
            if len(enc(prefix)) <= 155 and len(enc(rest)) <= 100:
                name = rest
                break
        else:
            raise ValueError("name is too long")
    return _tarfile_block(
        m,
        name=enc(name),
        linkname=enc(m.linkname),
        uname=enc(m.uname),
        gname=enc(m.gname),
        size=m.size,
        mtime=m.mtime,
        uid=m.uid,
        gid=m.gid,
        prefix=enc(prefix),
    )


# --- GNU -------------------------------------------------------------------------------------------


def gnu_block(m: Member) -> bytearray:
    """A GNU-format header, unsealed so the sparse ``S`` member can add its map before :func:`seal`."""
    if len(m.name.encode()) > 100 or len(m.linkname.encode()) > 100:
        raise ValueError("GNU long names are not written by this factory")
    devices = m.typeflag in (CHRTYPE, BLKTYPE)
    return header_block(
        name=m.name.encode(),
        mode=number(m.mode & 0o7777, 8, overflow="base256"),
        uid=number(m.uid, 8, overflow="base256"),
        gid=number(m.gid, 8, overflow="base256"),
        size=number(m.size, 12, overflow="base256"),
        mtime=number(m.mtime, 12, overflow="base256"),
        typeflag=m.typeflag,
        linkname=m.linkname.encode(),
        magic=GNU_MAGIC,
        uname=m.uname.encode(),
        gname=m.gname.encode(),
        devmajor=number(m.devmajor, 8, overflow="base256") if devices else b"",
        devminor=number(m.devminor, 8, overflow="base256") if devices else b"",
    )


def gnu_header(m: Member) -> bytes:
    return seal(gnu_block(m))


GO = Dialect("go", go_header, BLOCK)
PAX = Dialect("python-pax", pax_header, RECORD)
USTAR = Dialect("python-ustar", ustar_header, RECORD)
GNU = Dialect("gnu", gnu_header, RECORD)


# --- the writer ------------------------------------------------------------------------------------


class Sink(Protocol):
    """Where an archive goes: a file, a pipe, or a layer sink hashing what it is given."""

    def write(self, data: bytes, /) -> object: ...


class TarWriter:
    """Writes members to ``out`` in one dialect; :meth:`close` ends the archive (it never closes ``out``)."""

    def __init__(self, out: Sink, dialect: Dialect) -> None:
        self._out = out
        self._dialect = dialect
        self.written = 0

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.written += len(data)

    def add(self, member: Member, data: bytes | None = None) -> None:
        """A member with its data in memory (``member.size`` must match) or without data."""
        body = data or b""
        if len(body) != (member.size if data is not None else 0):
            raise ValueError(f"{member.name}: {len(body)} bytes of data for a size of {member.size}")
        self._write(self._dialect.header(member))
        self._write(body + padding(len(body)))

    def add_file(self, member: Member, source: str | os.PathLike[str]) -> None:
        """A member whose ``member.size`` bytes are streamed from ``source`` (read in chunks).

        The header promised a size, so a file that grows or shrinks meanwhile is an error.
        """
        self._write(self._dialect.header(member))
        size, written = member.size, 0
        with open(source, "rb") as src:
            while chunk := src.read(min(_CHUNK, size - written + 1)):
                written += len(chunk)
                if written > size:
                    raise ArchiveError(f"{Path(source)} grew while it was being archived")
                self._write(chunk)
        if written != size:
            raise ArchiveError(f"{Path(source)} shrank while it was being archived")
        self._write(padding(size))

    def close(self) -> None:
        self._write(end_of_archive(self.written, self._dialect.record))
