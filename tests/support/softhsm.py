"""A SoftHSM2 token for the PKCS #11 tests: the module-scoped ``softhsm`` fixture.

The token (its configuration and store in a temporary directory) holds an RSA (``db-rsa``) and an EC
(``db-ec``) key pair generated inside it, with self-signed certificates made through the token; the
RSA one is also stored in the token as a certificate object. ``softhsm2-util`` is installed when
missing (``signing_tools``), never skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from tests.support.secureboot import write_pem_certificate
from worker.secureboot.certificate import self_signed_certificate
from worker.secureboot.pkcs11 import PKCS11KeySigner

TOKEN = "factory-db"
PIN = "5678"
SO_PIN = "1234"
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHSM:
    module: str
    certs: Path  # PEM certificates of the token's keys, by label


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory, signing_tools: None) -> Iterator[SoftHSM]:
    """One SoftHSM2 token (its config and store in a temp dir) with an RSA and an EC key pair.

    SoftHSM reads ``SOFTHSM2_CONF`` when the library is initialised, once per process, so the token is
    created, filled and used under one configuration for the whole module.
    """
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    module = next((m for m in MODULE_CANDIDATES if os.path.exists(m)), None)
    assert module is not None, "libsofthsm2.so not found"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--so-pin", SO_PIN, "--pin", PIN],
            check=True,
            capture_output=True,
        )
        lib = pkcs11.lib(module)
        lib.reinitialize()  # a library initialised by an earlier test module would not see the new token
        token = lib.get_token(token_label=TOKEN)
        with token.open(rw=True, user_pin=PIN) as session:
            session.generate_keypair(KeyType.RSA, 2048, label="db-rsa", store=True)
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
            )
            params.generate_keypair(store=True, label="db-ec")
        certs = root / "certs"
        certs.mkdir()
        for label in ("db-rsa", "db-ec"):
            key = PKCS11KeySigner(module, TOKEN, PIN, label)
            try:
                der = self_signed_certificate(key, f"PKCS#11 {label}")
            finally:
                key.close()
            write_pem_certificate(certs / f"{label}.pem", der)
            if label == "db-rsa":  # the RSA one is also stored in the token, the EC one only on disk
                subject = x509.load_der_x509_certificate(der).subject.public_bytes()
                with token.open(rw=True, user_pin=PIN) as session:
                    session.create_object(
                        {
                            Attribute.CLASS: ObjectClass.CERTIFICATE,
                            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                            Attribute.TOKEN: True,
                            Attribute.LABEL: label,
                            Attribute.SUBJECT: subject,
                            Attribute.VALUE: der,
                        }
                    )
        yield SoftHSM(module, certs)
