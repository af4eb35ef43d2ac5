"""Each ISO generator's output boots (QEMU, TCG) from CD-ROM to the fixture's report, with the exact
command line: GRUB under SeaBIOS and OVMF, hybrid under both, the sd-boot UEFI ISO under OVMF; and the
GRUB ISO written to a disk (USB stick) under OVMF, which needs its EFI image to find the ISO by UUID."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.debian import grub_dirs
from devstack.release.payload import build_payload
from tests.support.qemu import Disk, boot, qemu_available
from worker.imager.iso import IsoGenerator, IsoInputs, build_iso
from worker.imager.uki import build_uki

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 and OVMF are needed"),
]

VERSION = "v1.12.4"
EPOCH = 1700000000
#: Reaches the serial console, and carries characters GRUB's parser would eat without §6.3 quoting.
CMDLINE = "talos.platform=metal console=ttyS0 foo=bar q=a;b&c|d<e>f{g}$h"
TIMEOUT = 240  # TCG on a busy 2-core machine; a boot takes 10-25 s (sd-boot waits its 10 s timeout)


@pytest.fixture(scope="module")
def isos(tmp_path_factory: pytest.TempPathFactory) -> dict[IsoGenerator, Path]:
    root = tmp_path_factory.mktemp("iso-boot")
    payload = build_payload(VERSION, root / "payload")
    uki = root / "vmlinuz.efi"
    build_uki(
        stub=payload.systemd_stub,
        kernel=payload.vmlinuz,
        initrd=payload.initramfs,
        cmdline=CMDLINE,
        version=VERSION,
        profiles=None,  # Debian's 252 stub cannot do multi-profile UKIs
        epoch=EPOCH,
        out=uki,
    )
    pc, efi = grub_dirs()
    inputs = IsoInputs(
        arch="amd64",
        version=VERSION,
        kernel=payload.vmlinuz,
        initramfs=payload.initramfs,
        cmdline=CMDLINE,
        uki=uki,
        sd_boot=payload.systemd_boot,
        grub_dirs={"i386-pc": pc, "x86_64-efi": efi},
    )
    out = {}
    for generator in IsoGenerator:
        work = root / f"work-{generator}"
        work.mkdir()
        out[generator] = root / f"{generator}.iso"
        build_iso(generator, inputs, out[generator], workdir=work, epoch=EPOCH)
    return out


@pytest.mark.parametrize(
    ("generator", "firmware", "loader"),
    [
        (IsoGenerator.GRUB, "bios", "grub"),
        (IsoGenerator.GRUB, "uefi", "grub"),
        (IsoGenerator.HYBRID, "bios", "grub"),
        (IsoGenerator.HYBRID, "uefi", "sd-boot"),
        (IsoGenerator.UEFI, "uefi", "sd-boot"),
    ],
)
def test_iso_boots(
    generator: IsoGenerator, firmware: str, loader: str, isos: dict[IsoGenerator, Path]
) -> None:
    result = boot(cdrom=isos[generator], firmware="uefi" if firmware == "uefi" else "bios", timeout=TIMEOUT)
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    report = result.report
    assert report["errors"] == [], result.describe()
    assert report["boot"] == firmware
    assert report["version"] == VERSION
    # GRUB's x86 linux command puts BOOT_IMAGE first; the UKI's .cmdline arrives untouched
    expected = f"BOOT_IMAGE=/boot/vmlinuz {CMDLINE}" if loader == "grub" else CMDLINE
    assert report["cmdline"] == expected, result.describe()
    print(f"{generator} under {firmware}: {result.seconds:.1f} s")


def test_grub_iso_boots_from_usb_stick_under_uefi(isos: dict[IsoGenerator, Path]) -> None:
    """Written to a disk, OVMF boots the GPT EFI partition; GRUB must still find /boot/grub on the ISO."""
    disk = Disk(isos[IsoGenerator.GRUB], interface="sata")
    result = boot(disks=[disk], firmware="uefi", timeout=TIMEOUT)
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.report["boot"] == "uefi"
    assert result.report["version"] == VERSION
    assert result.report["cmdline"] == f"BOOT_IMAGE=/boot/vmlinuz {CMDLINE}", result.describe()
    print(f"grub as a disk under uefi: {result.seconds:.1f} s")
