"""``secureBoot`` configuration → the worker's signers, through the backend table, for every backend.

Each backend is opened the way ``image-factory worker`` opens it (no client or credential passed in):
files, the Key Vault stand-in through ``DefaultAzureCredential``, moto's KMS and ACM through boto3's
chain, and a SoftHSM2 token (``test_pkcs11.py``). A failure is one ``SignerError`` line naming the
setting and the reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from common.config.options import (
    AWSKMSOptions,
    AzureKeyVaultOptions,
    PKCS11Options,
    SecureBootFileOptions,
    SecureBootOptions,
)
from tests.support.aws_kms import KMS, REGION
from tests.support.azure_keyvault import KeyVaultStandIn
from tests.support.secureboot import assert_sbverify_ok, make_key_pair, write_pem_certificate
from worker.imager.signing import NO_SIGNERS, Signers
from worker.secureboot.aws_kms import KMSKeySigner
from worker.secureboot.base import SignerError
from worker.secureboot.certificate import self_signed_certificate
from worker.secureboot.config import signers_from_config


def _check(signers: Signers, efi: Path, cert_pem: Path) -> None:
    assert signers.pe is not None and signers.pcr is not None
    signers.pe.sign_pe(efi)
    assert_sbverify_ok(cert_pem, efi)
    digest = hashlib.sha256(b"policy").digest()
    public = serialization.load_der_public_key(signers.pcr.public_key)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(signers.pcr.sign_digest(digest), digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def _refused(options: SecureBootOptions, *needles: str) -> None:
    with pytest.raises(SignerError) as info:
        signers_from_config(options)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def test_disabled_is_no_signers() -> None:
    assert signers_from_config(SecureBootOptions(enabled=False)) is NO_SIGNERS


def test_file(efi: Path, tmp_path: Path) -> None:
    db, pcr = make_key_pair(tmp_path, "db"), make_key_pair(tmp_path, "pcr")
    options = SecureBootOptions(
        enabled=True,
        file=SecureBootFileOptions(
            signingKeyPath=str(db.key_path), signingCertPath=str(db.cert_path), pcrKeyPath=str(pcr.key_path)
        ),
    )
    _check(signers_from_config(options), efi, db.cert_path)


def _azure(key_vault: KeyVaultStandIn, key: str = "pcr") -> SecureBootOptions:
    return SecureBootOptions(
        enabled=True, azureKeyVault=AzureKeyVaultOptions(url=key_vault.url, certificateName="db", keyName=key)
    )


def test_azure_key_vault(efi: Path, tmp_path: Path, key_vault: KeyVaultStandIn) -> None:
    db = key_vault.create_certificate("db", "ec")
    key_vault.create_key("pcr")
    _check(signers_from_config(_azure(key_vault)), efi, write_pem_certificate(tmp_path / "db.pem", db.der))
    assert key_vault.tokens_issued  # DefaultAzureCredential, as a worker has it


def test_azure_key_vault_refusals(key_vault: KeyVaultStandIn) -> None:
    _refused(
        _azure(key_vault), "secureBoot.azureKeyVault.certificateName db", key_vault.url, "CertificateNotFound"
    )
    key_vault.create_certificate("db")
    _refused(_azure(key_vault), "secureBoot.azureKeyVault.keyName pcr", "KeyNotFound")
    key_vault.create_key("pcr-ec", "ec")
    _refused(_azure(key_vault, "pcr-ec"), "secureBoot.azureKeyVault.keyName pcr-ec", "must be RSA")


def _aws(
    tmp_path: Path, kms: KMS, pcr_spec: str = "RSA_2048", *, arn: bool = False
) -> tuple[SecureBootOptions, Path]:
    key_id = kms.key("RSA_2048")
    cert = write_pem_certificate(
        tmp_path / "kms.pem", self_signed_certificate(KMSKeySigner(key_id, client=kms.client), "KMS db")
    )
    aws = AWSKMSOptions(keyID=key_id, pcrKeyID=kms.key(pcr_spec), region=REGION)
    if arn:
        stand_in = make_key_pair(tmp_path, "stand-in")  # ACM wants a private key; moto does not check it
        acm = boto3.client("acm", region_name=REGION)
        aws.certARN = acm.import_certificate(
            Certificate=cert.read_bytes(), PrivateKey=stand_in.key_path.read_bytes()
        )["CertificateArn"]
    else:
        aws.certPath = str(cert)
    return SecureBootOptions(enabled=True, awsKMS=aws), cert


@pytest.mark.parametrize("arn", [False, True], ids=["certPath", "certARN"])
def test_aws_kms(efi: Path, tmp_path: Path, kms: KMS, arn: bool) -> None:
    options, cert = _aws(tmp_path, kms, arn=arn)
    _check(signers_from_config(options), efi, cert)


def test_aws_kms_refusals(tmp_path: Path, kms: KMS) -> None:
    options, _ = _aws(tmp_path, kms, "ECC_NIST_P256")
    _refused(options, f"secureBoot.awsKMS.pcrKeyID {options.awsKMS.pcrKeyID}", "must be RSA")
    options.awsKMS.keyID = "no-such-key"
    _refused(options, "secureBoot.awsKMS.keyID no-such-key", "cannot read its public key")
    options.awsKMS.certPath, options.awsKMS.certARN = (
        "",
        "arn:aws:acm:us-east-1:123456789012:certificate/nope",
    )
    _refused(options, "secureBoot.awsKMS.keyID no-such-key", "ACM certificate")


def test_incomplete_and_mixed_configurations(tmp_path: Path) -> None:
    _refused(SecureBootOptions(enabled=True), "invalid SecureBoot configuration", "secureBoot.pkcs11.")
    # an upstream backend wins over ours: the file keys are used, the token is never opened
    db, pcr = make_key_pair(tmp_path, "db"), make_key_pair(tmp_path, "pcr")
    options = SecureBootOptions(
        enabled=True,
        file=SecureBootFileOptions(
            signingKeyPath=str(db.key_path), signingCertPath=str(db.cert_path), pcrKeyPath=str(pcr.key_path)
        ),
        pkcs11=PKCS11Options(
            modulePath="/nonexistent.so", tokenLabel="t", signingKeyLabel="k", pcrKeyLabel="k"
        ),
    )
    signers = signers_from_config(options)
    assert signers.pe is not None and signers.pe.certificate == db.cert_der
