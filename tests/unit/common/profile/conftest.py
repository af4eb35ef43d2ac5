"""The signing-certificate sources of ``test_secureboot.py``: moto's ACM, the Key Vault stand-in and a
SoftHSM2 token (fixtures in ``tests/support/``)."""

from collections.abc import Iterator

import pytest

from common.profile.secureboot import clear_certificate_cache
from tests.support.aws_kms import kms
from tests.support.azure_keyvault import key_vault
from tests.support.secureboot import signing_tools
from tests.support.softhsm import softhsm

__all__ = ["key_vault", "kms", "signing_tools", "softhsm"]


@pytest.fixture(autouse=True)
def _fresh_certificates() -> Iterator[None]:
    """Certificates fetched from a service are memoised per process: each test starts and ends without."""
    clear_certificate_cache()
    yield
    clear_certificate_cache()
