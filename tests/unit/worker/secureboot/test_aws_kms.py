"""The AWS KMS backend (``secureBoot.awsKMS``) against moto's in-process KMS and ACM
(``tests/support/aws_kms.py``: the ``kms`` fixture, which signs digests as real KMS does)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.support.aws_kms import KMS, REGION
from tests.support.secureboot import (
    assert_sbverify_ok,
    flip_byte,
    make_key_pair,
    sbverify,
    write_pem_certificate,
)
from worker.secureboot.authenticode import read_layout
from worker.secureboot.aws_kms import KMSKeySigner, acm_certificate, aws_kms_pe_signer
from worker.secureboot.base import SignerError
from worker.secureboot.certificate import self_signed_certificate


def _certificate(tmp_path: Path, kms: KMS, key_id: str) -> Path:
    key = KMSKeySigner(key_id, client=kms.client)
    return write_pem_certificate(tmp_path / f"{key_id}.pem", self_signed_certificate(key, "KMS db"))


@pytest.mark.parametrize(
    ("spec", "algorithm"), [("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"), ("ECC_NIST_P256", "ECDSA_SHA_256")]
)
def test_signs_and_sbverify_accepts(efi: Path, tmp_path: Path, kms: KMS, spec: str, algorithm: str) -> None:
    key_id = kms.key(spec)
    cert = _certificate(tmp_path, kms, key_id)
    signer = aws_kms_pe_signer(key_id, REGION, cert_path=cert, kms_client=kms.client)
    signer.sign_pe(efi)
    assert_sbverify_ok(cert, efi)
    assert kms.requests and all(
        r["MessageType"] == "DIGEST" and r["SigningAlgorithm"] == algorithm and len(r["Message"]) == 32
        for r in kms.requests
    )
    flip_byte(efi, read_layout(efi).sections[0][0] + 7)
    assert sbverify(cert, efi).returncode != 0


def test_default_client_from_the_region(efi: Path, tmp_path: Path, kms: KMS) -> None:
    """Without an injected client, boto3's own (credentials from its chain, the configured region)."""
    key_id = kms.key("RSA_3072")
    cert = _certificate(tmp_path, kms, key_id)
    aws_kms_pe_signer(key_id, REGION, cert_path=cert).sign_pe(efi)
    assert_sbverify_ok(cert, efi)


def test_certificate_from_acm(efi: Path, tmp_path: Path, kms: KMS) -> None:
    key_id = kms.key("RSA_2048")
    cert = _certificate(tmp_path, kms, key_id)
    acm = boto3.client("acm", region_name=REGION)
    # ACM wants a private key on import; moto does not check that it matches the certificate.
    stand_in = make_key_pair(tmp_path, "stand-in")
    arn = acm.import_certificate(Certificate=cert.read_bytes(), PrivateKey=stand_in.key_path.read_bytes())[
        "CertificateArn"
    ]
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert acm_certificate(arn, REGION) == der
    signer = aws_kms_pe_signer(key_id, REGION, cert_arn=arn, kms_client=kms.client, acm_client=acm)
    signer.sign_pe(efi)
    assert_sbverify_ok(cert, efi)


def test_sign_digest_with_sha384(kms: KMS) -> None:
    key = KMSKeySigner(kms.key("RSA_2048"), client=kms.client)
    digest = hashlib.sha384(b"policy").digest()
    public = serialization.load_der_public_key(key.public_key)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(key.sign_digest(digest, "sha384"), digest, padding.PKCS1v15(), Prehashed(hashes.SHA384()))
    assert kms.requests[-1]["SigningAlgorithm"] == "RSASSA_PKCS1_V1_5_SHA_384"


def test_errors(tmp_path: Path, kms: KMS) -> None:
    with pytest.raises(SignerError, match="cannot read its public key"):
        KMSKeySigner("no-such-key", client=kms.client)
    with pytest.raises(SignerError, match="not a signing key"):
        KMSKeySigner(kms.key("RSA_2048", usage="ENCRYPT_DECRYPT"), client=kms.client)
    with pytest.raises(SignerError, match="does not offer ECDSA_SHA_256"):
        KMSKeySigner(kms.key("ECC_NIST_P384"), client=kms.client)  # KMS pairs P-384 with SHA-384
    key_id = kms.key("RSA_2048")
    with pytest.raises(SignerError, match="needs a certificate"):
        aws_kms_pe_signer(key_id, REGION, kms_client=kms.client)
    other = make_key_pair(tmp_path, "other")
    with pytest.raises(SignerError, match="public key is not the signing key"):
        aws_kms_pe_signer(key_id, REGION, cert_path=other.cert_path, kms_client=kms.client)
    with pytest.raises(SignerError, match="ACM certificate"):
        acm_certificate("arn:aws:acm:us-east-1:123456789012:certificate/nope", REGION)
