"""The Key Vault stand-in for the start-up tests of an Azure-backed factory (``tests/support/``)."""

from tests.support.azure_keyvault import key_vault

__all__ = ["key_vault"]
