"""arm64 assets boot: ``qemu-system-aarch64 -M virt`` under TCG, UEFI from AAVMF (issue 20).

The fixture's arm64 payload is Debian's arm64 kernel with the same C ``init`` as amd64, cross-compiled
(``devstack/release/payload.py``), so every arm64 asset prints the same boot report. One schematic
throughout: a kernel-module extension and a firmware extension, a console replacement, a removed
default, an extra argument and two META values. Each boot costs 60-120 s of TCG on a loaded 2-core
host; the whole module about 6-8 minutes (five boots plus their builds).
"""

from __future__ import annotations

import lzma
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.schematic.emit import schematic_id
from common.schematic.model import Customization, MetaValue, Overlay, Schematic
from common.talos.version import parse_tolerant
from devstack.release import content
from devstack.release.release import Release
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.qemu import BootResult, Disk, boot, esp_image, qemu_available
from worker.imager.build import kernel_cmdline
from worker.imager.cmdline import Cmdline
from worker.imager.meta import META_ENV_VAR, decode_environment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not qemu_available("arm64"), reason="needs qemu-system-arm and qemu-efi-aarch64"),
]

VERSION = "v1.12.4"
TIMEOUT = 400
META = ((0x0A, '{"externalIPs":["1.2.3.4"]}'), (0x0C, "hello META"))
ARGS = ("console=ttyAMA0", "-consoleblank", "image.factory=arm64")
EXTENSIONS = ("siderolabs/dummy-module", "siderolabs/test-firmware")


def schematic(overlay: Overlay | None = None) -> Schematic:
    return Schematic(
        overlay=overlay or Overlay(),
        customization=Customization(
            official_extensions=EXTENSIONS,
            extra_kernel_args=ARGS,
            meta=tuple(MetaValue(k, v) for k, v in META),
        ),
    )


SCHEMATIC = schematic()


@pytest.fixture(scope="module")
def factory(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImagerHarness]:
    with imager_harness(fixture_release, tmp_path_factory.mktemp("arm64"), SCHEMATIC) as harness:
        yield harness


def _boot(**kw: Any) -> dict[str, Any]:
    result: BootResult = boot(arch="arm64", timeout=TIMEOUT, memory_mb=1024, **kw)
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.returncode == 0, result.describe()  # the guest powered itself off
    return result.report


def _check(
    report: dict[str, Any], factory: ImagerHarness, cmdline: str, chosen: Schematic = SCHEMATIC
) -> None:
    """The report of an arm64 boot: version, kernel, command line, extensions (names and versions
    from the arm64 extension images), the dummy module loaded, test-firmware's files."""
    assert report["version"] == VERSION
    with factory.artifacts.imager(parse_tolerant(VERSION)) as imager:
        assert report["kernel"].endswith("-arm64")
        assert (imager.fs / "usr/install/arm64/vmlinuz").is_file()
    assert report["cmdline"] == cmdline
    refs = {e.name: e for e in factory.artifacts.official_extensions(parse_tolerant(VERSION))}
    expected = []
    for name in EXTENSIONS:
        with factory.artifacts.image_by_digest(
            refs[name].ref.repository, refs[name].digest, "arm64"
        ) as image:
            meta = yaml.safe_load((image.fs / "manifest.yaml").read_text())["metadata"]
        expected.append((meta["name"], meta["version"]))
    expected.append(("schematic", schematic_id(chosen)))
    layers = report["extensions"]
    assert [(x["name"], x["version"]) for x in layers[:-1]] == expected
    assert layers[-1]["name"] == "modules.dep"
    assert report["modules"] == [{"name": "dummy", "loaded": True}]
    assert sorted(report["firmware"]) == [
        f"usr/lib/firmware/test-firmware/{n}" for n in ("LICENSE", "nic.bin")
    ]


def _unxz(path: Path, dest: Path) -> Path:
    with lzma.open(path) as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 8 << 20)
    return dest


def test_kernel_and_initramfs_with_extensions(factory: ImagerHarness) -> None:
    kernel = factory.build("kernel-arm64", VERSION)
    initramfs = factory.build("initramfs-arm64.xz", VERSION)
    cmdline = factory.build("cmdline-metal-arm64", VERSION).path.read_text()
    parsed = Cmdline(cmdline)
    assert parsed.get("console") == ["ttyAMA0"] and parsed.get("consoleblank") is None
    (env,) = parsed.get("talos.environment") or [""]
    assert decode_environment(env.split("=", 1)[1]) == list(META) and env.startswith(META_ENV_VAR)
    report = _boot(kernel=kernel.path, initrd=initramfs.path, append=cmdline)
    _check(report, factory, cmdline)
    assert report["boot"] == "bios"  # QEMU's direct kernel boot: no firmware


def test_uki_boots_from_an_esp_under_aavmf(factory: ImagerHarness, tmp_path: Path) -> None:
    uki = factory.build("metal-arm64-uki.efi", VERSION)
    cmdline = kernel_cmdline(factory.plan("metal-arm64-uki.efi", VERSION))
    esp = esp_image(tmp_path / "esp.img", {"EFI/BOOT/BOOTAA64.EFI": uki.path})
    report = _boot(firmware="uefi", disks=[Disk(esp)])
    assert report["boot"] == "uefi"
    _check(report, factory, cmdline)


def test_iso_boots_under_aavmf(factory: ImagerHarness) -> None:
    iso = factory.build("metal-arm64.iso", VERSION)
    cmdline = kernel_cmdline(factory.plan("metal-arm64.iso", VERSION))
    report = _boot(firmware="uefi", cdrom=iso.path)
    assert report["boot"] == "uefi"
    # the arm64 ISO of 1.12 is sd-boot (UKI); GRUB would prepend BOOT_IMAGE=
    _check(report, factory, cmdline.removeprefix("BOOT_IMAGE=/boot/vmlinuz "))
    assert Cmdline(cmdline).get("talos.halt_if_installed") == ["1"]


def test_raw_disk_boots_under_aavmf_with_meta(factory: ImagerHarness, tmp_path: Path) -> None:
    built = factory.build("metal-arm64.raw.xz", VERSION)
    raw = _unxz(built.path, tmp_path / "metal-arm64.raw")
    cmdline = kernel_cmdline(factory.plan("metal-arm64.raw.xz", VERSION))
    report = _boot(firmware="uefi", disks=[Disk(raw)])
    assert report["boot"] == "uefi"
    _check(report, factory, cmdline)
    assert report["meta"] == {str(k): v for k, v in META}  # from the disk's META partition


def test_rockchip_overlay_disk_boots_under_aavmf(factory: ImagerHarness, tmp_path: Path) -> None:
    """The overlay's U-Boot sits in the gap before the first partition and its entries moved: UEFI
    firmware still finds the ESP, and the overlay's console and profile arguments reach the kernel."""
    chosen = schematic(Overlay(image=content.ROCKCHIP_REPOSITORY, name="rock64"))
    built = factory.build("metal-arm64.raw.xz", VERSION, chosen)
    raw = _unxz(built.path, tmp_path / "rock64.raw")
    report = _boot(firmware="uefi", disks=[Disk(raw)])
    assert report["boot"] == "uefi"
    args = report["cmdline"].split()
    # the schematic's console (last) wins over the overlay's, which replaced the platform's
    assert "console=ttyAMA0" in args and content.ROCKCHIP_PROFILE_ARGS[0] in args
    assert "image.factory=arm64" in args
    _check(report, factory, report["cmdline"], chosen)
    assert report["meta"] == {str(k): v for k, v in META}
