"""Keys in AWS KMS: ``secureBoot.awsKMS`` (``keyID``, ``region``, ``certPath`` or ``certARN``).

As upstream (``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile/internal/signer/aws``): the digest is
sent to KMS ``Sign`` with ``MessageType=DIGEST`` and ``RSASSA_PKCS1_V1_5_SHA_256`` (RSA keys) or
``ECDSA_SHA_256`` (P-256 keys), the public key comes from ``GetPublicKey``, and the certificate from a
PEM file or from ACM (``GetCertificate``). Credentials come from boto3's usual chain.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.profile import certificate_sources
from worker.secureboot.base import CertificateSigner, KeySigner, SignerError, hash_algorithm, read_certificate

__all__ = ["KMSKeySigner", "acm_certificate", "aws_kms_pe_signer"]

_AWS_ERRORS = (BotoCoreError, ClientError)


class KMSKeySigner(KeySigner):
    """The asymmetric KMS key ``key_id`` (id, ARN or alias) in ``region``; ``client`` overrides boto3's."""

    def __init__(self, key_id: str, region: str | None = None, *, client: Any | None = None) -> None:
        self._key_id = key_id
        self._client = client if client is not None else boto3.client("kms", region_name=region or None)
        self._lock = threading.Lock()
        try:
            answer = self._client.get_public_key(KeyId=key_id)
        except _AWS_ERRORS as exc:
            raise SignerError(f"KMS key {key_id!r}: cannot read its public key: {exc}") from exc
        if answer.get("KeyUsage", "SIGN_VERIFY") != "SIGN_VERIFY":
            raise SignerError(f"KMS key {key_id!r} is not a signing key ({answer.get('KeyUsage')})")
        self._public_key = bytes(answer["PublicKey"])
        public = serialization.load_der_public_key(self._public_key)
        if isinstance(public, rsa.RSAPublicKey):
            self._family = "RSASSA_PKCS1_V1_5_SHA_"
        elif isinstance(public, ec.EllipticCurvePublicKey):
            self._family = "ECDSA_SHA_"  # KMS pairs each curve with one hash: P-256 with SHA-256 ...
        else:
            spec = answer.get("KeySpec")
            raise SignerError(f"KMS key {key_id!r}: unsupported key spec {spec} (RSA or ECC)")
        self._offered: list[str] | None = answer.get("SigningAlgorithms")
        self._algorithm("sha256")  # what Authenticode signs with

    def _algorithm(self, hash_name: str) -> str:
        algorithm = self._family + hash_name.removeprefix("sha")
        if self._offered is not None and algorithm not in self._offered:
            raise SignerError(f"KMS key {self._key_id!r} does not offer {algorithm} (offers {self._offered})")
        return algorithm

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        hash_algorithm(hash_name, digest)
        algorithm = self._algorithm(hash_name)
        try:
            with self._lock:  # boto3 clients are thread-safe; the lock only keeps one request in flight
                answer = self._client.sign(
                    KeyId=self._key_id,
                    Message=digest,
                    MessageType="DIGEST",
                    SigningAlgorithm=algorithm,
                )
        except _AWS_ERRORS as exc:
            raise SignerError(f"KMS key {self._key_id!r} refused to sign: {exc}") from exc
        return bytes(answer["Signature"])


def acm_certificate(certificate_arn: str, region: str | None = None, *, client: Any | None = None) -> bytes:
    """The DER certificate ``certificate_arn`` from ACM (``secureBoot.awsKMS.certARN``).

    The fetch is :func:`common.profile.certificate_sources.acm_certificate`, the one the API serves
    ``/secureboot/signing-cert.pem`` with.
    """
    try:
        return certificate_sources.acm_certificate(certificate_arn, region, client=client)
    except certificate_sources.CertificateSourceError as exc:
        raise SignerError(str(exc)) from exc


def aws_kms_pe_signer(
    key_id: str,
    region: str | None = None,
    cert_path: str | Path | None = None,
    cert_arn: str | None = None,
    *,
    kms_client: Any | None = None,
    acm_client: Any | None = None,
) -> CertificateSigner:
    """The ``PESigner`` of ``secureBoot.awsKMS``: the KMS key, the certificate from a file or from ACM."""
    if cert_path:
        cert = read_certificate(cert_path)
    elif cert_arn:
        cert = acm_certificate(cert_arn, region, client=acm_client)
    else:
        raise SignerError("AWS KMS signing needs a certificate: certPath or certARN")
    return CertificateSigner(KMSKeySigner(key_id, region, client=kms_client), cert)
