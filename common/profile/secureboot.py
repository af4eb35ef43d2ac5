"""``secureBoot`` configuration → the profile's :class:`SecureBootAssets`, and the signing certificate.

The assets are what upstream puts into every Secure Boot profile
(``siderolabs/image-factory:internal/secureboot/secureboot.go``, ``NewService``): the configured key
*locations*, never the keys. They are part of the profile hash (the cache key), so they follow upstream
field for field: a file-backed factory hashes ``keyPath``/``certPath``/``pcrSigner.keyPath`` exactly as
upstream does. Both the API (to plan and key requests) and the worker (to re-plan them) compute them
from the same configuration, so they agree on every key.

``secureBoot.pkcs11`` (ours) is tried only after upstream's three backends, so a configuration upstream
accepts yields upstream's assets, byte for byte. Its keys are written into the fields the file backend
uses, as RFC 7512 ``pkcs11:`` URIs (:func:`pkcs11_uri`): ``secureBootSigner.keyPath`` names the signing
key (``pkcs11:token=…;object=<signingKeyLabel>;type=private?module-path=…``), ``certPath`` the
certificate file (``signingCertPath``) or else the token's certificate object (``type=cert``), and
``pcrSigner.keyPath`` the PCR key. So the profile hash (the cache key) tells apart every module, token
and key label, as it tells apart the file backend's paths, and never contains the PIN.

The certificate is what ``GET /secureboot/signing-cert.pem`` serves and what the API checks at start-up
(upstream ``GetSecureBootSigningCert``). The API must not import the worker's signing backends, so it
is read here: files with :mod:`cryptography` alone, on every call (a rotated file is served without a
restart); certificates in ACM, Key Vault or a token through :mod:`common.profile.certificate_sources`,
once per process (upstream memoises every certificate with a ``sync.Once``; the worker also pins the
Key Vault versions it found at start-up). The worker validates the private keys on its side.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.config.options import PKCS11Options, SecureBootOptions
from common.errors import FactoryError
from common.profile import certificate_sources as sources
from common.profile.certificate_sources import CertificateSourceError, parse_certificate
from common.profile.model import SecureBootAssets, SigningKey, SigningKeyAndCertificate

__all__ = [
    "PKCS11Object",
    "SecureBootConfigError",
    "clear_certificate_cache",
    "is_pkcs11_uri",
    "parse_certificate",
    "parse_pkcs11_uri",
    "pkcs11_pin",
    "pkcs11_uri",
    "secureboot_assets",
    "signing_certificate_pem",
]


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
    p = options.pkcs11
    if p.modulePath and p.tokenLabel and p.signingKeyLabel and p.pcrKeyLabel:
        return SecureBootAssets(
            secure_boot_signer=SigningKeyAndCertificate(
                key_path=pkcs11_uri(p.modulePath, p.tokenLabel, p.signingKeyLabel, "private"),
                cert_path=p.signingCertPath
                or pkcs11_uri(p.modulePath, p.tokenLabel, p.signingKeyLabel, "cert"),
            ),
            pcr_signer=SigningKey(key_path=pkcs11_uri(p.modulePath, p.tokenLabel, p.pcrKeyLabel, "private")),
        )
    raise SecureBootConfigError(
        "invalid SecureBoot configuration: secureBoot.enabled needs one complete backend: "
        "secureBoot.file.{signingKeyPath,signingCertPath,pcrKeyPath}, "
        "secureBoot.azureKeyVault.{url,certificateName,keyName}, "
        "secureBoot.awsKMS.{keyID,pcrKeyID,region and certPath or certARN} or "
        "secureBoot.pkcs11.{modulePath,tokenLabel,signingKeyLabel,pcrKeyLabel}"
    )


# ------------------------------------------------------------------------------------- PKCS #11 URIs

#: RFC 7512 ``pk11-res-avail`` (and the unreserved characters ``quote`` keeps anyway): left as they are in
#: path attribute values; everything else is percent-encoded (``;``, ``?``, ``/``, ``%``, spaces …).
_PATH_SAFE = ":[]@!$'()*+,="
#: ``pk11-res-avail-ex``: the query may also hold ``/``, ``?`` and ``|`` (a module path keeps its slashes).
_QUERY_SAFE = _PATH_SAFE + "/?|"


@dataclass(frozen=True)
class PKCS11Object:
    """What a :func:`pkcs11_uri` names: an object (``private`` key or ``cert``) of a token of a module."""

    module_path: str
    token_label: str
    label: str
    kind: str


def pkcs11_uri(module_path: str, token_label: str, label: str, kind: str) -> str:
    """The RFC 7512 URI of the ``kind`` (``private``, ``cert``) object ``label`` in a token of a module.

    ``pkcs11:token=<token>;object=<label>;type=<kind>?module-path=<module>``: the attributes that find
    the object, never the PIN (RFC 7512 ``pin-value`` is left out: the URI goes into the profile hash).
    """
    return (
        f"pkcs11:token={quote(token_label, safe=_PATH_SAFE)};object={quote(label, safe=_PATH_SAFE)};"
        f"type={kind}?module-path={quote(module_path, safe=_QUERY_SAFE)}"
    )


def is_pkcs11_uri(value: str) -> bool:
    return value.startswith("pkcs11:")


def parse_pkcs11_uri(uri: str) -> PKCS11Object:
    """The parts of a :func:`pkcs11_uri` (ValueError for anything else)."""
    if not is_pkcs11_uri(uri):
        raise ValueError(f"not a pkcs11: URI: {uri!r}")
    path, _, query = uri.removeprefix("pkcs11:").partition("?")

    def attributes(text: str, separator: str) -> dict[str, str]:
        pairs = (item.partition("=") for item in text.split(separator) if item)
        return {unquote(name): unquote(value) for name, _, value in pairs}

    attrs, query_attrs = attributes(path, ";"), attributes(query, "&")
    try:
        return PKCS11Object(query_attrs["module-path"], attrs["token"], attrs["object"], attrs["type"])
    except KeyError as exc:
        raise ValueError(f"pkcs11: URI {uri!r} lacks {exc.args[0]}") from exc


def pkcs11_pin(options: PKCS11Options) -> str | None:
    """``secureBoot.pkcs11.pin``, else the content of ``pinFile`` (a trailing newline dropped), else None."""
    if options.pin:
        return options.pin
    if not options.pinFile:
        return None
    try:
        text = Path(options.pinFile).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise SecureBootConfigError(
            f"secureBoot.pkcs11.pinFile: cannot read {options.pinFile}: {reason}"
        ) from exc
    return text.removesuffix("\n").removesuffix("\r") or None


# ----------------------------------------------------------------------------- the signing certificate


def signing_certificate_pem(options: SecureBootOptions) -> bytes:
    """The PE signing certificate as PEM (``CERTIFICATE``), from wherever the configured backend keeps it.

    ``secureBoot.file.signingCertPath``, ``secureBoot.awsKMS.certPath`` and
    ``secureBoot.pkcs11.signingCertPath`` are read on every call; ``secureBoot.awsKMS.certARN`` (ACM),
    ``secureBoot.azureKeyVault.certificateName`` and a token's certificate object are fetched once per
    process. Raises :class:`SecureBootConfigError` naming the setting and the reason.
    """
    assets = secureboot_assets(options)
    if assets is None:
        raise SecureBootConfigError("secure boot is disabled")
    signer = assets.secure_boot_signer
    if signer.azure_vault_url:
        source: tuple[str, ...] = ("azure", signer.azure_vault_url, signer.azure_certificate_id)
        setting = f"secureBoot.azureKeyVault.certificateName {signer.azure_certificate_id}"
        return _remote_certificate_pem(source, setting)
    if signer.aws_cert_arn:
        source = ("acm", signer.aws_cert_arn, signer.aws_region)
        return _remote_certificate_pem(source, f"secureBoot.awsKMS.certARN {signer.aws_cert_arn}")
    if is_pkcs11_uri(signer.cert_path):
        obj = parse_pkcs11_uri(signer.cert_path)
        source = ("pkcs11", obj.module_path, obj.token_label, obj.label, pkcs11_pin(options.pkcs11) or "")
        return _remote_certificate_pem(source, f"secureBoot.pkcs11.signingKeyLabel {obj.label}")
    if signer.aws_cert_path:
        setting, path = "secureBoot.awsKMS.certPath", signer.aws_cert_path
    elif is_pkcs11_uri(signer.key_path):
        setting, path = "secureBoot.pkcs11.signingCertPath", signer.cert_path
    else:
        setting, path = "secureBoot.file.signingCertPath", signer.cert_path
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecureBootConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        cert = parse_certificate(data)
    except ValueError as exc:
        raise SecureBootConfigError(f"{setting}: {path} is not an X.509 certificate: {exc}") from exc
    return cert.public_bytes(serialization.Encoding.PEM)


def _remote_certificate_pem(source: tuple[str, ...], setting: str) -> bytes:
    try:
        return _fetch_certificate_pem(source)
    except CertificateSourceError as exc:
        raise SecureBootConfigError(f"{setting}: {exc}") from exc


@functools.cache
def _fetch_certificate_pem(source: tuple[str, ...]) -> bytes:
    """The PEM certificate of ``source``, fetched once per process (failures are not remembered)."""
    kind, *args = source
    if kind == "azure":
        der = sources.azure_certificate(args[0], args[1]).der
    elif kind == "acm":
        der = sources.acm_certificate(args[0], args[1] or None)
    else:
        der = sources.pkcs11_certificate(args[0], args[1], args[2], args[3] or None)
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def clear_certificate_cache() -> None:
    """Forgets the certificates fetched from ACM, Key Vault and tokens (tests; a rotation by hand)."""
    _fetch_certificate_pem.cache_clear()
