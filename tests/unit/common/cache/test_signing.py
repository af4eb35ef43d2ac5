"""The cache signing key: formats accepted, errors at start-up, and signatures other tools accept."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.cache.signing import FileCacheSigner, SigningKeyError, generate_key_pem
from common.cosign.pubkey import PublicKeyCheck, load_public_key
from common.cosign.registry import simple_signing_payload
from common.cosign.types import LegacySignature
from common.errors import FactoryError

DIGEST = "sha256:" + "ab" * 32
PAYLOAD = simple_signing_payload("registry.example/ns/cache", DIGEST)


def test_generated_key_signs_and_verifies() -> None:
    pem = generate_key_pem()
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    signer = FileCacheSigner.from_pem(pem)
    signature = signer.sign(PAYLOAD)
    assert signer.verify(PAYLOAD, signature)
    assert not signer.verify(PAYLOAD + b" ", signature)
    assert not signer.verify(PAYLOAD, b"\x30\x06garbage")
    assert not FileCacheSigner.from_pem(generate_key_pem()).verify(PAYLOAD, signature)


def test_public_key_is_pkix_pem_accepted_by_the_source_verifier() -> None:
    """The same check `cosign verify --key` semantics use for source images accepts our signatures."""
    signer = FileCacheSigner.from_pem(generate_key_pem())
    pem = signer.public_key_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    PublicKeyCheck(load_public_key(pem)).verify(DIGEST, LegacySignature(PAYLOAD, signer.sign(PAYLOAD)))


def test_pkcs8_key_is_accepted(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "pkcs8.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signer = FileCacheSigner.from_path(path)
    assert signer.verify(PAYLOAD, signer.sign(PAYLOAD))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_key_and_openssl_verification(tmp_path: Path) -> None:
    """A key from `openssl ecparam -genkey` loads, and openssl verifies what it signs."""
    key = tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key)], check=True
    )
    signer = FileCacheSigner.from_path(str(key))
    (tmp_path / "pub.pem").write_bytes(signer.public_key_pem())
    (tmp_path / "payload").write_bytes(PAYLOAD)
    (tmp_path / "sig.der").write_bytes(signer.sign(PAYLOAD))
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "payload"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified OK" in result.stdout


@pytest.mark.parametrize("path", ["", "   ", None])
def test_missing_path_is_a_clear_error(path: str | None) -> None:
    with pytest.raises(SigningKeyError, match=r"cache\.signingKeyPath is required"):
        FileCacheSigner.from_path(path)


def test_unreadable_or_invalid_keys_are_factory_errors(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read"):
        FileCacheSigner.from_path(tmp_path / "absent.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        FileCacheSigner.from_path(garbage)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SigningKeyError, match="encrypted"):
        FileCacheSigner.from_path(encrypted)
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SigningKeyError, match="ECDSA key is required"):
        FileCacheSigner.from_path(rsa_key)
    assert issubclass(SigningKeyError, FactoryError)
