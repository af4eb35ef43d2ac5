"""A deterministic, offline stand-in for Sigstore's public-good instance (Fulcio, CT log, Rekor).

Tests and the fixture release need keyless cosign signatures without any network: this mints
them from a seed. Everything is derived from the seed (keys, serials) or fixed (validity, log
time), and ECDSA signatures are RFC 6979 deterministic, so the same seed always produces
byte-identical trust roots, certificates, annotations and bundles. It produces the same shapes
cosign stores: legacy ``.sig`` layer annotations (certificate, chain, Rekor bundle with SET) and
``--new-bundle-format`` Sigstore bundles (DSSE in-toto statement, predicate
``https://sigstore.dev/cosign/sign/v1``, dsse/0.0.1 Rekor entry with inclusion proof).

Never use it for anything but testing: the private keys are a function of a public seed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
CA_NOT_AFTER = datetime(2034, 1, 1, tzinfo=UTC)
# When every fake signature was "logged"; leaf certificates live ten minutes around it.
INTEGRATED_TIME = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())

TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
CLIENT_TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
SIGNING_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.signingconfig.v0.2+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"

OIDC_ISSUER_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")

DEFAULT_IDENTITY = "release@siderolabs.com"
DEFAULT_ISSUER = "https://accounts.google.com"
DEFAULT_SEED = b"image-factory fake sigstore"

_SECP256R1_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _canonical_json(document: Any) -> bytes:
    """Rekor's canonical form; equal to RFC 8785 for the ASCII strings and integers used here."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class FakeSigstore:
    """Fulcio CA (root + intermediate), a CT log key and a Rekor key, all derived from ``seed``."""

    rekor_origin = "rekor.fake-sigstore.test"

    def __init__(self, seed: bytes | str = DEFAULT_SEED) -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.integrated_time = INTEGRATED_TIME
        self.root_key = self._key("fulcio root")
        self.intermediate_key = self._key("fulcio intermediate")
        self.ct_key = self._key("ct log")
        self.rekor_key = self._key("rekor")
        self.rekor_log_id = hashlib.sha256(_spki(self.rekor_key.public_key())).digest()
        self.ct_log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
        organization = f"fake-sigstore {hashlib.sha256(self.seed).hexdigest()[:12]}"
        self.root_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, "fake-sigstore"),
            ]
        )
        self.intermediate_name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                x509.NameAttribute(NameOID.COMMON_NAME, "fake-sigstore-intermediate"),
            ]
        )
        self.root_cert = self._ca_cert(
            self.root_name, self.root_name, self.root_key, self.root_key, "root serial", path_length=None
        )
        self.intermediate_cert = self._ca_cert(
            self.intermediate_name,
            self.root_name,
            self.intermediate_key,
            self.root_key,
            "intermediate serial",
            path_length=0,
        )

    # -- trust material -------------------------------------------------------------------

    def trusted_root(self) -> dict[str, Any]:
        """The trusted_root.json document (protobuf-specs JSON), as sigstore clients read it."""
        start = CA_NOT_BEFORE.strftime("%Y-%m-%dT%H:%M:%SZ")
        organization = self.root_name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value

        def log(url: str, key: ec.EllipticCurvePrivateKey, log_id: bytes) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(key.public_key())),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": start},
                },
                "logId": {"keyId": _b64(log_id)},
            }

        return {
            "mediaType": TRUSTED_ROOT_MEDIA_TYPE,
            "tlogs": [log(f"https://{self.rekor_origin}", self.rekor_key, self.rekor_log_id)],
            "certificateAuthorities": [
                {
                    "subject": {"organization": organization, "commonName": "fake-sigstore"},
                    "uri": "https://fulcio.fake-sigstore.test",
                    "certChain": {
                        "certificates": [
                            {
                                "rawBytes": _b64(
                                    self.intermediate_cert.public_bytes(serialization.Encoding.DER)
                                )
                            },
                            {"rawBytes": _b64(self.root_cert.public_bytes(serialization.Encoding.DER))},
                        ]
                    },
                    "validFor": {"start": start},
                }
            ],
            "ctlogs": [log("https://ctfe.fake-sigstore.test", self.ct_key, self.ct_log_id)],
            "timestampAuthorities": [],
        }

    def trusted_root_json(self) -> bytes:
        return json.dumps(self.trusted_root(), indent=2, sort_keys=True).encode() + b"\n"

    def write_trusted_root(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_bytes(self.trusted_root_json())
        return target

    def client_trust_config_json(self) -> bytes:
        """The same root wrapped as a client trust config (``sigstore --trust-config``, air-gapped sites)."""
        start = CA_NOT_BEFORE.strftime("%Y-%m-%dT%H:%M:%SZ")

        def service(url: str) -> dict[str, Any]:
            return {
                "url": url,
                "majorApiVersion": 1,
                "validFor": {"start": start},
                "operator": "fake-sigstore",
            }

        document = {
            "mediaType": CLIENT_TRUST_CONFIG_MEDIA_TYPE,
            "trustedRoot": self.trusted_root(),
            "signingConfig": {
                "mediaType": SIGNING_CONFIG_MEDIA_TYPE,
                "caUrls": [service("https://fulcio.fake-sigstore.test")],
                "oidcUrls": [],
                "rekorTlogUrls": [service(f"https://{self.rekor_origin}")],
                "tsaUrls": [],
                "rekorTlogConfig": {"selector": "ANY"},
                "tsaConfig": {"selector": "ANY"},
            },
        }
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"

    # -- signing ----------------------------------------------------------------------------

    def sign_legacy(
        self, payload: bytes, identity: str = DEFAULT_IDENTITY, issuer: str = DEFAULT_ISSUER
    ) -> tuple[bytes, dict[str, str]]:
        """What ``cosign sign`` (keyless, legacy format) attaches to one ``.sig`` layer.

        Returns the raw signature over ``payload`` and the layer annotations: base64 signature,
        leaf certificate, chain, and the Rekor bundle (hashedrekord body + SET, no inclusion proof).
        """
        key, cert = self._leaf(identity, issuer, b"legacy\0" + payload)
        signature = key.sign(payload, _ECDSA)
        body = _canonical_json(
            {
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()}},
                    "signature": {
                        "content": _b64(signature),
                        "publicKey": {"content": _b64(_pem(cert).encode())},
                    },
                },
            }
        )
        log_index = self._log_index(body)
        entry = {
            "body": _b64(body),
            "integratedTime": self.integrated_time,
            "logIndex": log_index,
            "logID": self.rekor_log_id.hex(),
        }
        rekor_bundle = {"SignedEntryTimestamp": _b64(self._set(entry)), "Payload": entry}
        annotations = {
            "dev.cosignproject.cosign/signature": _b64(signature),
            "dev.sigstore.cosign/certificate": _pem(cert),
            "dev.sigstore.cosign/chain": _pem(self.intermediate_cert) + _pem(self.root_cert),
            "dev.sigstore.cosign/bundle": json.dumps(rekor_bundle, separators=(",", ":")),
        }
        return signature, annotations

    def sign_bundle(
        self, digest: str, identity: str = DEFAULT_IDENTITY, issuer: str = DEFAULT_ISSUER
    ) -> bytes:
        """What ``cosign sign --new-bundle-format`` attaches as an OCI referrer of ``digest``.

        A v0.3 bundle: leaf certificate, a DSSE envelope of an in-toto statement whose subject is
        ``digest`` (predicate type ``https://sigstore.dev/cosign/sign/v1``), and a dsse/0.0.1
        Rekor entry with SET, inclusion proof and signed checkpoint.
        """
        algorithm, _, hexdigest = digest.partition(":")
        statement = {
            "_type": IN_TOTO_STATEMENT_V1,
            "subject": [{"digest": {algorithm: hexdigest}}],
            "predicateType": COSIGN_SIGN_PREDICATE_TYPE,
            "predicate": {},
        }
        return self.sign_statement(json.dumps(statement, separators=(",", ":")).encode(), identity, issuer)

    def sign_statement(
        self,
        payload: bytes,
        identity: str = DEFAULT_IDENTITY,
        issuer: str = DEFAULT_ISSUER,
        payload_type: str = IN_TOTO_PAYLOAD_TYPE,
    ) -> bytes:
        """A DSSE bundle over any payload (tests use it for statements cosign would not write)."""
        key, cert = self._leaf(identity, issuer, b"dsse\0" + payload_type.encode() + b"\0" + payload)
        kind = payload_type.encode()
        pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
        signature = key.sign(pae, _ECDSA)
        envelope = {
            "payload": _b64(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": _b64(signature)}],
        }
        body = _canonical_json(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(_canonical_json(envelope)).hexdigest(),
                    },
                    "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                    "signatures": [{"signature": _b64(signature), "verifier": _b64(_pem(cert).encode())}],
                },
            }
        )
        entry = self._tlog_entry(body, "dsse")
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [entry],
                "timestampVerificationData": {},
            },
            "dsseEnvelope": envelope,
        }
        return json.dumps(bundle, indent=2).encode()

    # -- internals --------------------------------------------------------------------------

    def _digest(self, label: str | bytes) -> bytes:
        raw = label.encode() if isinstance(label, str) else label
        return hashlib.sha256(self.seed + b"\0" + raw).digest()

    def _key(self, label: str | bytes) -> ec.EllipticCurvePrivateKey:
        scalar = int.from_bytes(self._digest(label), "big") % (_SECP256R1_ORDER - 1) + 1
        return ec.derive_private_key(scalar, ec.SECP256R1())

    def _serial(self, label: str | bytes) -> int:
        return int.from_bytes(
            self._digest(b"serial\0" + (label.encode() if isinstance(label, str) else label))[:16]
        )

    def _log_index(self, body: bytes) -> int:
        return 1_000_000 + int.from_bytes(self._digest(b"log index\0" + body)[:3], "big")

    def _ca_cert(
        self,
        subject: x509.Name,
        issuer: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        serial_label: str,
        path_length: int | None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(self._serial(serial_label))
            .not_valid_before(CA_NOT_BEFORE)
            .not_valid_after(CA_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
            )
        )
        if path_length is not None:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
        return builder.sign(signer, hashes.SHA256(), ecdsa_deterministic=True)

    def _leaf(
        self, identity: str, issuer: str, material: bytes
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A Fulcio-style leaf: empty subject, critical SAN, issuer extensions, one embedded SCT."""
        label = b"leaf\0" + identity.encode() + b"\0" + issuer.encode() + b"\0" + material
        key = self._key(label)
        not_before = datetime.fromtimestamp(self.integrated_time, UTC) - timedelta(seconds=30)
        san: x509.GeneralName
        if "@" in identity and "://" not in identity:
            san = x509.RFC822Name(identity)
        else:
            san = x509.UniformResourceIdentifier(identity)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate_name)
            .public_key(key.public_key())
            .serial_number(self._serial(label))
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(minutes=10))
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_OID, issuer.encode()), critical=False)
            .add_extension(
                x509.UnrecognizedExtension(OIDC_ISSUER_V2_OID, _der(0x0C, issuer.encode())), critical=False
            )
        )
        # The SCT signs the certificate without its SCT list (RFC 6962 precertificate entry), so
        # sign once without it, then again with the SCT list added as the last extension: the
        # second certificate's tbs_precertificate_bytes equal the first's TBS.
        precert = builder.sign(self.intermediate_key, hashes.SHA256(), ecdsa_deterministic=True)
        sct = self._sct(precert.tbs_certificate_bytes, int(not_before.timestamp()) * 1000)
        sct_list = struct.pack("!H", len(sct)) + sct
        extension_value = _der(0x04, struct.pack("!H", len(sct_list)) + sct_list)
        cert = builder.add_extension(
            x509.UnrecognizedExtension(SCT_LIST_OID, extension_value), critical=False
        ).sign(self.intermediate_key, hashes.SHA256(), ecdsa_deterministic=True)
        return key, cert

    def _sct(self, tbs: bytes, timestamp_ms: int) -> bytes:
        """One serialized v1 SCT for a precertificate entry (RFC 6962 §3.2), signed by the CT key."""
        issuer_key_hash = hashlib.sha256(_spki(self.intermediate_key.public_key())).digest()
        signed = (
            struct.pack("!BBQH", 0, 0, timestamp_ms, 1)
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", 0)
        )
        signature = self.ct_key.sign(signed, _ECDSA)
        return (
            struct.pack("!B", 0)
            + self.ct_log_id
            + struct.pack("!QH", timestamp_ms, 0)
            + bytes([4, 3])  # sha256, ecdsa
            + struct.pack("!H", len(signature))
            + signature
        )

    def _set(self, entry: dict[str, Any]) -> bytes:
        """Rekor's signed entry timestamp: its signature over the canonical entry summary."""
        return self.rekor_key.sign(_canonical_json(entry), _ECDSA)

    def _tlog_entry(self, body: bytes, kind: str) -> dict[str, Any]:
        """A v1 Rekor entry as bundles carry it: SET plus an inclusion proof in a two-leaf tree."""
        log_index = self._log_index(body)
        promise = self._set(
            {
                "body": _b64(body),
                "integratedTime": self.integrated_time,
                "logIndex": log_index,
                "logID": self.rekor_log_id.hex(),
            }
        )
        sibling = _leaf_hash(self._digest(b"sibling entry\0" + body))
        root = _node_hash(sibling, _leaf_hash(body))
        note = f"{self.rekor_origin} - 1\n2\n{_b64(root)}\n"
        note_signature = self.rekor_key.sign(note.encode(), _ECDSA)
        checkpoint = f"{note}\n\u2014 {self.rekor_origin} {_b64(self.rekor_log_id[:4] + note_signature)}\n"
        return {
            "logIndex": str(log_index),
            "logId": {"keyId": _b64(self.rekor_log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": str(self.integrated_time),
            "inclusionPromise": {"signedEntryTimestamp": _b64(promise)},
            "inclusionProof": {
                "logIndex": "1",
                "rootHash": _b64(root),
                "treeSize": "2",
                "hashes": [_b64(sibling)],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": _b64(body),
        }


__all__ = ["DEFAULT_IDENTITY", "DEFAULT_ISSUER", "INTEGRATED_TIME", "FakeSigstore"]
