"""``secureBoot`` configuration → the :class:`~worker.imager.signing.Signers` a worker builds with.

Upstream hands the imager the key *locations* inside the profile and the imager opens them per build
(``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile``, ``SecureBootAssets.{SecureBootSigner,PCRSigner}
.GetSigner``). Here the worker opens them once per process and hands the signing objects to
:func:`worker.imager.build.build`, so that a missing key, a certificate of another key or a PCR key
Talos cannot use stops ``image-factory worker`` at start-up (exit status 2) instead of failing every
Secure Boot build later. The backend is chosen as upstream's ``NewService`` chooses it
(``siderolabs/image-factory:internal/secureboot/secureboot.go``; ``secureBoot.pkcs11``, ours, after
upstream's three), via :func:`common.profile.secureboot.secureboot_assets`, so the keys used are the ones
the profile hash names; the entry of :data:`worker.secureboot.registry.BACKENDS` that recognises those
assets opens them. A signer opened before a later one fails is closed again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from common.config.options import SecureBootOptions
from common.errors import FactoryError
from common.profile.secureboot import secureboot_assets
from worker.imager.signing import NO_SIGNERS, Signers
from worker.secureboot.base import CertificateSigner, KeySigner, SignerError
from worker.secureboot.pcr import pcrpkey_pem
from worker.secureboot.registry import backend_for

__all__ = ["signers_from_config"]

_Signer = TypeVar("_Signer", CertificateSigner, KeySigner)


def signers_from_config(options: SecureBootOptions) -> Signers:
    """The signers of the configured backend; :data:`NO_SIGNERS` when Secure Boot is disabled.

    Raises :class:`SignerError` with one line naming the setting and the reason (unreadable key,
    certificate not matching the signing key, non-RSA PCR key, unsupported backend).
    """
    try:
        assets = secureboot_assets(options)
    except FactoryError as exc:
        raise SignerError(exc.message) from exc
    if assets is None:
        return NO_SIGNERS
    backend = backend_for(assets)
    if backend is None:  # secureboot_assets only makes assets some backend recognises
        raise SignerError(f"secureBoot: no signing backend for {assets.to_yaml_dict()}")
    pe: CertificateSigner | None = None
    try:
        pe = _open(lambda: backend.pe_signer(assets, options), backend.pe_setting(assets))
        pcr = _open(lambda: backend.pcr_signer(assets, options), backend.pcr_setting(assets))
        try:
            _check_pcr_key(pcr, backend.pcr_setting(assets))
        except SignerError:
            pcr.close()
            raise
    except SignerError:
        if pe is not None:
            pe.close()
        raise
    return Signers(pe=pe, pcr=pcr)


def _open(make: Callable[[], _Signer], setting: str) -> _Signer:
    """``make()``, its failure made one line naming ``setting``."""
    try:
        return make()
    except FactoryError as exc:  # a setting of its own (secureBoot.pkcs11.pinFile) that could not be read
        raise SignerError(exc.message) from exc
    except SignerError as exc:
        raise SignerError(f"{setting}: {exc}") from exc


def _check_pcr_key(key: KeySigner, setting: str) -> None:
    """Talos unseals with RSA PCR keys only (``.pcrsig`` is RSA PKCS #1 v1.5): refuse others now."""
    try:
        pcrpkey_pem(key.public_key)
    except FactoryError as exc:
        raise SignerError(f"{setting}: {exc.message}") from exc
