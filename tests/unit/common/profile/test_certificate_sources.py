"""The shared pieces of ``common.profile.certificate_sources`` the certificate tests do not reach."""

from __future__ import annotations

import pytest

from common.profile import certificate_sources
from tests.support.azure_keyvault import KeyVaultStandIn


def test_one_azure_credential_per_process(
    key_vault: KeyVaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked worker child gets its own ``DefaultAzureCredential``, never its parent's connections."""
    first = certificate_sources.default_azure_credential()
    assert certificate_sources.default_azure_credential() is first
    monkeypatch.setattr(certificate_sources.os, "getpid", lambda: -1)
    child = certificate_sources.default_azure_credential()
    assert child is not first and type(child).__name__ == "DefaultAzureCredential"


def test_pkcs11_module_that_does_not_load() -> None:
    with pytest.raises(certificate_sources.CertificateSourceError, match="PKCS #11 certificate 'db'") as info:
        certificate_sources.pkcs11_certificate("/nonexistent/libpkcs11.so", "token", "db")
    assert "\n" not in str(info.value)
