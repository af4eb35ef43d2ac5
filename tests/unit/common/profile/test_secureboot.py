"""``secureBoot`` configuration → profile assets (upstream ``internal/secureboot/secureboot.go``
``NewService``) and the certificate the API serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config.options import (
    AWSKMSOptions,
    AzureKeyVaultOptions,
    SecureBootFileOptions,
    SecureBootOptions,
)
from common.profile.hash import profile_hash
from common.profile.model import Output, OutputKind, Profile
from common.profile.secureboot import SecureBootConfigError, secureboot_assets, signing_certificate_pem
from tests.support.secureboot import make_key_pair

FILE = SecureBootFileOptions(
    signingKeyPath="sign-key.pem", signingCertPath="sign-cert.pem", pcrKeyPath="pcr-key.pem"
)


def test_disabled_is_none_whatever_is_configured() -> None:
    assert secureboot_assets(SecureBootOptions(enabled=False, file=FILE)) is None


def test_file_backend_is_upstreams_profile_fields() -> None:
    assets = secureboot_assets(SecureBootOptions(enabled=True, file=FILE))
    assert assets is not None
    # upstream profile_test.go "secureboot installer": exactly these fields, nothing else
    assert assets.to_yaml_dict() == {
        "secureBootSigner": {"keyPath": "sign-key.pem", "certPath": "sign-cert.pem"},
        "pcrSigner": {"keyPath": "pcr-key.pem"},
    }


def test_the_key_locations_key_the_cache() -> None:
    def key(options: SecureBootOptions) -> str:
        prof = Profile(arch="amd64", platform="metal", version="v1.12.4", secureboot=True)
        prof.output = Output(kind=OutputKind.UKI)
        prof.input.secure_boot = secureboot_assets(options)
        return profile_hash(prof)

    moved = SecureBootFileOptions(
        signingKeyPath="other.pem", signingCertPath="sign-cert.pem", pcrKeyPath="pcr-key.pem"
    )
    assert key(SecureBootOptions(enabled=True, file=FILE)) != key(SecureBootOptions(enabled=True, file=moved))


def test_other_backends_and_their_precedence() -> None:
    azure = AzureKeyVaultOptions(url="https://v", certificateName="c", keyName="k")
    aws = AWSKMSOptions(keyID="sb", pcrKeyID="pcr", certPath="c.pem", certARN="arn:x", region="eu-1")
    both = secureboot_assets(SecureBootOptions(enabled=True, file=FILE, azureKeyVault=azure))
    assert both is not None and both.secure_boot_signer.key_path == "sign-key.pem"  # file first
    az = secureboot_assets(SecureBootOptions(enabled=True, azureKeyVault=azure))
    assert az is not None and az.to_yaml_dict() == {
        "secureBootSigner": {"azureVaultURL": "https://v", "azureCertificateID": "c"},
        "pcrSigner": {"azureVaultURL": "https://v", "azureKeyID": "k"},
    }
    kms = secureboot_assets(SecureBootOptions(enabled=True, awsKMS=aws))
    assert kms is not None and kms.to_yaml_dict() == {  # certPath wins over certARN, as upstream
        "secureBootSigner": {"awsKMSKeyID": "sb", "awsRegion": "eu-1", "awsCertPath": "c.pem"},
        "pcrSigner": {"awsKMSKeyID": "pcr", "awsRegion": "eu-1"},
    }


@pytest.mark.parametrize(
    "file",
    [
        SecureBootFileOptions(),
        SecureBootFileOptions(signingKeyPath="k", signingCertPath="c"),  # no PCR key
        SecureBootFileOptions(signingKeyPath="k", pcrKeyPath="p"),  # no certificate
    ],
)
def test_enabled_without_a_complete_backend_is_refused(file: SecureBootFileOptions) -> None:
    with pytest.raises(SecureBootConfigError, match="invalid SecureBoot configuration"):
        secureboot_assets(SecureBootOptions(enabled=True, file=file))


def test_signing_certificate_pem(tmp_path: Path) -> None:
    pair = make_key_pair(tmp_path, "db")
    options = SecureBootOptions(
        enabled=True,
        file=SecureBootFileOptions(
            signingKeyPath=str(pair.key_path), signingCertPath=str(pair.cert_path), pcrKeyPath="p"
        ),
    )
    assert signing_certificate_pem(options) == pair.cert_path.read_bytes()
    with pytest.raises(SecureBootConfigError, match="secure boot is disabled"):
        signing_certificate_pem(SecureBootOptions(enabled=False, file=options.file))
    options.file.signingCertPath = str(tmp_path / "missing.pem")
    with pytest.raises(SecureBootConfigError, match=r"signingCertPath: cannot read .*missing\.pem"):
        signing_certificate_pem(options)
    options.file.signingCertPath = str(pair.key_path)
    with pytest.raises(SecureBootConfigError, match=r"is not an X\.509 certificate"):
        signing_certificate_pem(options)
