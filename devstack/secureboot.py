"""A development Secure Boot key set for ``make run``, generated once and kept under the state dir.

``make run`` enables Secure Boot so every ``-secureboot`` asset works on a fresh machine. The keys
are the file backend's three (``secureBoot.file.*``: the db signing key and its self-signed
certificate, and the PCR signing key), named as Talos' imager names its defaults
(``/secureboot/uki-signing-key.pem`` …). They are development keys: the certificate says so in its
subject, and nothing outside ``.run/`` refers to them.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.certificates import self_signed

__all__ = ["development_keys"]

SIGNING_KEY = "uki-signing-key.pem"
SIGNING_CERT = "uki-signing-cert.pem"
PCR_KEY = "pcr-signing-key.pem"


def _write_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return key


def development_keys(directory: Path) -> dict[str, Any]:
    """The ``secureBoot`` settings of the key set in ``directory``, creating it on first use."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path, cert_path, pcr_path = directory / SIGNING_KEY, directory / SIGNING_CERT, directory / PCR_KEY
    if not (key_path.exists() and cert_path.exists() and pcr_path.exists()):
        key = _write_key(key_path)
        _write_key(pcr_path)
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        cert = self_signed(
            key,
            "image-factory development Secure Boot key",
            valid_for=datetime.timedelta(days=3650),
            backdated=datetime.timedelta(days=1),
            extensions=[(x509.BasicConstraints(ca=True, path_length=None), True), (usage, True)],
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {
        "secureBoot.enabled": True,
        "secureBoot.file.signingKeyPath": str(key_path),
        "secureBoot.file.signingCertPath": str(cert_path),
        "secureBoot.file.pcrKeyPath": str(pcr_path),
    }
