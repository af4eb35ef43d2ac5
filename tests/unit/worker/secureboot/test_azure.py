"""The Azure Key Vault backend (``secureBoot.azureKeyVault``): the official SDK against the local HTTPS
stand-in (``tests/support/azure_keyvault.py``), whose real keys sign what the SDK asks it to."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.support.azure_keyvault import TENANT, TOKEN, KeyVaultStandIn, StaticCredential
from tests.support.secureboot import assert_sbverify_ok, flip_byte, sbverify, write_pem_certificate
from worker.secureboot import pcr
from worker.secureboot.authenticode import read_layout
from worker.secureboot.azure import AzureKeySigner, azure_key_vault_pe_signer
from worker.secureboot.base import HASHES, SignerError
from worker.secureboot.registry import pe_signer


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa", "RS256"), ("ec", "ES256")])
def test_signs_and_sbverify_accepts(
    efi: Path, tmp_path: Path, key_vault: KeyVaultStandIn, kind: str, algorithm: str
) -> None:
    stored = key_vault.create_certificate("db", kind)
    credential = StaticCredential()
    signer = azure_key_vault_pe_signer(key_vault.url, "db", credential=credential)
    assert signer.certificate == stored.der
    signer.sign_pe(efi)
    signer.close()
    cert = write_pem_certificate(tmp_path / "db.pem", stored.der)
    assert_sbverify_ok(cert, efi)

    signs = key_vault.sign_requests()
    assert signs and all(
        r.path == f"/keys/db/{stored.key.version}/sign"
        and r.body is not None
        and r.body["alg"] == algorithm
        and len(r.body["value"]) == 43  # a base64url SHA-256 digest: the vault never sees the image
        for r in signs
    )
    # Key Vault's challenge: the first request carried no token, the credential was asked for the
    # resource and tenant the challenge named, and every later request carried its token.
    assert key_vault.requests[0].authorization is None
    assert credential.asked and all(
        a == ((f"{key_vault.resource}/.default",), TENANT) for a in credential.asked
    )
    assert all(r.authorization == f"Bearer {TOKEN}" for r in signs)

    flip_byte(efi, read_layout(efi).sections[0][0] + 3)
    assert sbverify(cert, efi).returncode != 0


def test_default_credential_and_the_registry(efi: Path, tmp_path: Path, key_vault: KeyVaultStandIn) -> None:
    """Without a credential passed in, ``DefaultAzureCredential`` (here: App Service managed identity)."""
    stored = key_vault.create_certificate("db")
    signer = pe_signer("azureKeyVault", vault_url=key_vault.url, certificate_name="db")
    signer.sign_pe(efi)
    assert_sbverify_ok(write_pem_certificate(tmp_path / "db.pem", stored.der), efi)
    assert key_vault.tokens_issued and {t["resource"] for t in key_vault.tokens_issued} == {
        key_vault.resource
    }


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_pcr_key_signs_each_bank(key_vault: KeyVaultStandIn, hash_name: str) -> None:
    key_vault.create_key("pcr", size=3072)
    key = AzureKeySigner(key_vault.url, "pcr", credential=StaticCredential())
    digest = hashlib.new(hash_name, b"policy").digest()
    public = serialization.load_der_public_key(key.public_key)
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(
        key.sign_digest(digest, hash_name), digest, padding.PKCS1v15(), Prehashed(HASHES[hash_name]())
    )
    body = key_vault.sign_requests()[-1].body
    assert body is not None and body["alg"] == "RS" + hash_name.removeprefix("sha")


def test_pcr_policy_signed_in_the_vault_is_talos_byte_for_byte(key_vault: KeyVaultStandIn) -> None:
    """``.pcrsig`` signed through Key Vault equals the one signed with the same key locally (RSA
    PKCS #1 v1.5 is deterministic), and ``sign_pcr_policy`` verified every signature on the way."""
    stored = key_vault.create_key("pcr")
    key = AzureKeySigner(key_vault.url, "pcr", credential=StaticCredential())
    sections = {
        ".linux": b"kernel",
        ".osrel": b"ID=talos\n",
        ".cmdline": b"talos.platform=metal",
        ".initrd": b"x",
    }
    private = stored.private
    assert isinstance(private, rsa.RSAPrivateKey)

    def local(digest: bytes, bank: str) -> bytes:
        return private.sign(digest, padding.PKCS1v15(), Prehashed(HASHES[bank]()))

    remote = pcr.sign_pcr_policy(sections, key.public_key, pcr.pcr_signer_callback(key))
    assert remote == pcr.sign_pcr_policy(sections, key.public_key, local)
    assert {r.body["alg"] for r in key_vault.sign_requests() if r.body} == {"RS256", "RS384", "RS512"}


def test_ec_keys_sign_with_their_curves_hash(key_vault: KeyVaultStandIn) -> None:
    key_vault.create_key("p384", "ec", curve="P-384")
    key = AzureKeySigner(key_vault.url, "p384", credential=StaticCredential())
    digest = hashlib.sha384(b"data").digest()
    public = serialization.load_der_public_key(key.public_key)
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"
    public.verify(key.sign_digest(digest, "sha384"), digest, ec.ECDSA(Prehashed(hashes.SHA384())))
    with pytest.raises(SignerError, match="cannot sign a sha256 digest"):
        key.sign_digest(hashlib.sha256(b"data").digest())


def test_the_version_is_pinned_when_the_signer_is_made(key_vault: KeyVaultStandIn) -> None:
    """A key rotated while the worker runs: the signer keeps the version whose public key it holds."""
    first = key_vault.create_key("pcr")
    key = AzureKeySigner(key_vault.url, "pcr", credential=StaticCredential())
    second = key_vault.create_key("pcr")
    digest = hashlib.sha256(b"x").digest()
    signature = key.sign_digest(digest)
    assert key.version == first.version
    assert key_vault.sign_requests()[-1].path == f"/keys/pcr/{first.version}/sign"
    first.private.public_key().verify(  # type: ignore[call-arg]
        signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256())
    )
    assert AzureKeySigner(key_vault.url, "pcr", credential=StaticCredential()).version == second.version


def test_the_certificates_key_version_signs(key_vault: KeyVaultStandIn) -> None:
    """The PE key is the version the certificate's ``kid`` names, not the key's latest (upstream)."""
    stored = key_vault.create_certificate("db")
    key_vault.create_key("db")  # a newer version of the key, not certified
    signer = azure_key_vault_pe_signer(key_vault.url, "db", credential=StaticCredential())
    signer.key.sign_digest(hashlib.sha256(b"x").digest())
    assert key_vault.sign_requests()[-1].path == f"/keys/db/{stored.key.version}/sign"


def test_errors(key_vault: KeyVaultStandIn) -> None:
    credential = StaticCredential()

    def refused(match: str, *args: str, pe: bool = False) -> str:
        with pytest.raises(SignerError, match=match) as info:
            if pe:
                azure_key_vault_pe_signer(key_vault.url, *args, credential=credential)
            else:
                AzureKeySigner(key_vault.url, *args, credential=credential)
        message = str(info.value)
        assert "\n" not in message
        return message

    message = refused("cannot read its public key", "missing")
    assert "404 KeyNotFound" in message and "'missing'" in message
    assert "CertificateNotFound" in refused("Key Vault certificate 'missing'", "missing", pe=True)

    key_vault.create_key("encrypt", operations=("encrypt", "decrypt"))
    refused("not a signing key", "encrypt")
    key_vault.create_key("k256", "ec", curve="P-256")
    key_vault.keys["k256"][-1].jwk = lambda kid: {
        "kid": kid,
        "kty": "EC",
        "crv": "P-256K",
        "x": "AA",
        "y": "AA",
    }  # type: ignore[method-assign]
    refused("unsupported curve P-256K", "k256")
    disabled = key_vault.create_key("disabled")
    disabled.enabled = False
    refused("is disabled", "disabled")

    live = key_vault.create_key("live")
    key = AzureKeySigner(key_vault.url, "live", credential=credential)
    live.operations = ["verify"]  # revoked while the worker runs
    with pytest.raises(SignerError, match="refused to sign: 403 Forbidden") as info:
        key.sign_digest(hashlib.sha256(b"x").digest())
    assert "\n" not in str(info.value)

    key_vault.create_certificate("db").der = key_vault.create_certificate("other").der
    with pytest.raises(SignerError, match="public key is not the signing key"):
        azure_key_vault_pe_signer(key_vault.url, "db", credential=credential)


def test_a_wrong_token_is_refused(key_vault: KeyVaultStandIn) -> None:
    key_vault.create_key("pcr")
    with pytest.raises(SignerError, match="cannot read its public key: 401 Unauthorized") as info:
        AzureKeySigner(key_vault.url, "pcr", credential=StaticCredential("not-the-token"))
    assert "\n" not in str(info.value)
