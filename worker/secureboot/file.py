"""Keys in PEM files: ``secureBoot.file.signingKeyPath`` / ``signingCertPath`` (and ``pcrKeyPath``).

Upstream (``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile/internal/signer/file``) reads PKCS #1 RSA
keys only; this reads any unencrypted PEM private key ``cryptography`` knows (PKCS #1, PKCS #8, SEC 1)
and signs with RSA (PKCS #1 v1.5) or ECDSA keys.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from worker.secureboot.base import CertificateSigner, KeySigner, SignerError, hash_algorithm, read_certificate

__all__ = ["FileKeySigner", "file_pe_signer"]


class FileKeySigner(KeySigner):
    """An RSA or ECDSA private key read from a PEM file."""

    def __init__(self, key_path: str | Path) -> None:
        try:
            data = Path(key_path).read_bytes()
        except OSError as exc:
            raise SignerError(f"cannot read the signing key: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SignerError(f"{key_path}: not an unencrypted PEM private key: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise SignerError(f"{key_path}: unsupported key type {type(key).__name__} (RSA or ECDSA only)")
        self._key = key

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        algorithm = Prehashed(hash_algorithm(hash_name, digest))
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(digest, padding.PKCS1v15(), algorithm)
        return self._key.sign(digest, ec.ECDSA(algorithm))


def file_pe_signer(key_path: str | Path, cert_path: str | Path) -> CertificateSigner:
    """The ``PESigner`` of ``secureBoot.file``: the key at ``key_path``, the certificate at ``cert_path``."""
    return CertificateSigner(FileKeySigner(key_path), read_certificate(cert_path))
