"""Keyless verification, fully offline: a deterministic fake Sigstore for every accept/refuse case,
plus one genuine public-good signature checked against the root embedded in sigstore-python.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.cosign.keyless import KeylessCheck, load_trusted_root
from common.cosign.registry import simple_signing_payload
from common.cosign.types import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    BundleSignature,
    LegacySignature,
    Signature,
    SignatureError,
)
from devstack.release.sigstore_testing import FakeSigstore

DIGEST = "sha256:" + hashlib.sha256(b"talos installer manifest").hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"some other manifest").hexdigest()
REFERENCE = "ghcr.io/siderolabs/installer"
UPSTREAM_SUBJECT = r"(@siderolabs\.com$|^releasemgr-svc@talos-production\.iam\.gserviceaccount\.com$)"
GOOGLE = "https://accounts.google.com"
GITHUB = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def fake() -> FakeSigstore:
    return FakeSigstore(b"test_keyless")


@pytest.fixture(scope="module")
def root_path(fake: FakeSigstore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake.write_trusted_root(tmp_path_factory.mktemp("sigstore") / "trusted_root.json")


@pytest.fixture(scope="module")
def make_check(root_path: Path) -> Callable[..., KeylessCheck]:
    root = load_trusted_root(str(root_path))

    def make(
        subject_regexp: str = UPSTREAM_SUBJECT, issuer: str = GOOGLE, issuer_regexp: str = ""
    ) -> KeylessCheck:
        return KeylessCheck(root, subject_regexp, issuer, issuer_regexp)

    return make


@pytest.fixture(scope="module")
def check(make_check: Callable[..., KeylessCheck]) -> KeylessCheck:
    return make_check()


def legacy(fake: FakeSigstore, digest: str = DIGEST, **identity: str) -> LegacySignature:
    payload = simple_signing_payload(REFERENCE, digest)
    signature, annotations = fake.sign_legacy(payload, **identity)
    return LegacySignature(payload=payload, signature=signature, annotations=annotations)


def bundle(fake: FakeSigstore, digest: str = DIGEST, **identity: str) -> BundleSignature:
    return BundleSignature(fake.sign_bundle(digest, **identity))


def edit_bundle(signature: BundleSignature, edit: Callable[[dict[str, Any]], None]) -> BundleSignature:
    document = json.loads(signature.bundle)
    edit(document)
    return BundleSignature(json.dumps(document).encode())


def refused(check: KeylessCheck, signature: Signature, digest: str = DIGEST) -> str:
    with pytest.raises(SignatureError) as info:
        check.verify(digest, signature)
    return str(info.value)


def flip_b64(value: str) -> str:
    """The same base64 text with one bit of the decoded bytes flipped."""
    raw = bytearray(base64.b64decode(value))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


SIGNERS: dict[str, Callable[..., Signature]] = {"legacy": legacy, "bundle": bundle}


# -- accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SIGNERS)
def test_good_signature_verifies(fake: FakeSigstore, check: KeylessCheck, kind: str) -> None:
    check.verify(DIGEST, SIGNERS[kind](fake))


@pytest.mark.parametrize("kind", SIGNERS)
def test_upstream_service_account_identity_verifies(
    fake: FakeSigstore, check: KeylessCheck, kind: str
) -> None:
    check.verify(
        DIGEST, SIGNERS[kind](fake, identity="releasemgr-svc@talos-production.iam.gserviceaccount.com")
    )


@pytest.mark.parametrize("kind", SIGNERS)
def test_subject_regexp_is_unanchored_like_go(
    fake: FakeSigstore, make_check: Callable[..., KeylessCheck], kind: str
) -> None:
    workflow = "https://github.com/siderolabs/talos/.github/workflows/release.yaml@refs/tags/v1.9.0"
    make_check(subject_regexp=r"github\.com/siderolabs/", issuer=GITHUB).verify(
        DIGEST, SIGNERS[kind](fake, identity=workflow, issuer=GITHUB)
    )


@pytest.mark.parametrize("kind", SIGNERS)
def test_empty_subject_regexp_accepts_any_subject(
    fake: FakeSigstore, make_check: Callable[..., KeylessCheck], kind: str
) -> None:
    anyone = make_check(subject_regexp="")
    anyone.verify(DIGEST, SIGNERS[kind](fake, identity="mallory@evil.example"))
    anyone.verify(DIGEST, SIGNERS[kind](fake, identity="https://evil.example/workflow"))


@pytest.mark.parametrize("kind", SIGNERS)
def test_issuer_regexp_takes_precedence_over_exact_issuer(
    fake: FakeSigstore, make_check: Callable[..., KeylessCheck], kind: str
) -> None:
    by_regexp = make_check(issuer=GOOGLE, issuer_regexp=r"^https://token\.actions\.githubusercontent\.com$")
    by_regexp.verify(DIGEST, SIGNERS[kind](fake, issuer=GITHUB))
    message = refused(by_regexp, SIGNERS[kind](fake, issuer=GOOGLE))
    assert message == (
        f"certificate issuer {GOOGLE!r} does not match '^https://token\\\\.actions\\\\.githubusercontent\\\\.com$'"
    )


@pytest.mark.parametrize("kind", SIGNERS)
def test_blank_issuer_regexp_falls_back_to_exact_issuer(
    fake: FakeSigstore, make_check: Callable[..., KeylessCheck], kind: str
) -> None:
    exact = make_check(issuer=GOOGLE, issuer_regexp="   ")
    exact.verify(DIGEST, SIGNERS[kind](fake))
    assert "is not 'https://accounts.google.com'" in refused(exact, SIGNERS[kind](fake, issuer=GITHUB))


# -- identity refused -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SIGNERS)
def test_wrong_identity_is_refused(fake: FakeSigstore, check: KeylessCheck, kind: str) -> None:
    message = refused(check, SIGNERS[kind](fake, identity="mallory@evil.example"))
    assert message == f"certificate identity 'mallory@evil.example' does not match {UPSTREAM_SUBJECT!r}"


@pytest.mark.parametrize("kind", SIGNERS)
def test_suffix_lookalike_identity_is_refused(fake: FakeSigstore, check: KeylessCheck, kind: str) -> None:
    message = refused(check, SIGNERS[kind](fake, identity="release@siderolabs.com.evil.example"))
    assert "certificate identity 'release@siderolabs.com.evil.example' does not match" in message


@pytest.mark.parametrize("kind", SIGNERS)
def test_wrong_exact_issuer_is_refused(fake: FakeSigstore, check: KeylessCheck, kind: str) -> None:
    message = refused(check, SIGNERS[kind](fake, issuer="https://evil.example"))
    assert message == "certificate issuer 'https://evil.example' is not 'https://accounts.google.com'"


@pytest.mark.parametrize("kind", SIGNERS)
def test_wrong_issuer_regexp_is_refused(
    fake: FakeSigstore, make_check: Callable[..., KeylessCheck], kind: str
) -> None:
    google_only = make_check(issuer="", issuer_regexp=r"^https://accounts\.google\.com$")
    google_only.verify(DIGEST, SIGNERS[kind](fake))
    message = refused(google_only, SIGNERS[kind](fake, issuer="https://accounts.google.com.evil.example"))
    assert message.startswith("certificate issuer 'https://accounts.google.com.evil.example' does not match")


# -- legacy: tampering ----------------------------------------------------------------------------


def test_legacy_tampered_payload_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    good = legacy(fake)
    tampered = LegacySignature(
        payload=good.payload.replace(b"siderolabs", b"evil-corp!"),
        signature=good.signature,
        annotations=good.annotations,
    )
    assert refused(check, tampered).startswith("signature does not verify with the certificate's key")


def test_legacy_payload_naming_another_digest_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    assert (
        refused(check, legacy(fake, digest=OTHER_DIGEST)) == f"signature is for {OTHER_DIGEST}, not {DIGEST}"
    )


def test_legacy_signature_from_untrusted_sigstore_is_refused(check: KeylessCheck) -> None:
    message = refused(check, legacy(FakeSigstore(b"someone else")))
    assert message.startswith(
        "transparency log entry does not verify: signed entry timestamp is not from a trusted"
    )


def test_legacy_untrusted_certificate_with_trusted_log_entry_is_refused(
    fake: FakeSigstore, check: KeylessCheck
) -> None:
    """A rogue CA's certificate cannot ride on a genuine SET: the chain is checked on its own."""
    rogue = FakeSigstore(b"someone else")
    good = legacy(fake)
    annotations = dict(good.annotations)
    annotations[CERTIFICATE_ANNOTATION] = rogue.sign_legacy(good.payload)[1][CERTIFICATE_ANNOTATION]
    annotations[CHAIN_ANNOTATION] = rogue.sign_legacy(good.payload)[1][CHAIN_ANNOTATION]
    message = refused(check, LegacySignature(good.payload, good.signature, annotations))
    assert message.startswith("certificate does not verify: it does not chain to a trusted Fulcio CA")


@pytest.mark.parametrize(
    "field",
    ["SignedEntryTimestamp", "body", "integratedTime", "logIndex"],
)
def test_legacy_tampered_log_entry_is_refused(fake: FakeSigstore, check: KeylessCheck, field: str) -> None:
    good = legacy(fake)
    rekor_bundle = json.loads(good.annotations[BUNDLE_ANNOTATION])
    if field == "SignedEntryTimestamp":
        rekor_bundle[field] = flip_b64(rekor_bundle[field])
    elif field == "body":
        rekor_bundle["Payload"]["body"] = flip_b64(rekor_bundle["Payload"]["body"])
    else:
        rekor_bundle["Payload"][field] += 1
    annotations = {**good.annotations, BUNDLE_ANNOTATION: json.dumps(rekor_bundle)}
    message = refused(check, LegacySignature(good.payload, good.signature, annotations))
    assert message.startswith("transparency log entry does not verify:")


def test_legacy_genuine_log_entry_of_another_signature_is_refused(
    fake: FakeSigstore, check: KeylessCheck
) -> None:
    """A valid SET only vouches for the entry it logged."""
    good, other = legacy(fake), legacy(fake, digest=OTHER_DIGEST)
    annotations = {**good.annotations, BUNDLE_ANNOTATION: other.annotations[BUNDLE_ANNOTATION]}
    message = refused(check, LegacySignature(good.payload, good.signature, annotations))
    assert message == "transparency log entry does not match: it logs a different payload hash"


def test_legacy_certificate_of_another_signature_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    good, other = legacy(fake), legacy(fake, digest=OTHER_DIGEST)
    annotations = {**good.annotations, CERTIFICATE_ANNOTATION: other.annotations[CERTIFICATE_ANNOTATION]}
    message = refused(check, LegacySignature(good.payload, good.signature, annotations))
    assert message.startswith("signature does not verify with the certificate's key")


def test_legacy_without_certificate_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    good = legacy(fake)
    annotations = {SIGNATURE_ANNOTATION: good.annotations[SIGNATURE_ANNOTATION]}
    assert refused(check, LegacySignature(good.payload, good.signature, annotations)) == (
        "no certificate; not a keyless signature"
    )


def test_legacy_without_log_evidence_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    good = legacy(fake)
    annotations = {k: v for k, v in good.annotations.items() if k != BUNDLE_ANNOTATION}
    message = refused(check, LegacySignature(good.payload, good.signature, annotations))
    assert message == "no transparency log bundle; keyless signatures need Rekor evidence"


def test_legacy_malformed_log_evidence_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    good = legacy(fake)
    annotations = {**good.annotations, BUNDLE_ANNOTATION: '{"Payload": {}}'}
    message = refused(check, LegacySignature(good.payload, good.signature, annotations))
    assert message.startswith("transparency log bundle annotation is malformed")


def test_legacy_chain_annotation_is_not_trusted(fake: FakeSigstore, check: KeylessCheck) -> None:
    """Trust comes from the trusted root; the signer's chain annotation is optional and untrusted."""
    good = legacy(fake)
    annotations = {k: v for k, v in good.annotations.items() if k != CHAIN_ANNOTATION}
    check.verify(DIGEST, LegacySignature(good.payload, good.signature, annotations))


# -- bundles: tampering ---------------------------------------------------------------------------


def test_bundle_tampered_statement_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    def retarget(document: dict[str, Any]) -> None:
        envelope = document["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"]).replace(
            DIGEST[7:].encode(), OTHER_DIGEST[7:].encode()
        )
        envelope["payload"] = base64.b64encode(payload).decode()

    assert refused(check, edit_bundle(bundle(fake), retarget), OTHER_DIGEST).startswith(
        "bundle does not verify:"
    )


def test_bundle_naming_another_digest_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    message = refused(check, bundle(fake, digest=OTHER_DIGEST))
    assert message == f"bundle digest mismatch: statement names {OTHER_DIGEST}, not {DIGEST}"


def test_bundle_other_predicate_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": DIGEST[7:]}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {},
    }
    signature = BundleSignature(fake.sign_statement(json.dumps(statement).encode()))
    assert refused(check, signature) == (
        "bundle is a 'https://slsa.dev/provenance/v1' attestation, not a cosign signature"
    )


def test_bundle_from_untrusted_sigstore_is_refused(check: KeylessCheck) -> None:
    message = refused(check, bundle(FakeSigstore(b"someone else")))
    assert message.startswith("bundle does not verify: failed to build timestamp certificate chain")


def test_bundle_tampered_set_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    def tamper(document: dict[str, Any]) -> None:
        promise = document["verificationMaterial"]["tlogEntries"][0]["inclusionPromise"]
        promise["signedEntryTimestamp"] = flip_b64(promise["signedEntryTimestamp"])

    message = refused(check, edit_bundle(bundle(fake), tamper))
    assert message.startswith("bundle does not verify: invalid log entry: SET: invalid inclusion promise")


def test_bundle_tampered_log_body_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    def tamper(document: dict[str, Any]) -> None:
        entry = document["verificationMaterial"]["tlogEntries"][0]
        entry["canonicalizedBody"] = flip_b64(entry["canonicalizedBody"])

    message = refused(check, edit_bundle(bundle(fake), tamper))
    assert message.startswith(
        "bundle does not verify: invalid log entry: inclusion proof contains invalid root hash"
    )


def test_bundle_with_log_entry_of_another_bundle_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    other = json.loads(bundle(fake, digest=OTHER_DIGEST).bundle)

    def swap(document: dict[str, Any]) -> None:
        document["verificationMaterial"]["tlogEntries"] = other["verificationMaterial"]["tlogEntries"]

    message = refused(check, edit_bundle(bundle(fake), swap))
    assert message == "bundle does not verify: log entry payload hash does not match bundle"


def test_bundle_without_certificate_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    def strip(document: dict[str, Any]) -> None:
        del document["verificationMaterial"]["certificate"]

    message = refused(check, edit_bundle(bundle(fake), strip))
    assert message == "bundle has no signing certificate; not a keyless signature"


def test_message_signature_bundle_is_refused(fake: FakeSigstore, check: KeylessCheck) -> None:
    def to_message_signature(document: dict[str, Any]) -> None:
        del document["dsseEnvelope"]
        document["messageSignature"] = {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": base64.b64encode(bytes.fromhex(DIGEST[7:])).decode(),
            },
            "signature": base64.b64encode(b"x" * 70).decode(),
        }

    message = refused(check, edit_bundle(bundle(fake), to_message_signature))
    assert message == "bundle holds no DSSE envelope; cosign signs images with in-toto statements"


def test_malformed_bundle_is_refused_briefly(fake: FakeSigstore, check: KeylessCheck) -> None:
    def break_entry(document: dict[str, Any]) -> None:
        document["verificationMaterial"]["tlogEntries"][0]["kindVersion"] = "not an object"

    message = refused(check, edit_bundle(bundle(fake), break_entry))
    assert message.startswith("not a valid Sigstore bundle: failed to load bundle")
    assert "\n" not in message and len(message) < 400


def test_bundle_that_is_not_json_is_refused(check: KeylessCheck) -> None:
    assert refused(check, BundleSignature(b"\x00not json")).startswith("signature bundle is not JSON")


# -- trust roots ----------------------------------------------------------------------------------


def test_client_trust_config_loads_as_trusted_root(fake: FakeSigstore, tmp_path: Path) -> None:
    path = tmp_path / "trust_config.json"
    path.write_bytes(fake.client_trust_config_json())
    KeylessCheck(load_trusted_root(str(path)), UPSTREAM_SUBJECT, GOOGLE, "").verify(DIGEST, legacy(fake))


def test_unreadable_trusted_root_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "trusted_root.json"
    path.write_text('{"mediaType": "application/vnd.example+json"}')
    with pytest.raises(ValueError, match="is not a Sigstore trusted root"):
        load_trusted_root(str(path))
    with pytest.raises(ValueError, match="cannot read Sigstore trusted root"):
        load_trusted_root(str(tmp_path / "missing.json"))


def test_invalid_regexp_is_a_config_error(root_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid subject regular expression"):
        KeylessCheck(load_trusted_root(str(root_path)), "(", GOOGLE, "")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


@pytest.fixture
def production(no_network: None) -> KeylessCheck:
    return KeylessCheck(None, UPSTREAM_SUBJECT, GOOGLE, "")


def test_production_root_loads_offline_and_refuses_fake_signatures(
    production: KeylessCheck, fake: FakeSigstore
) -> None:
    assert refused(production, legacy(fake)).startswith("transparency log entry does not verify")
    assert refused(production, bundle(fake)).startswith("bundle does not verify")


# A genuine public-good keyless signature (cosign legacy format, GitHub Actions identity) of
# index.docker.io/salrashid123/server_image@sha256:c05263d2…, published in the README of
# github.com/salrashid123/go-bazel-github-workflow. The Rekor body is rebuilt from its parts:
# the genuine SET over it proves the reconstruction is byte-exact.
REAL_DIGEST = "sha256:c05263d2ff654c3a94243662440913f045075d59c436e2c69e9145ec2b87a321"
REAL_SIGNATURE = (
    "MEUCIFxT63qBSFO5LoNkXWPb0EheIqH1qqPKKox9RjCWZIU5AiEAsswKmqVHseDWd6YtWUYQYlLLCLTRquCQFbRtgJ3Fcjc="
)
REAL_SET = "MEYCIQDII5GQ1+pEgHrOp/oRqFPvZ2Ovj/JDavgceyIq+HkgVwIhAP+yMH9VGh8BSNRsjipVqcUxViysHjFM8Mq3tJ1D7kua"
REAL_LOG = {
    "integratedTime": 1772216446,
    "logIndex": 1004096555,
    "logID": "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d",
}
REAL_WORKFLOW = "https://github.com/salrashid123/go-bazel-github-workflow/.github/workflows/release.yaml@refs/tags/v0.0.30"
REAL_CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIHLjCCBrSgAwIBAgIUJP8NGj1CdNXVzA1QbwLM2Kks5gYwCgYIKoZIzj0EAwMw
NzEVMBMGA1UEChMMc2lnc3RvcmUuZGV2MR4wHAYDVQQDExVzaWdzdG9yZS1pbnRl
cm1lZGlhdGUwHhcNMjYwMjI3MTgyMDQ2WhcNMjYwMjI3MTgzMDQ2WjAAMFkwEwYH
KoZIzj0CAQYIKoZIzj0DAQcDQgAESroalqzaVCPA62i5TDKSm4XGQtUFe6qf+ROB
OqfmSmZX4+lytp1QxWhX0ckGnWJYPyKpByUY30qpnE1IO8iW0KOCBdMwggXPMA4G
A1UdDwEB/wQEAwIHgDATBgNVHSUEDDAKBggrBgEFBQcDAzAdBgNVHQ4EFgQU+GhV
fzac8XeDEiLK/Pbkr5PrjscwHwYDVR0jBBgwFoAU39Ppz1YkEZb5qNjpKFWixi4Y
ZD8wdwYDVR0RAQH/BG0wa4ZpaHR0cHM6Ly9naXRodWIuY29tL3NhbHJhc2hpZDEy
My9nby1iYXplbC1naXRodWItd29ya2Zsb3cvLmdpdGh1Yi93b3JrZmxvd3MvcmVs
ZWFzZS55YW1sQHJlZnMvdGFncy92MC4wLjMwMDkGCisGAQQBg78wAQEEK2h0dHBz
Oi8vdG9rZW4uYWN0aW9ucy5naXRodWJ1c2VyY29udGVudC5jb20wEgYKKwYBBAGD
vzABAgQEcHVzaDA2BgorBgEEAYO/MAEDBCg3NjI0YmQ1ZjI3OWZiNWQ0NzAwZWE3
MmMxYjIzNzNlZTMzOTYwNzAwMBUGCisGAQQBg78wAQQEB1JlbGVhc2UwMwYKKwYB
BAGDvzABBQQlc2FscmFzaGlkMTIzL2dvLWJhemVsLWdpdGh1Yi13b3JrZmxvdzAf
BgorBgEEAYO/MAEGBBFyZWZzL3RhZ3MvdjAuMC4zMDA7BgorBgEEAYO/MAEIBC0M
K2h0dHBzOi8vdG9rZW4uYWN0aW9ucy5naXRodWJ1c2VyY29udGVudC5jb20weQYK
KwYBBAGDvzABCQRrDGlodHRwczovL2dpdGh1Yi5jb20vc2FscmFzaGlkMTIzL2dv
LWJhemVsLWdpdGh1Yi13b3JrZmxvdy8uZ2l0aHViL3dvcmtmbG93cy9yZWxlYXNl
LnlhbWxAcmVmcy90YWdzL3YwLjAuMzAwOAYKKwYBBAGDvzABCgQqDCg3NjI0YmQ1
ZjI3OWZiNWQ0NzAwZWE3MmMxYjIzNzNlZTMzOTYwNzAwMB0GCisGAQQBg78wAQsE
DwwNZ2l0aHViLWhvc3RlZDBIBgorBgEEAYO/MAEMBDoMOGh0dHBzOi8vZ2l0aHVi
LmNvbS9zYWxyYXNoaWQxMjMvZ28tYmF6ZWwtZ2l0aHViLXdvcmtmbG93MDgGCisG
AQQBg78wAQ0EKgwoNzYyNGJkNWYyNzlmYjVkNDcwMGVhNzJjMWIyMzczZWUzMzk2
MDcwMDAhBgorBgEEAYO/MAEOBBMMEXJlZnMvdGFncy92MC4wLjMwMBoGCisGAQQB
g78wAQ8EDAwKMTE1MDc1NTc5OTAvBgorBgEEAYO/MAEQBCEMH2h0dHBzOi8vZ2l0
aHViLmNvbS9zYWxyYXNoaWQxMjMwGAYKKwYBBAGDvzABEQQKDAgxMTE0OTA1NDB5
BgorBgEEAYO/MAESBGsMaWh0dHBzOi8vZ2l0aHViLmNvbS9zYWxyYXNoaWQxMjMv
Z28tYmF6ZWwtZ2l0aHViLXdvcmtmbG93Ly5naXRodWIvd29ya2Zsb3dzL3JlbGVh
c2UueWFtbEByZWZzL3RhZ3MvdjAuMC4zMDA4BgorBgEEAYO/MAETBCoMKDc2MjRi
ZDVmMjc5ZmI1ZDQ3MDBlYTcyYzFiMjM3M2VlMzM5NjA3MDAwFAYKKwYBBAGDvzAB
FAQGDARwdXNoMGwGCisGAQQBg78wARUEXgxcaHR0cHM6Ly9naXRodWIuY29tL3Nh
bHJhc2hpZDEyMy9nby1iYXplbC1naXRodWItd29ya2Zsb3cvYWN0aW9ucy9ydW5z
LzIyNDk4Mjk0NDg1L2F0dGVtcHRzLzEwFgYKKwYBBAGDvzABFgQIDAZwdWJsaWMw
gYoGCisGAQQB1nkCBAIEfAR6AHgAdgDdPTBqxscRMmMZHhyZZzcCokpeuN48rf+H
inKALynujgAAAZygVOxaAAAEAwBHMEUCIGrdxTgiBs9WhtqzexQRsV0WadtSFEb3
8lsWK8V3PT0eAiEAz9ROW/nh/6hrVJVzUryiysgYOcN7OM+VSzejrX9Fk7owCgYI
KoZIzj0EAwMDaAAwZQIxAIlTIgxVfLg1bizi/VCP/qKZKQyf5Z5uV2MFHb8el+yS
VoarfE05LNjckHz7OTZ/ZwIwUkVfM9h0h4hr/aPuANLeoQg1kgMXb8NlrIGDdz0v
ssjmdNn4wejmpZf+di0HXD1L
-----END CERTIFICATE-----
"""


def real_signature() -> LegacySignature:
    payload = simple_signing_payload("index.docker.io/salrashid123/server_image", REAL_DIGEST)
    body = {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
            "signature": {
                "content": REAL_SIGNATURE,
                "publicKey": {"content": base64.b64encode(REAL_CERTIFICATE.encode()).decode()},
            },
        },
    }
    rekor_body = base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
    rekor_bundle = {"SignedEntryTimestamp": REAL_SET, "Payload": {"body": rekor_body, **REAL_LOG}}
    annotations = {
        SIGNATURE_ANNOTATION: REAL_SIGNATURE,
        CERTIFICATE_ANNOTATION: REAL_CERTIFICATE,
        BUNDLE_ANNOTATION: json.dumps(rekor_bundle, separators=(",", ":")),
    }
    return LegacySignature(
        payload=payload, signature=base64.b64decode(REAL_SIGNATURE), annotations=annotations
    )


def test_genuine_public_good_signature_verifies_offline(no_network: None) -> None:
    """Proves the legacy path (SET, chain, SCT, body) matches what real Rekor and Fulcio produce."""
    workflow_check = KeylessCheck(None, r"^https://github\.com/salrashid123/", GITHUB, "")
    workflow_check.verify(REAL_DIGEST, real_signature())
    assert (
        refused(workflow_check, real_signature(), DIGEST) == f"signature is for {REAL_DIGEST}, not {DIGEST}"
    )


def test_genuine_public_good_signature_of_someone_else_is_refused(production: KeylessCheck) -> None:
    assert (
        refused(production, real_signature(), REAL_DIGEST)
        == f"certificate issuer {GITHUB!r} is not {GOOGLE!r}"
    )
    any_issuer = KeylessCheck(None, UPSTREAM_SUBJECT, "", "")
    assert refused(any_issuer, real_signature(), REAL_DIGEST) == (
        f"certificate identity {REAL_WORKFLOW!r} does not match {UPSTREAM_SUBJECT!r}"
    )


def test_genuine_public_good_signature_is_not_trusted_under_a_private_root(check: KeylessCheck) -> None:
    assert refused(check, real_signature(), REAL_DIGEST).startswith("transparency log entry does not verify")


# -- determinism ----------------------------------------------------------------------------------


def test_fake_sigstore_is_deterministic() -> None:
    one, two = FakeSigstore(b"seed"), FakeSigstore(b"seed")
    payload = simple_signing_payload(REFERENCE, DIGEST)
    assert one.trusted_root_json() == two.trusted_root_json()
    assert one.client_trust_config_json() == two.client_trust_config_json()
    assert one.sign_legacy(payload) == two.sign_legacy(payload)
    assert one.sign_bundle(DIGEST) == two.sign_bundle(DIGEST)
    assert one.sign_bundle(DIGEST, identity="x@siderolabs.com") == two.sign_bundle(
        DIGEST, identity="x@siderolabs.com"
    )
    assert one.trusted_root_json() != FakeSigstore(b"other seed").trusted_root_json()
    assert one.sign_bundle(DIGEST) != one.sign_bundle(OTHER_DIGEST)


@pytest.mark.parametrize("kind", SIGNERS)
def test_no_issuer_settings_accept_any_issuer(
    fake: FakeSigstore, make_check: Callable[..., KeylessCheck], kind: str
) -> None:
    """Upstream (cosign) semantics: an identity without issuer constraints matches any issuer."""
    make_check(issuer="", issuer_regexp="").verify(
        DIGEST, SIGNERS[kind](fake, issuer="https://anyone.example")
    )
