"""Output compression: valid concatenated streams, identical bytes for identical content, no leftovers."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from common.profile.model import OutFormat
from worker.imager import compress as compress_module
from worker.imager import tools
from worker.imager.compress import CHUNK_SIZE, compress, sparse_map, zero_stream
from worker.imager.sparse import data_extents
from worker.imager.tools import ToolError

EPOCH = 1_700_000_000
CHUNK = 64 << 10  # small chunks keep the files small; the logic is the same
STREAMS = (OutFormat.XZ, OutFormat.GZ, OutFormat.ZSTD)

#: decompress with the real tools: each reads the concatenated streams from stdin
CLI = {
    OutFormat.XZ: [["xz", "-dc"]],
    OutFormat.GZ: [["pigz", "-dc"], ["gzip", "-dc"]],
    OutFormat.ZSTD: [["zstd", "-dcq"]],
}
TEST = {OutFormat.XZ: ["xz", "-t"], OutFormat.GZ: ["gzip", "-t"], OutFormat.ZSTD: ["zstd", "-tq"]}
PYTHON: dict[OutFormat, Callable[[bytes], bytes]] = {
    OutFormat.XZ: lzma.decompress,
    OutFormat.GZ: gzip.decompress,
}

Writes = Sequence[tuple[int, bytes]]


def rand(n: int, seed: int) -> bytes:
    """Deterministic, incompressible-ish bytes without zero runs."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha512(b"%d-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:n])


def make(path: Path, size: int, writes: Writes, *, dense: bool = False) -> bytes:
    """A file of ``size`` bytes with ``writes`` and holes elsewhere (``dense``: zeros written out)."""
    content = bytearray(size)
    for off, data in writes:
        content[off : off + len(data)] = data
    with open(path, "wb") as f:
        if dense:
            f.write(content)
        else:
            f.truncate(size)
            for off, data in writes:
                f.seek(off)
                f.write(data)
    return bytes(content)


def disk_like(size: int, chunk: int) -> Writes:
    """Data at the start, straddling a chunk boundary mid-file, at the very end, zeros in between."""
    mid = (size // 2) // chunk * chunk
    return [
        (0, rand(3000, 1)),
        (mid - 700, rand(1500, 2)),
        (mid + 3 * chunk + 5, rand(100, 3)),
        (size - 1300, rand(1300, 4)),
    ]


def cli_decompress(cmd: list[str], path: Path) -> bytes:
    with path.open("rb") as f:
        return subprocess.run(cmd, stdin=f, capture_output=True, check=True).stdout


def check_stream(out: Path, fmt: OutFormat, expected: bytes) -> None:
    subprocess.run([*TEST[fmt], str(out)], check=True, capture_output=True)
    for cmd in CLI[fmt]:
        assert cli_decompress(cmd, out) == expected, cmd
    if fmt in PYTHON:
        assert PYTHON[fmt](out.read_bytes()) == expected


@pytest.fixture
def split_at_every_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every zero chunk between data ends a tool run: the most streams to concatenate."""
    monkeypatch.setattr(compress_module, "_RESTART_COST", dict.fromkeys(STREAMS, 0))


@pytest.mark.usefixtures("split_at_every_gap")
@pytest.mark.parametrize("fmt", STREAMS, ids=lambda f: f.name)
def test_sparse_image_round_trips(tmp_path: Path, fmt: OutFormat) -> None:
    src = tmp_path / "disk.raw"
    size = 40 * CHUNK + 12345  # not a chunk multiple: the short tail goes to the tool
    expected = make(src, size, disk_like(size, CHUNK))
    out = compress(src, fmt, epoch=EPOCH, chunk_size=CHUNK)
    assert out == tmp_path / f"disk.raw{fmt.value}"
    assert not src.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    check_stream(out, fmt, expected)
    # most chunks are zero: the output is mostly copies of the precomputed zero stream
    assert out.read_bytes().count(zero_stream(fmt, CHUNK)) >= 30


@pytest.mark.parametrize("fmt", STREAMS, ids=lambda f: f.name)
def test_short_zero_gaps_stay_in_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: OutFormat
) -> None:
    """A gap of zero chunks cheaper to compress than a tool restart is compressed with its
    neighbours; a longer one becomes zero streams. Leading and trailing zeros never go to the tool."""
    monkeypatch.setattr(compress_module, "_RESTART_COST", {fmt: 3 * CHUNK})
    zero = zero_stream(fmt, CHUNK)  # made before recording
    src = tmp_path / "disk.raw"
    # chunks: 0-1 zero, 2 data, 3-4 zero (gap 2: kept), 5 data, 6-10 zero (gap 5: split), 11 data, 12-13 zero
    writes = [(2 * CHUNK + 1, b"a"), (5 * CHUNK, b"b"), (11 * CHUNK + 9, b"c")]
    expected = make(src, 14 * CHUNK, writes)
    with tools.recording() as record:
        out = compress(src, fmt, epoch=EPOCH, chunk_size=CHUNK)
    assert len(record.runs) == 2  # chunks 2-5, then chunk 11
    data = out.read_bytes()
    assert data.startswith(zero * 2) and data.endswith(zero * 2) and zero * 5 in data
    check_stream(out, fmt, expected)


@pytest.mark.parametrize("fmt", STREAMS, ids=lambda f: f.name)
def test_zero_empty_and_tail_only_files(tmp_path: Path, fmt: OutFormat) -> None:
    zero = tmp_path / "zero.raw"
    make(zero, 7 * CHUNK, [])
    out = compress(zero, fmt, epoch=EPOCH, chunk_size=CHUNK)
    assert out.read_bytes() == zero_stream(fmt, CHUNK) * 7
    check_stream(out, fmt, bytes(7 * CHUNK))

    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    check_stream(compress(empty, fmt, epoch=EPOCH, chunk_size=CHUNK), fmt, b"")

    for name, size, writes in [
        ("short.raw", CHUNK // 3, [(5, b"x")]),  # smaller than one chunk
        ("zero-tail.raw", 3 * CHUNK + 17, []),  # zero short tail: still through the tool
        ("data-tail.raw", 3 * CHUNK + 17, [(3 * CHUNK + 16, b"\xff")]),
    ]:
        path = tmp_path / name
        expected = make(path, size, writes)
        check_stream(compress(path, fmt, epoch=EPOCH, chunk_size=CHUNK), fmt, expected)


@pytest.mark.parametrize("fmt", [*STREAMS, OutFormat.TAR], ids=lambda f: f.name)
def test_same_content_gives_same_bytes_whatever_the_holes(tmp_path: Path, fmt: OutFormat) -> None:
    """Reproducible, and decided on content only: a file with its zeros written out (no holes) and
    a sparse one with the same bytes compress identically."""
    size = 24 * CHUNK + 100
    writes = [*disk_like(size, CHUNK), (5 * CHUNK, bytes(3 * CHUNK))]  # zeros written in a data extent
    outputs = []
    for i, dense in enumerate([False, False, True]):
        (tmp_path / str(i)).mkdir()
        path = tmp_path / str(i) / "disk.raw"
        make(path, size, writes, dense=dense)
        outputs.append(compress(path, fmt, epoch=EPOCH, chunk_size=CHUNK).read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_output_does_not_depend_on_thread_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tools this host has write the same bytes with any worker count (only single-threaded
    xz and ``zstd --single-thread`` differ, and are not used); xz is asked for >= 2 threads."""
    data = rand(3 << 19, 7) + bytes(34 << 20) + rand(1 << 19, 8)  # several xz blocks, zstd jobs
    for cmds in (
        [["xz", "-0", f"-T{n}", "--block-size=1MiB", "-c"] for n in (2, 3, 8)],
        [["pigz", "-6", "--no-time", "-c", "-p", str(n)] for n in (1, 2, 8)],
        [["zstd", "-18", f"-T{n}", "-q", "-c"] for n in (1, 2, 8)],
    ):
        assert len({tools.run(cmd, stdin=data) for cmd in cmds}) == 1, cmds[0][0]

    outputs = set()
    for cpus in (1, 16):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        path = tmp_path / f"{cpus}.raw"
        make(path, 8 * CHUNK, [(0, data[: 2 * CHUNK])])
        outputs.add(compress(path, OutFormat.XZ, epoch=EPOCH, chunk_size=CHUNK).read_bytes())
    assert len(outputs) == 1


def expected_at(writes: Writes, pos: int, n: int) -> bytes:
    """The bytes ``[pos, pos + n)`` of a sparse file made by :func:`make`, without holding it all."""
    block = bytearray(n)
    for off, data in writes:
        lo, hi = max(off, pos), min(off + len(data), pos + n)
        if lo < hi:
            block[lo - pos : hi - pos] = data[lo - off : hi - off]
    return bytes(block)


@pytest.mark.parametrize("fmt", STREAMS, ids=lambda f: f.name)
def test_real_chunk_size_on_a_large_sparse_image(tmp_path: Path, fmt: OutFormat) -> None:
    size = (1 << 30) + 4096
    writes = [
        (0, rand(34 * 512, 1)),  # GPT
        (1 << 20, rand(3 << 20, 2)),  # a partition's data
        (CHUNK_SIZE * 20 - 512, rand(8192, 3)),  # metadata across a chunk boundary
        (size - 33 * 512, rand(33 * 512, 4)),  # backup GPT
    ]
    src = tmp_path / "disk.raw"
    with open(src, "wb") as f:
        f.truncate(size)
        for off, data in writes:
            f.seek(off)
            f.write(data)
    out = compress(src, fmt, epoch=EPOCH)
    assert out.stat().st_size < 16 << 20
    cmd = CLI[fmt][0]
    with out.open("rb") as packed, subprocess.Popen(cmd, stdin=packed, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        pos = 0
        while block := proc.stdout.read(1 << 20):
            assert block == expected_at(writes, pos, len(block)), pos
            pos += len(block)
        assert proc.wait() == 0
    assert pos == size


# --- .tar.gz --------------------------------------------------------------------------------------


def gnu_tar(folder: Path, *extra: str) -> bytes:
    """Upstream's tar command (uncompressed)."""
    cmd = ["tar", "-cf", "-", "-C", str(folder), "--sparse", "--sort=name", "--owner=0", "--group=0"]
    cmd += ["--numeric-owner", f"--mtime=@{EPOCH}", *extra, "disk.raw"]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


def ours(path: Path) -> bytes:
    return gzip.decompress(compress(path, OutFormat.TAR, epoch=EPOCH).read_bytes())


def test_tar_gz_holds_one_sparse_member(tmp_path: Path) -> None:
    src = tmp_path / "gcp-amd64.raw"
    size = 50 * CHUNK + 777
    expected = make(src, size, disk_like(size, CHUNK))
    out = compress(src, OutFormat.TAR, epoch=EPOCH)
    assert out == tmp_path / "gcp-amd64.raw.tar.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    subprocess.run(["gzip", "-t", str(out)], check=True)
    with tarfile.open(out, "r:gz") as tar:
        (member,) = tar.getmembers()
        assert member.name == "disk.raw" and member.issparse()
        assert (member.size, member.mtime, member.uid, member.gid) == (size, EPOCH, 0, 0)
        assert (member.uname, member.gname, member.mode) == ("", "", 0o644)
        f = tar.extractfile(member)
        assert f is not None and f.read() == expected
    listing = subprocess.run(["tar", "-tvzf", str(out)], capture_output=True, text=True, check=True)
    assert listing.stdout.split()[-1] == "disk.raw"
    extracted = tmp_path / "x"
    extracted.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(extracted)], check=True)
    assert (extracted / "disk.raw").read_bytes() == expected


LAYOUTS: dict[str, tuple[int, Writes]] = {
    "disk": (3 << 20, disk_like(3 << 20, CHUNK)),
    "data-at-eof-short-block": (1 << 20, [(4096, b"a" * 10), ((1 << 20) - 100, b"b" * 100)]),
    "zero-short-block-at-eof": ((1 << 20) + 100, [(0, b"c")]),
    "zero-blocks-inside-data": (1 << 20, [(8192, rand(2048, 5) + bytes(1536) + rand(600, 6))]),
    "many-runs": (4 << 20, [(i * 40960 + 1024 * (i % 3), rand(700 + i, i)) for i in range(90)]),
    "all-zero": (2 << 20, []),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tar_stream_is_gnu_tars_raw_hole_detection(tmp_path: Path, layout: str) -> None:
    """Byte for byte what ``tar --sparse --hole-detection=raw`` (content-based) writes, whatever
    the map size (header, extension headers), tail and zero blocks."""
    size, writes = LAYOUTS[layout]
    src = tmp_path / "disk.raw"
    make(src, size, writes)
    src.chmod(0o644)
    if os.stat(src).st_blocks * 512 >= size:
        pytest.skip("filesystem without sparse files: tar would not write a sparse member")
    reference = gnu_tar(tmp_path, "--hole-detection=raw")
    assert ours(src) == reference


def test_tar_stream_beyond_8_gib_uses_base_256(tmp_path: Path) -> None:
    """Sizes and offsets of 8 GiB and more are GNU base-256 numbers, as tar writes them. Compared
    with tar's (fast) seek detection on a file whose extents are exactly its non-zero data."""
    size = 9 << 30
    step = 64 << 10
    writes = [(0, rand(step, 1)), ((8 << 30) + step, rand(step, 2)), ((9 << 30) - 4 * step, rand(step, 3))]
    src = tmp_path / "disk.raw"
    with open(src, "wb") as f:
        f.truncate(size)
        for off, data in writes:
            f.seek(off)
            f.write(data)
    src.chmod(0o644)
    with open(src, "rb") as f:
        extents = list(data_extents(f.fileno(), 0, size))
        assert sparse_map(f.fileno(), size) == [(off, len(data)) for off, data in writes] + [(size, 0)]
    if extents != [(off, off + len(data)) for off, data in writes]:
        pytest.skip(f"filesystem reports other extents: {extents}")
    reference = gnu_tar(tmp_path)
    assert b"\x80" in reference[:512]
    stream = ours(src)
    assert stream == reference
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        assert tar.getmembers()[0].size == size


# --- failures -------------------------------------------------------------------------------------


def fake_tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)


@pytest.mark.parametrize("fmt", [*STREAMS, OutFormat.TAR], ids=lambda f: f.name)
def test_missing_tool_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: OutFormat) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setitem(tools._BASE_ENV, "PATH", str(tmp_path / "empty"))
    src = tmp_path / "disk.raw"
    make(src, 8 * CHUNK, [(3 * CHUNK, b"data")])
    with pytest.raises(ToolError, match="not installed"):
        compress(src, fmt, epoch=EPOCH, chunk_size=CHUNK)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "empty"]


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("head -c 1000 >/dev/null; echo 'corrupt input' >&2; exit 3", "exit code 3: corrupt input"),
        ("exit 0", "exited without reading all its input"),
    ],
)
def test_failing_tool_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, message: str
) -> None:
    bin_dir = tmp_path / "bin"
    for name in ("xz", "pigz"):
        fake_tool(bin_dir, name, script)
    monkeypatch.setitem(tools._BASE_ENV, "PATH", f"{bin_dir}:{tools._BASE_ENV['PATH']}")
    for fmt in (OutFormat.XZ, OutFormat.TAR):
        src = tmp_path / "disk.raw"
        expected = make(src, 8 << 20, [(0, rand(4 << 20, 9))])  # more than a pipe holds
        with pytest.raises(ToolError, match=message):
            compress(src, fmt, epoch=EPOCH, chunk_size=CHUNK)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "disk.raw"]
        assert src.read_bytes() == expected


def test_read_error_while_feeding_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tool succeeds on the truncated input it got, but the build must still fail."""

    def broken(src: int, dst: int, offset: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(compress_module, "_copy_region", broken)
    for fmt in (OutFormat.ZSTD, OutFormat.TAR):
        src = tmp_path / "disk.raw"
        make(src, 4 * CHUNK, [(0, b"x")])
        with pytest.raises(ToolError, match="Input/output error"):
            compress(src, fmt, epoch=EPOCH, chunk_size=CHUNK)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw"]


def test_raw_is_left_alone(tmp_path: Path) -> None:
    src = tmp_path / "disk.raw"
    src.write_bytes(b"abc")
    for fmt in (OutFormat.RAW, OutFormat.UNKNOWN):
        assert compress(src, fmt, epoch=EPOCH) == src
    assert src.read_bytes() == b"abc"
