"""Signature verification of every source image before anything from it is used.

Mirrors upstream's order: the configured public key first (offline), then keyless (Fulcio
identity + Rekor evidence); for each, legacy ``.sig`` signatures and Sigstore bundles; the first
success wins. A digest that verified once stays verified for the life of the process (digests are
immutable); failures are not remembered, so a fixed signature is picked up on the next request.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from common.config.options import ContainerSignatureOptions
from common.cosign.registry import fetch_bundle_signatures, fetch_legacy_signatures
from common.cosign.types import Signature, SignatureCheck, SignatureError
from common.metrics import NULL_METRICS, Metrics
from common.metrics.definitions import SOURCE_VERIFICATION_FAILURES
from common.registry.client import RegistryClient

log = logging.getLogger(__name__)


class SourceVerifier:
    def __init__(
        self, checks: list[SignatureCheck], *, disabled: bool = False, metrics: Metrics = NULL_METRICS
    ) -> None:
        self.checks = checks
        self.disabled = disabled
        self.metrics = metrics
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def verify(self, client: RegistryClient, digest: str) -> None:
        """Raises SignatureError naming ``<repository>@<digest>`` unless a check accepts a signature."""
        if self.disabled:
            return
        image = f"{client.repo.reference}@{digest}"
        with self._lock:
            if image in self._verified:
                return
        signatures: list[Signature] = [*fetch_legacy_signatures(client, digest)]
        signatures.extend(fetch_bundle_signatures(client, digest))
        if not signatures:
            self.metrics.inc(SOURCE_VERIFICATION_FAILURES, reason="unsigned")
            raise SignatureError(
                f"image {image} is not signed (no cosign signature or Sigstore bundle found)"
            )
        reasons = []
        for check in self.checks:
            for signature in signatures:
                try:
                    check.verify(digest, signature)
                except SignatureError as exc:
                    reasons.append(f"{check.name}: {exc}")
                    continue
                log.info("verified source image signature", extra={"image": image, "check": check.name})
                with self._lock:
                    self._verified.add(image)
                return
        self.metrics.inc(SOURCE_VERIFICATION_FAILURES, reason="rejected")
        raise SignatureError(
            f"image {image} failed signature verification: " + "; ".join(dict.fromkeys(reasons))
        )


def verifier_from_config(
    options: ContainerSignatureOptions, metrics: Metrics = NULL_METRICS
) -> SourceVerifier:
    if options.disabled:
        return SourceVerifier([], disabled=True)
    from common.cosign.keyless import KeylessCheck, load_trusted_root
    from common.cosign.pubkey import PublicKeyCheck, load_public_key

    checks: list[SignatureCheck] = []
    if options.publicKeyFile:
        key = load_public_key(Path(options.publicKeyFile).read_bytes())
        checks.append(PublicKeyCheck(key, options.publicKeyHashAlgo))
    root = load_trusted_root(options.trustedRootFile) if options.trustedRootFile else None
    checks.append(KeylessCheck(root, options.subjectRegExp, options.issuer, options.issuerRegExp))
    return SourceVerifier(checks, metrics=metrics)
