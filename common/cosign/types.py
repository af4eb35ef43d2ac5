"""What signature checks consume, independent of where the signatures were fetched from.

Cosign stores signatures of an image digest in two places: the legacy tag
``<repo>:sha256-<hex>.sig`` (one layer per signature: a simple-signing payload, the base64
signature in an annotation, keyless material in more annotations), and Sigstore bundles attached
as OCI referrers (``application/vnd.dev.sigstore.bundle.v0.3+json``). The fetcher turns both into
these records; checks (public key, keyless) decide whether one of them vouches for the digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from common.errors import FactoryError

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


class SignatureError(FactoryError):
    """A source image is unsigned, tampered with or signed by someone we do not trust.

    A 502 for the client: the source registry served something we must not use. Upstream answers
    500 ``internal server error``; we name the image and the reason so operators can act.
    """

    status = 502


@dataclass(frozen=True)
class LegacySignature:
    """One layer of a ``sha256-<hex>.sig`` manifest; ``payload`` already matches its layer digest."""

    payload: bytes
    signature: bytes  # decoded from the base64 annotation
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleSignature:
    """A Sigstore bundle (JSON bytes) found as a referrer of the image digest."""

    bundle: bytes


Signature = LegacySignature | BundleSignature


class SignatureCheck(Protocol):
    """One way of trusting a signature (public key, keyless identity)."""

    name: str

    def verify(self, digest: str, signature: Signature) -> None:
        """Returns if ``signature`` proves ``digest`` (``sha256:<hex>``); raises SignatureError if not.

        Implementations check the cryptography and their identity rules, and that the signed
        statement names ``digest`` (simple-signing ``critical.image.docker-manifest-digest``, or an
        in-toto subject).
        """
        ...


def check_simple_signing_payload(payload: bytes, digest: str) -> None:
    """Refuses a simple-signing payload that does not name ``digest``.

    Without this a valid signature of some other image could be replayed onto this one.
    """
    import json

    try:
        document = json.loads(payload)
        signed = document["critical"]["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"signature payload is not a cosign simple-signing document: {exc}") from exc
    if signed != digest:
        raise SignatureError(f"signature is for {signed}, not {digest}")
