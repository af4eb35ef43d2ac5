"""``<asset>.sigstore.json``: a Sigstore bundle (v0.3) vouching for a cached asset with the cache key.

The bundle holds a DSSE envelope around an in-toto statement whose subject is the asset (its file
name, sha256 and sha512 from the signed cache entry: :mod:`common.cache.checksums`), signed with the
cache signing key, the key ``GET /oci/cosign/signing-key.pub`` serves. It has the shape
``cosign attest-blob --key <key> --new-bundle-format --tlog-upload=false`` writes for a blob (a key
hint, no certificate, no transparency-log entry), so it is checked offline with that public key alone:
by :class:`common.cosign.pubkey.PublicKeyCheck`, which refuses a statement that does not name the
asset's digest, or ``cosign verify-blob-attestation --key <key> --bundle <file> --insecure-ignore-tlog
<asset>`` (not exercised here: Debian does not package cosign). sigstore-python 4.5 parses the bundle
(its ``sigstore_models``) but its ``Verifier`` accepts only certificate bundles with a log entry.
The signature covers only the small statement, so a bundle costs one ECDSA signature and no read of
the asset.

Specification: ``sigstore/protobuf-specs`` ``protos/sigstore_bundle.proto`` (``Bundle``,
``VerificationMaterial.public_key``) and ``secure-systems-lab/dsse`` ``protocol.md`` (PAE).
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives import serialization

from common.cache.signing import CacheSigner
from common.cosign.pubkey import pae
from common.cosign.types import SIGSTORE_BUNDLE_MEDIA_TYPE

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"  # cosign's "this artifact was signed"


def statement(filename: str, digests: dict[str, str]) -> bytes:
    """The in-toto statement naming the asset by file name and digests (``{"sha256": hex, …}``)."""
    document = {
        "_type": IN_TOTO_STATEMENT_V1,
        "subject": [{"name": filename, "digest": dict(sorted(digests.items()))}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {},
    }
    return json.dumps(document, separators=(",", ":")).encode()


def asset_bundle(signer: CacheSigner, filename: str, digests: dict[str, str]) -> bytes:
    """The Sigstore bundle (JSON bytes) for an asset; ``digests`` as in :func:`statement`."""
    payload = statement(filename, digests)
    signature = signer.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    public = serialization.load_pem_public_key(signer.public_key_pem())
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    bundle = {
        "mediaType": SIGSTORE_BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": _b64(hashlib.sha256(spki).digest())},
            "tlogEntries": [],  # offline: no transparency log (cosign --tlog-upload=false)
        },
        "dsseEnvelope": {
            "payload": _b64(payload),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        },
    }
    return json.dumps(bundle, indent=2).encode() + b"\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
