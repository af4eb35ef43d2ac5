"""Disk images built by the imager boot under QEMU and show what the schematic asked for.

The schematic of issue 6's proof: two extensions (a kernel module and firmware), extra kernel args
and two META values. META reaches Talos through the image's META partition (read by the fixture's
init from the virtio disk), not through the command line. Each layout boots the way a machine would
boot it: sd-boot under OVMF, GRUB from the BIOS boot partition under SeaBIOS, GRUB's EFI image under
OVMF.
"""

from __future__ import annotations

import lzma
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.schematic.model import Customization, MetaValue, Schematic
from devstack.release.release import Release
from tests.e2e.test_imager_boot import _check_report, _ok
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.qemu import Disk, boot
from worker.imager.build import kernel_cmdline
from worker.imager.cmdline import Cmdline

pytestmark = pytest.mark.e2e

TIMEOUT = 240
META = ((0x0A, '{"externalIPs":["1.2.3.4"]}'), (0x0C, "hello META"))
ARGS = ("console=ttyS0", "-consoleblank", "image.factory=test")


def schematic(bootloader: str = "", sector_size: int = 0) -> Schematic:
    return Schematic(
        customization=Customization(
            official_extensions=("siderolabs/dummy-module", "siderolabs/test-firmware"),
            extra_kernel_args=ARGS,
            meta=tuple(MetaValue(k, v) for k, v in META),
            bootloader=bootloader,
            sector_size=sector_size,
        )
    )


SCHEMATIC = schematic()
Factory = ImagerHarness


@pytest.fixture(scope="module")
def factory(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with imager_harness(fixture_release, tmp_path_factory.mktemp("disk"), SCHEMATIC) as harness:
        yield harness


def _unxz(path: Path, dest: Path) -> Path:
    with lzma.open(path) as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 8 << 20)
    return dest


def _expected_meta(dual_boot: bool) -> dict[str, str]:
    meta = {str(k): v for k, v in META}
    if dual_boot:
        meta["17"] = "dual-boot"  # DiskImageBootloader (0x11), amd64 dual-boot images from 1.10
    return meta


def _check(
    report: dict[str, Any],
    factory: Factory,
    version: str,
    cmdline: str,
    *,
    grub: bool,
    dual: bool,
    chosen: Schematic = SCHEMATIC,
) -> None:
    expected = f"BOOT_IMAGE=/A/vmlinuz {cmdline}" if grub else cmdline
    _check_report(report, factory, version, expected, chosen)
    parsed = Cmdline(cmdline)
    assert parsed.get("console") == ["ttyS0"] and parsed.get("consoleblank") is None
    assert parsed.get("image.factory") == ["test"]
    assert parsed.get("talos.environment") is None  # disk images carry META on the disk
    assert report["meta"] == _expected_meta(dual)


def test_dual_boot_raw_xz_boots_sdboot_under_ovmf_and_grub_under_seabios(
    factory: Factory, tmp_path: Path
) -> None:
    version = "v1.12.4"
    built = factory.build("metal-amd64.raw.xz", version)
    assert built.name == "metal-amd64.raw.xz"
    raw = _unxz(built.path, tmp_path / "metal-amd64.raw")
    cmdline = kernel_cmdline(factory.plan("metal-amd64.raw.xz", version))
    uefi = _ok(boot(firmware="uefi", disks=[Disk(raw)], timeout=TIMEOUT))
    assert uefi["boot"] == "uefi"
    _check(uefi, factory, version, cmdline, grub=False, dual=True)
    bios = _ok(boot(firmware="bios", disks=[Disk(raw)], timeout=TIMEOUT))
    assert bios["boot"] == "bios"
    _check(bios, factory, version, cmdline, grub=True, dual=True)


def test_grub_by_version_boots_under_seabios_and_ovmf(factory: Factory, tmp_path: Path) -> None:
    version = "v1.9.5"  # before 1.10 every image is GRUB
    built = factory.build("metal-amd64.raw.xz", version)
    raw = _unxz(built.path, tmp_path / "metal-amd64.raw")
    cmdline = kernel_cmdline(factory.plan("metal-amd64.raw.xz", version))
    bios = _ok(boot(firmware="bios", disks=[Disk(raw)], timeout=TIMEOUT))
    _check(bios, factory, version, cmdline, grub=True, dual=False)
    uefi = _ok(boot(firmware="uefi", disks=[Disk(raw)], timeout=TIMEOUT))
    assert uefi["boot"] == "uefi"
    _check(uefi, factory, version, cmdline, grub=True, dual=False)


def test_grub_chosen_by_the_schematic_boots_under_seabios(factory: Factory, tmp_path: Path) -> None:
    version = "v1.12.4"
    chosen = schematic(bootloader="grub")
    built = factory.build("metal-amd64.raw", version, chosen)
    cmdline = kernel_cmdline(factory.plan("metal-amd64.raw", version, chosen))
    bios = _ok(boot(firmware="bios", disks=[Disk(built.path)], timeout=TIMEOUT))
    _check(bios, factory, version, cmdline, grub=True, dual=False, chosen=chosen)


def test_qcow2_boots_under_ovmf(factory: Factory) -> None:
    version = "v1.12.4"
    built = factory.build("metal-amd64.qcow2", version)
    cmdline = kernel_cmdline(factory.plan("metal-amd64.qcow2", version))
    report = _ok(boot(firmware="uefi", disks=[Disk(built.path, format="qcow2")], timeout=TIMEOUT))
    _check(report, factory, version, cmdline, grub=False, dual=True)


def test_4k_sector_image_boots_under_ovmf_from_a_4k_disk(factory: Factory) -> None:
    version = "v1.12.4"
    chosen = schematic(bootloader="sd-boot", sector_size=4096)
    built = factory.build("metal-amd64.raw", version, chosen)
    cmdline = kernel_cmdline(factory.plan("metal-amd64.raw", version, chosen))
    drive = f"file={built.path},format=raw,snapshot=on,if=none,id=d4k"
    device = "virtio-blk-pci,drive=d4k,logical_block_size=4096,physical_block_size=4096"
    report = _ok(boot(firmware="uefi", extra_args=["-drive", drive, "-device", device], timeout=TIMEOUT))
    _check(report, factory, version, cmdline, grub=False, dual=False, chosen=chosen)
