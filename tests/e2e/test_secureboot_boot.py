"""Secure Boot assets boot under Secure Boot firmware, and what should not boot does not.

OVMF's secure-boot build (``OVMF_CODE_4M.secboot.fd``) in two states:

- *enforcing*, with a variable store made by ``virt-fw-vars`` (the ``virt-firmware`` package) that
  trusts only our certificate (PK, KEK and the only db entry): the signed UKI and the Secure Boot raw
  disk image boot, the fixture's report says Secure Boot is on and shows the schematic's command
  line; a UKI with one byte changed is refused;
- *setup mode* (the stock, empty ``OVMF_VARS_4M.fd``): the Secure Boot ISO's systemd-boot enrols the
  ISO's ``PK``/``KEK``/``db`` databases (``enrollKeys`` ``if-safe``: QEMU is a VM, so it does) and
  resets; started again on the same variable store, the firmware enforces and the ISO boots with
  Secure Boot on. With ``enrollKeys: off`` nothing is enrolled and the ISO boots without it.
"""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.config.options import SecureBootFileOptions, SecureBootOptions
from common.profile.model import SecureBootAssets
from common.profile.secureboot import secureboot_assets
from common.schematic.model import Customization, Schematic, SecureBoot
from devstack.release.release import Release
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.qemu import OVMF_VARS, BootResult, Disk, boot, esp_image
from tests.support.secureboot import KeyPair, flip_byte, make_key_pair
from worker.imager.build import BuildResult, kernel_cmdline
from worker.imager.signing import Signers
from worker.secureboot.config import signers_from_config

pytestmark = pytest.mark.e2e

VERSION = "v1.12.4"
TIMEOUT = 240
OWNER = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d"  # any GUID names the owner of the enrolled certificates
ARGS = ("console=ttyS0", "image.factory=sb")
SCHEMATIC = Schematic(customization=Customization(extra_kernel_args=ARGS))
ENROLL_OFF = Schematic(
    customization=Customization(extra_kernel_args=ARGS, secureboot=SecureBoot(enroll_keys="off"))
)


@dataclass
class SecureBootBuilds:
    harness: ImagerHarness
    db: KeyPair
    assets: SecureBootAssets
    signers: Signers

    def build(self, path: str, schematic: Schematic = SCHEMATIC) -> BuildResult:
        return self.harness.build(path, VERSION, schematic, secureboot=self.assets, signers=self.signers)

    def cmdline(self, path: str, schematic: Schematic = SCHEMATIC) -> str:
        return kernel_cmdline(self.harness.plan(path, VERSION, schematic, self.assets))


@pytest.fixture(scope="module")
def sb(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBootBuilds]:
    root = tmp_path_factory.mktemp("sb-e2e")
    db, pcr = make_key_pair(root, "db"), make_key_pair(root, "pcr")
    options = SecureBootOptions(
        enabled=True,
        file=SecureBootFileOptions(
            signingKeyPath=str(db.key_path), signingCertPath=str(db.cert_path), pcrKeyPath=str(pcr.key_path)
        ),
    )
    assets = secureboot_assets(options)
    assert assets is not None
    with imager_harness(fixture_release, root / "imager", SCHEMATIC) as harness:
        yield SecureBootBuilds(harness, db, assets, signers_from_config(options))


def _virt_fw_vars() -> str:
    return shutil.which("virt-fw-vars") or str(Path(__file__).resolve().parents[2] / ".venv/bin/virt-fw-vars")


def _enforcing_vars(cert: Path, out: Path) -> Path:
    enrol = ["--set-pk", OWNER, str(cert), "--add-kek", OWNER, str(cert), "--add-db", OWNER, str(cert)]
    subprocess.run(
        [_virt_fw_vars(), "--input", str(OVMF_VARS), "--output", str(out), *enrol, "--secure-boot"],
        check=True,
        capture_output=True,
    )
    return out


def _variables(vars_fd: Path, tmp: Path) -> dict[str, str]:
    """The variable store's contents as ``virt-fw-vars --output-json`` sees them: name -> data (hex)."""
    out = tmp / f"{vars_fd.name}.json"
    subprocess.run(
        [_virt_fw_vars(), "--input", str(vars_fd), "--output-json", str(out)], check=True, capture_output=True
    )
    return {v["name"]: v["data"] for v in json.loads(out.read_text())["variables"]}


def _assert_booted(result: BootResult, cmdline: str, *, secureboot: bool) -> None:
    assert result.report is not None and result.error is None, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.report["boot"] == "uefi", result.describe()
    assert result.report["secureboot"] is secureboot, result.describe()
    assert result.report["cmdline"] == cmdline, result.describe()


def test_signed_uki_boots_under_secure_boot_and_tampered_or_unsigned_ones_do_not(
    sb: SecureBootBuilds, tmp_path: Path
) -> None:
    path = "metal-amd64-secureboot-uki.efi"
    uki = sb.build(path).path
    cmdline = sb.cmdline(path)
    assert "image.factory=sb" in cmdline
    vars_fd = _enforcing_vars(sb.db.cert_path, tmp_path / "vars.fd")

    def run(image: Path, name: str) -> BootResult:
        esp = esp_image(tmp_path / f"{name}.img", {"EFI/BOOT/BOOTX64.EFI": image})
        return boot(firmware="uefi", secure_boot=True, ovmf_vars=vars_fd, disks=[Disk(esp)], timeout=TIMEOUT)

    _assert_booted(run(uki, "esp"), cmdline, secureboot=True)

    tampered = tmp_path / "tampered.efi"
    shutil.copyfile(uki, tampered)
    flip_byte(tampered, tampered.stat().st_size // 2)  # inside .linux/.initrd: covered by the signature
    refused = run(tampered, "tampered")
    assert refused.report is None and refused.refused is not None, refused.describe()

    unsigned = sb.harness.build("metal-amd64-uki.efi", VERSION, SCHEMATIC).path  # Secure Boot off
    refused = run(unsigned, "unsigned")
    assert refused.report is None and refused.refused is not None, refused.describe()


def test_secure_boot_raw_disk_boots_under_enforcing_firmware(sb: SecureBootBuilds, tmp_path: Path) -> None:
    path = "metal-amd64-secureboot.raw.xz"
    raw = tmp_path / "disk.raw"
    with lzma.open(sb.build(path).path) as src, raw.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    vars_fd = _enforcing_vars(sb.db.cert_path, tmp_path / "vars.fd")
    result = boot(firmware="uefi", secure_boot=True, ovmf_vars=vars_fd, disks=[Disk(raw)], timeout=TIMEOUT)
    _assert_booted(result, sb.cmdline(path), secureboot=True)


def test_secure_boot_iso_enrolls_its_keys_in_setup_mode_then_boots_enforcing(
    sb: SecureBootBuilds, tmp_path: Path
) -> None:
    path = "metal-amd64-secureboot.iso"
    iso = sb.build(path).path
    vars_fd = tmp_path / "vars.fd"
    shutil.copyfile(OVMF_VARS, vars_fd)  # no PK: setup mode
    assert "PK" not in _variables(vars_fd, tmp_path)

    first = boot(
        firmware="uefi", secure_boot=True, ovmf_vars=vars_fd, persist_vars=True, cdrom=iso, timeout=TIMEOUT
    )
    # systemd-boot (secure-boot-enroll if-safe, in a VM) enrols and resets: QEMU exits (-no-reboot)
    assert first.report is None and not first.timed_out and first.refused is None, first.describe()
    enrolled = _variables(vars_fd, tmp_path)
    assert {"PK", "KEK", "db"} <= set(enrolled), first.describe()
    assert sb.db.cert_der.hex() in enrolled["db"]

    second = boot(
        firmware="uefi", secure_boot=True, ovmf_vars=vars_fd, persist_vars=True, cdrom=iso, timeout=TIMEOUT
    )
    _assert_booted(second, sb.cmdline(path), secureboot=True)


def test_secure_boot_iso_with_enrollment_off_enrolls_nothing(sb: SecureBootBuilds, tmp_path: Path) -> None:
    path = "metal-amd64-secureboot.iso"
    iso = sb.build(path, ENROLL_OFF).path
    vars_fd = tmp_path / "vars.fd"
    shutil.copyfile(OVMF_VARS, vars_fd)
    result = boot(
        firmware="uefi", secure_boot=True, ovmf_vars=vars_fd, persist_vars=True, cdrom=iso, timeout=TIMEOUT
    )
    # setup mode enforces nothing: the UKI boots at once, without Secure Boot, and no key was written
    _assert_booted(result, sb.cmdline(path, ENROLL_OFF), secureboot=False)
    assert not {"PK", "KEK", "db"} & set(_variables(vars_fd, tmp_path))
