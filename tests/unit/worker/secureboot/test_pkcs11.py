"""The PKCS #11 backend against SoftHSM2 (``tests/support/softhsm.py``): keys generated inside a token,
certificates made through it; directly and from the ``secureBoot.pkcs11`` configuration."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from common.config.options import PKCS11Options, SecureBootOptions
from tests.support.secureboot import assert_sbverify_ok, flip_byte, sbverify
from tests.support.softhsm import PIN, TOKEN, SoftHSM
from worker.secureboot.authenticode import read_layout
from worker.secureboot.base import KeySigner, SignerError
from worker.secureboot.config import signers_from_config
from worker.secureboot.pkcs11 import PKCS11KeySigner, pkcs11_pe_signer


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


# ------------------------------------------------------------------------ from secureBoot.pkcs11


def _options(softhsm: SoftHSM, **pkcs11: str) -> SecureBootOptions:
    settings = {
        "modulePath": softhsm.module,
        "tokenLabel": TOKEN,
        "signingKeyLabel": "db-rsa",
        "pcrKeyLabel": "db-rsa",
    }
    return SecureBootOptions(enabled=True, pkcs11=PKCS11Options(**(settings | pkcs11)))


def _verifies(key: KeySigner) -> None:
    digest = hashlib.sha256(b"policy").digest()
    public = serialization.load_der_public_key(key.public_key)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(key.sign_digest(digest), digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_from_config_with_a_pin_file(efi: Path, tmp_path: Path, softhsm: SoftHSM) -> None:
    """One key signs both (PE and PCR), its certificate read from the token, the PIN from a file."""
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    signers = signers_from_config(_options(softhsm, pinFile=str(pin_file)))
    assert signers.pe is not None and signers.pcr is not None
    try:
        signers.pe.sign_pe(efi)
        _verifies(signers.pcr)
    finally:
        signers.pe.close()
        signers.pcr.close()
    assert_sbverify_ok(softhsm.certs / "db-rsa.pem", efi)


def test_from_config_with_a_certificate_file(efi: Path, softhsm: SoftHSM) -> None:
    cert = softhsm.certs / "db-ec.pem"
    signers = signers_from_config(
        _options(softhsm, pin=PIN, signingKeyLabel="db-ec", signingCertPath=str(cert))
    )
    assert signers.pe is not None and signers.pcr is not None
    try:
        signers.pe.sign_pe(efi)
        _verifies(signers.pcr)
    finally:
        signers.pe.close()
        signers.pcr.close()
    assert_sbverify_ok(cert, efi)


def test_from_config_refusals(tmp_path: Path, softhsm: SoftHSM) -> None:
    def refused(options: SecureBootOptions, *needles: str) -> None:
        with pytest.raises(SignerError) as info:
            signers_from_config(options)
        message = str(info.value)
        assert "\n" not in message, message
        for needle in needles:
            assert needle in message, message

    refused(
        _options(softhsm, pin=PIN, pcrKeyLabel="db-ec"), "secureBoot.pkcs11.pcrKeyLabel db-ec", "must be RSA"
    )
    refused(_options(softhsm, pin="0000"), "secureBoot.pkcs11.signingKeyLabel db-rsa", "cannot open")
    refused(_options(softhsm), "secureBoot.pkcs11.signingKeyLabel db-rsa", "NoSuchKey")  # no PIN, no login
    refused(_options(softhsm, pinFile=str(tmp_path / "missing")), "secureBoot.pkcs11.pinFile", "cannot read")
    refused(_options(softhsm, pin=PIN, signingKeyLabel="db-ec"), "db-ec", "no certificate")
    refused(_options(softhsm, pin=PIN, modulePath=str(tmp_path / "missing.so")), "module", "cannot open")
