"""Secure Boot key enrolment databases: ``PK.auth``, ``KEK.auth`` and ``db.auth``.

A Secure Boot ISO or disk image carries these three files in ``loader/keys/auto/`` so that
systemd-boot (``secure-boot-enroll``) can enrol our signing certificate into firmware that is in
setup mode: it hands each file's contents to ``SetVariable()`` with the attributes
``NV|BS|RT|TIME_BASED_AUTHENTICATED_WRITE_ACCESS`` (0x27), ``db`` and ``KEK`` first, ``PK`` last.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/secureboot/database/database.go``
(``Generate``, called from ``pkg/imager/out.go``), built on ``github.com/foxboron/go-uefi``
(``efi/signature``: ``SignatureDatabase.Append``, ``SignEFIVariable``; ``pkcs7.SignPKCS7``). What it
makes, and what this module makes:

- For each variable an ``EFI_SIGNATURE_LIST`` of type ``EFI_CERT_X509_GUID`` (UEFI 2.10, section
  32.4.1), one ``EFI_SIGNATURE_DATA`` per certificate (owner GUID, certificate). Entries share a list
  only when their type and size match, else a new list starts (go-uefi's ``Append``). PK holds our
  certificate; KEK and db hold it too, followed, with ``include_well_known``, by the Microsoft KEK
  and UEFI CA certificates (owner ``77fa9abd-0359-4d32-bd60-28f4e78f784b``), vendored unchanged from
  ``internal/pkg/secureboot/database/certs/{kek,db}/`` into ``certs/`` here.
- Our certificate's owner GUID is go's ``uuid.NewHash(sha256.New(), uuid.NameSpaceX500, cert, 4)``:
  the first 16 bytes of ``SHA-256(NameSpace_X500 || cert)`` with the version nibble set to 4 and the
  RFC 4122 variant (:func:`owner_guid`).
- Each list is wrapped as a time-based authenticated variable (UEFI 2.10, section 8.2.2, "Using the
  EFI_VARIABLE_AUTHENTICATION_2 descriptor"): ``EFI_TIME`` (UTC, nanosecond/time zone/daylight
  zero), ``WIN_CERTIFICATE_UEFI_GUID`` (section 32.2.4: revision 0x0200, type ``WIN_CERT_TYPE_EFI_GUID``
  0x0EF1, ``EFI_CERT_TYPE_PKCS7_GUID``) holding a detached PKCS #7 ``SignedData`` (without the
  outer ``ContentInfo``), then the list. The signature covers the variable name (UTF-16LE, no
  terminator), the vendor GUID, the attributes, the ``EFI_TIME`` and the list. All three are signed
  by the UKI (db) signing key, as upstream does: the PK self-signed, KEK and db by the PK.

Deviations from upstream, each so that real firmware accepts the result:

- **DER, not PEM.** ``pkg/imager/out.go`` at v1.14.0-rc.1 still PEM-encodes the signing certificate
  and hands that to ``Generate``, which uses it both for the owner GUID hash and as the
  ``EFI_SIGNATURE_DATA`` of PK, KEK and db. EDK2 (OVMF) checks every X.509 entry with
  ``RsaGetPublicKeyFromX509`` (``SecurityPkg/Library/AuthVariableLib/AuthService.c``,
  ``CheckSignatureListFormat``) and rejects PEM with ``EFI_INVALID_PARAMETER`` (siderolabs/talos
  issue #8131; upstream's fix, 1cb544353, only added ``EFI/keys/uki-signing-cert.der`` to the ISO for
  manual enrolment and left the ``.auth`` files as they were). Here the DER certificate is enrolled,
  and hashed for its owner GUID, so our owner GUID differs from upstream's.
- **No signed attributes.** go-uefi's ``SignPKCS7`` adds contentType, messageDigest and signingTime
  attributes; section 8.2.2 says ``SignerInfo.authenticatedAttributes`` shall not be present, and
  efitools' ``sign-efi-sig-list`` leaves them out (EDK2 accepts either). The signature is over the
  SHA-256 of the signed bytes itself.
- **RSA only, refused clearly.** Section 8.2.2 accepts only RSASSA-PKCS1-v1_5 signatures, and EDK2's
  ``CheckSignatureListFormat`` only RSA keys in ``EFI_CERT_X509_GUID`` lists, so an ECDSA
  certificate could not be enrolled; upstream would write an ECDSA signature labelled
  ``rsaEncryption`` (go-uefi hard-codes it). :class:`EnrollmentError` names the problem instead.
- **One timestamp, in UTC.** go-uefi stamps each variable with the local time of its own
  ``time.Now()``; the caller passes one timestamp for all three (converted to UTC, as section 8.2.2
  wants GMT and whole seconds).

Why written by hand: no maintained Python library builds authenticated variables around a signature
made elsewhere. ``virt-firmware`` (``virt.firmware.varstore.authfiles``) writes ``.auth`` files with
an empty ``WIN_CERTIFICATE`` (no signature at all, enough only for firmware that skips the check in
setup mode); efitools' ``sign-efi-sig-list`` and sbsigntool's ``sbvarsign`` want a local key (or an
OpenSSL engine), not a callback to AWS KMS or a PKCS #11 token. ``asn1crypto`` encodes the
``SignedData`` (as in :mod:`worker.secureboot.authenticode`); the binary structures above are a few
``struct.pack`` calls. The private key is never needed here: the one RSA operation is
:meth:`worker.imager.signing.PESigner.sign_digest`, and its answer is checked against the
certificate before anything is returned.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import struct
import uuid
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from worker.secureboot.authenticode import signer_identifier
from worker.secureboot.base import SignerError

if TYPE_CHECKING:
    from worker.imager.signing import PESigner

__all__ = [
    "ATTRIBUTES",
    "EFI_CERT_TYPE_PKCS7_GUID",
    "EFI_CERT_X509_GUID",
    "EFI_GLOBAL_VARIABLE_GUID",
    "EFI_IMAGE_SECURITY_DATABASE_GUID",
    "MICROSOFT_OWNER_GUID",
    "VARIABLES",
    "WELL_KNOWN_DB",
    "WELL_KNOWN_KEK",
    "EnrollmentError",
    "authenticated_variable",
    "efi_time",
    "enrollment_auth_files",
    "owner_guid",
    "pkcs7_signed_data",
    "signature_database",
    "signed_payload",
    "well_known_certificates",
]

EFI_CERT_X509_GUID = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_TYPE_PKCS7_GUID = uuid.UUID("4aafd29d-68df-49ee-8aa9-347d375665a7")
EFI_GLOBAL_VARIABLE_GUID = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")  # PK, KEK
EFI_IMAGE_SECURITY_DATABASE_GUID = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")  # db
MICROSOFT_OWNER_GUID = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")

EFI_VARIABLE_NON_VOLATILE = 0x01
EFI_VARIABLE_BOOTSERVICE_ACCESS = 0x02
EFI_VARIABLE_RUNTIME_ACCESS = 0x04
EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS = 0x20
#: The attributes the variables are signed (and, by systemd-boot, set) with: 0x27.
ATTRIBUTES = (
    EFI_VARIABLE_NON_VOLATILE
    | EFI_VARIABLE_BOOTSERVICE_ACCESS
    | EFI_VARIABLE_RUNTIME_ACCESS
    | EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS
)

WIN_CERT_REVISION_2_0 = 0x0200
WIN_CERT_TYPE_EFI_GUID = 0x0EF1

#: The variables, by file name: (variable name, vendor GUID).
VARIABLES: dict[str, tuple[str, uuid.UUID]] = {
    "PK.auth": ("PK", EFI_GLOBAL_VARIABLE_GUID),
    "KEK.auth": ("KEK", EFI_GLOBAL_VARIABLE_GUID),
    "db.auth": ("db", EFI_IMAGE_SECURITY_DATABASE_GUID),
}

#: The vendored Microsoft certificates (``certs/<kind>/``), in upstream's order (``embed.FS.ReadDir``
#: sorts by name): KEK CA 2011 and KEK 2K CA 2023; UEFI CA 2011, Option ROM UEFI CA 2023, UEFI CA 2023.
WELL_KNOWN_KEK = ("MicCorKEKCA2011_2011-06-24.der", "microsoft corporation kek 2k ca 2023.der")
WELL_KNOWN_DB = (
    "MicCorUEFCA2011_2011-06-27.der",
    "microsoft option rom uefi ca 2023.der",
    "microsoft uefi ca 2023.der",
)

_EFI_SIGNATURE_LIST = struct.Struct("<16sIII")  # SignatureType, ListSize, HeaderSize, SignatureSize
_EFI_TIME = struct.Struct("<HBBBBBBIhBB")  # Year .. Second, Pad1, Nanosecond, TimeZone, Daylight, Pad2
_WIN_CERTIFICATE = struct.Struct("<IHH")  # dwLength, wRevision, wCertificateType


class EnrollmentError(SignerError):
    """The enrolment databases cannot be made with this signer (a certificate firmware would refuse,
    or a signature that does not verify)."""


def owner_guid(certificate: bytes) -> uuid.UUID:
    """The owner GUID upstream gives the enrolled certificate: ``uuid.NewHash(sha256, NameSpaceX500,
    certificate, 4)`` in Go (SHA-256 name hash, version nibble 4, RFC 4122 variant)."""
    return uuid.UUID(bytes=hashlib.sha256(uuid.NAMESPACE_X500.bytes + certificate).digest()[:16], version=4)


def signature_database(entries: Iterable[tuple[uuid.UUID, bytes]]) -> bytes:
    """The ``EFI_SIGNATURE_LIST`` structures holding ``EFI_CERT_X509_GUID`` entries ``(owner, DER
    certificate)``, in order.

    As go-uefi's ``SignatureDatabase.Append``: an entry joins the first list whose signatures have its
    size, else it starts a new list (X.509 lists have no signature header).
    """
    lists: list[tuple[int, list[bytes]]] = []  # (SignatureSize, EFI_SIGNATURE_DATA entries)
    for owner, data in entries:
        item = owner.bytes_le + data
        for size, items in lists:
            if size == len(item):
                items.append(item)
                break
        else:
            lists.append((len(item), [item]))
    out = bytearray()
    for size, items in lists:
        out += _EFI_SIGNATURE_LIST.pack(
            EFI_CERT_X509_GUID.bytes_le, _EFI_SIGNATURE_LIST.size + size * len(items), 0, size
        )
        out += b"".join(items)
    return bytes(out)


def efi_time(timestamp: datetime.datetime) -> bytes:
    """The ``EFI_TIME`` of an authenticated variable: UTC, whole seconds, the other fields zero."""
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("the timestamp of an authenticated variable must be timezone-aware")
    t = timestamp.astimezone(datetime.UTC)
    if not 1900 <= t.year <= 9999:
        raise ValueError(f"EFI_TIME years run from 1900 to 9999, not {t.year}")
    return _EFI_TIME.pack(t.year, t.month, t.day, t.hour, t.minute, t.second, 0, 0, 0, 0, 0)


def signed_payload(name: str, vendor: uuid.UUID, time: bytes, database: bytes) -> bytes:
    """What the PKCS #7 signature covers (section 8.2.2): name (UTF-16LE, no NUL), vendor GUID,
    attributes, ``EFI_TIME``, and the signature lists."""
    return name.encode("utf-16-le") + vendor.bytes_le + struct.pack("<I", ATTRIBUTES) + time + database


def _rsa_public_key(certificate_der: bytes) -> rsa.RSAPublicKey:
    """The RSA public key of the signing certificate; refuses any other kind (firmware would)."""
    try:
        cert = x509.load_der_x509_certificate(certificate_der)
    except ValueError as exc:
        raise EnrollmentError(f"the signing certificate is not a DER X.509 certificate: {exc}") from exc
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        kind = "ECDSA" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise EnrollmentError(
            f"cannot make Secure Boot enrolment databases for an {kind} signing key:"
            " UEFI authenticated variables are signed with RSA PKCS #1 v1.5 only, and firmware"
            " (EDK2/OVMF) enrols only RSA certificates in PK, KEK and db; use an RSA key"
        )
    return key


def pkcs7_signed_data(payload: bytes, certificate_der: bytes, signer: PESigner) -> bytes:
    """A detached DER PKCS #7 ``SignedData`` (no ``ContentInfo`` around it) over ``payload``.

    Per section 8.2.2: version 1, SHA-256, ``id-data`` content absent, the signer's certificate, one
    ``SignerInfo`` without attributes whose ``rsaEncryption`` signature is over SHA-256(payload),
    made by ``signer.sign_digest`` and checked here against the certificate.
    """
    public_key = _rsa_public_key(certificate_der)
    digest = hashlib.sha256(payload).digest()
    signature = signer.sign_digest(digest, "sha256")
    try:
        public_key.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except InvalidSignature as exc:
        raise EnrollmentError(
            "the signer's signature does not verify with the certificate's public key"
            " (is the certificate the one of the signing key?)"
        ) from exc

    asn1_cert = asn1_x509.Certificate.load(certificate_der)
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": signer_identifier(certificate_der),
            "digest_algorithm": {"algorithm": "sha256"},
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},  # rsaEncryption
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "data"},  # detached: the content is the payload
            "certificates": [asn1_cert],
            "signer_infos": [signer_info],
        }
    )
    der: bytes = signed_data.dump()
    return der


def authenticated_variable(
    name: str, vendor: uuid.UUID, database: bytes, signer: PESigner, timestamp: datetime.datetime
) -> bytes:
    """``EFI_VARIABLE_AUTHENTICATION_2`` (``EFI_TIME``, ``WIN_CERTIFICATE_UEFI_GUID``) + ``database``:
    what ``SetVariable(name, vendor, ATTRIBUTES, ...)`` is given."""
    time = efi_time(timestamp)
    signed_data = pkcs7_signed_data(signed_payload(name, vendor, time, database), signer.certificate, signer)
    # dwLength covers the WIN_CERTIFICATE header, CertType and CertData (the SignedData); no padding.
    win_certificate = (
        _WIN_CERTIFICATE.pack(
            _WIN_CERTIFICATE.size + 16 + len(signed_data), WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_EFI_GUID
        )
        + EFI_CERT_TYPE_PKCS7_GUID.bytes_le
        + signed_data
    )
    return time + win_certificate + database


@functools.cache
def well_known_certificates(kind: str) -> tuple[bytes, ...]:
    """The vendored Microsoft certificates (DER) for ``kind`` ``"kek"`` or ``"db"``, in upstream's order."""
    names = {"kek": WELL_KNOWN_KEK, "db": WELL_KNOWN_DB}.get(kind)
    if names is None:
        raise ValueError(f"no well-known certificates for {kind!r} (kek, db)")
    directory = resources.files("worker.secureboot").joinpath("certs", kind)
    return tuple(directory.joinpath(name).read_bytes() for name in names)


def enrollment_auth_files(
    signer: PESigner, *, include_well_known: bool, timestamp: datetime.datetime
) -> dict[str, bytes]:
    """``{"PK.auth": ..., "KEK.auth": ..., "db.auth": ...}`` enrolling ``signer.certificate``, each
    signed by ``signer`` with the time-based authentication descriptor stamped ``timestamp``.

    With ``include_well_known``, KEK also holds the Microsoft KEK CAs and db the Microsoft UEFI CAs
    (so Microsoft-signed option ROMs and shim keep booting). Raises :class:`EnrollmentError` for a
    non-RSA signing certificate or a signature that does not verify.
    """
    certificate = signer.certificate
    _rsa_public_key(certificate)  # refuse before anything is signed
    ours = (owner_guid(certificate), certificate)
    contents = {
        "PK.auth": [ours],
        "KEK.auth": [ours],
        "db.auth": [ours],
    }
    if include_well_known:
        contents["KEK.auth"] += [(MICROSOFT_OWNER_GUID, c) for c in well_known_certificates("kek")]
        contents["db.auth"] += [(MICROSOFT_OWNER_GUID, c) for c in well_known_certificates("db")]
    out: dict[str, bytes] = {}
    for file_name, entries in contents.items():
        name, vendor = VARIABLES[file_name]
        out[file_name] = authenticated_variable(name, vendor, signature_database(entries), signer, timestamp)
    return out
