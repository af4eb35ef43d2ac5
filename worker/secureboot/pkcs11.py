"""Keys in a PKCS #11 token (an HSM, a smart card, SoftHSM2), through ``python-pkcs11``.

Not in upstream Talos; configured by our ``secureBoot.pkcs11`` section (``modulePath``, ``tokenLabel``,
``pin`` or ``pinFile``, ``signingKeyLabel``, ``signingCertPath``, ``pcrKeyLabel``; wired in
:mod:`worker.secureboot.registry`). The private key object is found by its
``CKA_LABEL`` and signs in the token: ``CKM_RSA_PKCS`` over the SHA-256 ``DigestInfo`` built here (the
token never sees the data), or ``CKM_ECDSA`` over the digest (its raw ``r || s`` answer DER-encoded).
The certificate comes from a file, or else from the token's certificate object with the same label.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.types import SignMixin
from pkcs11.util.ec import encode_ec_public_key, encode_ecdsa_signature

from worker.secureboot.authenticode import digest_info
from worker.secureboot.base import (
    CertificateSigner,
    KeySigner,
    SignerError,
    hash_algorithm,
    load_certificate,
    read_certificate,
)

__all__ = ["PKCS11KeySigner", "pkcs11_pe_signer"]


class PKCS11KeySigner(KeySigner):
    """The private key labelled ``key_label`` in the token labelled ``token_label``, logged in with ``pin``
    (``None``: no login, for tokens whose keys are visible without one).

    One session is opened for the signer's life and used under a lock (PKCS #11 sessions are not
    meant to be shared between threads); :meth:`close` closes it.
    """

    def __init__(self, module_path: str | Path, token_label: str, pin: str | None, key_label: str) -> None:
        self._lock = threading.Lock()
        self._key_label = key_label
        try:
            lib = pkcs11.lib(str(module_path))
            token = lib.get_token(token_label=token_label)
            try:
                self._session = token.open(user_pin=pin or None)
            except pkcs11.UserAlreadyLoggedIn:  # another signer of this process is logged in to the token
                self._session = token.open()
        except (pkcs11.PKCS11Error, RuntimeError) as exc:
            raise SignerError(
                f"cannot open PKCS #11 token {token_label!r} with {module_path}: {exc!r}"
            ) from exc
        try:
            key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
            self._key = cast(SignMixin, key)
            self._key_type = self._key.key_type
            if self._key_type not in (KeyType.RSA, KeyType.EC):
                raise SignerError(f"PKCS #11 key {key_label!r}: unsupported key type {self._key_type!r}")
            self._public_key = self._read_public_key()
        except pkcs11.PKCS11Error as exc:
            self._session.close()
            raise SignerError(f"PKCS #11 key {key_label!r} in token {token_label!r}: {exc!r}") from exc
        except SignerError:
            self._session.close()
            raise

    def _read_public_key(self) -> bytes:
        public: Any
        try:
            public = self._session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=self._key_label)
        except pkcs11.NoSuchKey:
            public = self._key  # RSA private key objects carry the modulus and exponent too
        if self._key_type == KeyType.EC:
            if public is self._key:
                raise SignerError(f"PKCS #11 key {self._key_label!r}: no EC public key object")
            return encode_ec_public_key(public)
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        )
        return numbers.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        hash_algorithm(hash_name, digest)
        with self._lock:
            try:
                if self._key_type == KeyType.RSA:
                    data = digest_info(digest, hash_name)
                    return bytes(self._key.sign(data, mechanism=Mechanism.RSA_PKCS))
                return bytes(encode_ecdsa_signature(self._key.sign(digest, mechanism=Mechanism.ECDSA)))
            except pkcs11.PKCS11Error as exc:
                raise SignerError(f"PKCS #11 key {self._key_label!r} refused to sign: {exc!r}") from exc

    def certificate(self) -> bytes:
        """The DER value of the token's certificate object labelled like the key."""
        with self._lock:
            for obj in self._session.get_objects(
                {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: self._key_label}
            ):
                return load_certificate(bytes(obj[Attribute.VALUE]))
        raise SignerError(f"PKCS #11 token has no certificate labelled {self._key_label!r}")

    def close(self) -> None:
        with self._lock:
            self._session.close()


def pkcs11_pe_signer(
    module_path: str | Path,
    token_label: str,
    pin: str | None,
    key_label: str,
    cert_path: str | Path | None = None,
) -> CertificateSigner:
    """The ``PESigner`` for a token key; the certificate from ``cert_path``, else from the token."""
    key = PKCS11KeySigner(module_path, token_label, pin, key_label)
    try:
        cert = read_certificate(cert_path) if cert_path else key.certificate()
        return CertificateSigner(key, cert)
    except SignerError:
        key.close()
        raise
