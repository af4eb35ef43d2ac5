"""The secure-boot tests' fixtures live with their helpers in ``tests/support/secureboot.py``."""

from tests.support.secureboot import efi, rsa_pair, signing_tools, systemd_boot_efi

__all__ = ["efi", "rsa_pair", "signing_tools", "systemd_boot_efi"]
