"""Keyless verification of cosign signatures: a Fulcio certificate for a trusted identity, plus
transparency-log evidence, checked fully offline against a Sigstore trusted root.

Two formats, as cosign writes them:

* legacy ``.sig`` layers: leaf certificate and a Rekor "bundle" (hashedrekord body + signed entry
  timestamp) in annotations. That evidence has no inclusion proof, which sigstore-python's
  ``Bundle`` insists on, so these are checked here the way ``cosign verify`` checks them offline:
  SET against the trusted Rekor keys, certificate chain and SCT at the logged time, identity,
  signature, and consistency of the logged body with the signature and certificate;
* Sigstore bundles (``cosign sign --new-bundle-format``): a DSSE envelope of an in-toto statement
  (predicate ``https://sigstore.dev/cosign/sign/v1``) naming the image digest, verified with
  sigstore-python's ``Verifier.verify_dsse``.

Both use the same identity policy, with upstream's (cosign's) semantics: subject and issuer
regular expressions are unanchored searches, the exact issuer applies only when no issuer regular
expression is set, and empty values disable that part of the check.

The legacy path reuses a few sigstore-python internals (SCT check, keyrings); sigstore is pinned.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import (
    VerificationError as X509VerificationError,
)
from sigstore._internal.sct import verify_sct
from sigstore._internal.trust import KeyringPurpose
from sigstore._utils import KeyID
from sigstore.errors import Error as SigstoreError
from sigstore.errors import VerificationError
from sigstore.models import Bundle, ClientTrustConfig, TrustedRoot
from sigstore.verify import Verifier
from sigstore_models.trustroot import v1 as trustroot_v1

from common.cosign.types import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    BundleSignature,
    LegacySignature,
    Signature,
    SignatureError,
    check_simple_signing_payload,
)

PUBLIC_GOOD_TUF_URL = "https://tuf-repo-cdn.sigstore.dev"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
COSIGN_SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
CLIENT_TRUST_CONFIG_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.clienttrustconfig"

OIDC_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
FULCIO_OTHERNAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")


def load_trusted_root(path: str) -> TrustedRoot:
    """Reads a trusted_root.json or a client trust config (``sigstore --trust-config``) from disk.

    Air-gapped sites run their own Fulcio and Rekor and hand us whichever of the two they have.
    """
    try:
        raw = Path(path).read_bytes()
        document = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read Sigstore trusted root {path}: {exc}") from exc
    media_type = document.get("mediaType", "") if isinstance(document, dict) else ""
    try:
        if str(media_type).startswith(CLIENT_TRUST_CONFIG_MEDIA_TYPE_PREFIX):
            return ClientTrustConfig.from_json(raw.decode()).trusted_root
        return TrustedRoot.from_file(path)
    except (SigstoreError, ValueError) as exc:
        raise ValueError(f"{path} is not a Sigstore trusted root or client trust config: {exc}") from exc


def production_trusted_root() -> TrustedRoot:
    """The public-good root shipped inside sigstore-python, read without TUF.

    ``ClientTrustConfig.production(offline=True)`` would also avoid the network, but it copies the
    embedded files into (and then trusts whatever is in) a per-user cache directory; reading the
    package data directly is the same root, with no writable state involved.
    """
    resource = resources.files("sigstore._store").joinpath(
        quote(PUBLIC_GOOD_TUF_URL, safe=""), "trusted_root.json"
    )
    try:
        raw = resource.read_bytes()
    except FileNotFoundError:  # a future sigstore-python moved its embedded data
        return ClientTrustConfig.production(offline=True).trusted_root
    return TrustedRoot(trustroot_v1.TrustedRoot.from_json(raw))


class IdentityMismatch(VerificationError):
    """The certificate is genuine but names someone we were not told to trust."""


class IdentityPolicy:
    """A sigstore ``VerificationPolicy`` with cosign's regular-expression identity semantics.

    sigstore-python's own ``Identity`` policy only compares exact strings.
    """

    def __init__(self, subject_regexp: str, issuer: str, issuer_regexp: str) -> None:
        try:
            self.subject = re.compile(subject_regexp) if subject_regexp else None
        except re.error as exc:
            raise ValueError(f"invalid subject regular expression {subject_regexp!r}: {exc}") from exc
        try:
            self.issuer_regexp = re.compile(issuer_regexp) if issuer_regexp.strip() else None
        except re.error as exc:
            raise ValueError(f"invalid issuer regular expression {issuer_regexp!r}: {exc}") from exc
        self.issuer = issuer

    def verify(self, cert: x509.Certificate) -> None:
        if self.issuer_regexp is not None:
            issuer = certificate_issuer(cert)
            if not _search(self.issuer_regexp, issuer):
                raise IdentityMismatch(
                    f"certificate issuer {issuer!r} does not match {self.issuer_regexp.pattern!r}"
                )
        elif self.issuer:
            issuer = certificate_issuer(cert)
            if issuer != self.issuer:
                raise IdentityMismatch(f"certificate issuer {issuer!r} is not {self.issuer!r}")
        if self.subject is not None:
            identities = certificate_identities(cert)
            if not any(_search(self.subject, identity) for identity in identities):
                shown = ", ".join(repr(identity) for identity in identities) or "(none)"
                raise IdentityMismatch(
                    f"certificate identity {shown} does not match {self.subject.pattern!r}"
                )


def _search(pattern: re.Pattern[str], value: str) -> bool:
    """Go's ``MatchString``: unanchored. Python's ``$`` also matches before a final newline,
    Go's does not, so values with control characters never match."""
    if any(ord(char) < 0x20 for char in value):
        return False
    return pattern.search(value) is not None


def certificate_issuer(cert: x509.Certificate) -> str:
    """The OIDC issuer Fulcio recorded: the v2 (DER string) extension, else the legacy raw one."""
    values = []
    for oid, der in ((OIDC_ISSUER_V2_OID, True), (OIDC_ISSUER_OID, False)):
        try:
            extension = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = extension.value if isinstance(extension, x509.UnrecognizedExtension) else b""
        try:
            values.append(asn1.decode_der(str, raw) if der else raw.decode())
        except ValueError as exc:
            raise IdentityMismatch(
                f"certificate OIDC issuer extension {oid.dotted_string} is malformed"
            ) from exc
    if not values:
        raise IdentityMismatch("certificate has no OIDC issuer extension")
    if len(set(values)) > 1:
        raise IdentityMismatch(f"certificate names conflicting OIDC issuers {values}")
    return values[0]


def certificate_identities(cert: x509.Certificate) -> list[str]:
    """The SANs cosign matches the subject against (emails, URIs, DNS names, IPs, Fulcio other names)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    identities: list[str] = [*san.get_values_for_type(x509.RFC822Name)]
    identities.extend(san.get_values_for_type(x509.UniformResourceIdentifier))
    identities.extend(san.get_values_for_type(x509.DNSName))
    identities.extend(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == FULCIO_OTHERNAME_OID:
            try:
                identities.append(asn1.decode_der(str, other.value))
            except ValueError:
                identities.append(other.value.decode(errors="replace"))
    return identities


@dataclass(frozen=True)
class _RekorEvidence:
    """cosign's ``dev.sigstore.cosign/bundle`` annotation: a Rekor v1 entry and its SET."""

    signed_entry_timestamp: bytes
    body_b64: str
    integrated_time: int
    log_index: int
    log_id: str  # hex, as logged: the SET covers this exact string

    @classmethod
    def parse(cls, annotation: str) -> _RekorEvidence:
        try:
            document = json.loads(annotation)
            payload = document["Payload"]
            evidence = cls(
                signed_entry_timestamp=base64.b64decode(document["SignedEntryTimestamp"], validate=True),
                body_b64=str(payload["body"]),
                integrated_time=_integer(payload["integratedTime"]),
                log_index=_integer(payload["logIndex"]),
                log_id=str(payload["logID"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise SignatureError(f"transparency log bundle annotation is malformed: {exc}") from exc
        return evidence

    @property
    def key_id(self) -> bytes:
        """Which Rekor key signed; only a hint, the keyring tries all keys if it names none."""
        try:
            return bytes.fromhex(self.log_id)
        except ValueError:
            return b""

    def canonical_summary(self) -> bytes:
        """What the SET signs: RFC 8785 JSON of the entry summary (plain ASCII and integers here)."""
        summary = {
            "body": self.body_b64,
            "integratedTime": self.integrated_time,
            "logID": self.log_id,
            "logIndex": self.log_index,
        }
        return json.dumps(summary, sort_keys=True, separators=(",", ":")).encode()


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


class KeylessCheck:
    """Trusts signatures by Fulcio-certified identities matching the configured policy."""

    name = "keyless"

    def __init__(
        self, trusted_root: TrustedRoot | None, subject_regexp: str, issuer: str, issuer_regexp: str
    ) -> None:
        self.trusted_root = trusted_root if trusted_root is not None else production_trusted_root()
        self.policy = IdentityPolicy(subject_regexp, issuer, issuer_regexp)
        try:
            self._verifier = Verifier(trusted_root=self.trusted_root)
            self._fulcio = self.trusted_root.get_fulcio_certs()
            self._rekor_keys = self.trusted_root.rekor_keyring(KeyringPurpose.VERIFY)
            self._ct_keys = self.trusted_root.ct_keyring(KeyringPurpose.VERIFY)
        except SigstoreError as exc:
            raise ValueError(f"Sigstore trusted root is unusable for keyless verification: {exc}") from exc

    def verify(self, digest: str, signature: Signature) -> None:
        if isinstance(signature, LegacySignature):
            self._verify_legacy(digest, signature)
        elif isinstance(signature, BundleSignature):
            self._verify_bundle(digest, signature)
        else:  # pragma: no cover - the Signature union is closed
            raise SignatureError(f"unsupported signature record {type(signature).__name__}")

    # -- legacy .sig layers -----------------------------------------------------------------

    def _verify_legacy(self, digest: str, signature: LegacySignature) -> None:
        annotations = signature.annotations
        if not annotations.get(CERTIFICATE_ANNOTATION):
            raise SignatureError("no certificate; not a keyless signature")
        try:
            cert = x509.load_pem_x509_certificate(annotations[CERTIFICATE_ANNOTATION].encode())
        except ValueError as exc:
            raise SignatureError(f"certificate annotation is not a PEM certificate: {exc}") from exc
        if not annotations.get(BUNDLE_ANNOTATION):
            raise SignatureError("no transparency log bundle; keyless signatures need Rekor evidence")
        evidence = _RekorEvidence.parse(annotations[BUNDLE_ANNOTATION])

        # The SET is what makes the integrated time trustworthy, so it comes first.
        try:
            self._rekor_keys.verify(
                key_id=KeyID(evidence.key_id),
                signature=evidence.signed_entry_timestamp,
                data=evidence.canonical_summary(),
            )
        except VerificationError as exc:
            raise SignatureError(
                f"transparency log entry does not verify: signed entry timestamp is not from a trusted "
                f"Rekor key ({exc})"
            ) from exc
        signed_at = datetime.fromtimestamp(evidence.integrated_time, UTC)

        try:
            self._verify_certificate(
                cert, signed_at, _chain_certificates(annotations.get(CHAIN_ANNOTATION, ""))
            )
        except IdentityMismatch as exc:
            raise SignatureError(str(exc)) from exc
        except VerificationError as exc:
            raise SignatureError(f"certificate does not verify: {exc}") from exc

        _verify_raw_signature(cert, signature.signature, signature.payload)
        _check_hashedrekord(evidence, cert, signature.signature, signature.payload)
        check_simple_signing_payload(signature.payload, digest)

    def _verify_certificate(
        self, cert: x509.Certificate, signed_at: datetime, intermediates: list[x509.Certificate]
    ) -> None:
        """Steps 1-3 of sigstore's verification, at the logged time instead of a bundle's."""
        if not cert.not_valid_before_utc <= signed_at <= cert.not_valid_after_utc:
            raise VerificationError(
                f"it was not valid when the signature was logged ({signed_at.isoformat()}; valid "
                f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()})"
            )
        # Fulcio certificates carry code signing, not client auth; everything else stays WebPKI.
        ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(
            x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
        )
        ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None
        )
        verifier = (
            PolicyBuilder()
            .store(Store(self._fulcio))
            .time(signed_at)
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
            .build_client_verifier()
        )
        try:
            chain = verifier.verify(cert, intermediates).chain[1:]
        except (X509VerificationError, x509.UnsupportedGeneralNameType) as exc:
            raise VerificationError(f"it does not chain to a trusted Fulcio CA: {exc}") from exc
        try:
            verify_sct(cert, chain, self._ct_keys)
        except VerificationError as exc:
            raise VerificationError(f"no valid certificate transparency timestamp: {exc}") from exc
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as exc:
            raise VerificationError(f"it lacks a required extension: {exc}") from exc
        if not usage.digital_signature:
            raise VerificationError("its key usage does not include digital signature")
        if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
            raise VerificationError("its extended key usage does not include code signing")
        self.policy.verify(cert)

    # -- Sigstore bundles -------------------------------------------------------------------

    def _verify_bundle(self, digest: str, signature: BundleSignature) -> None:
        try:
            document = json.loads(signature.bundle)
        except ValueError as exc:
            raise SignatureError(f"signature bundle is not JSON: {exc}") from exc
        if not isinstance(document, dict) or "dsseEnvelope" not in document:
            # cosign refuses these for images too: a message signature carries no statement naming the image.
            raise SignatureError("bundle holds no DSSE envelope; cosign signs images with in-toto statements")
        material = document.get("verificationMaterial")
        if not isinstance(material, dict) or not ({"certificate", "x509CertificateChain"} & material.keys()):
            raise SignatureError("bundle has no signing certificate; not a keyless signature")
        try:
            bundle = Bundle.from_json(signature.bundle)
        except (SigstoreError, ValueError, TypeError, KeyError) as exc:
            raise SignatureError(f"not a valid Sigstore bundle: {_brief(exc)}") from exc
        try:
            payload_type, payload = self._verifier.verify_dsse(bundle, self.policy)
        except IdentityMismatch as exc:
            raise SignatureError(str(exc)) from exc
        except (SigstoreError, ValueError, TypeError) as exc:
            raise SignatureError(f"bundle does not verify: {_brief(exc)}") from exc
        if payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise SignatureError(f"bundle payload is {payload_type!r}, not an in-toto statement")
        check_cosign_statement(payload, digest)


def _brief(exc: Exception) -> str:
    """One line of a sigstore/pydantic error: they can run to pages of nested detail."""
    text = " ".join(str(exc).split())
    text = text.split(" For further information visit")[0]
    return text if len(text) <= 300 else text[:297] + "..."


def check_cosign_statement(payload: bytes, digest: str) -> None:
    """Refuses a statement that is not a cosign image signature of ``digest``.

    Other predicates (SBOMs, provenance) by the same identity are attestations, not signatures.
    """
    try:
        statement = json.loads(payload)
        statement_type = statement["_type"]
        predicate_type = statement["predicateType"]
        subjects = statement["subject"]
        named = [f"{alg}:{value}" for subject in subjects for alg, value in subject["digest"].items()]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError(f"bundle payload is not an in-toto statement: {exc}") from exc
    if statement_type not in IN_TOTO_STATEMENT_TYPES:
        raise SignatureError(f"bundle payload has unknown statement type {statement_type!r}")
    if predicate_type != COSIGN_SIGN_PREDICATE_TYPE:
        raise SignatureError(f"bundle is a {predicate_type!r} attestation, not a cosign signature")
    if digest not in named:
        raise SignatureError(
            f"bundle digest mismatch: statement names {', '.join(named) or 'nothing'}, not {digest}"
        )


def _chain_certificates(pem: str) -> list[x509.Certificate]:
    """Intermediates offered by the signer; untrusted, they only help build a path to the root."""
    if not pem.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise SignatureError(f"certificate chain annotation is not PEM: {exc}") from exc


def _verify_raw_signature(cert: x509.Certificate, signature: bytes, payload: bytes) -> None:
    """cosign's legacy signatures are SHA-256 over the payload, whatever the key type."""
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            raise SignatureError(f"unsupported certificate key type {type(key).__name__}")
    except InvalidSignature as exc:
        raise SignatureError(
            "signature does not verify with the certificate's key (payload tampered?)"
        ) from exc


def _check_hashedrekord(
    evidence: _RekorEvidence, cert: x509.Certificate, signature: bytes, payload: bytes
) -> None:
    """The logged entry must be this signature by this certificate over this payload.

    Without it a genuine SET for some other entry could vouch for a signature never logged.
    """
    try:
        body = json.loads(base64.b64decode(evidence.body_b64, validate=True))
        kind, version = body["kind"], body["apiVersion"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"transparency log entry body is malformed: {exc}") from exc
    if (kind, version) != ("hashedrekord", "0.0.1"):
        raise SignatureError(f"transparency log entry is {kind}/{version}, expected hashedrekord/0.0.1")
    try:
        spec = body["spec"]
        logged_hash = spec["data"]["hash"]
        logged_signature = base64.b64decode(spec["signature"]["content"], validate=True)
        logged_cert_pem = base64.b64decode(spec["signature"]["publicKey"]["content"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"transparency log entry body is malformed: {exc}") from exc
    if (
        logged_hash.get("algorithm") != "sha256"
        or logged_hash.get("value") != hashlib.sha256(payload).hexdigest()
    ):
        raise SignatureError("transparency log entry does not match: it logs a different payload hash")
    if logged_signature != signature:
        raise SignatureError("transparency log entry does not match: it logs a different signature")
    try:
        logged_cert = x509.load_pem_x509_certificate(logged_cert_pem)
    except ValueError as exc:
        raise SignatureError(
            f"transparency log entry does not match: its certificate is unreadable: {exc}"
        ) from exc
    if logged_cert.public_bytes(serialization.Encoding.DER) != cert.public_bytes(serialization.Encoding.DER):
        raise SignatureError("transparency log entry does not match: it logs a different certificate")


__all__ = ["IdentityPolicy", "KeylessCheck", "load_trusted_root", "production_trusted_root"]
