"""``secureBoot`` configuration → the :class:`~worker.imager.signing.Signers` a worker builds with.

Upstream hands the imager the key *locations* inside the profile and the imager opens them per build
(``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile``, ``SecureBootAssets.{SecureBootSigner,PCRSigner}
.GetSigner``). Here the worker opens them once per process and hands the signing objects to
:func:`worker.imager.build.build`, so that a missing key, a certificate of another key or a PCR key
Talos cannot use stops ``image-factory worker`` at start-up (exit status 2) instead of failing every
Secure Boot build later. The backend is chosen as upstream's ``NewService`` chooses it
(``siderolabs/image-factory:internal/secureboot/secureboot.go``), via
:func:`common.profile.secureboot.secureboot_assets`, so the keys used are the ones the profile hash names.
"""

from __future__ import annotations

from common.config.options import SecureBootOptions
from common.errors import FactoryError
from common.profile.model import SecureBootAssets
from common.profile.secureboot import secureboot_assets
from worker.imager.signing import NO_SIGNERS, Signers
from worker.secureboot.base import KeySigner, SignerError
from worker.secureboot.pcr import pcrpkey_pem

__all__ = ["signers_from_config"]


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
    if assets.secure_boot_signer.key_path:
        return _file_signers(assets)
    if assets.secure_boot_signer.aws_kms_key_id:
        return _aws_signers(assets)
    raise SignerError(
        "secureBoot.azureKeyVault: Azure Key Vault signing is not supported by this factory yet"
    )


def _file_signers(assets: SecureBootAssets) -> Signers:
    from worker.secureboot.file import FileKeySigner, file_pe_signer

    sb = assets.secure_boot_signer
    try:
        pe = file_pe_signer(sb.key_path, sb.cert_path)
    except SignerError as exc:
        raise SignerError(
            f"secureBoot.file.signingKeyPath {sb.key_path} / signingCertPath {sb.cert_path}: {exc}"
        ) from exc
    try:
        pcr = FileKeySigner(assets.pcr_signer.key_path)
    except SignerError as exc:
        raise SignerError(f"secureBoot.file.pcrKeyPath {assets.pcr_signer.key_path}: {exc}") from exc
    _check_pcr_key(pcr, f"secureBoot.file.pcrKeyPath {assets.pcr_signer.key_path}")
    return Signers(pe=pe, pcr=pcr)


def _aws_signers(assets: SecureBootAssets) -> Signers:
    from worker.secureboot.aws_kms import KMSKeySigner, aws_kms_pe_signer

    sb, pcr_key = assets.secure_boot_signer, assets.pcr_signer
    try:
        pe = aws_kms_pe_signer(
            sb.aws_kms_key_id,
            sb.aws_region,
            cert_path=sb.aws_cert_path or None,
            cert_arn=sb.aws_cert_arn or None,
        )
    except SignerError as exc:
        raise SignerError(f"secureBoot.awsKMS.keyID {sb.aws_kms_key_id}: {exc}") from exc
    try:
        pcr = KMSKeySigner(pcr_key.aws_kms_key_id, pcr_key.aws_region)
    except SignerError as exc:
        raise SignerError(f"secureBoot.awsKMS.pcrKeyID {pcr_key.aws_kms_key_id}: {exc}") from exc
    _check_pcr_key(pcr, f"secureBoot.awsKMS.pcrKeyID {pcr_key.aws_kms_key_id}")
    return Signers(pe=pe, pcr=pcr)


def _check_pcr_key(key: KeySigner, setting: str) -> None:
    """Talos unseals with RSA PCR keys only (``.pcrsig`` is RSA PKCS #1 v1.5): refuse others now."""
    try:
        pcrpkey_pem(key.public_key)
    except FactoryError as exc:
        raise SignerError(f"{setting}: {exc.message}") from exc
