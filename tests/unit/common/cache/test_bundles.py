"""The ``.sigstore.json`` bundle: cosign's key-based DSSE shape, verified by the project's own check."""

from __future__ import annotations

import json

import pytest
from sigstore_models.bundle.v1 import Bundle

from common.cache.bundles import asset_bundle, statement
from common.cache.signing import FileCacheSigner, generate_key_pem
from common.cosign.pubkey import PublicKeyCheck, load_public_key
from common.cosign.types import BundleSignature, SignatureError

SHA256 = "ab" * 32
SHA512 = "cd" * 64


def test_statement_names_the_file_and_its_digests() -> None:
    document = json.loads(statement("metal-amd64.iso", {"sha512": SHA512, "sha256": SHA256}))
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["subject"] == [
        {"name": "metal-amd64.iso", "digest": {"sha256": SHA256, "sha512": SHA512}}
    ]


def test_bundle_verifies_with_the_signers_public_key_only_for_its_digest() -> None:
    signer = FileCacheSigner.from_pem(generate_key_pem())
    bundle = asset_bundle(signer, "metal-amd64.iso", {"sha256": SHA256, "sha512": SHA512})
    assert Bundle.from_json(bundle).verification_material.public_key is not None
    check = PublicKeyCheck(load_public_key(signer.public_key_pem()))
    check.verify("sha256:" + SHA256, BundleSignature(bundle))
    with pytest.raises(SignatureError, match="does not name"):
        check.verify("sha256:" + "ef" * 32, BundleSignature(bundle))
    stranger = PublicKeyCheck(load_public_key(FileCacheSigner.from_pem(generate_key_pem()).public_key_pem()))
    with pytest.raises(SignatureError, match="does not verify"):
        stranger.verify("sha256:" + SHA256, BundleSignature(bundle))
