"""The cache signing key: signs cache entries (and installer images) the way ``cosign sign --key`` does.

Upstream loads ``cache.signingKeyPath`` at start-up and refuses to run without it, so a factory
never publishes entries it cannot vouch for. Signatures are ECDSA over sha256, ASN.1 DER encoded
(what cosign stores base64-encoded in ``dev.cosignproject.cosign/signature``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import FactoryError


class SigningKeyError(FactoryError):
    """The cache signing key is missing or unusable: a start-up configuration error."""


class CacheSigner(Protocol):
    def sign(self, payload: bytes) -> bytes:
        """ECDSA (ASN.1 DER) signature over sha256(payload)."""
        ...

    def public_key_pem(self) -> bytes:
        """PKIX ``PUBLIC KEY`` PEM, served at ``/oci/cosign/signing-key.pub``."""
        ...

    def verify(self, payload: bytes, signature: bytes) -> bool: ...


class FileCacheSigner:
    """An unencrypted PEM ECDSA private key (SEC1 ``EC PRIVATE KEY`` or PKCS#8).

    Named for the cache: Secure Boot's signers (UKI and PCR keys) are another thing and live with
    the imager (``worker/imager/signing.py``)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self._public = key.public_key()
        self._public_pem = self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_path(cls, path: str | Path | None) -> FileCacheSigner:
        if not path or not str(path).strip():
            raise SigningKeyError(
                "cache.signingKeyPath is required: the PEM ECDSA private key that signs cached assets"
            )
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cache.signingKeyPath: cannot read {path}: {exc.strerror or exc}") from exc
        return cls.from_pem(pem, source=str(path))

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "PEM data") -> FileCacheSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except TypeError as exc:  # encrypted key and no password
            raise SigningKeyError(
                f"cache signing key {source} is encrypted; an unencrypted key is required"
            ) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(f"cache signing key {source} is not a PEM private key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningKeyError(
                f"cache signing key {source} is a {type(key).__name__}; an ECDSA key is required"
            )
        return cls(key)

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))

    def public_key_pem(self) -> bytes:
        return self._public_pem

    def verify(self, payload: bytes, signature: bytes) -> bool:
        try:
            self._public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def generate_key_pem(curve: ec.EllipticCurve | None = None) -> bytes:
    """A fresh unencrypted P-256 key in ``EC PRIVATE KEY`` PEM (as ``openssl ecparam -genkey`` writes)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


__all__ = ["CacheSigner", "FileCacheSigner", "SigningKeyError", "generate_key_pem"]
