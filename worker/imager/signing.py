"""The signing services a build can be handed: Secure Boot PE signing and PCR policy signing.

Secure Boot assets need two keys upstream (``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile``,
``SecureBootAssets``; backends in ``pkg/imager/profile/internal/signer/{file,aws,azure}``): the *db*
key signs PE binaries (the kernel, the UKI, systemd-boot) with Authenticode, and the *PCR* key signs
the expected PCR 11 policy the UKI carries in ``.pcrsig`` (its public half goes into ``.pcrpkey``).
Keys may live in files, AWS KMS or Azure Key Vault, so the imager never sees them: it is handed
objects that sign. :func:`worker.imager.build.build` takes them as a :class:`Signers` argument (no
globals), and the UKI stage is where they are used (:func:`worker.imager.uki.build_uki`); a
Secure Boot build without both signers fails rather than producing an unsigned asset. The worker
opens them from the configuration once per process (:mod:`worker.secureboot.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["NO_SIGNERS", "PCRSigner", "PESigner", "Signers"]


class PESigner(Protocol):
    """Authenticode-signs PE images with the Secure Boot *db* key."""

    @property
    def certificate(self) -> bytes:
        """The DER X.509 certificate of the signing key (what firmware and the ISO's enrolment use)."""
        ...

    def sign_pe(self, path: Path) -> None:
        """Signs the PE file at ``path`` in place (its signature appended to the certificate table)."""
        ...

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        """Signs a ``digest`` made with ``hash_name`` with the same key and returns the raw signature
        (PKCS #1 v1.5 for RSA keys, a DER ``Ecdsa-Sig-Value`` for ECDSA keys): what the Secure Boot
        key enrolment databases (``PK.auth``, ``KEK.auth``, ``db.auth``) are signed with
        (:mod:`worker.secureboot.enrollment`)."""
        ...


class PCRSigner(Protocol):
    """Signs PCR policy digests with the PCR signing key."""

    @property
    def public_key(self) -> bytes:
        """The DER ``SubjectPublicKeyInfo`` of the key (the UKI's ``.pcrpkey`` section)."""
        ...

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        """Signs a ``digest`` made with ``hash_name`` (``sha256``, ``sha384`` or ``sha512``: Talos
        signs each PCR bank's policy with that bank's hash; PKCS #1 v1.5 for RSA keys) and returns
        the raw signature."""
        ...


@dataclass(frozen=True)
class Signers:
    """What a build may sign with; ``None`` means that key is not available to this build."""

    pe: PESigner | None = None
    pcr: PCRSigner | None = None


#: No signing services: every build today, and any build that does not need Secure Boot.
NO_SIGNERS = Signers()
