"""Overlay (single-board computer) assets from the fixture release's two overlays, read back with
independent tools (sgdisk, mtools, xfs_db, pefile, tar) — issue 20.

* ``rock64`` (``siderolabs/sbc-rockchip``, Rockchip style): ``get-options`` asks for 20480 LBAs before
  the GPT entries and two console arguments; ``install`` writes U-Boot raw at sector 64 and a device
  tree onto the ESP; its profile adds one kernel argument.
* ``rpi_generic`` (``siderolabs/sbc-raspberrypi``, Raspberry Pi style): firmware, ``config.txt`` and
  U-Boot onto the ESP; its profile picks GRUB.

Then the failure cases through the same build, and one overlay disk image through the whole stack
(API → worker → cache) compared with a direct build. About 2-3 minutes on 2 cores (seven arm64
builds, one stack).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pefile
import pytest
import requests

from common.config.options import HTTPOptions
from common.profile.model import OutputKind
from common.schematic.emit import schematic_id
from common.schematic.model import Customization, Overlay, Schematic
from common.talos.version import parse_tolerant
from devstack.release import content
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer
from tests.integration.test_disk_images import MTOOLS_ENV, Xfs, _unxz, extract
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.stack import Stack, factory_stack
from worker.imager.build import build
from worker.imager.overlay import OverlayError

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
SECTOR = 512
ARG = "test=overlay"


def schematic(name: str, image: str, **options: str) -> Schematic:
    return Schematic(
        overlay=Overlay(image=image, name=name, options=dict(options)),
        customization=Customization(extra_kernel_args=[ARG]),
    )


ROCK64 = schematic("rock64", content.ROCKCHIP_REPOSITORY)
RPI = schematic("rpi_generic", "siderolabs/sbc-raspberrypi", configTxtAppend="dtoverlay=disable-bt")


@pytest.fixture(scope="module")
def harness(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImagerHarness]:
    with imager_harness(fixture_release, tmp_path_factory.mktemp("overlay-images")) as h:
        yield h


def overlay_file(h: ImagerHarness, name: str, rel: str) -> bytes:
    """A file of the overlay image as the registry serves it (what the installer was given)."""
    ref = next(o for o in h.artifacts.official_overlays(parse_tolerant(VERSION)) if o.name == name)
    with h.artifacts.overlay(ref, "arm64") as image:
        return (image.fs / rel).read_bytes()


def unxz(src: Path, dst: Path) -> Path:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = _unxz(src, fd)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return dst


def gpt(disk: Path) -> tuple[int, list[tuple[str, int, int]]]:
    """Primary entries LBA and (label, first, last) per partition, read straight from the header."""
    with disk.open("rb") as f:
        f.seek(SECTOR)
        header = f.read(92)
        entries_lba = struct.unpack_from("<Q", header, 72)[0]
        f.seek(entries_lba * SECTOR)
        entries = f.read(128 * 128)
    parts = []
    for i in range(128):
        raw = entries[i * 128 : (i + 1) * 128]
        if raw == bytes(128):
            break
        first, last = struct.unpack_from("<QQ", raw, 32)
        parts.append((raw[56:128].decode("utf-16-le").rstrip("\0"), first, last))
    return entries_lba, parts


def sgdisk_verify(disk: Path) -> None:
    out = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True, check=True).stdout
    assert "No problems found" in out, out


def mcopy(disk: Path, offset: int, name: str, tmp: Path) -> bytes:
    dst = tmp / name.replace("/", "_")
    subprocess.run(
        ["mcopy", "-n", "-i", f"{disk}@@{offset}", f"::/{name}", str(dst)],
        check=True,
        env={**os.environ, **MTOOLS_ENV},
        capture_output=True,
    )
    return dst.read_bytes()


def mdir(disk: Path, offset: int) -> list[str]:
    out = subprocess.run(
        ["mdir", "-/", "-b", "-i", f"{disk}@@{offset}", "::"],
        check=True,
        env={**os.environ, **MTOOLS_ENV},
        capture_output=True,
        text=True,
    ).stdout
    return sorted(line.removeprefix("::/") for line in out.split() if not line.endswith("/"))


def uki_cmdline(uki: bytes) -> str:
    pe = pefile.PE(data=uki, fast_load=True)
    section = next(s for s in pe.sections if s.Name.rstrip(b"\0") == b".cmdline")
    return bytes(section.get_data()[: section.Misc_VirtualSize]).decode()


@pytest.fixture(scope="module")
def rock64_disk(harness: ImagerHarness, tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = harness.build("metal-arm64.raw.xz", VERSION, ROCK64)
    return unxz(result.path, tmp_path_factory.mktemp("rock64") / "disk.raw")


def test_rock64_partition_table_leaves_the_bootloader_gap(rock64_disk: Path) -> None:
    sgdisk_verify(rock64_disk)
    entries_lba, parts = gpt(rock64_disk)
    assert entries_lba == 2 + content.ROCKCHIP_OFFSET_LBAS
    # entries take 32 LBAs; the first partition starts on the next 1 MiB boundary after them
    first = -(-(entries_lba + 32) // 2048) * 2048
    assert [label for label, _, _ in parts] == ["EFI", "META"]  # arm64 >= 1.10: sd-boot
    assert parts[0][1] == first


def test_rock64_uboot_bytes_are_exactly_at_sector_64(harness: ImagerHarness, rock64_disk: Path) -> None:
    uboot = overlay_file(harness, "rock64", "artifacts/arm64/u-boot/rock64/u-boot-rockchip.bin")
    start = content.ROCKCHIP_UBOOT_SECTOR * SECTOR
    entries_lba, parts = gpt(rock64_disk)
    with rock64_disk.open("rb") as f:
        f.seek(2 * SECTOR)
        gap = f.read(entries_lba * SECTOR - 2 * SECTOR)
        f.seek((entries_lba + 32) * SECTOR)
        after = f.read(parts[0][1] * SECTOR - (entries_lba + 32) * SECTOR)
    rel = start - 2 * SECTOR
    assert gap[rel : rel + len(uboot)] == uboot
    assert gap[:rel] == bytes(rel) and gap[rel + len(uboot) :] == bytes(len(gap) - rel - len(uboot))
    assert after == bytes(len(after))


def test_rock64_esp_has_the_device_tree_and_the_overlay_args(
    harness: ImagerHarness, rock64_disk: Path, tmp_path: Path
) -> None:
    _, parts = gpt(rock64_disk)
    esp = parts[0][1] * SECTOR
    files = mdir(rock64_disk, esp)
    assert "dtb/rockchip/rk3328-rock64.dtb" in files
    dtb = overlay_file(harness, "rock64", "artifacts/arm64/dtb/rockchip/rk3328-rock64.dtb")
    assert mcopy(rock64_disk, esp, "dtb/rockchip/rk3328-rock64.dtb", tmp_path) == dtb
    assert sorted(f for f in files if not f.startswith("dtb/")) == [
        "EFI/Linux/Talos-v1.12.4.efi",
        "EFI/boot/BOOTAA64.efi",
        "loader/loader.conf",
    ]
    cmdline = uki_cmdline(mcopy(rock64_disk, esp, "EFI/Linux/Talos-v1.12.4.efi", tmp_path)).split()
    # get-options' console args replace the platform's; the profile's arg comes before the schematic's
    assert [a for a in cmdline if a.startswith("console=")] == list(content.ROCKCHIP_KERNEL_ARGS)
    assert cmdline.index(content.ROCKCHIP_PROFILE_ARGS[0]) < cmdline.index(ARG)


def test_rpi_firmware_lands_on_the_esp_and_grub_has_its_console(
    harness: ImagerHarness, tmp_path: Path
) -> None:
    result = harness.build("metal-arm64.raw.xz", VERSION, RPI)
    disk = unxz(result.path, tmp_path / "disk.raw")
    sgdisk_verify(disk)
    entries_lba, parts = gpt(disk)
    assert entries_lba == 2
    assert [label for label, _, _ in parts] == ["EFI", "BIOS", "BOOT", "META"]  # the profile's GRUB
    esp = parts[0][1] * SECTOR
    firmware = ["bootcode.bin", "fixup.dat", "start4.elf"]
    assert set(mdir(disk, esp)) >= {"EFI/boot/BOOTAA64.efi", "config.txt", "u-boot.bin", *firmware}
    for name in firmware:
        expected = overlay_file(harness, "rpi_generic", f"artifacts/arm64/firmware/boot/{name}")
        assert mcopy(disk, esp, name, tmp_path) == expected
    uboot = overlay_file(harness, "rpi_generic", "artifacts/arm64/u-boot/rpi_generic/u-boot.bin")
    assert mcopy(disk, esp, "u-boot.bin", tmp_path) == uboot
    assert b"kernel=u-boot.bin" in mcopy(disk, esp, "config.txt", tmp_path)
    _, first, last = parts[2]
    boot = extract(disk, first * SECTOR, (last - first + 1) * SECTOR, tmp_path / "boot.xfs")
    cfg = Xfs(boot).read("/grub/grub.cfg").decode()
    assert "console=ttyAMA0,115200" in cfg and ARG in cfg and "talos.dashboard.disabled=1" in cfg
    with disk.open("rb") as f:  # no raw writes: the gap before the first partition is all zero
        f.seek(34 * SECTOR)
        gap = parts[0][1] * SECTOR - 34 * SECTOR
        assert f.read(gap) == bytes(gap)


def test_uki_and_installer_carry_the_overlay(harness: ImagerHarness, tmp_path: Path) -> None:
    uki = harness.build("metal-arm64-uki.efi", VERSION, ROCK64)
    cmdline = uki_cmdline(uki.path.read_bytes()).split()
    assert set(content.ROCKCHIP_KERNEL_ARGS) <= set(cmdline)  # upstream #376 drops these
    assert content.ROCKCHIP_PROFILE_ARGS[0] in cmdline
    installer = harness.build("installer-arm64.tar", VERSION, ROCK64)
    names: set[str] = set()
    extra = b""
    with tarfile.open(installer.path) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=archive.extractfile(layer)) as inner:
                for member in inner.getmembers():
                    names.add(member.name)
                    if member.name == "overlay/extra-options":
                        extra = inner.extractfile(member).read()  # type: ignore[union-attr]
    assert {
        "overlay/installers/default",
        "overlay/extra-options",
        "overlay/artifacts/arm64/u-boot/rock64/u-boot-rockchip.bin",
    } <= names
    assert extra == b"{}\n"


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("fail", 502, "installer install failed (exit code 3)"),
        ("clobber", 502, "installer wrote to disk offset 0x0"),
        ("escape", 502, "installer install failed"),
        ("options", 502, "kernelArgs is not a list"),
    ],
)
def test_misbehaving_overlay_fails_the_build_and_publishes_nothing(
    harness: ImagerHarness, fault: str, status: int, message: str
) -> None:
    bad = schematic("rock64", content.ROCKCHIP_REPOSITORY, fixtureFault=fault, fixtureTarget="/root/escaped")
    plan = harness.plan("metal-arm64.raw.xz", VERSION, bad)
    with pytest.raises(OverlayError) as info:
        harness.build("metal-arm64.raw.xz", VERSION, bad, dest=f"failed-{fault}")
    assert info.value.status == status
    assert str(info.value).startswith("overlay 'rock64': ") and message in str(info.value)
    dest = harness.root / f"failed-{fault}" / plan.key
    assert not dest.exists() or list(dest.iterdir()) == []
    assert not Path("/root/escaped").exists()


def test_overlay_plan_is_keyed_by_digest_and_options(harness: ImagerHarness) -> None:
    a = harness.plan("metal-arm64.raw.xz", VERSION, ROCK64)
    b = harness.plan("metal-arm64.raw.xz", VERSION, schematic("rock64", "x", fixtureFault="fail"))
    assert a.key != b.key and a.overlay is not None and a.overlay.digest == b.overlay.digest  # type: ignore[union-attr]
    assert a.profile.output.kind is OutputKind.IMAGE


# --- the whole stack ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("overlay-stack"), redis_server, registry, fixture_release
    ) as s:
        yield s


def schematic_yaml(name: str, image: str, options: dict[str, str] | None = None) -> str:
    text = f"overlay:\n  image: {image}\n  name: {name}\n"
    if options:
        text += "  options:\n" + "".join(f"    {k}: {v}\n" for k, v in options.items())
    return text + f"customization:\n  extraKernelArgs:\n    - {ARG}\n"


def test_stack_build_equals_direct_build(stack: Stack, harness: ImagerHarness) -> None:
    sid = stack.create_schematic(schematic_yaml("rock64", content.ROCKCHIP_REPOSITORY))
    response = requests.get(f"{stack.api.url}/image/{sid}/{VERSION}/metal-arm64.raw.xz", timeout=900)
    assert response.status_code == 200, response.text
    assert sid == schematic_id(ROCK64)
    # the same plan built in this process, with the stack's external URL (it is in the initramfs)
    plan = harness.plan("metal-arm64.raw.xz", VERSION, ROCK64)
    assert response.headers["ETag"].strip('"') == plan.key
    direct = build(
        plan,
        sources=harness.artifacts,
        external_url=stack.config.get("http", {}).get("externalURL") or HTTPOptions().externalURL,
        dest=harness.root / "direct",
        scratch_root=harness.scratch,
    )
    assert response.content == direct.path.read_bytes()


def test_stack_failing_overlay_is_a_clean_error(stack: Stack) -> None:
    options = {"fixtureFault": "fail"}
    sid = stack.create_schematic(schematic_yaml("rock64", content.ROCKCHIP_REPOSITORY, options))
    response = requests.get(f"{stack.api.url}/image/{sid}/{VERSION}/metal-arm64.raw.xz", timeout=900)
    assert response.status_code == 502, response.text
    assert "overlay 'rock64'" in response.text and "exit code 3" in response.text
    # the worker's build record says failed, with no asset behind it
    records = [stack.record(k.decode().rsplit(":", 1)[1]) for k in stack.redis.scan_iter("if:build:rec:*")]
    mine = [r for r in records if json.loads(r.get("request") or "{}").get("schematic") == sid]
    assert [r["status"] for r in mine] == ["failed"], mine
