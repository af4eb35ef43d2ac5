"""The cosign signature formats, as stored in an OCI registry next to the signed image.

Two layouts exist and the factory reads both, because Talos releases have used both:

* legacy: tag ``sha256-<hex>.sig`` in the image's repository, an OCI manifest whose layers are
  simple-signing payloads, each carrying its base64 signature (and for keyless signing its
  certificate, chain and Rekor bundle) in annotations;
* Sigstore bundles attached as OCI referrers of the digest (``GET /v2/<repo>/referrers/<digest>``,
  or the referrers tag schema ``sha256-<hex>`` on registries without the API, e.g. distribution 2.8).

The factory also writes the legacy layout when it signs cached assets and installer images, the
format ``cosign verify --key`` reads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from common.cosign.types import (
    SIGNATURE_ANNOTATION,
    SIGSTORE_BUNDLE_MEDIA_TYPE,
    SIMPLE_SIGNING_MEDIA_TYPE,
    BundleSignature,
    LegacySignature,
    SignatureError,
    check_simple_signing_payload,
)
from common.registry.client import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, RegistryClient, RegistryError

log = logging.getLogger(__name__)

MAX_SIGNATURE_BLOB = 1024 * 1024
MAX_SIGNATURES = 32


def signature_tag(digest: str) -> str:
    """``sha256:abc…`` → ``sha256-abc….sig``."""
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


def referrers_tag(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"{algorithm}-{hexdigest}"


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    """The payload ``cosign sign`` signs: compact JSON, keys in cosign's order."""
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SignatureLayer:
    """One signature to store: the signed payload and its annotations (incl. the signature)."""

    payload: bytes
    signature: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)

    def all_annotations(self) -> dict[str, str]:
        return {SIGNATURE_ANNOTATION: base64.b64encode(self.signature).decode(), **self.annotations}


def push_legacy_signatures(client: RegistryClient, digest: str, layers: Sequence[SignatureLayer]) -> str:
    """Writes (replaces) the ``.sig`` manifest of ``digest``; returns the manifest digest."""
    descriptors = []
    diff_ids = []
    for layer in layers:
        blob_digest = client.push_blob(layer.payload)
        diff_ids.append(blob_digest)
        descriptors.append(
            {
                "mediaType": SIMPLE_SIGNING_MEDIA_TYPE,
                "size": len(layer.payload),
                "digest": blob_digest,
                "annotations": layer.all_annotations(),
            }
        )
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}] * len(layers),
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()
    config_digest = client.push_blob(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": descriptors,
    }
    return client.put_manifest(signature_tag(digest), manifest, OCI_MANIFEST)


def fetch_legacy_signatures(client: RegistryClient, digest: str) -> list[LegacySignature]:
    """The signatures in ``sha256-<hex>.sig``; [] when there is none. Payloads are digest-checked."""
    manifest = client.get_manifest(signature_tag(digest))
    if manifest is None:
        return []
    signatures = []
    for layer in manifest.document.get("layers", [])[:MAX_SIGNATURES]:
        if layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        annotations = {str(k): str(v) for k, v in (layer.get("annotations") or {}).items()}
        encoded = annotations.get(SIGNATURE_ANNOTATION)
        if not encoded:
            continue
        payload = client.get_blob(layer["digest"], MAX_SIGNATURE_BLOB)
        if payload is None or "sha256:" + hashlib.sha256(payload).hexdigest() != layer["digest"]:
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        signatures.append(LegacySignature(payload=payload, signature=signature, annotations=annotations))
    return signatures


def fetch_bundle_signatures(client: RegistryClient, digest: str) -> list[BundleSignature]:
    """Sigstore bundles referring to ``digest`` (referrers API, then the referrers tag schema)."""
    index = client.get_referrers(digest)
    if index is None:
        fallback = client.get_manifest(referrers_tag(digest))
        if fallback is None or not fallback.is_index:
            return []
        index = fallback.document
    bundles = []
    for descriptor in index.get("manifests", [])[:MAX_SIGNATURES]:
        if descriptor.get("artifactType") != SIGSTORE_BUNDLE_MEDIA_TYPE:
            continue
        manifest = client.get_manifest(descriptor["digest"])
        if manifest is None:
            continue
        document = manifest.document
        if document.get("subject", {}).get("digest") != digest:
            continue
        for layer in document.get("layers", []):
            if layer.get("mediaType") != SIGSTORE_BUNDLE_MEDIA_TYPE:
                continue
            blob = client.get_blob(layer["digest"], MAX_SIGNATURE_BLOB)
            if blob is not None and "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]:
                bundles.append(BundleSignature(bundle=blob))
    return bundles


def has_valid_legacy_signature(
    client: RegistryClient, digest: str, verify: Callable[[bytes, bytes], bool]
) -> bool:
    """Whether ``sha256-<hex>.sig`` holds a signature ``verify(payload, signature)`` accepts whose
    simple-signing payload names ``digest``. An unreadable signature counts as none (a miss that is
    rebuilt), never as an error."""
    try:
        signatures = fetch_legacy_signatures(client, digest)
    except (RegistryError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("unreadable signature", extra={"digest": digest, "error": str(exc)})
        return False
    for signature in signatures:
        if not verify(signature.payload, signature.signature):
            continue
        try:
            check_simple_signing_payload(signature.payload, digest)
        except SignatureError:
            continue
        return True
    return False


def push_referrer(
    client: RegistryClient,
    subject: Mapping[str, object],
    artifact_type: str,
    layers: Sequence[tuple[bytes, str, Mapping[str, str]]],
) -> str:
    """Attaches an artifact to ``subject`` (a descriptor) as an OCI 1.1 referrer.

    ``layers`` are ``(bytes, media type, annotations)``. The ``sha256-<hex>`` referrers tag index is
    updated too, so registries without the referrers API (distribution 2.8) and clients using the
    fallback find it (``opencontainers/distribution-spec@v1.1.0:spec.md``, "Referrers Tag Schema").
    """
    digest = str(subject["digest"])
    empty = b"{}"
    empty_digest = client.push_blob(empty)
    descriptors = []
    for data, media_type, notes in layers:
        descriptor: dict[str, object] = {
            "mediaType": media_type,
            "size": len(data),
            "digest": client.push_blob(data),
        }
        if notes:
            descriptor["annotations"] = dict(notes)
        descriptors.append(descriptor)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2, "digest": empty_digest},
        "layers": descriptors,
        "subject": dict(subject),
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    client.put_manifest_bytes(manifest_digest, body, OCI_MANIFEST)
    existing = client.get_manifest(referrers_tag(digest))
    entries = existing.document.get("manifests", []) if existing and existing.is_index else []
    entries = [e for e in entries if e.get("digest") != manifest_digest]
    entries.append(
        {
            "mediaType": OCI_MANIFEST,
            "size": len(body),
            "digest": manifest_digest,
            "artifactType": artifact_type,
        }
    )
    client.put_manifest(
        referrers_tag(digest), {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, OCI_INDEX
    )
    return manifest_digest


def push_bundle_referrer(
    client: RegistryClient, digest: str, size: int, media_type: str, bundle: bytes
) -> str:
    """Attaches a Sigstore bundle to ``digest`` the way cosign does on registries without referrers."""
    subject = {"mediaType": media_type, "size": size, "digest": digest}
    return push_referrer(
        client, subject, SIGSTORE_BUNDLE_MEDIA_TYPE, [(bundle, SIGSTORE_BUNDLE_MEDIA_TYPE, {})]
    )


__all__ = [
    "SignatureLayer",
    "fetch_bundle_signatures",
    "fetch_legacy_signatures",
    "has_valid_legacy_signature",
    "push_bundle_referrer",
    "push_legacy_signatures",
    "push_referrer",
    "signature_tag",
    "simple_signing_payload",
]
