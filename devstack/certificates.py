"""Self-signed X.509 certificates for development and test keys: ``make run``'s Secure Boot key, the
tests' signing keys and the Key Vault stand-in's certificates (its keys and its HTTPS server)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

__all__ = ["self_signed"]


def self_signed(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    valid_for: datetime.timedelta = datetime.timedelta(days=30),
    backdated: datetime.timedelta = datetime.timedelta(minutes=5),
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A certificate for ``key`` issued by itself (SHA-256), valid from ``backdated`` ago (clock skew)
    for ``valid_for``; ``extensions`` are ``(extension, critical)`` pairs."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdated)
        .not_valid_after(now + valid_for)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(key, hashes.SHA256())
