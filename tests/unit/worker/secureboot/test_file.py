"""The file backend (``secureBoot.file``): PEM keys and certificates, RSA and ECDSA."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.support.secureboot import (
    KeyPair,
    assert_sbverify_ok,
    flip_byte,
    make_key_pair,
    sbverify,
)
from worker.imager.signing import PCRSigner, PESigner, Signers
from worker.secureboot.authenticode import read_layout
from worker.secureboot.base import SignerError
from worker.secureboot.file import FileKeySigner, file_pe_signer
from worker.secureboot.registry import BACKENDS, pe_signer


@pytest.mark.parametrize(
    ("kind", "key_format"),
    [
        ("rsa", serialization.PrivateFormat.TraditionalOpenSSL),  # PKCS #1, what upstream reads
        ("rsa", serialization.PrivateFormat.PKCS8),
        ("ec", serialization.PrivateFormat.TraditionalOpenSSL),  # SEC 1
        ("ec", serialization.PrivateFormat.PKCS8),
    ],
)
def test_signs_and_sbverify_accepts(
    efi: Path, tmp_path: Path, kind: str, key_format: serialization.PrivateFormat
) -> None:
    pair = make_key_pair(tmp_path, "db", kind, key_format)
    signer = file_pe_signer(pair.key_path, pair.cert_path)
    assert signer.certificate == pair.cert_der
    signer.sign_pe(efi)
    assert_sbverify_ok(pair.cert_path, efi)
    flip_byte(efi, read_layout(efi).sections[-1][0])
    assert sbverify(pair.cert_path, efi).returncode != 0


def test_fits_the_imager_seam(efi: Path, rsa_pair: KeyPair) -> None:
    signer = file_pe_signer(rsa_pair.key_path, rsa_pair.cert_path)
    pe: PESigner = signer
    pcr: PCRSigner = signer.key
    signers = Signers(pe=pe, pcr=pcr)
    assert signers.pe is signer
    public = serialization.load_der_public_key(pcr.public_key)
    assert isinstance(public, rsa.RSAPublicKey)
    digest = hashlib.sha256(b"policy").digest()
    public.verify(pcr.sign_digest(digest), digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_sign_digest_with_each_hash(tmp_path: Path, kind: str, hash_name: str) -> None:
    pair = make_key_pair(tmp_path, "k", kind)
    key = FileKeySigner(pair.key_path)
    algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[hash_name]
    digest = hashlib.new(hash_name, b"data").digest()
    signature = key.sign_digest(digest, hash_name)
    public = pair.key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, digest, padding.PKCS1v15(), Prehashed(algorithm))
    else:
        public.verify(signature, digest, ec.ECDSA(Prehashed(algorithm)))
    with pytest.raises(SignerError):
        key.sign_digest(digest[:-1], hash_name)
    with pytest.raises(SignerError):
        key.sign_digest(digest, "md5")


def test_a_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    one, other = make_key_pair(tmp_path, "one"), make_key_pair(tmp_path, "other")
    with pytest.raises(SignerError, match="public key is not the signing key"):
        file_pe_signer(one.key_path, other.cert_path)


def test_a_der_certificate_is_accepted(efi: Path, rsa_pair: KeyPair, tmp_path: Path) -> None:
    der = tmp_path / "db.der"
    der.write_bytes(rsa_pair.cert_der)
    file_pe_signer(rsa_pair.key_path, der).sign_pe(efi)
    assert_sbverify_ok(rsa_pair.cert_path, efi)


def test_unusable_keys_are_refused(tmp_path: Path, rsa_pair: KeyPair) -> None:
    with pytest.raises(SignerError, match="cannot read"):
        FileKeySigner(tmp_path / "missing.key")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        rsa_pair.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SignerError, match="unencrypted"):
        FileKeySigner(encrypted)
    edwards = tmp_path / "ed25519.key"
    edwards.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SignerError, match="unsupported key type"):
        FileKeySigner(edwards)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(SignerError, match="certificate"):
        file_pe_signer(rsa_pair.key_path, garbage)


def test_registry(efi: Path, rsa_pair: KeyPair) -> None:
    assert list(BACKENDS) == ["file", "azureKeyVault", "awsKMS", "pkcs11"]  # secureboot_assets' order
    signer = pe_signer("file", key_path=rsa_pair.key_path, cert_path=rsa_pair.cert_path)
    signer.sign_pe(efi)
    assert_sbverify_ok(rsa_pair.cert_path, efi)
    with pytest.raises(KeyError):
        pe_signer("signerd")
