"""Benchmark: the imager's own overhead over the tools it runs (issues 5 and 6: under 20 %).

Starts a private registry, pushes the fixture release, then builds one set of assets for a
schematic with two extensions from warm inputs: ``--set boot`` (``initramfs-amd64.xz``,
``metal-amd64-uki.efi``, ``metal-amd64.iso``) or ``--set disk`` (``metal-amd64.raw.xz``,
``aws-amd64.raw.xz`` — an 11 GiB sparse disk — and ``vmware-amd64.ova``), from warm inputs
(sources already pulled and unpacked by a first build). For each asset it prints the wall
time, peak memory (this process and every tool), peak scratch disk, and the floor measured in the
same run: the wall time of every external tool invocation (timed by ``wait4``) plus a plain copy of
the bytes the imager assembles itself (the UKI's and the initramfs' concatenations). The ratio
wall/floor - 1 is our overhead.

For compressed disk images it also times upstream's own compression command (``xz -0 -T0`` etc.) on
the same uncompressed disk, the baseline our chunked compression is measured against.

Run: .venv/bin/python -m bench.imager [--set boot|disk] [--version v1.12.4] [--runs 3]
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

from common.artifacts.manager import ArtifactsManager
from common.profile.enhance import BuildPlan, enhance
from common.profile.path import parse_path
from common.schematic.emit import marshal, schematic_id
from common.schematic.model import Customization, Schematic
from devstack.release.release import build_release
from devstack.services import RegistryServer
from tests.support.artifacts import manager
from worker.imager.build import build

SCHEMATIC = Schematic(
    customization=Customization(
        official_extensions=("siderolabs/dummy-module", "siderolabs/test-firmware"),
        extra_kernel_args=("console=ttyS0",),
    )
)
ASSET_SETS = {
    "boot": ("initramfs-amd64.xz", "metal-amd64-uki.efi", "metal-amd64.iso"),
    "disk": ("metal-amd64.raw.xz", "aws-amd64.raw.xz", "vmware-amd64.ova"),
}
#: upstream's compression commands (siderolabs/talos@v1.14.0-rc.1:pkg/imager/post.go),
#: run on the uncompressed disk
UPSTREAM_COMPRESS = {
    ".xz": ["xz", "-0", "-T", "0", "-c"],
    ".zst": ["zstd", "-T0", "-18", "-c"],
    ".gz": ["pigz", "-6", "--no-time", "-c"],
}


def copy_seconds(paths: list[Path], scratch: Path) -> float:
    """Time to copy these files once: the floor for bytes we assemble in Python."""
    start = time.perf_counter()
    for i, path in enumerate(paths):
        shutil.copyfile(path, scratch / f"copy-{i}")
    return time.perf_counter() - start


def once(
    plan: BuildPlan, artifacts: ArtifactsManager, root: Path, label: str, assembled: list[Path]
) -> tuple[float, float, float, int, int]:
    """One build: (wall, floor, tool seconds, peak RSS, peak disk).

    ``assembled`` are intermediate files the imager concatenates itself (the UKI's initramfs): the
    floor includes one plain copy of each, and of the output, as ``cat`` would do it.
    """
    dest = root / "out" / label
    result = build(
        plan, sources=artifacts, external_url="http://bench/", dest=dest, scratch_root=root / "scratch"
    )
    floor = result.tool_seconds + copy_seconds([*assembled, result.path], root)
    return result.seconds, floor, result.tool_seconds, result.peak_rss, result.peak_disk


HEADER = ("asset", "wall s", "floor s", "tools s", "overhead", "peak MiB", "disk MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", default="v1.12.4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--set", choices=sorted(ASSET_SETS), default="boot")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bench-imager-") as tmp,
        RegistryServer(Path(tmp) / "registry") as reg,
    ):
        root = Path(tmp)
        release = build_release(reg.host, root / "release", namespace="fixture", versions=[args.version])
        artifacts, _ = manager(release, root / "store")
        sid = schematic_id(SCHEMATIC)
        print(
            f"imager benchmark, Talos {args.version}, schematic {sid[:12]}… (2 extensions), {args.runs} runs"
        )
        print(f"{HEADER[0]:<22}" + "".join(f" {h:>9}" for h in HEADER[1:]))
        initramfs: Path | None = None
        for path in ASSET_SETS[args.set]:
            plan = enhance(
                parse_path(path),
                SCHEMATIC,
                schematic_id=sid,
                schematic_yaml=marshal(SCHEMATIC),
                version=args.version,
                catalogs=artifacts,
            )

            # the UKI concatenates an initramfs it built first (the ISO only links it into its tree)
            assembled = [initramfs] if path.endswith("-uki.efi") and initramfs else []
            once(plan, artifacts, root, f"{path}-warm", assembled)  # warm: pulls and unpacks the sources
            runs = [once(plan, artifacts, root, f"{path}-{n}", assembled) for n in range(args.runs)]
            if path.startswith("initramfs-"):
                initramfs = next((root / "out" / f"{path}-warm").iterdir())
            wall = statistics.median(r[0] for r in runs)
            floor = statistics.median(r[1] for r in runs)
            tool = statistics.median(r[2] for r in runs)
            peak = max(r[3] for r in runs) >> 20
            disk = max(r[4] for r in runs) >> 20
            print(
                f"{path:<22} {wall:8.2f} {floor:8.2f} {tool:8.2f} {wall / floor - 1:8.1%} {peak:9d} {disk:9d}"
            )
            suffix = "." + path.rsplit(".", 1)[-1]
            if suffix in UPSTREAM_COMPRESS:
                upstream_compression(path, suffix, artifacts, root, sid, args.version, wall)


def upstream_compression(
    path: str, suffix: str, artifacts: ArtifactsManager, root: Path, sid: str, version: str, ours: float
) -> None:
    """Builds the uncompressed disk, then times upstream's compression command on it."""
    raw_path = path.removesuffix(suffix)
    plan = enhance(
        parse_path(raw_path),
        SCHEMATIC,
        schematic_id=sid,
        schematic_yaml=marshal(SCHEMATIC),
        version=version,
        catalogs=artifacts,
    )
    raw = build(
        plan,
        sources=artifacts,
        external_url="http://bench/",
        dest=root / "out" / raw_path,
        scratch_root=root / "scratch",
    )
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run([*UPSTREAM_COMPRESS[suffix], str(raw.path)], stdout=sink, check=True)
    naive = time.perf_counter() - start
    print(
        f"  {raw.size >> 20} MiB disk: upstream's `{' '.join(UPSTREAM_COMPRESS[suffix][:2])}` alone takes "
        f"{naive:.2f} s; our whole build takes {ours / naive:.2f}x that"
    )
    raw.path.unlink()


if __name__ == "__main__":
    main()
