"""Public-key verification of cosign signatures (``cosign verify --key``, offline, no tlog).

sigstore-python only verifies Fulcio-certified bundles, so key-based signatures are checked here
with ``cryptography``: ECDSA and RSA (PKCS#1 v1.5, cosign's default) over the configured hash,
Ed25519 over the raw message.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from common.cosign.types import (
    BundleSignature,
    LegacySignature,
    Signature,
    SignatureError,
    check_simple_signing_payload,
)

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def load_public_key(pem: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__} (use ECDSA, RSA or Ed25519)")
    return key


class PublicKeyCheck:
    name = "public key"

    def __init__(self, key: PublicKey, hash_algo: str = "sha256") -> None:
        if hash_algo not in HASHES:
            raise ValueError(f"unsupported hash algorithm {hash_algo!r} (use one of {', '.join(HASHES)})")
        self.key = key
        self.hash = HASHES[hash_algo]

    def verify(self, digest: str, signature: Signature) -> None:
        if isinstance(signature, LegacySignature):
            self._verify_bytes(signature.signature, signature.payload)
            check_simple_signing_payload(signature.payload, digest)
        else:
            self._verify_bundle(digest, signature)

    def _verify_bytes(self, sig: bytes, message: bytes) -> None:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(sig, message, ec.ECDSA(self.hash()))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(sig, message, padding.PKCS1v15(), self.hash())
            else:
                self.key.verify(sig, message)
        except InvalidSignature as exc:
            raise SignatureError("signature does not verify with the configured public key") from exc

    def _verify_bundle(self, digest: str, signature: BundleSignature) -> None:
        try:
            bundle: dict[str, Any] = json.loads(signature.bundle)
        except ValueError as exc:
            raise SignatureError(f"signature bundle is not JSON: {exc}") from exc
        if "dsseEnvelope" in bundle:
            envelope = bundle["dsseEnvelope"]
            try:
                payload = base64.b64decode(envelope["payload"])
                payload_type = str(envelope["payloadType"])
                sigs = [base64.b64decode(s["sig"]) for s in envelope["signatures"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise SignatureError(f"malformed DSSE envelope: {exc}") from exc
            message = pae(payload_type, payload)
            errors = []
            for sig in sigs:
                try:
                    self._verify_bytes(sig, message)
                    break
                except SignatureError as exc:
                    errors.append(str(exc))
            else:
                raise SignatureError("; ".join(errors) or "DSSE envelope has no signatures")
            check_statement_subject(payload, digest)
        elif "messageSignature" in bundle:
            raise SignatureError("message-signature bundles carry no payload naming the image; not accepted")
        else:
            raise SignatureError("signature bundle has neither a DSSE envelope nor a message signature")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a DSSE signature actually signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def check_statement_subject(payload: bytes, digest: str) -> None:
    """Refuses an in-toto statement that does not list ``digest`` among its subjects."""
    try:
        statement = json.loads(payload)
        subjects = statement["subject"]
        listed = {f"{alg}:{value}" for s in subjects for alg, value in s["digest"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError(f"signed statement is not an in-toto statement: {exc}") from exc
    if digest not in listed:
        raise SignatureError(f"signed statement does not name {digest}")


def fingerprint(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]
