"""Taking a built initramfs apart, as upstream's initramfs_test does.

Layout from ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/extensions/rebuild.go``; the test is
``siderolabs/image-factory:internal/integration/initramfs_test.go``.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from worker.imager import cpio

__all__ = ["MAGIC", "Decomposed", "decompose", "members", "sqfs_tar"]

MAGIC = {"xz": b"\xfd7zX", "zstd": b"\x28\xb5\x2f\xfd"}


@dataclass
class Decomposed:
    """The three parts of an initramfs built with extensions."""

    early: list[tuple[cpio.Member, bytes]]
    base_offset: int
    compressed_magic: bytes
    members: dict[str, tuple[cpio.Member, bytes]]
    order: list[str]


def members(
    stream: io.BytesIO | io.BufferedReader,
) -> tuple[list[tuple[cpio.Member, bytes]], cpio.NewcReader]:
    reader = cpio.NewcReader(stream)
    return [(m, reader.read_data()) for m in reader], reader


def decompose(out: Path, base: Path) -> Decomposed:
    data = out.read_bytes()
    vanilla = base.read_bytes()
    stream = io.BytesIO(data)
    early: list[tuple[cpio.Member, bytes]] = []
    if data[:6] == b"070701":
        early, _ = members(stream)
        cpio.skip_padding(stream)
    offset = stream.tell()
    assert data[offset : offset + len(vanilla)] == vanilla, "the vanilla initramfs must be carried unchanged"
    tail = data[offset + len(vanilla) :]
    tool = "xz" if tail[:4] == MAGIC["xz"] else "zstd"
    raw = subprocess.run([tool, "-d", "-c"], input=tail, capture_output=True, check=True).stdout
    entries, reader = members(io.BytesIO(raw))
    assert raw[reader.position :].strip(b"\0") == b"", "exactly one archive in the compressed part"
    return Decomposed(
        early=early,
        base_offset=offset,
        compressed_magic=tail[:4],
        members={m.name: (m, d) for m, d in entries},
        order=[m.name for m, _ in entries],
    )


def sqfs_tar(image: bytes, tmp_path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """A squashfs (given as bytes) listed through ``sqfs2tar``: member -> (header with xattrs, content)."""
    path = tmp_path / f"img-{os.urandom(4).hex()}.sqsh"
    path.write_bytes(image)
    raw = subprocess.run(["sqfs2tar", str(path)], capture_output=True, check=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        for member in archive:
            f = archive.extractfile(member) if member.isfile() else None
            out[member.name] = (member, f.read() if f else b"")
    return out
