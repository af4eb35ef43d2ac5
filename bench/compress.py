"""Benchmark: chunked output compression against upstream's one-tool-per-image commands.

Builds a sparse disk-like image (default 8 GiB: GPT at the start, a 100 MiB partition with a 4 KiB
block of random data every 64 KiB, 64 KiB of metadata every GiB, backup GPT at the end; about 8 MiB
of data in all), then for each outFormat compresses a sparse copy with :func:`compress` and with
upstream's command (``siderolabs/talos@v1.14.0-rc.1:pkg/imager/post.go``), printing wall times, their
ratio and the output sizes.
"cold" is the first compression in the process (it also makes the zero-chunk streams), "warm" the
median of the others (a worker process compresses many images).

Run: .venv/bin/python -m bench.compress [--size-gib 8] [--runs 3] [--chunk-mib 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common.profile.model import OutFormat
from worker.imager import compress as compress_module
from worker.imager.compress import CHUNK_SIZE, compress

EPOCH = 1_700_000_000
GIB = 1 << 30

UPSTREAM = {
    OutFormat.XZ: "xz -0 -f -T 0 disk.raw",
    OutFormat.GZ: "pigz -6 --no-time -f disk.raw",
    OutFormat.ZSTD: "zstd -T0 --rm -18 --quiet --force -o disk.raw.zst disk.raw",
    OutFormat.TAR: (
        f"tar -cvf - -C . --sparse --sort=name --owner=0 --group=0 --numeric-owner --mtime=@{EPOCH} "
        "disk.raw 2>/dev/null | pigz -6 -f --no-time - > disk.raw.tar.gz && rm disk.raw"
    ),
}


def make_image(path: Path, size: int) -> int:
    """The disk-like sparse image; returns how many bytes of data it holds."""
    writes = [(0, 34 * 512), (size - 33 * 512, 33 * 512)]  # GPT, backup GPT
    writes += [((1 << 20) + off, 4096) for off in range(0, 100 << 20, 64 << 10)]  # the partition
    writes += [(gib, 64 << 10) for gib in range(GIB, size - GIB // 2, GIB)]  # metadata
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in writes:
            f.seek(off)
            f.write(os.urandom(n))
    return sum(n for _, n in writes)


def sparse_copy(src: Path, folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    dst = folder / "disk.raw"
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def upstream(src: Path, folder: Path, fmt: OutFormat) -> tuple[float, int]:
    sparse_copy(src, folder)
    start = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", UPSTREAM[fmt]], cwd=folder, check=True)
    seconds = time.perf_counter() - start
    return seconds, (folder / f"disk.raw{fmt.value}").stat().st_size


def ours(src: Path, folder: Path, fmt: OutFormat, chunk: int) -> tuple[float, int]:
    copy = sparse_copy(src, folder)
    start = time.perf_counter()
    out = compress(copy, fmt, epoch=EPOCH, chunk_size=chunk)
    return time.perf_counter() - start, out.stat().st_size


HEADER = ("format", "cold s", "warm s", "upstream s", "speed-up", "ours MiB", "upstream MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=8)
    parser.add_argument("--runs", type=int, default=3, help="runs of ours (upstream runs once)")
    parser.add_argument("--chunk-mib", type=int, default=CHUNK_SIZE >> 20)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--formats", default=".xz,.gz,.zst,.tar.gz")
    parser.add_argument("--no-upstream", action="store_true", help="only time ours (to tune the chunk)")
    args = parser.parse_args()
    chunk = args.chunk_mib << 20
    formats = [OutFormat(f) for f in args.formats.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-compress-", dir=args.dir) as tmp:
        root = Path(tmp)
        image = root / "image.raw"
        size = int(args.size_gib * GIB)
        data = make_image(image, size)
        print(
            f"compression benchmark: {size / GIB:g} GiB sparse image, {data / (1 << 20):.1f} MiB of data, "
            f"chunk {args.chunk_mib} MiB, {os.cpu_count()} CPUs, {args.runs} runs"
        )
        print(f"{HEADER[0]:<8}" + "".join(f" {h:>12}" for h in HEADER[1:]))
        for fmt in formats:
            compress_module._zero_streams.clear()  # cold: as the first build of a worker process
            runs = [ours(image, root / "ours", fmt, chunk) for _ in range(args.runs)]
            cold = runs[0][0]
            warm = statistics.median(r[0] for r in runs[1:]) if len(runs) > 1 else cold
            base, base_size = (0.0, 0) if args.no_upstream else upstream(image, root / "upstream", fmt)
            print(
                f"{fmt.value:<8} {cold:12.2f} {warm:12.2f} {base:12.2f} {base / warm if base else 0:11.1f}x"
                f" {runs[0][1] / (1 << 20):12.2f} {base_size / (1 << 20):12.2f}"
            )


if __name__ == "__main__":
    main()
