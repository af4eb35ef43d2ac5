"""``secureBoot`` configuration → the profile's :class:`SecureBootAssets`, and the signing certificate.

The assets are what upstream puts into every Secure Boot profile
(``siderolabs/image-factory:internal/secureboot/secureboot.go``, ``NewService``): the configured key
*locations*, never the keys. They are part of the profile hash (the cache key), so they follow upstream
field for field: a file-backed factory hashes ``keyPath``/``certPath``/``pcrSigner.keyPath`` exactly as
upstream does. Both the API (to plan and key requests) and the worker (to re-plan them) compute them
from the same configuration, so they agree on every key.

The certificate is what ``GET /secureboot/signing-cert.pem`` serves and what the API checks at start-up
(upstream ``GetSecureBootSigningCert``). The API must not import the worker's signing backends, so it
is read here with :mod:`cryptography` alone; the worker validates the private keys on its side.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.config.options import SecureBootOptions
from common.errors import FactoryError
from common.profile.model import SecureBootAssets, SigningKey, SigningKeyAndCertificate

__all__ = ["SecureBootConfigError", "secureboot_assets", "signing_certificate_pem"]


class SecureBootConfigError(FactoryError):
    """``secureBoot`` is enabled but cannot be used (incomplete backend, unreadable certificate)."""

    status = 500


def secureboot_assets(options: SecureBootOptions) -> SecureBootAssets | None:
    """The assets upstream's ``NewService`` builds, in its order of backends; ``None`` when disabled.

    Raises :class:`SecureBootConfigError` when enabled without one complete backend (upstream:
    ``invalid SecureBoot configuration``).
    """
    if not options.enabled:
        return None
    f, az, aws = options.file, options.azureKeyVault, options.awsKMS
    if f.signingKeyPath and f.signingCertPath and f.pcrKeyPath:
        return SecureBootAssets(
            secure_boot_signer=SigningKeyAndCertificate(
                key_path=f.signingKeyPath, cert_path=f.signingCertPath
            ),
            pcr_signer=SigningKey(key_path=f.pcrKeyPath),
        )
    if az.url and az.certificateName and az.keyName:
        return SecureBootAssets(
            secure_boot_signer=SigningKeyAndCertificate(
                azure_vault_url=az.url, azure_certificate_id=az.certificateName
            ),
            pcr_signer=SigningKey(azure_vault_url=az.url, azure_key_id=az.keyName),
        )
    if aws.keyID and aws.pcrKeyID and aws.region and (aws.certPath or aws.certARN):
        # upstream prefers the local certificate file over the ACM ARN when both are set
        signer = SigningKeyAndCertificate(aws_region=aws.region, aws_kms_key_id=aws.keyID)
        if aws.certPath:
            signer.aws_cert_path = aws.certPath
        else:
            signer.aws_cert_arn = aws.certARN
        return SecureBootAssets(
            secure_boot_signer=signer,
            pcr_signer=SigningKey(aws_region=aws.region, aws_kms_key_id=aws.pcrKeyID),
        )
    raise SecureBootConfigError(
        "invalid SecureBoot configuration: secureBoot.enabled needs one complete backend: "
        "secureBoot.file.{signingKeyPath,signingCertPath,pcrKeyPath}, "
        "secureBoot.azureKeyVault.{url,certificateName,keyName} or "
        "secureBoot.awsKMS.{keyID,pcrKeyID,region and certPath or certARN}"
    )


def signing_certificate_pem(options: SecureBootOptions) -> bytes:
    """The PE signing certificate as PEM (``CERTIFICATE``), re-encoded from the configured file.

    Supported: ``secureBoot.file.signingCertPath`` and ``secureBoot.awsKMS.certPath``. The Azure and
    ACM certificates live in their services; this factory does not fetch them (yet) and says so.
    """
    assets = secureboot_assets(options)
    if assets is None:
        raise SecureBootConfigError("secure boot is disabled")
    signer = assets.secure_boot_signer
    setting, path = (
        ("secureBoot.file.signingCertPath", signer.cert_path)
        if signer.cert_path
        else ("secureBoot.awsKMS.certPath", signer.aws_cert_path)
    )
    if not path:
        raise SecureBootConfigError(
            "the Secure Boot signing certificate is only read from files (secureBoot.file.signingCertPath "
            "or secureBoot.awsKMS.certPath); Azure Key Vault and ACM certificates are not supported yet"
        )
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecureBootConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        cert = parse_certificate(data)
    except ValueError as exc:
        raise SecureBootConfigError(f"{setting}: {path} is not an X.509 certificate: {exc}") from exc
    return cert.public_bytes(serialization.Encoding.PEM)


def parse_certificate(data: bytes) -> x509.Certificate:
    """An X.509 certificate given as PEM or DER (both are found in the wild); ValueError otherwise.
    Shared by the API (which serves it) and the worker's signers (which sign with it)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)
