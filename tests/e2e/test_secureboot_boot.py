"""The signed UKI boots under Secure Boot firmware that trusts only our certificate, and a tampered
copy does not.

OVMF's secure-boot build (``OVMF_CODE_4M.secboot.fd``) with a variable store made by ``virt-fw-vars``
(the ``virt-firmware`` package): our certificate as PK, KEK and the only db entry, Secure Boot on.
The UKI is booted directly as ``EFI/BOOT/BOOTX64.EFI`` from an ESP; the fixture's report must say
the firmware ran in Secure Boot mode and show the schematic's (Secure Boot) command line.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common.config.options import SecureBootFileOptions, SecureBootOptions
from common.profile.enhance import enhance
from common.profile.path import parse_path
from common.profile.secureboot import secureboot_assets
from common.schematic.emit import marshal, schematic_id
from common.schematic.model import Customization, Schematic
from devstack.release.release import Release
from tests.support.imager import EXTERNAL_URL, imager_harness
from tests.support.qemu import OVMF_VARS, BootResult, Disk, boot, esp_image
from tests.support.secureboot import flip_byte, make_key_pair
from worker.imager.build import build, kernel_cmdline
from worker.secureboot.config import signers_from_config

pytestmark = pytest.mark.e2e

VERSION = "v1.12.4"
TIMEOUT = 240
OWNER = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d"  # any GUID names the owner of the enrolled certificates
SCHEMATIC = Schematic(customization=Customization(extra_kernel_args=("console=ttyS0", "image.factory=sb")))


def _vars(cert: Path, out: Path) -> Path:
    tool = shutil.which("virt-fw-vars") or str(Path(__file__).resolve().parents[2] / ".venv/bin/virt-fw-vars")
    enrol = ["--set-pk", OWNER, str(cert), "--add-kek", OWNER, str(cert), "--add-db", OWNER, str(cert)]
    subprocess.run(
        [tool, "--input", str(OVMF_VARS), "--output", str(out), *enrol, "--secure-boot"],
        check=True,
        capture_output=True,
    )
    return out


def test_signed_uki_boots_under_secure_boot_and_a_tampered_one_does_not(
    fixture_release: Release, tmp_path: Path
) -> None:
    db, pcr = make_key_pair(tmp_path, "db"), make_key_pair(tmp_path, "pcr")
    options = SecureBootOptions(
        enabled=True,
        file=SecureBootFileOptions(
            signingKeyPath=str(db.key_path), signingCertPath=str(db.cert_path), pcrKeyPath=str(pcr.key_path)
        ),
    )
    with imager_harness(fixture_release, tmp_path / "imager", SCHEMATIC) as harness:
        plan = enhance(
            parse_path("metal-amd64-secureboot-uki.efi"),
            SCHEMATIC,
            schematic_id=schematic_id(SCHEMATIC),
            schematic_yaml=marshal(SCHEMATIC),
            version=VERSION,
            catalogs=harness.artifacts,
            secureboot=secureboot_assets(options),
        )
        uki = build(
            plan,
            sources=harness.artifacts,
            external_url=EXTERNAL_URL,
            dest=tmp_path / "out",
            scratch_root=harness.scratch,
            signers=signers_from_config(options),
        ).path
    cmdline = kernel_cmdline(plan)
    assert "image.factory=sb" in cmdline
    vars_fd = _vars(db.cert_path, tmp_path / "vars.fd")

    def run(image: Path, name: str) -> BootResult:
        esp = esp_image(tmp_path / f"{name}.img", {"EFI/BOOT/BOOTX64.EFI": image})
        return boot(firmware="uefi", secure_boot=True, ovmf_vars=vars_fd, disks=[Disk(esp)], timeout=TIMEOUT)

    result = run(uki, "esp")
    assert result.report is not None and result.error is None, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.report["boot"] == "uefi" and result.report["secureboot"] is True, result.describe()
    assert result.report["cmdline"] == cmdline, result.describe()

    tampered = tmp_path / "tampered.efi"
    shutil.copyfile(uki, tampered)
    flip_byte(tampered, tampered.stat().st_size // 2)  # inside .linux/.initrd: covered by the signature
    refused = run(tampered, "tampered")
    assert refused.report is None and refused.refused is not None, refused.describe()
