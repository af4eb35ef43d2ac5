"""The Secure Boot signing backends, one table entry each: how to recognise, build and name them.

:func:`worker.secureboot.config.signers_from_config` turns the configuration into the profile's
:class:`~common.profile.model.SecureBootAssets` (:func:`common.profile.secureboot.secureboot_assets`,
which picks the backend as upstream's ``NewService`` does, then ours) and walks :data:`BACKENDS` for the
entry that recognises them. An entry knows:

- ``recognise`` — whether the assets are its kind (the fields its part of ``secureboot_assets`` fills);
- ``pe_signer`` / ``pcr_signer`` — how to open the UKI/systemd-boot signer (a
  :class:`~worker.secureboot.base.CertificateSigner`) and the PCR policy key
  (a :class:`~worker.secureboot.base.KeySigner`) from the assets (and, for a token's PIN, the options);
- ``pe_setting`` / ``pcr_setting`` — the settings (and values) an error message names;
- ``constructor`` — the module and name of its public ``PESigner`` constructor, for callers that pick
  a backend by name (:func:`pe_signer`).

The backends: ``file`` (:mod:`~worker.secureboot.file`), ``azureKeyVault``
(:mod:`~worker.secureboot.azure`), ``awsKMS`` (:mod:`~worker.secureboot.aws_kms`) and ``pkcs11``
(:mod:`~worker.secureboot.pkcs11`, ours). Their modules are imported on first use, so a worker without
``python-pkcs11``'s native module, the Azure SDK or AWS access only pays for the one it is configured with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from common.config.options import SecureBootOptions
from common.profile.model import SecureBootAssets
from common.profile.secureboot import is_pkcs11_uri, parse_pkcs11_uri, pkcs11_pin
from worker.secureboot.base import CertificateSigner, KeySigner

__all__ = ["BACKENDS", "Backend", "backend_for", "constructor", "pe_signer"]


@dataclass(frozen=True)
class Backend:
    """One signing backend (see the module docstring for the fields)."""

    name: str
    recognise: Callable[[SecureBootAssets], bool]
    pe_signer: Callable[[SecureBootAssets, SecureBootOptions], CertificateSigner]
    pcr_signer: Callable[[SecureBootAssets, SecureBootOptions], KeySigner]
    pe_setting: Callable[[SecureBootAssets], str]
    pcr_setting: Callable[[SecureBootAssets], str]
    constructor: tuple[str, str]


# ------------------------------------------------------------------------------------------- file


def _file_pe(assets: SecureBootAssets, options: SecureBootOptions) -> CertificateSigner:
    from worker.secureboot.file import file_pe_signer

    return file_pe_signer(assets.secure_boot_signer.key_path, assets.secure_boot_signer.cert_path)


def _file_pcr(assets: SecureBootAssets, options: SecureBootOptions) -> KeySigner:
    from worker.secureboot.file import FileKeySigner

    return FileKeySigner(assets.pcr_signer.key_path)


# ------------------------------------------------------------------------------------------ Azure


def _azure_pe(assets: SecureBootAssets, options: SecureBootOptions) -> CertificateSigner:
    from worker.secureboot.azure import azure_key_vault_pe_signer

    sb = assets.secure_boot_signer
    return azure_key_vault_pe_signer(sb.azure_vault_url, sb.azure_certificate_id)


def _azure_pcr(assets: SecureBootAssets, options: SecureBootOptions) -> KeySigner:
    from worker.secureboot.azure import AzureKeySigner

    key = assets.pcr_signer
    return AzureKeySigner(key.azure_vault_url, key.azure_key_id, key.azure_key_version)


# -------------------------------------------------------------------------------------------- AWS


def _aws_pe(assets: SecureBootAssets, options: SecureBootOptions) -> CertificateSigner:
    from worker.secureboot.aws_kms import aws_kms_pe_signer

    sb = assets.secure_boot_signer
    return aws_kms_pe_signer(
        sb.aws_kms_key_id, sb.aws_region, cert_path=sb.aws_cert_path or None, cert_arn=sb.aws_cert_arn or None
    )


def _aws_pcr(assets: SecureBootAssets, options: SecureBootOptions) -> KeySigner:
    from worker.secureboot.aws_kms import KMSKeySigner

    return KMSKeySigner(assets.pcr_signer.aws_kms_key_id, assets.pcr_signer.aws_region)


# --------------------------------------------------------------------------------------- PKCS #11


def _pkcs11_pe(assets: SecureBootAssets, options: SecureBootOptions) -> CertificateSigner:
    from worker.secureboot.pkcs11 import pkcs11_pe_signer

    sb = assets.secure_boot_signer
    key = parse_pkcs11_uri(sb.key_path)
    cert_path = None if is_pkcs11_uri(sb.cert_path) else sb.cert_path
    return pkcs11_pe_signer(
        key.module_path, key.token_label, pkcs11_pin(options.pkcs11), key.label, cert_path=cert_path
    )


def _pkcs11_pcr(assets: SecureBootAssets, options: SecureBootOptions) -> KeySigner:
    from worker.secureboot.pkcs11 import PKCS11KeySigner

    key = parse_pkcs11_uri(assets.pcr_signer.key_path)
    return PKCS11KeySigner(key.module_path, key.token_label, pkcs11_pin(options.pkcs11), key.label)


def _pkcs11_pe_setting(assets: SecureBootAssets) -> str:
    key = parse_pkcs11_uri(assets.secure_boot_signer.key_path)
    cert = assets.secure_boot_signer.cert_path
    where = f"signingCertPath {cert}" if not is_pkcs11_uri(cert) else "its certificate object"
    return (
        f"secureBoot.pkcs11.signingKeyLabel {key.label} (token {key.token_label!r}, module {key.module_path})"
        f" / {where}"
    )


def _pkcs11_pcr_setting(assets: SecureBootAssets) -> str:
    key = parse_pkcs11_uri(assets.pcr_signer.key_path)
    return f"secureBoot.pkcs11.pcrKeyLabel {key.label} (token {key.token_label!r}, module {key.module_path})"


#: Every backend, in the order ``secureboot_assets`` prefers them (upstream's three, then ours).
BACKENDS: Mapping[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            name="file",
            recognise=lambda a: (
                bool(a.secure_boot_signer.key_path) and not is_pkcs11_uri(a.secure_boot_signer.key_path)
            ),
            pe_signer=_file_pe,
            pcr_signer=_file_pcr,
            pe_setting=lambda a: (
                f"secureBoot.file.signingKeyPath {a.secure_boot_signer.key_path}"
                f" / signingCertPath {a.secure_boot_signer.cert_path}"
            ),
            pcr_setting=lambda a: f"secureBoot.file.pcrKeyPath {a.pcr_signer.key_path}",
            constructor=("worker.secureboot.file", "file_pe_signer"),
        ),
        Backend(
            name="azureKeyVault",
            recognise=lambda a: bool(a.secure_boot_signer.azure_vault_url),
            pe_signer=_azure_pe,
            pcr_signer=_azure_pcr,
            pe_setting=lambda a: (
                f"secureBoot.azureKeyVault.certificateName {a.secure_boot_signer.azure_certificate_id}"
                f" (vault {a.secure_boot_signer.azure_vault_url})"
            ),
            pcr_setting=lambda a: (
                f"secureBoot.azureKeyVault.keyName {a.pcr_signer.azure_key_id}"
                f" (vault {a.pcr_signer.azure_vault_url})"
            ),
            constructor=("worker.secureboot.azure", "azure_key_vault_pe_signer"),
        ),
        Backend(
            name="awsKMS",
            recognise=lambda a: bool(a.secure_boot_signer.aws_kms_key_id),
            pe_signer=_aws_pe,
            pcr_signer=_aws_pcr,
            pe_setting=lambda a: f"secureBoot.awsKMS.keyID {a.secure_boot_signer.aws_kms_key_id}",
            pcr_setting=lambda a: f"secureBoot.awsKMS.pcrKeyID {a.pcr_signer.aws_kms_key_id}",
            constructor=("worker.secureboot.aws_kms", "aws_kms_pe_signer"),
        ),
        Backend(
            name="pkcs11",
            recognise=lambda a: is_pkcs11_uri(a.secure_boot_signer.key_path),
            pe_signer=_pkcs11_pe,
            pcr_signer=_pkcs11_pcr,
            pe_setting=_pkcs11_pe_setting,
            pcr_setting=_pkcs11_pcr_setting,
            constructor=("worker.secureboot.pkcs11", "pkcs11_pe_signer"),
        ),
    )
}


def backend_for(assets: SecureBootAssets) -> Backend | None:
    """The backend whose kind of assets these are; None for assets no backend here signs with."""
    return next((b for b in BACKENDS.values() if b.recognise(assets)), None)


def constructor(backend: str) -> Callable[..., CertificateSigner]:
    """The public ``PESigner`` constructor of the named backend (``KeyError`` for an unknown name)."""
    module, name = BACKENDS[backend].constructor
    factory: Callable[..., CertificateSigner] = getattr(importlib.import_module(module), name)
    return factory


def pe_signer(backend: str, **kwargs: Any) -> CertificateSigner:
    """A PE signer of the named backend, built from its constructor's keyword arguments."""
    return constructor(backend)(**kwargs)
