"""Secrets are recognised by the key's name, and references to secrets are not."""

from __future__ import annotations

import pytest

from common.config.masking import MASK, is_secret, masked


@pytest.mark.parametrize(
    "path",
    [
        "secureBoot.pkcs11.pin",
        "authentication.auth0.clientSecret",
        "authentication.auth0.sessionKey",
        "x.password",
        "x.adminPassword",
        "x.passwd",
        "x.apiToken",
        "x.token",
        "x.privateKey",
        "x.secretAccessKey",
        "x.credentials",
        "x.keyPassphrase",
    ],
)
def test_secret_names(path: str) -> None:
    assert is_secret(path)
    assert masked(path, "hunter2") == MASK


@pytest.mark.parametrize(
    "path",
    [
        "cache.signingKeyPath",
        "secureBoot.file.pcrKeyPath",
        "secureBoot.pkcs11.pinFile",
        "secureBoot.pkcs11.tokenLabel",
        "secureBoot.pkcs11.signingKeyLabel",
        "secureBoot.awsKMS.keyID",
        "secureBoot.awsKMS.certARN",
        "secureBoot.azureKeyVault.keyName",
        "authentication.downloadTokenKeyPath",
        "authentication.downloadTokenTTL.max",
        "authentication.htpasswdPath",
        "http.keyFile",
        "containerSignature.publicKeyHashAlgo",
        "cache.gsa.serviceAccountEmail",
        "http.httpListenAddr",
        "spin",
    ],
)
def test_names_that_only_point_at_secrets_are_shown(path: str) -> None:
    assert not is_secret(path)
    assert masked(path, "/etc/x") == "/etc/x"


def test_empty_secret_shows_as_empty() -> None:
    assert masked("secureBoot.pkcs11.pin", "") == '""'


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://user:hunter2@redis/0", "rediss://user:***@redis/0"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("redis://user@redis/0", "redis://user@redis/0"),
        ("https://vault.example/", "https://vault.example/"),
    ],
)
def test_url_passwords_are_masked(value: str, shown: str) -> None:
    assert masked("redis.url", value) == shown
    assert masked("secureBoot.azureKeyVault.url", value) == shown
