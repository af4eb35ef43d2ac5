"""The PKCS #11 backend against SoftHSM2: keys generated inside a token, certificates made through it."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from tests.support.secureboot import (
    assert_sbverify_ok,
    flip_byte,
    sbverify,
    write_pem_certificate,
)
from worker.secureboot.authenticode import read_layout
from worker.secureboot.base import SignerError
from worker.secureboot.certificate import self_signed_certificate
from worker.secureboot.pkcs11 import PKCS11KeySigner, pkcs11_pe_signer

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


def test_rsa_key_and_certificate_from_the_token(efi: Path, softhsm: SoftHSM) -> None:
    signer = pkcs11_pe_signer(softhsm.module, TOKEN, PIN, "db-rsa")
    try:
        cert = softhsm.certs / "db-rsa.pem"
        assert signer.certificate == x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        signer.sign_pe(efi)
    finally:
        signer.close()
    assert_sbverify_ok(cert, efi)
    flip_byte(efi, read_layout(efi).sections[0][0] + 1)
    assert sbverify(cert, efi).returncode != 0


def test_ec_key_with_a_certificate_file(efi: Path, softhsm: SoftHSM) -> None:
    cert = softhsm.certs / "db-ec.pem"
    signer = pkcs11_pe_signer(softhsm.module, TOKEN, PIN, "db-ec", cert_path=cert)
    try:
        signer.sign_pe(efi)
    finally:
        signer.close()
    assert_sbverify_ok(cert, efi)


def test_two_signers_on_one_token(softhsm: SoftHSM) -> None:
    """The PE and the PCR key may live in the same token: the second login is not an error."""
    first = PKCS11KeySigner(softhsm.module, TOKEN, PIN, "db-rsa")
    try:
        second = PKCS11KeySigner(softhsm.module, TOKEN, PIN, "db-ec")
        try:
            digest = hashlib.sha256(b"both").digest()
            for key in (first, second):
                public = serialization.load_der_public_key(key.public_key)
                signature = key.sign_digest(digest)
                if isinstance(public, rsa.RSAPublicKey):
                    public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
                else:
                    assert isinstance(public, ec.EllipticCurvePublicKey)
                    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        finally:
            second.close()
    finally:
        first.close()


def test_sha384_digest_with_rsa(softhsm: SoftHSM) -> None:
    key = PKCS11KeySigner(softhsm.module, TOKEN, PIN, "db-rsa")
    try:
        digest = hashlib.sha384(b"policy").digest()
        public = serialization.load_der_public_key(key.public_key)
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(
            key.sign_digest(digest, "sha384"), digest, padding.PKCS1v15(), Prehashed(hashes.SHA384())
        )
    finally:
        key.close()


def test_errors(softhsm: SoftHSM) -> None:
    with pytest.raises(SignerError, match="cannot open"):
        PKCS11KeySigner(softhsm.module, "no-such-token", PIN, "db-rsa")
    with pytest.raises(SignerError, match="cannot open"):
        PKCS11KeySigner(softhsm.module, TOKEN, "0000", "db-rsa")
    with pytest.raises(SignerError, match="no-such-key"):
        PKCS11KeySigner(softhsm.module, TOKEN, PIN, "no-such-key")
    with pytest.raises(SignerError, match="no certificate"):
        pkcs11_pe_signer(softhsm.module, TOKEN, PIN, "db-ec")
    with pytest.raises(SignerError, match="public key is not the signing key"):
        pkcs11_pe_signer(softhsm.module, TOKEN, PIN, "db-ec", cert_path=softhsm.certs / "db-rsa.pem")
