"""Hostile layers (issue 18): decompression bombs, too many entries, huge headers, device files, FIFOs
and links out of the root, made at test time as real gzip/zstd streams (small in memory and on disk).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from common.artifacts.unpack import MAX_HEADER, UnpackError, UnpackLimits, UnpackStats, apply_layers
from common.errors import BadSourceError

MiB = 1024 * 1024
SMALL = UnpackLimits(layer_bytes=16 * MiB, layer_entries=1000, image_bytes=24 * MiB, image_entries=1500)
STRICT = UnpackLimits(strict=True)
TINY = UnpackLimits(layer_bytes=2_000_000, layer_entries=100, image_bytes=2_500_000, image_entries=150)


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as they are read (a bomb's payload never sits in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


class _Sink:
    """Where ``tarfile`` writes: each piece compressed at once, so no bomb is ever held uncompressed."""

    def __init__(self, compressor: Any) -> None:
        self.compressor = compressor
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(self.compressor.compress(data))
        return len(data)


def _compressed(files: Iterable[tuple[tarfile.TarInfo, int]], compressor: Any) -> bytes:
    """A compressed tar stream of ``(header, size)`` entries whose content is zeros."""
    sink = _Sink(compressor)
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for info, size in files:
            info.size = size
            archive.addfile(info, _Zeros(size) if size else None)
    return b"".join(sink.parts) + compressor.flush()


def _gzip(files: Iterable[tuple[tarfile.TarInfo, int]]) -> bytes:
    return _compressed(files, zlib.compressobj(6, zlib.DEFLATED, 31))


def _zstd(files: Iterable[tuple[tarfile.TarInfo, int]]) -> bytes:
    return _compressed(files, zstandard.ZstdCompressor(level=3).compressobj())


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _special(name: str, kind: bytes, linkname: str = "") -> io.BytesIO:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(info)
    buffer.seek(0)
    return buffer


def _written(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("compress", [_gzip, _zstd], ids=["gzip", "zstd"])
def test_a_one_file_bomb_is_refused_at_its_header(tmp_path: Path, compress: object) -> None:
    blob = compress([(_file("rootfs/bomb"), 64 * MiB)])  # type: ignore[operator]
    assert len(blob) < 1 * MiB  # a real bomb: 64 MiB (4 times the bound) from under 1 MiB
    started = time.monotonic()
    with pytest.raises(UnpackError, match=r"'rootfs/bomb' declares 67108864 bytes.*maxLayerSize") as caught:
        apply_layers([io.BytesIO(blob)], tmp_path, SMALL)
    assert time.monotonic() - started < 1.0
    assert caught.value.layer == 0 and caught.value.status == 502
    assert isinstance(caught.value, BadSourceError)
    assert _written(tmp_path) == 0


@pytest.mark.parametrize("compress", [_gzip, _zstd], ids=["gzip", "zstd"])
def test_many_small_files_are_stopped_at_the_layer_bound(tmp_path: Path, compress: object) -> None:
    """No file is large, so only counting the decompressed stream stops it (a ratio would not)."""
    files = ((_file(f"f{i}"), MiB) for i in range(24))  # 24 MiB of zeros
    blob = compress(files)  # type: ignore[operator]
    # stopped either while streaming or at the header of the first file that no longer fits
    bound = r"(layer unpacks to more than 16777216 bytes|'f1\d' declares 1048576 bytes, .* of .*maxLayerSize)"
    with pytest.raises(UnpackError, match=bound):
        apply_layers([io.BytesIO(blob)], tmp_path, SMALL)
    assert _written(tmp_path) <= 16 * MiB


def test_the_image_bound_spans_layers(tmp_path: Path) -> None:
    layers = [_gzip((_file(f"l{n}/f{i}"), 100_000) for i in range(10)) for n in range(3)]  # 3 x 1 MB
    bound = r"(the image's layers unpack to more than 2500000 bytes|declares 100000 bytes, .*maxImageSize)"
    with pytest.raises(UnpackError, match=bound) as caught:
        apply_layers([io.BytesIO(b) for b in layers], tmp_path, TINY)
    assert caught.value.layer == 2


def test_entries_are_bounded_per_layer_and_per_image(tmp_path: Path) -> None:
    many = _gzip((_file(f"e{i}"), 0) for i in range(101))
    with pytest.raises(UnpackError, match=r"layer holds more than 100 entries"):
        apply_layers([io.BytesIO(many)], tmp_path / "a", TINY)
    halves = [_gzip((_file(f"h{n}/{i}"), 0) for i in range(80)) for n in range(2)]
    with pytest.raises(UnpackError, match=r"the image's layers hold more than 150 entries") as caught:
        apply_layers([io.BytesIO(b) for b in halves], tmp_path / "b", TINY)
    assert caught.value.layer == 1


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = _file("f")
    info.pax_headers = {"comment": "x" * (MAX_HEADER + 1)}
    blob = _gzip(iter([(info, 0)]))
    with pytest.raises(UnpackError, match=r"extended header"):
        apply_layers([io.BytesIO(blob)], tmp_path)


def test_stats_count_what_was_unpacked(tmp_path: Path) -> None:
    blob = _gzip((_file(f"f{i}"), 1000) for i in range(3))
    stats = UnpackStats()
    apply_layers([io.BytesIO(blob), io.BytesIO(blob)], tmp_path, SMALL, stats)
    assert stats.entries == 6
    assert 6000 < stats.bytes <= 2 * len(gzip.decompress(blob))


def test_a_zstd_layer_unpacks(tmp_path: Path) -> None:
    blob = _zstd(iter([(_file("usr/lib/x"), 10)]))
    apply_layers([io.BytesIO(blob)], tmp_path)
    assert (tmp_path / "usr/lib/x").read_bytes() == bytes(10)


def test_garbage_is_a_named_refusal(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match=r"not a readable tar stream") as caught:
        apply_layers([io.BytesIO(b"\x1f\x8b" + b"garbage" * 100)], tmp_path)
    assert caught.value.layer == 0


@pytest.mark.parametrize(
    ("kind", "what"),
    [(tarfile.CHRTYPE, "a device file"), (tarfile.BLKTYPE, "a device file"), (tarfile.FIFOTYPE, "a FIFO")],
)
def test_devices_and_fifos_are_refused_in_strict_mode_and_skipped_otherwise(
    tmp_path: Path, kind: bytes, what: str
) -> None:
    with pytest.raises(UnpackError, match=f"'rootfs/dev/x' is {what}"):
        apply_layers([_special("rootfs/dev/x", kind)], tmp_path / "strict", STRICT)
    apply_layers([_special("rootfs/dev/x", kind)], tmp_path / "lenient")
    assert not (tmp_path / "lenient/rootfs/dev/x").exists()


@pytest.mark.parametrize("target", ["../../..", "../../x", "a/../../../etc"])
def test_relative_symlinks_out_of_the_root_are_refused_in_strict_mode(tmp_path: Path, target: str) -> None:
    with pytest.raises(UnpackError, match="leaves the image root"):
        apply_layers([_special("rootfs/link", tarfile.SYMTYPE, target)], tmp_path / "strict", STRICT)
    assert not (tmp_path / "strict/rootfs/link").is_symlink()


@pytest.mark.parametrize("target", ["/usr/lib/x", "../usr/lib/x", "./x"])
def test_symlinks_inside_the_root_are_kept_in_strict_mode(tmp_path: Path, target: str) -> None:
    apply_layers([_special("rootfs/link", tarfile.SYMTYPE, target)], tmp_path, STRICT)
    assert (tmp_path / "rootfs/link").readlink() == Path(target)


def _layer(*members: tuple[str, bytes, str]) -> io.BytesIO:
    """(name, type, linkname-or-content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(value)
                archive.addfile(info, io.BytesIO(value.encode()))
            else:
                info.linkname = value
                archive.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    "members",
    [
        [("hard", tarfile.LNKTYPE, "../outside")],  # climbs out
        [("hard", tarfile.LNKTYPE, "a/../../outside")],
        [("dir", tarfile.SYMTYPE, "{tmp}"), ("hard", tarfile.LNKTYPE, "dir/outside")],  # through a link
        [
            ("f", tarfile.REGTYPE, "x"),
            ("s", tarfile.SYMTYPE, "f"),
            ("hard", tarfile.LNKTYPE, "s"),
        ],  # to a link
        [("d", tarfile.DIRTYPE, ""), ("hard", tarfile.LNKTYPE, "d")],  # to a directory
        [("hard", tarfile.LNKTYPE, "missing")],
    ],
)
def test_hard_links_to_anything_but_a_file_inside_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes, str]]
) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    dest = tmp_path / "dest"
    dest.mkdir()
    members = [(name, kind, value.format(tmp=tmp_path)) for name, kind, value in members]
    with pytest.raises(UnpackError):
        apply_layers([_layer(*members)], dest, STRICT)
    assert not (dest / "hard").exists()
    assert outside.stat().st_nlink == 1


def test_a_hard_link_inside_the_root_is_kept(tmp_path: Path) -> None:
    apply_layers([_layer(("f", tarfile.REGTYPE, "x"), ("hard", tarfile.LNKTYPE, "/f"))], tmp_path, STRICT)
    assert (tmp_path / "hard").stat().st_ino == (tmp_path / "f").stat().st_ino
