"""``secureBoot`` configuration → profile assets (upstream ``internal/secureboot/secureboot.go``
``NewService``) and the certificate the API serves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.config.options import (
    AWSKMSOptions,
    AzureKeyVaultOptions,
    PKCS11Options,
    SecureBootFileOptions,
    SecureBootOptions,
)
from common.profile.hash import profile_hash
from common.profile.model import Output, OutputKind, Profile
from common.profile.secureboot import (
    SecureBootConfigError,
    parse_pkcs11_uri,
    pkcs11_pin,
    pkcs11_uri,
    secureboot_assets,
    signing_certificate_pem,
)
from tests.support.aws_kms import KMS, REGION
from tests.support.azure_keyvault import KeyVaultStandIn
from tests.support.secureboot import make_key_pair
from tests.support.softhsm import PIN, TOKEN, SoftHSM

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


def key(options: SecureBootOptions) -> str:
    """The cache key of a Secure Boot UKI built with ``options``."""
    prof = Profile(arch="amd64", platform="metal", version="v1.12.4", secureboot=True)
    prof.output = Output(kind=OutputKind.UKI)
    prof.input.secure_boot = secureboot_assets(options)
    return profile_hash(prof)


def test_the_key_locations_key_the_cache() -> None:
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


# ------------------------------------------------------------------------------ secureBoot.pkcs11

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PKCS11 = PKCS11Options(
    modulePath=MODULE, tokenLabel="factory", pin="1234", signingKeyLabel="db", pcrKeyLabel="pcr"
)


def test_pkcs11_assets_are_rfc7512_uris() -> None:
    assets = secureboot_assets(SecureBootOptions(enabled=True, pkcs11=PKCS11))
    assert assets is not None and assets.to_yaml_dict() == {
        "secureBootSigner": {
            "keyPath": f"pkcs11:token=factory;object=db;type=private?module-path={MODULE}",
            "certPath": f"pkcs11:token=factory;object=db;type=cert?module-path={MODULE}",
        },
        "pcrSigner": {"keyPath": f"pkcs11:token=factory;object=pcr;type=private?module-path={MODULE}"},
    }
    with_file = dataclasses.replace(PKCS11, signingCertPath="/etc/db.pem")
    assets = secureboot_assets(SecureBootOptions(enabled=True, pkcs11=with_file))
    assert assets is not None and assets.secure_boot_signer.cert_path == "/etc/db.pem"


@pytest.mark.parametrize("incomplete", ["modulePath", "tokenLabel", "signingKeyLabel", "pcrKeyLabel"])
def test_pkcs11_needs_its_four_settings(incomplete: str) -> None:
    options = SecureBootOptions(enabled=True, pkcs11=dataclasses.replace(PKCS11, **{incomplete: ""}))
    with pytest.raises(SecureBootConfigError, match=r"secureBoot\.pkcs11\.\{modulePath"):
        secureboot_assets(options)


@pytest.mark.parametrize(
    "upstream",
    [
        {"file": FILE},
        {"azureKeyVault": AzureKeyVaultOptions(url="https://v", certificateName="c", keyName="k")},
        {"awsKMS": AWSKMSOptions(keyID="sb", pcrKeyID="pcr", certARN="arn:x", region="eu-1")},
    ],
    ids=["file", "azureKeyVault", "awsKMS"],
)
def test_pkcs11_comes_after_upstreams_backends(upstream: dict[str, object]) -> None:
    """A configuration upstream accepts hashes as upstream's, whatever ``secureBoot.pkcs11`` says."""
    alone = SecureBootOptions(enabled=True, **upstream)  # type: ignore[arg-type]
    both = SecureBootOptions(enabled=True, pkcs11=PKCS11, **upstream)  # type: ignore[arg-type]
    assert secureboot_assets(both) == secureboot_assets(alone)
    assert key(both) == key(alone)


def test_pkcs11_keys_key_the_cache_and_the_pin_does_not() -> None:
    base = key(SecureBootOptions(enabled=True, pkcs11=PKCS11))
    for change in (
        {"modulePath": "/opt/hsm/libvendor.so"},
        {"tokenLabel": "other"},
        {"signingKeyLabel": "db2"},
        {"pcrKeyLabel": "pcr2"},
        {"signingCertPath": "/etc/db.pem"},
    ):
        assert key(SecureBootOptions(enabled=True, pkcs11=dataclasses.replace(PKCS11, **change))) != base, (
            change
        )
    for secret in ({"pin": "9999"}, {"pin": "", "pinFile": "/run/secrets/pin"}):
        assert key(SecureBootOptions(enabled=True, pkcs11=dataclasses.replace(PKCS11, **secret))) == base
    assets = secureboot_assets(SecureBootOptions(enabled=True, pkcs11=PKCS11))
    assert "1234" not in str(assets)


@pytest.mark.parametrize(
    ("module", "token", "label"),
    [
        (MODULE, "factory", "db"),
        ("/opt/my hsm/lib;v=2.so", "a;b?c/d", "key=1%&é"),
        ("C:/Program Files/hsm.dll", "token|x", "[label]@(1)"),
    ],
)
def test_pkcs11_uri_round_trips(module: str, token: str, label: str) -> None:
    uri = pkcs11_uri(module, token, label, "private")
    path = uri.partition("?")[0]
    assert path.count(";") == 2 and path.count("/") == 0  # separators inside values are escaped
    obj = parse_pkcs11_uri(uri)
    assert (obj.module_path, obj.token_label, obj.label, obj.kind) == (module, token, label, "private")
    with pytest.raises(ValueError, match="not a pkcs11"):
        parse_pkcs11_uri("/etc/key.pem")
    with pytest.raises(ValueError, match="lacks module-path"):
        parse_pkcs11_uri("pkcs11:token=t;object=o;type=private")


def test_pkcs11_pin(tmp_path: Path) -> None:
    assert pkcs11_pin(PKCS11Options(pin="1234", pinFile="/ignored")) == "1234"
    assert pkcs11_pin(PKCS11Options()) is None
    pin_file = tmp_path / "pin"
    for content in ("5678", "5678\n", "5678\r\n"):
        pin_file.write_text(content, newline="")
        assert pkcs11_pin(PKCS11Options(pinFile=str(pin_file))) == "5678"
    with pytest.raises(SecureBootConfigError, match=r"secureBoot\.pkcs11\.pinFile: cannot read .*missing"):
        pkcs11_pin(PKCS11Options(pinFile=str(tmp_path / "missing")))


# ---------------------------------------------------------------- the certificate from its service


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def test_signing_certificate_from_acm(tmp_path: Path, kms: KMS) -> None:
    pair = make_key_pair(tmp_path, "db")
    acm = boto3.client("acm", region_name=REGION)
    arn = acm.import_certificate(
        Certificate=pair.cert_path.read_bytes(), PrivateKey=pair.key_path.read_bytes()
    )["CertificateArn"]
    aws = AWSKMSOptions(keyID="sb", pcrKeyID="pcr", certARN=arn, region=REGION)
    options = SecureBootOptions(enabled=True, awsKMS=aws)
    assert signing_certificate_pem(options) == pair.cert_path.read_bytes()
    acm.delete_certificate(CertificateArn=arn)
    assert signing_certificate_pem(options) == pair.cert_path.read_bytes()  # fetched once per process

    aws.certARN = arn.replace(arn.rsplit("/", 1)[1], "00000000-0000-0000-0000-000000000000")
    with pytest.raises(
        SecureBootConfigError, match=r"secureBoot\.awsKMS\.certARN arn:.*: ACM certificate"
    ) as info:
        signing_certificate_pem(options)
    assert "\n" not in info.value.message


def test_signing_certificate_file_of_kms(tmp_path: Path) -> None:
    pair = make_key_pair(tmp_path, "db")
    aws = AWSKMSOptions(keyID="sb", pcrKeyID="pcr", certPath=str(pair.cert_path), region=REGION)
    assert signing_certificate_pem(SecureBootOptions(enabled=True, awsKMS=aws)) == pair.cert_path.read_bytes()


def test_signing_certificate_from_azure_key_vault(key_vault: KeyVaultStandIn) -> None:
    """As the API gets it: through ``DefaultAzureCredential`` (managed identity, here the stand-in)."""
    azure = AzureKeyVaultOptions(url=key_vault.url, certificateName="db", keyName="pcr")
    options = SecureBootOptions(enabled=True, azureKeyVault=azure)
    with pytest.raises(SecureBootConfigError, match=r"certificateName db: .*404 CertificateNotFound") as info:
        signing_certificate_pem(options)
    assert "\n" not in info.value.message
    stored = key_vault.create_certificate("db")
    assert signing_certificate_pem(options) == _pem(stored.der)
    served = len(key_vault.requests)
    key_vault.create_certificate("db")  # a new version: served after a restart, as upstream (sync.Once)
    assert signing_certificate_pem(options) == _pem(stored.der)
    assert len(key_vault.requests) == served
    assert key_vault.tokens_issued and not key_vault.sign_requests()


def test_signing_certificate_of_a_token(tmp_path: Path, softhsm: SoftHSM) -> None:
    pkcs11 = PKCS11Options(
        modulePath=softhsm.module, tokenLabel=TOKEN, signingKeyLabel="db-rsa", pcrKeyLabel="db-rsa"
    )
    options = SecureBootOptions(enabled=True, pkcs11=pkcs11)
    assert signing_certificate_pem(options) == (softhsm.certs / "db-rsa.pem").read_bytes()  # no PIN needed
    pkcs11.signingKeyLabel, pkcs11.pin = "db-ec", PIN
    with pytest.raises(SecureBootConfigError, match=r"signingKeyLabel db-ec: .*no such certificate object"):
        signing_certificate_pem(options)
    pkcs11.signingCertPath = str(softhsm.certs / "db-ec.pem")
    assert signing_certificate_pem(options) == (softhsm.certs / "db-ec.pem").read_bytes()
    pkcs11.signingCertPath = str(tmp_path / "missing.pem")
    with pytest.raises(SecureBootConfigError, match=r"secureBoot\.pkcs11\.signingCertPath: cannot read"):
        signing_certificate_pem(options)
