"""Secure Boot test helpers and fixtures (re-exported by ``tests/unit/worker/secureboot/conftest.py``):
a real systemd-boot EFI binary, keys and certificates, the Debian verifiers, byte flips.

Verification is left to independent tools: ``sbverify`` (sbsigntool) checks the signature chain and the
image hash, and ``osslsigncode verify`` prints the image hash it computes, so ours can be compared with
it. Missing tools are installed with apt-get (``devstack.services.ensure_system_packages``), never
skipped: a skip would hide a regression in CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack.certificates import self_signed
from devstack.debian import package_tree
from devstack.services import ensure_system_packages

TOOLS = {
    "sbverify": "sbsigntool",
    "sbsign": "sbsigntool",
    "osslsigncode": "osslsigncode",
    "softhsm2-util": "softhsm2",
}
SYSTEMD_BOOT = "usr/lib/systemd/boot/efi/systemd-bootx64.efi"


@pytest.fixture(scope="session")
def signing_tools() -> None:
    ensure_system_packages(TOOLS)


@pytest.fixture(scope="session")
def systemd_boot_efi() -> Path:
    """Debian's systemd-boot (the same package the fixture release's imager payload is made from)."""
    path = package_tree("systemd-boot-efi") / SYSTEMD_BOOT
    assert path.is_file(), path
    return path


@pytest.fixture
def efi(tmp_path: Path, systemd_boot_efi: Path, signing_tools: None) -> Path:
    """A private, writable copy of the unsigned systemd-boot binary."""
    target = tmp_path / "systemd-bootx64.efi"
    shutil.copyfile(systemd_boot_efi, target)
    target.chmod(0o644)
    return target


@dataclass(frozen=True)
class KeyPair:
    key_path: Path
    cert_path: Path
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def make_key_pair(
    directory: Path,
    name: str,
    kind: str = "rsa",
    key_format: serialization.PrivateFormat = serialization.PrivateFormat.TraditionalOpenSSL,
) -> KeyPair:
    """A private key and a self-signed certificate for it, as PEM files in ``directory``."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, f"test {name}")
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return KeyPair(key_path, cert_path, key, cert)


@pytest.fixture
def rsa_pair(tmp_path: Path) -> KeyPair:
    return make_key_pair(tmp_path, "db")


def write_pem_certificate(path: Path, der: bytes) -> Path:
    path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
    return path


def sbverify(cert_pem: Path, image: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sbverify", "--cert", str(cert_pem), str(image)], capture_output=True, text=True, check=False
    )


def assert_sbverify_ok(cert_pem: Path, image: Path) -> None:
    proc = sbverify(cert_pem, image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Signature verification OK" in proc.stdout


def osslsigncode_digests(image: Path, cert_pem: Path | None = None) -> tuple[str | None, str]:
    """(the digest embedded in the first signature or None, the digest osslsigncode computes)."""
    cmd = ["osslsigncode", "verify", "-in", str(image)]
    if cert_pem is not None:
        cmd += ["-CAfile", str(cert_pem)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    current = re.search(r"Current message digest\s*:\s*([0-9A-F]+)", out)
    calculated = re.search(r"Calculated message digest\s*:\s*([0-9A-F]+)", out)
    assert calculated is not None, out
    return (current.group(1).lower() if current else None), calculated.group(1).lower()


def flip_byte(image: Path, offset: int) -> None:
    with image.open("r+b") as f:
        f.seek(offset)
        value = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([value ^ 0xFF]))
