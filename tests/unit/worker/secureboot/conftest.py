"""The secure-boot tests' fixtures live with their helpers in ``tests/support/``: ``secureboot.py`` (EFI
binaries, keys, verifiers), ``aws_kms.py`` (moto), ``azure_keyvault.py`` (the Key Vault stand-in) and
``softhsm.py`` (a SoftHSM2 token)."""

from tests.support.aws_kms import kms
from tests.support.azure_keyvault import key_vault
from tests.support.secureboot import efi, rsa_pair, signing_tools, systemd_boot_efi
from tests.support.softhsm import softhsm

__all__ = ["efi", "key_vault", "kms", "rsa_pair", "signing_tools", "softhsm", "systemd_boot_efi"]
