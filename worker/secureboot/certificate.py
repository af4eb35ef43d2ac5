"""Self-signed certificates for keys that live elsewhere (a KMS key, a PKCS #11 token).

``cryptography``'s ``CertificateBuilder`` signs only with a local private key. To certify a remote key,
the TBS certificate (carrying the remote key's public key, issuer = subject) is built with
``cryptography`` and signed with a throwaway local key of the same type, so that its signature
algorithm field is the right one; the throwaway signature is then replaced by the remote key's, and the
certificate re-assembled with ``asn1crypto``. Used by the tests and useful to enrol a db key that
only exists in a KMS or an HSM.
"""

from __future__ import annotations

import datetime
import hashlib

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from worker.secureboot.base import KeySigner, SignerError

__all__ = ["self_signed_certificate"]


def self_signed_certificate(
    key: KeySigner,
    common_name: str,
    *,
    days: int = 3650,
    now: datetime.datetime | None = None,
) -> bytes:
    """A DER self-signed certificate for ``key``, signed through ``key.sign_digest`` (SHA-256)."""
    public = serialization.load_der_public_key(key.public_key)
    throwaway: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if isinstance(public, rsa.RSAPublicKey):
        throwaway = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        throwaway = ec.generate_private_key(public.curve)
    else:
        raise SignerError(f"unsupported key type {type(public).__name__} (RSA or ECDSA only)")
    start = now or datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    draft = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(throwaway, hashes.SHA256())
    )
    tbs = draft.tbs_certificate_bytes
    signature = key.sign_digest(hashlib.sha256(tbs).digest())
    draft_asn1 = asn1_x509.Certificate.load(draft.public_bytes(serialization.Encoding.DER))
    cert = asn1_x509.Certificate(
        {
            "tbs_certificate": asn1_x509.TbsCertificate.load(tbs),
            "signature_algorithm": draft_asn1["signature_algorithm"],
            "signature_value": signature,
        }
    )
    der: bytes = cert.dump()
    # Proof that the remote key made a signature its own public key verifies.
    made = x509.load_der_x509_certificate(der)
    try:
        made.verify_directly_issued_by(made)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise SignerError(f"the key's signature of the certificate does not verify: {exc!r}") from exc
    return der
