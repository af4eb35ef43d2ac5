"""``make run``'s development Secure Boot keys: made once, kept, and good enough to start a worker."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.config.options import SecureBootFileOptions, SecureBootOptions
from devstack.secureboot import development_keys
from tests.support.secureboot import assert_sbverify_ok, signing_tools, systemd_boot_efi
from worker.secureboot.config import signers_from_config

__all__ = ["signing_tools", "systemd_boot_efi"]  # fixtures


def _options(settings: dict[str, object]) -> SecureBootOptions:
    return SecureBootOptions(
        enabled=bool(settings["secureBoot.enabled"]),
        file=SecureBootFileOptions(
            signingKeyPath=str(settings["secureBoot.file.signingKeyPath"]),
            signingCertPath=str(settings["secureBoot.file.signingCertPath"]),
            pcrKeyPath=str(settings["secureBoot.file.pcrKeyPath"]),
        ),
    )


def test_keys_are_generated_once_and_kept(tmp_path: Path) -> None:
    first = development_keys(tmp_path / "sb")
    contents = {p.name: p.read_bytes() for p in (tmp_path / "sb").iterdir()}
    assert sorted(contents) == ["pcr-signing-key.pem", "uki-signing-cert.pem", "uki-signing-key.pem"]
    assert (tmp_path / "sb" / "uki-signing-key.pem").stat().st_mode & 0o077 == 0
    assert development_keys(tmp_path / "sb") == first
    assert {p.name: p.read_bytes() for p in (tmp_path / "sb").iterdir()} == contents


def test_a_worker_signs_with_them(tmp_path: Path, systemd_boot_efi: Path, signing_tools: None) -> None:
    settings = development_keys(tmp_path / "sb")
    signers = signers_from_config(_options(settings))
    assert signers.pe is not None and signers.pcr is not None
    efi = tmp_path / "systemd-bootx64.efi"
    shutil.copyfile(systemd_boot_efi, efi)
    efi.chmod(0o644)
    signers.pe.sign_pe(efi)
    assert_sbverify_ok(Path(str(settings["secureBoot.file.signingCertPath"])), efi)
