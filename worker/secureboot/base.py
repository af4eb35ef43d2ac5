"""The two halves every backend is made of: a key that signs digests, and a certificate that names it.

:class:`KeySigner` is the primitive a backend implements (a file, a PKCS #11 token, AWS KMS): it holds
no more than a handle on a private key, and signs SHA-256 digests with it. It already has the shape of
:class:`worker.imager.signing.PCRSigner` (``public_key`` and ``sign_digest``), so the PCR policy
signing can reuse the same backends. :class:`CertificateSigner` pairs a key with its X.509
certificate and is the :class:`worker.imager.signing.PESigner` the imager is handed (upstream's
``pesign.CertificateSigner``, ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/secureboot/pesign``).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from common.profile.secureboot import parse_certificate
from worker.secureboot.authenticode import AuthenticodeError, sign_pe

if TYPE_CHECKING:
    from worker.imager.signing import PCRSigner, PESigner

__all__ = [
    "HASHES",
    "CertificateSigner",
    "KeySigner",
    "SignerError",
    "hash_algorithm",
    "load_certificate",
    "read_certificate",
]

#: The hashes a :meth:`KeySigner.sign_digest` digest may be made with (SHA-256 for Authenticode; the
#: PCR policy signs one digest per PCR bank, with the bank's hash).
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class SignerError(Exception):
    """A signing backend could not be set up or refused to sign (bad key, certificate or credentials)."""


class KeySigner(abc.ABC):
    """A private key, wherever it lives, that signs SHA-256 digests."""

    @property
    @abc.abstractmethod
    def public_key(self) -> bytes:
        """The DER ``SubjectPublicKeyInfo`` of the key."""

    @abc.abstractmethod
    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        """Signs a ``digest`` made with ``hash_name`` (a :data:`HASHES` key).

        RSA keys sign with PKCS #1 v1.5 (over the ``DigestInfo``); ECDSA keys return a DER
        ``Ecdsa-Sig-Value``.
        """

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Releases the backend's resources (sessions, clients); the signer is unusable afterwards."""


def hash_algorithm(hash_name: str, digest: bytes) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash called ``hash_name``, checked against the length of ``digest``."""
    factory = HASHES.get(hash_name)
    if factory is None:
        raise SignerError(f"unsupported hash {hash_name!r} (known: {', '.join(HASHES)})")
    algorithm = factory()
    if len(digest) != algorithm.digest_size:
        raise SignerError(f"a {hash_name} digest is {algorithm.digest_size} bytes, not {len(digest)}")
    return algorithm


def load_certificate(data: bytes) -> bytes:
    """A certificate given as PEM or DER, returned as DER."""
    try:
        cert = parse_certificate(data)
    except ValueError as exc:
        raise SignerError(f"cannot parse the signing certificate: {exc}") from exc
    return cert.public_bytes(serialization.Encoding.DER)


def read_certificate(path: str | Path) -> bytes:
    """The DER certificate in the PEM or DER file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SignerError(f"cannot read the signing certificate: {exc}") from exc
    return load_certificate(data)


class CertificateSigner:
    """A :class:`KeySigner` and its certificate: Authenticode-signs PE images (a ``PESigner``)."""

    def __init__(self, key: KeySigner, certificate: bytes) -> None:
        cert = x509.load_der_x509_certificate(certificate)
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if spki != key.public_key:
            raise SignerError("the signing certificate's public key is not the signing key's")
        self._key = key
        self._certificate = certificate

    @property
    def certificate(self) -> bytes:
        return self._certificate

    @property
    def key(self) -> KeySigner:
        return self._key

    def sign_pe(self, path: Path) -> None:
        try:
            sign_pe(path, self._certificate, self._key.sign_digest)
        except AuthenticodeError as exc:
            raise SignerError(str(exc)) from exc

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        """The key's raw signature of ``digest`` (see :meth:`KeySigner.sign_digest`)."""
        return self._key.sign_digest(digest, hash_name)

    def close(self) -> None:
        self._key.close()


if TYPE_CHECKING:  # both halves fit the imager's seam

    def _conforms(pe: CertificateSigner, pcr: KeySigner) -> tuple[PESigner, PCRSigner]:
        return pe, pcr
