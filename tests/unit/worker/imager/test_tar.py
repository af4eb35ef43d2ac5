"""The one tar writer: each dialect gives exactly the bytes of the implementation it names."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from worker.imager import tar

LABEL = {"SCHILY.xattr.security.selinux": "system_u:object_r:hello_t:s0"}
NAMES = [
    "a",
    "x" * 99,
    "x" * 100,
    "x" * 101,
    "d/" * 60 + "f",
    "a/" + "b" * 98 + "/",
    "caf\u00e9",
    "caf\u00e9/" + "z" * 120,
    "overlay/artifacts/arm64/" + "d" * 70 + "/" + "f" * 60,
    "n/" * 80,
    "bad\udcff",  # a file name that is not UTF-8, as os.scandir gives it
    "p" * 160,
]


def python_tarfile(fmt: int, members: list[tar.Member], *, stream: bool = False) -> bytes:
    """What Python's tarfile writes for the same members (the reference of PAX, USTAR and GNU)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|" if stream else "w", format=fmt) as archive:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type, info.mode, info.mtime = m.typeflag, m.mode, m.mtime
            info.uid, info.gid, info.uname, info.gname = m.uid, m.gid, m.uname, m.gname
            info.linkname, info.devmajor, info.devminor = m.linkname, m.devmajor, m.devminor
            info.size = m.size
            if m.pax:
                info.pax_headers = dict(m.pax)
            archive.addfile(info, io.BytesIO(b"y" * m.size) if m.typeflag == tar.REGTYPE else None)
    return out.getvalue()


def ours(dialect: tar.Dialect, members: list[tar.Member]) -> bytes:
    out = io.BytesIO()
    writer = tar.TarWriter(out, dialect)
    for m in members:
        writer.add(m, b"y" * m.size if m.typeflag == tar.REGTYPE else None)
    writer.close()
    return out.getvalue()


def test_pax_is_pythons_tarfile() -> None:
    members = [tar.Member(".", tar.DIRTYPE, 0o755, mtime=8**12)]
    for name in NAMES:
        for kind in (tar.REGTYPE, tar.DIRTYPE, tar.SYMTYPE, tar.LNKTYPE, tar.CHRTYPE, tar.FIFOTYPE):
            members.append(
                tar.Member(
                    name,
                    kind,
                    0o4755,
                    7 if kind == tar.REGTYPE else 0,
                    mtime=1559424892,
                    linkname={tar.SYMTYPE: "l" * 120, tar.LNKTYPE: "t\u00e9"}.get(kind, ""),
                    devmajor=3 if kind == tar.CHRTYPE else 0,
                    devminor=9 if kind == tar.CHRTYPE else 0,
                    pax=LABEL if len(name) % 2 else {},
                )
            )
    assert ours(tar.PAX, members) == python_tarfile(tarfile.PAX_FORMAT, members)
    assert ours(tar.PAX, members) == python_tarfile(tarfile.PAX_FORMAT, members, stream=True)


def test_ustar_is_pythons_tarfile() -> None:
    members = [
        tar.Member(name, kind, 0o644, 3 if kind == tar.REGTYPE else 0, uname="root")
        for name in ("manifest.yaml", "rootfs/", "rootfs/usr/", "a" * 60 + "/" + "b" * 90)
        for kind in (tar.REGTYPE, tar.DIRTYPE)
    ]
    assert ours(tar.USTAR, members) == python_tarfile(tarfile.USTAR_FORMAT, members)


def test_gnu_is_pythons_tarfile_and_uses_base_256() -> None:
    members = [
        tar.Member(name, tar.REGTYPE, 0o644, 11, mtime=1700000000, uname="root", gname="root")
        for name in ("disk.ovf", "disk.mf", "metal-amd64.vmdk")
    ]
    assert ours(tar.GNU, members) == python_tarfile(tarfile.GNU_FORMAT, members)
    big = tar.gnu_header(tar.Member("disk.vmdk", size=9 << 30))
    assert big[124:136] == b"\x80" + (9 << 30).to_bytes(11, "big")


def test_go_splits_long_names_or_falls_back_to_pax() -> None:
    split = tar.go_header(tar.Member("d" * 70 + "/" + "f" * 60, tar.REGTYPE, 0o644, 1))
    assert len(split) == tar.BLOCK and split[345:415] == b"d" * 70
    pax = tar.go_header(tar.Member("n" * 130, tar.REGTYPE, 0o600, 1))
    assert pax[:19] == b"PaxHeaders.0/" + b"n" * 6 and pax[156:157] == b"x"
    assert b" path=" + b"n" * 130 + b"\n" in pax
    with pytest.raises(ValueError, match="bare"):
        tar.go_header(tar.Member("a", mtime=1))


def test_numbers_and_end_of_archive() -> None:
    assert tar.number(0o644, 8) == b"0000644\0"
    assert tar.number(8**7, 8, overflow="zero") == b"0000000\0"
    with pytest.raises(ValueError, match="cannot store"):
        tar.number(-1, 8)
    assert len(tar.end_of_archive(512, tar.RECORD)) == tar.RECORD - 512
    assert len(tar.end_of_archive(512, tar.BLOCK)) == 2 * tar.BLOCK


def test_a_file_that_changes_size_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"abc")
    writer = tar.TarWriter(io.BytesIO(), tar.GO)
    with pytest.raises(tar.ArchiveError, match="grew"):
        writer.add_file(tar.Member("f", size=2), source)
    with pytest.raises(tar.ArchiveError, match="shrank"):
        writer.add_file(tar.Member("f", size=4), source)
