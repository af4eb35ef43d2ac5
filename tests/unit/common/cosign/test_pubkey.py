import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from common.cosign.pubkey import PublicKeyCheck, pae
from common.cosign.registry import simple_signing_payload
from common.cosign.types import BundleSignature, LegacySignature, SignatureError

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
PAYLOAD = simple_signing_payload("ghcr.io/siderolabs/imager", DIGEST)


def test_simple_signing_payload_is_cosigns_format() -> None:
    assert json.loads(PAYLOAD) == {
        "critical": {
            "identity": {"docker-reference": "ghcr.io/siderolabs/imager"},
            "image": {"docker-manifest-digest": DIGEST},
            "type": "cosign container image signature",
        },
        "optional": None,
    }


@pytest.mark.parametrize("algo", ["sha224", "sha256", "sha384", "sha512"])
def test_ecdsa_with_each_hash(algo: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hash_cls = {
        "sha224": hashes.SHA224,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
    }
    signature = key.sign(PAYLOAD, ec.ECDSA(hash_cls[algo]()))
    PublicKeyCheck(key.public_key(), algo).verify(DIGEST, LegacySignature(PAYLOAD, signature))
    if algo != "sha256":
        with pytest.raises(SignatureError):
            PublicKeyCheck(key.public_key(), "sha256").verify(DIGEST, LegacySignature(PAYLOAD, signature))


def test_rsa_and_ed25519() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sig = rsa_key.sign(PAYLOAD, padding.PKCS1v15(), hashes.SHA256())
    PublicKeyCheck(rsa_key.public_key()).verify(DIGEST, LegacySignature(PAYLOAD, sig))
    ed_key = ed25519.Ed25519PrivateKey.generate()
    PublicKeyCheck(ed_key.public_key()).verify(DIGEST, LegacySignature(PAYLOAD, ed_key.sign(PAYLOAD)))


def test_refusals_say_why() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    stranger = ec.generate_private_key(ec.SECP256R1())
    check = PublicKeyCheck(key.public_key())
    with pytest.raises(SignatureError, match="does not verify with the configured public key"):
        check.verify(DIGEST, LegacySignature(PAYLOAD, stranger.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))))
    tampered = PAYLOAD.replace(b"null", b'{"x":1}')
    with pytest.raises(SignatureError, match="does not verify"):
        check.verify(DIGEST, LegacySignature(tampered, key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))))
    replayed = simple_signing_payload("ghcr.io/siderolabs/imager", OTHER)
    with pytest.raises(SignatureError, match=f"signature is for {OTHER}, not {DIGEST}"):
        check.verify(DIGEST, LegacySignature(replayed, key.sign(replayed, ec.ECDSA(hashes.SHA256()))))
    with pytest.raises(ValueError, match="unsupported hash algorithm"):
        PublicKeyCheck(key.public_key(), "md5")


def _dsse_bundle(key: ec.EllipticCurvePrivateKey, subject_digest: str) -> bytes:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": "ghcr.io/siderolabs/imager", "digest": {"sha256": subject_digest.split(":")[1]}}
        ],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    payload = json.dumps(statement).encode()
    kind = "application/vnd.in-toto+json"
    sig = key.sign(pae(kind, payload), ec.ECDSA(hashes.SHA256()))
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": kind,
        "signatures": [{"sig": base64.b64encode(sig).decode()}],
    }
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "x"}},
        "dsseEnvelope": envelope,
    }
    return json.dumps(bundle).encode()


def test_dsse_bundles_signed_with_the_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    check = PublicKeyCheck(key.public_key())
    check.verify(DIGEST, BundleSignature(_dsse_bundle(key, DIGEST)))
    with pytest.raises(SignatureError, match=f"does not name {DIGEST}"):
        check.verify(DIGEST, BundleSignature(_dsse_bundle(key, OTHER)))
    with pytest.raises(SignatureError, match="does not verify"):
        check.verify(DIGEST, BundleSignature(_dsse_bundle(ec.generate_private_key(ec.SECP256R1()), DIGEST)))
