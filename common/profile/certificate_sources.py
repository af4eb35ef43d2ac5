"""Where a Secure Boot signing certificate lives when it is not a local file: ACM, Azure Key Vault, a token.

Upstream reads the certificate through the imager's signer (``GetSecureBootSigningCert`` →
``SecureBootSigner.GetSigner(ctx).Certificate()``, ``siderolabs/image-factory:internal/secureboot``):
from ACM for ``secureBoot.awsKMS.certARN`` (``siderolabs/talos:pkg/imager/profile/internal/signer/aws``)
and from Key Vault for ``secureBoot.azureKeyVault.certificateName``
(``…/signer/azure/secureboot.go``: ``GetCertificate`` of the latest version, whose ``kid`` names the key).
The API may not import the worker's signers, so the fetches live here, with the SDKs alone; the worker's
backends use them too, so both sides read the certificate the same way.

Each function raises :class:`CertificateSourceError` with one line naming what failed; callers prefix
the setting. SDKs are imported on first use: an API without Azure configured never loads them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "AzureCertificate",
    "CertificateSourceError",
    "acm_certificate",
    "azure_certificate",
    "azure_error",
    "default_azure_credential",
    "forget_azure_credential",
    "one_line",
    "parse_certificate",
    "pkcs11_certificate",
]


class CertificateSourceError(Exception):
    """A certificate could not be fetched or parsed; the message is one line."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (SDK messages span lines) made one space."""
    return " ".join(text.split())


def parse_certificate(data: bytes) -> x509.Certificate:
    """An X.509 certificate given as PEM or DER (both are found in the wild); ValueError otherwise.
    Shared by the API (which serves it) and the worker's signers (which sign with it)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _der(data: bytes, what: str) -> bytes:
    try:
        cert = parse_certificate(data)
    except ValueError as exc:
        raise CertificateSourceError(f"{what} is not an X.509 certificate: {exc}") from exc
    return cert.public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------- AWS


def acm_certificate(certificate_arn: str, region: str | None = None, *, client: Any | None = None) -> bytes:
    """The DER certificate ``certificate_arn`` from ACM ``GetCertificate`` (boto3's credential chain)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    acm = client if client is not None else boto3.client("acm", region_name=region or None)
    try:
        answer = acm.get_certificate(CertificateArn=certificate_arn)
    except (BotoCoreError, ClientError) as exc:
        raise CertificateSourceError(f"ACM certificate {certificate_arn!r}: {one_line(str(exc))}") from exc
    return _der(str(answer["Certificate"]).encode(), f"ACM certificate {certificate_arn!r}")


# -------------------------------------------------------------------------------------------- Azure


_credentials: dict[int, TokenCredential] = {}
_credentials_lock = threading.Lock()


def default_azure_credential() -> TokenCredential:
    """The process's one Azure credential (upstream's ``azureCredentialsOnce``), made on first use.

    ``DefaultAzureCredential``: the ``AZURE_TENANT_ID`` / ``AZURE_CLIENT_ID`` / ``AZURE_CLIENT_SECRET``
    (or ``AZURE_CLIENT_CERTIFICATE_PATH``) service principal, workload identity, managed identity, then
    developer logins (Azure CLI …). Upstream (``…/signer/azure/azure.go``) does not use Go's
    ``DefaultAzureCredential`` but a chain of its own: the environment service principal, then managed
    identity (or only the CLI, with ``AZURE_AUTH_METHOD=cli``); the Python default chain has those
    sources in that order, plus workload identity before managed identity and more developer logins
    after. Sovereign clouds are chosen with ``AZURE_AUTHORITY_HOST`` here (upstream reads
    ``AZURE_ENVIRONMENT``).

    One per process id: ``image-factory worker`` opens the signers before Celery forks its pool, and a
    child must not share the parent's pooled token-endpoint connections.
    """
    from azure.identity import DefaultAzureCredential

    pid = os.getpid()
    with _credentials_lock:
        credential = _credentials.get(pid)
        if credential is None:
            credential = _credentials[pid] = DefaultAzureCredential()
        return credential


def forget_azure_credential() -> None:
    """Drops the memoised credentials (tests that change the identity environment)."""
    with _credentials_lock:
        _credentials.clear()


def azure_error(exc: Exception) -> str:
    """One line for an Azure SDK error: the service's error code and message, or the SDK's text."""
    from azure.core.exceptions import HttpResponseError

    if isinstance(exc, HttpResponseError) and exc.error is not None:
        return one_line(f"{exc.status_code} {exc.error.code}: {exc.error.message}")
    return one_line(str(exc)) or type(exc).__name__


@dataclass(frozen=True)
class AzureCertificate:
    """A Key Vault certificate: its DER bytes and the key it was issued for (from its ``kid``)."""

    der: bytes
    key_name: str
    key_version: str


def azure_certificate(
    vault_url: str, name: str, version: str = "", *, credential: TokenCredential | None = None
) -> AzureCertificate:
    """The certificate ``name`` (its latest version unless ``version``) in the Key Vault ``vault_url``."""
    from azure.core.exceptions import AzureError
    from azure.keyvault.certificates import CertificateClient
    from azure.keyvault.keys import KeyVaultKeyIdentifier

    what = f"Key Vault certificate {name!r} in {vault_url}"
    try:
        client = CertificateClient(vault_url, credential or default_azure_credential())
        with client:
            if version:
                answer = client.get_certificate_version(name, version)
            else:
                answer = client.get_certificate(name)
    except (AzureError, ValueError) as exc:
        raise CertificateSourceError(f"{what}: {azure_error(exc)}") from exc
    if not answer.cer:
        raise CertificateSourceError(f"{what} has no X.509 content (cer)")
    if not answer.key_id:
        raise CertificateSourceError(f"{what} names no key (kid)")
    try:
        kid = KeyVaultKeyIdentifier(answer.key_id)
    except ValueError as exc:
        raise CertificateSourceError(f"{what}: its kid {answer.key_id!r} is not a key id: {exc}") from exc
    return AzureCertificate(_der(bytes(answer.cer), what), kid.name, kid.version or "")


# ------------------------------------------------------------------------------------------ PKCS 11


def pkcs11_certificate(module_path: str, token_label: str, label: str, pin: str | None = None) -> bytes:
    """The DER value of the certificate object labelled ``label`` in the token ``token_label``.

    Certificates are usually public objects, so the session logs in only when a ``pin`` is given.
    """
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    what = f"PKCS #11 certificate {label!r} in token {token_label!r}"
    try:
        token = pkcs11.lib(module_path).get_token(token_label=token_label)
        try:
            session = token.open(user_pin=pin or None)
        except pkcs11.UserAlreadyLoggedIn:  # a signer of this process is logged in to the token
            session = token.open()
        with session:
            found = [
                bytes(obj[Attribute.VALUE])
                for obj in session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
                )
            ]
    except (pkcs11.PKCS11Error, RuntimeError) as exc:
        raise CertificateSourceError(f"{what} with {module_path}: {exc!r}") from exc
    if not found:
        raise CertificateSourceError(f"{what}: no such certificate object")
    return _der(found[0], what)
