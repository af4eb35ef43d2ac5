"""Authenticode signing of PE/COFF images (UKIs, systemd-boot) around a remote signing callback.

Upstream signs with ``github.com/foxboron/go-uefi/authenticode`` (``siderolabs/talos@v1.14.0-rc.1:
internal/pkg/secureboot/pesign``), handing it a ``crypto.Signer`` whose private key may live in a file,
AWS KMS or Azure Key Vault. Here the same role is played by a *callback*: :func:`sign_pe` computes
everything locally except the one RSA/ECDSA operation, which it asks ``sign_digest`` for, so a key that
never leaves its HSM or KMS is enough.

What comes from libraries and what is written here:

- ``pefile`` reads the PE headers (optional header kind, ``SizeOfHeaders``, the section table, and the
  file offsets of ``CheckSum`` and of the Certificate Table data directory entry).
- ``asn1crypto`` encodes the PKCS #7 ``SignedData`` (``cms.SignedData`` in its PKCS #7 v1.5 shape,
  whose ``contentInfo.content`` is an ``ANY``, not CMS's ``OCTET STRING``), the signer info and the
  signed attributes. It has no definitions for Microsoft's ``SPC_*`` structures, so
  ``SpcIndirectDataContent`` and its parts are declared below with its ``core`` types.
- ``cryptography`` parses the certificate, picks the signature algorithm from its public key, and
  checks the signature the callback returned before anything is written.
- Written by hand, because no maintained Python library does it: the Authenticode image hash (the
  PE/COFF specification's "Calculating the PE Image Hash": ``CheckSum`` and the Certificate Table
  entry skipped, sections hashed in file order, trailing data up to the certificate table), the
  ``WIN_CERTIFICATE`` framing, and the ``CheckSum`` computation (``pefile.generate_checksum`` wants
  the whole image in memory and takes seconds per hundred megabytes; here it is streamed).
  ``signify`` only verifies Authenticode; ``sbsign`` and ``osslsigncode`` want a local key (or an
  OpenSSL engine), not a callback.

The file is changed in place, and only once the signature has been checked: padded with zeros to an
8-byte boundary (the padding is part of the hashed image, as with ``sbsign`` and ``osslsigncode``),
then the new ``WIN_CERTIFICATE`` appended after any existing ones (a second signature, as ``sbsign``
adds them), the Certificate Table entry grown to cover them, and ``CheckSum`` recomputed.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pefile
from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

__all__ = [
    "SPC_INDIRECT_DATA_OBJID",
    "AuthenticodeError",
    "PELayout",
    "SignDigest",
    "alignment_padding",
    "build_signed_data",
    "digest_info",
    "image_hash",
    "pe_checksum",
    "read_layout",
    "sign_pe",
    "signature_algorithm",
    "signatures",
    "spc_indirect_data",
]

#: Signs a SHA-256 digest: RSA PKCS #1 v1.5 (the ``DigestInfo`` built by the signer) or DER ECDSA.
SignDigest = Callable[[bytes], bytes]

SPC_INDIRECT_DATA_OBJID = "1.3.6.1.4.1.311.2.1.4"
SPC_PE_IMAGE_DATAOBJ = "1.3.6.1.4.1.311.2.1.15"
OBSOLETE = "<<<Obsolete>>>"  # what signtool, sbsign and osslsigncode put in SpcPeImageData.file

WIN_CERT_REVISION_2_0 = 0x0200
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
IMAGE_DIRECTORY_ENTRY_SECURITY = 4
_CHUNK = 1 << 20
#: ``DigestInfo`` prefixes by hash (RFC 8017, section 9.2, note 1).
_DIGEST_INFO_PREFIXES = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


class AuthenticodeError(Exception):
    """The file is not a PE image we can sign, or the signer's answer does not verify."""


# --- Microsoft's SPC structures (Authenticode PE, "Authenticode-Specific Structures") ---------------


class SpcString(core.Choice):
    _alternatives = [
        ("unicode", core.BMPString, {"implicit": 0}),
        ("ascii", core.IA5String, {"implicit": 1}),
    ]


class SpcSerializedObject(core.Sequence):
    _fields = [("class_id", core.OctetString), ("serialized_data", core.OctetString)]


class SpcLink(core.Choice):
    _alternatives = [
        ("url", core.IA5String, {"implicit": 0}),
        ("moniker", SpcSerializedObject, {"implicit": 1}),
        ("file", SpcString, {"explicit": 2}),
    ]


class SpcPeImageFlags(core.BitString):
    _map = {0: "include_resources", 1: "include_debug_info", 2: "include_import_address_table"}


class SpcPeImageData(core.Sequence):
    _fields = [
        ("flags", SpcPeImageFlags),
        ("file", SpcLink, {"explicit": 0}),
    ]


class SpcAttributeTypeAndOptionalValue(core.Sequence):
    _fields = [("type", core.ObjectIdentifier), ("value", SpcPeImageData, {"optional": True})]


class DigestInfo(core.Sequence):
    _fields = [("digest_algorithm", algos.DigestAlgorithm), ("digest", core.OctetString)]


class SpcIndirectDataContent(core.Sequence):
    _fields = [("data", SpcAttributeTypeAndOptionalValue), ("message_digest", DigestInfo)]


class SpcContentInfo(core.Sequence):
    """PKCS #7 ``ContentInfo`` holding ``SpcIndirectDataContent``.

    ``cms.ContentInfo`` drops the ``[0] EXPLICIT`` tag of a ``content`` whose type it does not know,
    so the structure is encoded with this class and re-loaded as a ``cms.ContentInfo``.
    """

    _fields = [("content_type", cms.ContentType), ("content", SpcIndirectDataContent, {"explicit": 0})]


# --- the PE image hash ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PELayout:
    """What signing needs from the headers: offsets of the skipped fields and the hashed ranges."""

    size: int
    checksum_offset: int
    security_entry_offset: int
    size_of_headers: int
    sections: tuple[tuple[int, int], ...]  # (PointerToRawData, SizeOfRawData), in file order
    cert_table_offset: int  # 0 when the image has no certificate table
    cert_table_size: int


def read_layout(path: Path) -> PELayout:
    """Parses the headers of the PE image at ``path`` (``pefile``, headers and section table only)."""
    try:
        pe = pefile.PE(str(path), fast_load=True)
    except pefile.PEFormatError as exc:
        raise AuthenticodeError(f"{path}: not a PE image: {exc}") from exc
    try:
        opt = pe.OPTIONAL_HEADER
        if len(opt.DATA_DIRECTORY) <= IMAGE_DIRECTORY_ENTRY_SECURITY:
            raise AuthenticodeError(f"{path}: the optional header has no Certificate Table entry")
        entry = opt.DATA_DIRECTORY[IMAGE_DIRECTORY_ENTRY_SECURITY]
        sections = tuple(
            sorted((int(s.PointerToRawData), int(s.SizeOfRawData)) for s in pe.sections if s.SizeOfRawData)
        )
        layout = PELayout(
            size=path.stat().st_size,
            checksum_offset=int(opt.get_field_absolute_offset("CheckSum")),
            security_entry_offset=int(entry.get_file_offset()),
            size_of_headers=int(opt.SizeOfHeaders),
            sections=sections,
            cert_table_offset=int(entry.VirtualAddress),  # a file offset for this one directory
            cert_table_size=int(entry.Size),
        )
    finally:
        pe.close()
    _check_layout(path, layout)
    return layout


def _check_layout(path: Path, layout: PELayout) -> None:
    if layout.security_entry_offset + 8 > layout.size_of_headers:
        raise AuthenticodeError(f"{path}: the Certificate Table entry lies outside the headers")
    for offset, size in layout.sections:
        if offset + size > layout.size:
            raise AuthenticodeError(f"{path}: a section's raw data runs past the end of the file")
    if layout.cert_table_size:
        if layout.cert_table_offset + layout.cert_table_size != layout.size:
            raise AuthenticodeError(f"{path}: the certificate table is not at the end of the file")
        if layout.cert_table_offset % 8:
            raise AuthenticodeError(f"{path}: the certificate table is not 8-byte aligned")


def _ranges(layout: PELayout) -> Iterator[tuple[int, int]]:
    """The (offset, length) ranges of the Authenticode image hash, in order."""
    checksum, entry = layout.checksum_offset, layout.security_entry_offset
    yield 0, checksum
    yield checksum + 4, entry - (checksum + 4)
    yield entry + 8, layout.size_of_headers - (entry + 8)
    hashed = layout.size_of_headers
    for offset, size in layout.sections:
        yield offset, size
        hashed += size
    end = layout.size - layout.cert_table_size
    if end > hashed:  # the spec's trailing data: FileSize - CertTableSize - SUM_OF_BYTES_HASHED
        yield hashed, end - hashed


def _read_ranges(f: BinaryIO, ranges: Iterator[tuple[int, int]]) -> Iterator[bytes]:
    for offset, length in ranges:
        f.seek(offset)
        while length > 0:
            chunk = f.read(min(length, _CHUNK))
            if not chunk:
                raise AuthenticodeError("unexpected end of file while hashing the image")
            length -= len(chunk)
            yield chunk


def alignment_padding(layout: PELayout) -> int:
    """The zero bytes signing appends before the first certificate table (aligning it to 8 bytes)."""
    return 0 if layout.cert_table_size else -layout.size % 8


def image_hash(path: Path, layout: PELayout | None = None) -> bytes:
    """The SHA-256 Authenticode image hash of the PE file at ``path``, as signing it would compute.

    That includes the zero padding signing adds to an image without a certificate table whose size is
    not a multiple of 8 (:func:`alignment_padding`), as ``sbsign`` and ``osslsigncode`` do.
    """
    layout = layout if layout is not None else read_layout(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in _read_ranges(f, _ranges(layout)):
            digest.update(chunk)
    digest.update(b"\0" * alignment_padding(layout))
    return digest.digest()


def pe_checksum(path: Path, checksum_offset: int) -> int:
    """The optional header ``CheckSum`` of the file (``CheckSumMappedFile``), streamed.

    The sum of the file's 16-bit little-endian words with end-around carry, the ``CheckSum`` field
    read as zero, plus the file length. Since 2**16 ≡ 1 (mod 0xFFFF), a chunk read as one
    little-endian integer is congruent to the sum of its words, so chunks are reduced with Python's
    big integers instead of word by word.
    """
    total = 0
    nonzero = False
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):  # _CHUNK is even: every chunk starts on a word boundary
            start = size
            size += len(chunk)
            if start <= checksum_offset < size:
                rel = checksum_offset - start
                chunk = chunk[:rel] + b"\0\0\0\0" + chunk[rel + 4 :]  # 4-aligned: never split
            if len(chunk) % 2:
                chunk += b"\0"
            value = int.from_bytes(chunk, "little")
            nonzero = nonzero or value != 0
            total = (total + value % 0xFFFF) % 0xFFFF
    folded = 0xFFFF if total == 0 and nonzero else total
    return (folded + size) & 0xFFFFFFFF


# --- PKCS #7 --------------------------------------------------------------------------------------


def digest_info(digest: bytes, hash_name: str = "sha256") -> bytes:
    """The DER ``DigestInfo`` of a digest (sha256, sha384, sha512): what RSA PKCS #1 v1.5 signs."""
    prefix = _DIGEST_INFO_PREFIXES.get(hash_name)
    if prefix is None:
        raise ValueError(f"unsupported hash {hash_name!r} (sha256, sha384, sha512)")
    if len(digest) != prefix[-1]:
        raise ValueError(f"a {hash_name} digest is {prefix[-1]} bytes, not {len(digest)}")
    return prefix + digest


def spc_indirect_data(pe_hash: bytes) -> Any:
    """The ``SpcIndirectDataContent`` that carries the image hash (``asn1crypto`` value)."""
    return SpcIndirectDataContent(
        {
            "data": {
                "type": SPC_PE_IMAGE_DATAOBJ,
                "value": {"flags": set(), "file": SpcLink({"file": SpcString({"unicode": OBSOLETE})})},
            },
            "message_digest": {"digest_algorithm": {"algorithm": "sha256"}, "digest": pe_hash},
        }
    )


def signature_algorithm(certificate: x509.Certificate) -> str:
    """The ``asn1crypto`` name of the SignerInfo signature algorithm for the certificate's key."""
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsassa_pkcs1v15"  # rsaEncryption, as signtool and sbsign write it
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "sha256_ecdsa"
    raise AuthenticodeError(f"unsupported signing key type {type(key).__name__} (RSA or ECDSA only)")


def _verify(certificate: x509.Certificate, signature: bytes, digest: bytes) -> None:
    key = certificate.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:  # pragma: no cover - signature_algorithm() refused it already
            raise AuthenticodeError(f"unsupported key type {type(key).__name__}")
    except InvalidSignature as exc:
        raise AuthenticodeError(
            "the signer's signature does not verify with the certificate's public key"
            " (is the certificate the one of the signing key?)"
        ) from exc


def signer_identifier(certificate_der: bytes) -> Any:
    """The ``SignerIdentifier`` (issuer and serial number) naming ``certificate_der`` in a SignerInfo:
    shared by Authenticode and the enrolment databases' PKCS #7."""
    cert = asn1_x509.Certificate.load(certificate_der)
    return cms.SignerIdentifier(
        {"issuer_and_serial_number": {"issuer": cert.issuer, "serial_number": cert.serial_number}}
    )


def _sorted_attributes(attrs: list[Any]) -> Any:
    """DER ``SET OF``: elements in the order of their encodings (verifiers re-encode before checking)."""
    return cms.CMSAttributes(sorted(attrs, key=lambda a: a.dump()))


def build_signed_data(pe_hash: bytes, certificate_der: bytes, sign_digest: SignDigest) -> bytes:
    """A DER ``ContentInfo``/``SignedData`` (PKCS #7 v1.5) over ``pe_hash``, signed through the callback."""
    cert = x509.load_der_x509_certificate(certificate_der)
    sig_alg = signature_algorithm(cert)
    content = spc_indirect_data(pe_hash)
    # messageDigest covers the SpcIndirectDataContent's value octets, without its tag and length.
    content_digest = hashlib.sha256(content.contents).digest()
    signed_attrs = _sorted_attributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": [SPC_INDIRECT_DATA_OBJID]}),
            cms.CMSAttribute({"type": "message_digest", "values": [content_digest]}),
        ]
    )
    # The signature covers the attributes as a universal SET OF, not as SignerInfo's [0] IMPLICIT.
    to_sign = hashlib.sha256(signed_attrs.dump()).digest()
    signature = sign_digest(to_sign)
    _verify(cert, signature, to_sign)

    asn1_cert = asn1_x509.Certificate.load(certificate_der)
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": signer_identifier(certificate_der),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": sig_alg},
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": cms.ContentInfo.load(
                SpcContentInfo({"content_type": SPC_INDIRECT_DATA_OBJID, "content": content}).dump()
            ),
            "certificates": [asn1_cert],
            "signer_infos": [signer_info],
        }
    )
    der: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return der


# --- the file -------------------------------------------------------------------------------------


def _win_certificate(signed_data: bytes) -> bytes:
    length = 8 + len(signed_data)
    pad = -length % 8
    # dwLength counts the header and the PKCS #7 blob; the padding to 8 bytes follows (as sbsign does).
    return struct.pack("<IHH", length, WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA) + (
        signed_data + b"\0" * pad
    )


def sign_pe(path: Path, certificate_der: bytes, sign_digest: SignDigest) -> bytes:
    """Authenticode-signs the PE file at ``path`` in place; returns the image hash that was signed.

    ``sign_digest`` receives the SHA-256 digest of the signed attributes and must return an RSA
    PKCS #1 v1.5 signature (over the ``DigestInfo``, see :func:`digest_info`) or a DER ECDSA
    signature, made with the key of ``certificate_der``. The signature is checked against the
    certificate before the file is touched.
    """
    layout = read_layout(path)
    pe_hash = image_hash(path, layout)
    blob = _win_certificate(build_signed_data(pe_hash, certificate_der, sign_digest))

    # The certificate table must start 8-byte aligned; the zero padding belongs to the hashed image.
    pad = alignment_padding(layout)
    table_offset = layout.cert_table_offset if layout.cert_table_size else layout.size + pad
    table_size = layout.cert_table_size + len(blob)
    with path.open("r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b"\0" * pad + blob)
        f.seek(layout.security_entry_offset)
        f.write(struct.pack("<II", table_offset, table_size))
        f.flush()
        checksum = pe_checksum(path, layout.checksum_offset)
        f.seek(layout.checksum_offset)
        f.write(struct.pack("<I", checksum))
    return pe_hash


def signatures(path: Path) -> list[bytes]:
    """The PKCS #7 blobs of the ``WIN_CERTIFICATE`` entries of the PE file at ``path`` (for checks)."""
    layout = read_layout(path)
    out: list[bytes] = []
    with path.open("rb") as f:
        f.seek(layout.cert_table_offset)
        table = f.read(layout.cert_table_size) if layout.cert_table_size else b""
    pos = 0
    while pos + 8 <= len(table):
        length, revision, cert_type = struct.unpack_from("<IHH", table, pos)
        if length < 8 or pos + length > len(table):
            raise AuthenticodeError(f"{path}: malformed WIN_CERTIFICATE at {pos}")
        if revision == WIN_CERT_REVISION_2_0 and cert_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA:
            out.append(table[pos + 8 : pos + length])
        pos += length + (-length % 8)
    return out
