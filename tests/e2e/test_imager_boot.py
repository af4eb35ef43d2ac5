"""Assets built by the imager from a schematic boot under QEMU and show what the schematic asked for.

One schematic throughout (issue 5's proof): two official extensions, one carrying a kernel module
(dummy-module) and one firmware (test-firmware), a ``console`` replacement, a default removed with
``-``, an extra argument, and two META values. Each asset is built through the real pipeline: the
fixture release in a real registry, signature-verified pulls, enhancement, the build plan, the imager.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.schematic.emit import schematic_id
from common.schematic.model import Customization, MetaValue, Schematic
from common.talos.version import parse_tolerant
from devstack.release.release import Release
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.qemu import BootResult, Disk, boot, esp_image
from worker.imager.build import kernel_cmdline
from worker.imager.cmdline import Cmdline
from worker.imager.meta import META_ENV_VAR, decode_environment

pytestmark = pytest.mark.e2e

TIMEOUT = 240
META = ((0x0A, '{"externalIPs":["1.2.3.4"]}'), (0x0C, "hello META"))
ARGS = ("console=ttyS0", "-consoleblank", "image.factory=test")
SCHEMATIC = Schematic(
    customization=Customization(
        official_extensions=("siderolabs/dummy-module", "siderolabs/test-firmware"),
        extra_kernel_args=ARGS,
        meta=tuple(MetaValue(k, v) for k, v in META),
    )
)


Factory = ImagerHarness


@pytest.fixture(scope="module")
def factory(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with imager_harness(fixture_release, tmp_path_factory.mktemp("imager"), SCHEMATIC) as harness:
        yield harness


def _ok(result: BootResult) -> dict[str, Any]:
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.returncode == 0, result.describe()  # the guest powered itself off
    return result.report


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _firmware_dir(version: str) -> str:
    return "usr/lib/firmware" if parse_tolerant(version) >= parse_tolerant("v1.10.0") else "lib/firmware"


def _expected_extensions(
    factory: Factory, version: str, schematic: Schematic
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """What the boot report must list, computed from the extension images themselves: the extension
    layers, and the firmware files (path: sha256 of the content) the extensions carry."""
    firmware = _firmware_dir(version)
    expected = []
    firmware_files: dict[str, str] = {}
    refs = {e.name: e for e in factory.artifacts.official_extensions(parse_tolerant(version))}
    for index, name in enumerate(SCHEMATIC.customization.official_extensions):
        ref = refs[name]
        with factory.artifacts.image_by_digest(ref.ref.repository, ref.digest, "amd64") as image:
            rootfs = image.fs / "rootfs"
            files = {
                str(p.relative_to(rootfs)): _sha(p.read_bytes())
                for p in sorted(rootfs.rglob("*"))
                if p.is_file() and not str(p.relative_to(rootfs)).startswith(firmware)
            }
            firmware_files.update(
                (str(p.relative_to(rootfs)), _sha(p.read_bytes()))
                for p in sorted(rootfs.rglob("*"))
                if p.is_file() and str(p.relative_to(rootfs)).startswith(firmware + "/")
            )
            metadata = yaml.safe_load((image.fs / "manifest.yaml").read_text())["metadata"]
        expected.append(
            {
                "image": f"{index}.sqsh",
                "name": metadata["name"],
                "version": metadata["version"],
                "files": files,
            }
        )
    sid = schematic_id(schematic)
    expected.append(
        {
            "image": "2.sqsh",
            "name": "schematic",
            "version": sid,
            "files": {f"usr/local/share/schematic/{sid}": _sha(b"")},
        }
    )
    return expected, firmware_files


def _check_report(
    report: dict[str, Any], factory: Factory, version: str, cmdline: str, schematic: Schematic = SCHEMATIC
) -> None:
    assert report["version"] == version
    assert report["cmdline"] == cmdline
    layers = report["extensions"]
    expected_layers, expected_firmware = _expected_extensions(factory, version, schematic)
    assert layers[:-1] == expected_layers
    assert layers[-1]["image"] == "modules.dep.sqsh" and layers[-1]["name"] == "modules.dep"
    assert any(f.endswith("/modules.dep") for f in layers[-1]["files"])
    assert report["modules"] == [{"name": "dummy", "loaded": True}]
    # test-firmware's two files (a guard on the fixture), then the guest's firmware by content hash
    assert sorted(expected_firmware) == [
        f"{_firmware_dir(version)}/test-firmware/{n}" for n in ("LICENSE", "nic.bin")
    ]
    assert report["firmware"] == expected_firmware


def _check_cmdline(cmdline: str, version: str, *, iso: bool) -> None:
    parsed = Cmdline(cmdline)
    assert parsed.get("console") == ["ttyS0"]  # replaced wholesale, not appended
    assert parsed.get("consoleblank") is None  # removed with "-consoleblank"
    assert parsed.get("image.factory") == ["test"]
    assert parsed.get("talos.platform") == ["metal"]
    assert (parsed.get("talos.halt_if_installed") == ["1"]) is (
        iso and parse_tolerant(version) >= parse_tolerant("v1.8.0")
    )
    (env,) = parsed.get("talos.environment") or [""]
    assert env.startswith(META_ENV_VAR + "=")
    assert decode_environment(env.split("=", 1)[1]) == list(META)


# --- 1. kernel + initramfs + cmdline, booted directly -------------------------------------------


@pytest.mark.parametrize("version", ["v1.7.6", "v1.12.4"])
def test_kernel_initramfs_cmdline(factory: Factory, version: str) -> None:
    kernel = factory.build("kernel-amd64", version)
    initramfs = factory.build("initramfs-amd64.xz", version)
    cmdline = factory.build("cmdline-metal-amd64", version).path.read_text()
    _check_cmdline(cmdline, version, iso=False)
    report = _ok(boot(kernel=kernel.path, initrd=initramfs.path, append=cmdline, timeout=TIMEOUT))
    _check_report(report, factory, version, cmdline)
    assert report["boot"] == "bios"


# --- 2. ISOs, for each layout -------------------------------------------------------------------


def _iso_cmdline(factory: Factory, version: str, schematic: Schematic = SCHEMATIC) -> str:
    """The command line the ISO's boot entries carry: the cmdline asset's plus halt_if_installed."""
    return kernel_cmdline(factory.plan("metal-amd64.iso", version, schematic))


ISO_CASES = [
    # (version, schematic bootloader, firmware): GRUB ISO without label (<1.8), GRUB ISO (<1.10),
    # hybrid GRUB/sd-boot (1.10+ default), UEFI-only sd-boot (bootloader sd-boot), GRUB by choice (1.12)
    ("v1.7.6", "", "bios"),
    ("v1.9.5", "", "bios"),
    ("v1.9.5", "", "uefi"),
    ("v1.12.4", "", "bios"),
    ("v1.12.4", "", "uefi"),
    ("v1.12.4", "sd-boot", "uefi"),
    ("v1.12.4", "grub", "uefi"),
]


@pytest.mark.parametrize(("version", "bootloader", "firmware"), ISO_CASES)
def test_iso_boots(factory: Factory, version: str, bootloader: str, firmware: str) -> None:
    custom = SCHEMATIC.customization
    schematic = Schematic(
        customization=Customization(
            official_extensions=custom.official_extensions,
            extra_kernel_args=custom.extra_kernel_args,
            meta=custom.meta,
            bootloader=bootloader,
        )
    )
    iso = factory.build("metal-amd64.iso", version, schematic)
    cmdline = _iso_cmdline(factory, version, schematic)
    _check_cmdline(cmdline, version, iso=True)
    report = _ok(boot(cdrom=iso.path, firmware=firmware, timeout=TIMEOUT))  # type: ignore[arg-type]
    assert report["boot"] == firmware
    # GRUB's linux command prepends BOOT_IMAGE=<kernel path>, as on real Talos ISOs; sd-boot does not
    grub = parse_tolerant(version) < parse_tolerant("v1.10.0") or bootloader == "grub" or firmware == "bios"
    if grub:
        assert report["cmdline"].startswith("BOOT_IMAGE=/boot/vmlinuz "), report["cmdline"]
        report["cmdline"] = report["cmdline"].removeprefix("BOOT_IMAGE=/boot/vmlinuz ")
    _check_report(report, factory, version, cmdline, schematic)


# --- 3. UKI from an ESP under OVMF ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1.9.5", "v1.12.4"])
def test_uki_boots_from_an_esp(factory: Factory, version: str, tmp_path: Path) -> None:
    uki = factory.build("metal-amd64-uki.efi", version)
    plan = factory.plan("metal-amd64-uki.efi", version)
    cmdline = kernel_cmdline(plan)
    # no META in a UKI (upstream passes none), and the schematic's args only from Talos 1.10 on
    assert "talos.environment" not in cmdline
    assert ("image.factory=test" in cmdline) is (parse_tolerant(version) >= parse_tolerant("v1.10.0"))
    esp = esp_image(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": uki.path})
    report = _ok(boot(firmware="uefi", disks=[Disk(esp)], timeout=TIMEOUT))
    assert report["boot"] == "uefi"
    _check_report(report, factory, version, cmdline)
