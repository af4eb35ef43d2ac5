"""Output compression (the profile's ``outFormat``): fast on sparse disk images, same bytes on any host.

Upstream pipes the whole image through one tool (``xz -0 -T0``, ``pigz -6``, ``zstd -18``) and so
spends nearly all its time compressing the gigabytes of zeros a fresh disk image is made of (44 s for
8 GiB with xz). Here the input is cut into fixed chunks: an all-zero chunk becomes a stream of
``chunk_size`` compressed zeros made once per process, and each run of other chunks goes through one
tool invocation (a gap of zero chunks cheaper to compress than a restart of the tool stays in its
run). The three formats allow concatenated streams (multi-stream xz, multi-member gzip, several zstd
frames), so any standard decompressor gives back the input.

Reproducibility: every decision is taken on the bytes read, never on how the filesystem reports
holes (``SEEK_DATA`` only lets us skip reading what is certainly zero), tools always read a pipe (so
none sees a file size that would change its parameters), and each tool runs in a mode whose output
does not depend on the thread count (checked with xz 5.4, pigz 2.6, zstd 1.5.4):

* xz: multi-threaded mode with a fixed block size; only the single-threaded mode (``-T1``, or
  ``-T0`` on a one-CPU host with xz 5.2) writes different bytes, so at least two threads are asked.
* pigz: same output for any ``-p``.
* zstd: same output for any ``-T``/worker count (only ``--single-thread`` differs).

``.tar.gz`` writes GNU tar's sparse member itself (see :func:`_tar_pieces`, headers from
:mod:`worker.imager.tar`): ``tar --sparse`` takes
its map from the filesystem's extents (host dependent), and its content-based ``--hole-detection=raw``
reads the whole image 512 bytes at a time (34 s for 8 GiB).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from common.profile.model import OutFormat
from worker.imager import tar, tools
from worker.imager.sparse import data_extents
from worker.imager.tools import ToolError

#: Zero-detection granularity. Small, so a disk's data regions (a partition's first MiBs, filesystem
#: metadata every GiB) drag little zero padding through the slow tool; large enough that a 13 GiB
#: image is ~3300 cheap decisions and the zero streams cost the tool a few ms once per process.
#: Data is never split mid-run, so the chunk size barely moves the ratio (bench: 1, 2, 4, 8, 16 MiB
#: give outputs within 3 %; 4 MiB was among the fastest; 16 and 64 MiB were slower).
CHUNK_SIZE = 4 << 20

#: Zero bytes the tool compresses in the time it takes to start once more (measured, 2 CPUs): a
#: shorter gap of zero chunks between data is left in the run. zstd -18 sets up ~40 ms of tables
#: and then compresses zeros at ~1 GB/s; xz and pigz start in 2-3 ms, ~1 MiB of zeros.
_RESTART_COST = {OutFormat.XZ: 1 << 20, OutFormat.GZ: 1 << 20, OutFormat.ZSTD: 32 << 20}

_READ = 1 << 20  # read and pipe granularity: memory stays at about one of these
_ZEROS = bytes(_READ)
_BLOCK = tar.BLOCK
_ZERO_BLOCK = bytes(_BLOCK)
_TAR_MODE = 0o644
_SPARSE = b"S"  # GNU's sparse file type

#: Literal bytes, or an ``(offset, length)`` region of the input file: what is fed to a tool's stdin.
Piece = bytes | tuple[int, int]


def _command(fmt: OutFormat) -> list[str]:
    """The tool reading the data on stdin and writing one compressed stream on stdout (upstream levels)."""
    if fmt is OutFormat.XZ:
        threads = max(2, len(os.sched_getaffinity(0)))  # >= 2: single-threaded xz writes other bytes
        return ["xz", "-0", f"--threads={threads}", "--block-size=1MiB", "-z", "-c", "-q"]
    if fmt in (OutFormat.GZ, OutFormat.TAR):
        return ["pigz", "-6", "--no-time", "-c"]
    if fmt is OutFormat.ZSTD:
        return ["zstd", "-18", "-T0", "-q", "-c"]
    raise ValueError(f"no compressor for {fmt}")


def _output_path(path: Path, fmt: OutFormat) -> Path:
    return path.with_name(path.name + fmt.value)


def compress(path: Path, out_format: OutFormat, *, epoch: int, chunk_size: int = CHUNK_SIZE) -> Path:
    """Compresses ``path`` per ``out_format`` into ``<path><suffix>`` and removes ``path``.

    ``raw``/``unknown`` leave the file as it is. ``.tar.gz`` holds one member ``disk.raw`` (mtime
    ``epoch``, owner 0:0, mode 0644). On failure the input stays and no output is left behind.
    """
    if out_format in (OutFormat.RAW, OutFormat.UNKNOWN):
        return path
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    target = _output_path(path, out_format)
    partial = target.with_name(target.name + ".partial")
    try:
        with open(path, "rb") as src, open(partial, "wb", buffering=0) as out:
            if out_format is OutFormat.TAR:
                _write_tar_gz(src.fileno(), epoch, out)
            else:
                _write_chunked(src.fileno(), out_format, chunk_size, out)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    path.unlink()
    return target


# --- chunked .xz / .gz / .zst ---------------------------------------------------------------------

_zero_streams: dict[tuple[str, ...], bytes] = {}
_zero_lock = threading.Lock()


def zero_stream(fmt: OutFormat, chunk_size: int = CHUNK_SIZE) -> bytes:
    """One compressed stream of ``chunk_size`` zero bytes, made by the same tool and flags, cached."""
    cmd = _command(fmt)
    key = (tools.which(cmd[0]), *cmd[1:], str(chunk_size))  # another binary makes another stream
    with _zero_lock:
        stream = _zero_streams.get(key)
        if stream is None:
            full, rest = divmod(chunk_size, _READ)
            pieces: list[Piece] = [_ZEROS] * full
            if rest:
                pieces.append(bytes(rest))
            stream = _zero_streams[key] = _run_fed(cmd, -1, pieces, None)
    return stream


def _write_chunked(fd: int, fmt: OutFormat, chunk_size: int, out: IO[bytes]) -> None:
    cmd = _command(fmt)
    min_gap = _RESTART_COST[fmt]
    size = os.fstat(fd).st_size
    whole = size - size % chunk_size
    buf = bytearray(_READ)
    run: list[int] = []  # [start, end) of the data gathered for the next tool run
    zeros = 0  # zero chunks since the end of ``run`` (or the start of the file)

    def data(lo: int, hi: int) -> None:
        nonlocal run, zeros
        if run and (zeros == 0 or zeros * chunk_size < min_gap):
            run[1] = hi  # adjacent, or a gap cheaper to compress than to restart the tool for
        else:
            flush()
            run = [lo, hi]
        zeros = 0

    def flush() -> None:
        nonlocal zeros
        if run:
            _run_fed(cmd, fd, [(run[0], run[1] - run[0])], out)
        stream = zero_stream(fmt, chunk_size) if zeros else b""
        for batch in range(0, zeros, 256):
            _write_all(out.fileno(), stream * min(256, zeros - batch))
        zeros = 0

    for pos in range(0, whole, chunk_size):
        if _all_zero(fd, pos, chunk_size, buf):
            zeros += 1
        else:
            data(pos, pos + chunk_size)
    if size > whole or size == 0:
        data(whole, size)  # the short last chunk always goes to the tool; an empty file, one empty stream
    flush()


def _read_at(fd: int, buf: bytearray, pos: int, count: int) -> int:
    n = os.preadv(fd, [memoryview(buf)[:count]], pos)
    if n <= 0:
        raise ToolError(f"the image shrank while it was being compressed (short read at {pos})")
    return n


def _all_zero(fd: int, start: int, length: int, buf: bytearray) -> bool:
    """Whether ``[start, start + length)`` is all zero bytes; stops at the first non-zero read."""
    for lo, hi in data_extents(fd, start, start + length):
        pos = lo
        while pos < hi:
            n = _read_at(fd, buf, pos, min(_READ, hi - pos))
            if (buf != _ZEROS) if n == _READ else (buf[:n] != _ZEROS[:n]):
                return False
            pos += n
    return True


# --- feeding a tool -------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_region(src: int, dst: int, offset: int, length: int) -> None:
    """Copies a file region into a pipe with ``splice`` (no copy through Python), else ``pread``."""
    use_splice = True
    while length:
        count = min(length, _READ)
        if use_splice:
            try:
                n = os.splice(src, dst, count, offset_src=offset)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                use_splice = False
                continue
        else:
            data = os.pread(src, count, offset)
            n = len(data)
            _write_all(dst, data)
        if n == 0:
            raise ToolError(f"the image shrank while it was being compressed (at {offset})")
        offset += n
        length -= n


def _pump(src: int, pieces: Iterable[Piece], dst: int) -> None:
    for piece in pieces:
        if isinstance(piece, bytes):
            _write_all(dst, piece)
        else:
            _copy_region(src, dst, *piece)


def _run_fed(cmd: Sequence[str], src: int, pieces: Iterable[Piece], out: IO[bytes] | None) -> bytes:
    """Runs ``cmd`` with ``pieces`` piped to its stdin (a thread feeds it) and its stdout to ``out``.

    Both sides report: the tool's failure is raised by :func:`tools.run`; a failure to read the
    input (or a tool that stops reading) is raised after it even when the tool itself succeeded.
    """
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # fewer wake-ups; the default 64 KiB is fine too
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _READ)
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            _pump(src, pieces, write_end)
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)
        finally:
            os.close(write_end)

    feeder = threading.Thread(target=feed, name=f"feed-{cmd[0]}", daemon=True)
    with open(read_end, "rb", buffering=0) as reader:
        feeder.start()
        try:
            result = tools.run(cmd, stdin=reader, stdout=out)
        finally:
            reader.close()  # a feeder blocked on a full pipe now fails with EPIPE instead of hanging
            feeder.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, ToolError):
            raise exc
        if isinstance(exc, BrokenPipeError):
            raise ToolError(f"{cmd[0]} exited without reading all its input") from exc
        raise ToolError(f"feeding {cmd[0]} failed: {exc}") from exc
    return result


# --- .tar.gz --------------------------------------------------------------------------------------


def _write_tar_gz(fd: int, epoch: int, out: IO[bytes]) -> None:
    size = os.fstat(fd).st_size
    entries = sparse_map(fd, size)
    _run_fed(_command(OutFormat.TAR), fd, _tar_pieces(entries, size, epoch), out)


def sparse_map(fd: int, size: int) -> list[tuple[int, int]]:
    """GNU tar's ``--hole-detection=raw`` map: ``(offset, length)`` of each run of non-zero 512-byte blocks.

    A zero block (or zero short last block) is a hole; the map ends with ``(size, 0)`` unless the
    file ends with data, exactly as tar's raw scan builds it; holes the filesystem reports are not
    read, everything else is.
    """
    runs: list[list[int]] = []

    def data(lo: int, hi: int) -> None:
        if runs and runs[-1][1] == lo:
            runs[-1][1] = hi
        else:
            runs.append([lo, hi])

    buf = bytearray(_READ)
    scanned = 0
    for lo, hi in data_extents(fd, 0, size):
        pos = max(scanned, lo - lo % _BLOCK)
        end = min(size, -(-hi // _BLOCK) * _BLOCK)
        while pos < end:
            n = _read_at(fd, buf, pos, min(_READ, end - pos))
            _mark_blocks(buf, n, pos, data)
            pos += n
        scanned = max(scanned, end)
    entries = [(lo, hi - lo) for lo, hi in runs]
    if not entries or sum(entries[-1]) != size:
        entries.append((size, 0))
    return entries


def _mark_blocks(buf: bytearray, n: int, pos: int, data: Callable[[int, int], None]) -> None:
    """Calls ``data`` for the non-zero blocks of ``buf[:n]`` (read at ``pos``, a block boundary)."""
    full = n - n % _BLOCK
    if full == _READ:
        piece, zero = buf, buf == _ZEROS
    else:
        piece = buf[:full]
        zero = piece == _ZEROS[:full]
    if zero:
        pass
    elif piece.find(_ZERO_BLOCK) < 0:  # no 512 zero bytes in a row at all: every block is data
        data(pos, pos + full)
    else:
        for k in range(0, full, _BLOCK):
            if piece[k : k + _BLOCK] != _ZERO_BLOCK:
                data(pos + k, pos + k + _BLOCK)
    if n > full and buf[full:n] != _ZEROS[: n - full]:  # a short last block counts as it is
        data(pos + full, pos + n)


def _sparse_entries(entries: Sequence[tuple[int, int]]) -> bytes:
    """The (offset, length) pairs of a GNU sparse map, in tar's numbers (base-256 when large)."""
    return b"".join(
        tar.number(off, 12, overflow="base256") + tar.number(n, 12, overflow="base256") for off, n in entries
    )


def _tar_header(entries: Sequence[tuple[int, int]], size: int, epoch: int) -> bytes:
    """The GNU-format ``S`` header plus extension blocks, as ``tar --sparse --owner=0 --group=0
    --numeric-owner --mtime=@epoch`` writes them for ``disk.raw``."""
    stored = sum(n for _, n in entries)
    head = tar.gnu_block(tar.Member("disk.raw", _SPARSE, _TAR_MODE, stored, mtime=epoch))
    first, rest = entries[:4], entries[4:]
    head[386 : 386 + 24 * len(first)] = _sparse_entries(first)
    head[482] = 1 if rest else 0
    head[483:495] = tar.number(size, 12, overflow="base256")
    blocks = [tar.seal(head)]
    for i in range(0, len(rest), 21):
        ext = bytearray(_BLOCK)
        group = rest[i : i + 21]
        ext[0 : 24 * len(group)] = _sparse_entries(group)
        ext[504] = 1 if i + 21 < len(rest) else 0
        blocks.append(bytes(ext))
    return b"".join(blocks)


def _tar_pieces(entries: Sequence[tuple[int, int]], size: int, epoch: int) -> Iterator[Piece]:
    """The whole archive, as GNU tar 1.34 writes it: header, each data run padded to 512 bytes, two
    zero blocks, padding to a 10240-byte record. Only the image's data regions are read."""
    header = _tar_header(entries, size, epoch)
    yield header
    written = len(header)
    for offset, length in entries:
        if length:
            yield (offset, length)
            pad = tar.padding(length)
            if pad:
                yield pad
            written += length + len(pad)
    yield tar.end_of_archive(written, tar.RECORD)
