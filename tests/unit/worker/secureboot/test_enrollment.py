"""The key enrolment databases (``PK.auth``, ``KEK.auth``, ``db.auth``), proven by independent tools.

efitools builds the same files from the key on disk (``cert-to-efi-sig-list`` for the signature
lists, ``sign-efi-sig-list`` for the authenticated variable and, with ``-o``, the exact bytes to be
signed); RSA PKCS #1 v1.5 is deterministic and neither side adds signed attributes, so ours must
equal theirs byte for byte. OpenSSL verifies the PKCS #7 on its own, ``sig-list-to-certs`` takes the
lists apart. The firmware rules checked here are EDK2's
(``SecurityPkg/Library/AuthVariableLib/AuthService.c``). Enrolling them in OVMF is the e2e proof.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
import subprocess
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from devstack.services import ensure_system_packages
from tests.paths import REPO_ROOT
from tests.support.secureboot import KeyPair, make_key_pair, write_pem_certificate
from worker.imager.signing import PESigner
from worker.secureboot.base import CertificateSigner, SignerError
from worker.secureboot.enrollment import (
    EnrollmentError,
    enrollment_auth_files,
    owner_guid,
    signature_database,
)
from worker.secureboot.file import file_pe_signer

EFITOOLS = {
    "cert-to-efi-sig-list": "efitools",
    "sign-efi-sig-list": "efitools",
    "sig-list-to-certs": "efitools",
    "openssl": "openssl",
}
MICROSOFT = "77fa9abd-0359-4d32-bd60-28f4e78f784b"
CERTS = REPO_ROOT / "worker" / "secureboot" / "certs"
#: §5.6's order, and the git blob ids of the files at siderolabs/talos@v1.14.0-rc.1
#: (internal/pkg/secureboot/database/certs/...): vendored unchanged.
UPSTREAM_CERTS = {
    "kek": [
        ("MicCorKEKCA2011_2011-06-24.der", "2787083e0cb615ff8c7beaac3b0a598ff5ec5870"),
        ("microsoft corporation kek 2k ca 2023.der", "e6ffb4f975fae9658631e5ca7697b63d3692b869"),
    ],
    "db": [
        ("MicCorUEFCA2011_2011-06-27.der", "9aa6ac6c79b21cf1c23b01b5a747aea6ca15da37"),
        ("microsoft option rom uefi ca 2023.der", "bfdda98f6df3edde8600a50b881bc9c273d79e97"),
        ("microsoft uefi ca 2023.der", "39a91b31730ad8dfd588a301a066f6f93d90d409"),
    ],
}
VARIABLES = {"PK.auth": "PK", "KEK.auth": "KEK", "db.auth": "db"}
#: Given off UTC on purpose: EFI_TIME holds it in UTC (03:04:05).
STAMP = datetime.datetime(2024, 1, 2, 5, 4, 5, 678, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
EFITOOLS_STAMP = "2024-01-02 03:04:05"


@pytest.fixture(scope="module")
def efitools() -> None:
    ensure_system_packages(EFITOOLS)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_key_pair(tmp_path_factory.mktemp("keys"), "db")


@pytest.fixture(scope="module")
def signer(pair: KeyPair) -> CertificateSigner:
    return file_pe_signer(pair.key_path, pair.cert_path)


@pytest.fixture(scope="module")
def files(signer: CertificateSigner) -> dict[str, bytes]:
    return enrollment_auth_files(signer, include_well_known=False, timestamp=STAMP)


@pytest.fixture(scope="module")
def files_ms(signer: CertificateSigner) -> dict[str, bytes]:
    return enrollment_auth_files(signer, include_well_known=True, timestamp=STAMP)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # sig-list-to-certs loops forever on a truncated list: a broken file fails fast instead.
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, timeout=30)


def check(*args: str | Path) -> None:
    proc = run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def split_auth(auth: bytes) -> tuple[bytes, tuple[int, int, int], bytes, bytes, bytes]:
    """(EFI_TIME, (dwLength, wRevision, wCertificateType), CertType, CertData, signature lists)."""
    length, revision, cert_type = struct.unpack_from("<IHH", auth, 16)
    return auth[:16], (length, revision, cert_type), auth[24:40], auth[40 : 16 + length], auth[16 + length :]


def efitools_esl(tmp: Path, entries: list[tuple[str, Path]]) -> bytes:
    """The signature lists ``cert-to-efi-sig-list`` makes for ``(owner, PEM file)`` entries, joined."""
    out = b""
    for i, (owner, pem) in enumerate(entries):
        esl = tmp / f"part{i}.esl"
        check("cert-to-efi-sig-list", "-g", owner, pem, esl)
        out += esl.read_bytes()
    return out


def microsoft_pems(tmp: Path, kind: str) -> list[tuple[str, Path]]:
    return [
        (MICROSOFT, write_pem_certificate(tmp / f"{kind}-{i}.pem", (CERTS / kind / name).read_bytes()))
        for i, (name, _) in enumerate(UPSTREAM_CERTS[kind])
    ]


def wrap_content_info(signed_data: bytes) -> bytes:
    """``ContentInfo{signedData, [0] SignedData}``, the form ``openssl smime`` reads (UEFI stores the
    bare SignedData), encoded here by hand rather than by the library under test."""

    def tlv(tag: int, body: bytes) -> bytes:
        n = len(body)
        length = (
            bytes([n])
            if n < 0x80
            else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
        )
        return bytes([tag]) + length + body

    oid_signed_data = bytes.fromhex("06092a864886f70d010702")
    return tlv(0x30, oid_signed_data + tlv(0xA0, signed_data))


def openssl_verify(
    tmp: Path, auth: bytes, content: bytes, cert_pem: Path
) -> subprocess.CompletedProcess[str]:
    p7, data = tmp / "sig.p7", tmp / "content.bin"
    p7.write_bytes(wrap_content_info(split_auth(auth)[3]))
    data.write_bytes(content)
    return run(
        "openssl", "smime", "-verify", "-binary", "-inform", "DER", "-in", p7, "-content", data,
        "-CAfile", cert_pem, "-purpose", "any", "-out", "/dev/null",
    )  # fmt: skip


# --- the signature lists --------------------------------------------------------------------------


def test_owner_guid_is_gos_sha256_name_hash_of_the_der_certificate(signer: CertificateSigner) -> None:
    """``uuid.NewHash(sha256.New(), uuid.NameSpaceX500, cert, 4)``, bit by bit, over the DER (not PEM)."""
    raw = bytearray(
        hashlib.sha256(bytes.fromhex("6ba7b8149dad11d180b400c04fd430c8") + signer.certificate).digest()
    )
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    assert owner_guid(signer.certificate) == uuid.UUID(bytes=bytes(raw[:16]))
    pem = x509.load_der_x509_certificate(signer.certificate).public_bytes(serialization.Encoding.PEM)
    assert owner_guid(pem) != owner_guid(signer.certificate)


@pytest.mark.usefixtures("efitools")
def test_the_lists_equal_cert_to_efi_sig_list(
    tmp_path: Path,
    pair: KeyPair,
    signer: CertificateSigner,
    files: dict[str, bytes],
    files_ms: dict[str, bytes],
) -> None:
    ours = [(str(owner_guid(signer.certificate)), pair.cert_path)]
    for name in VARIABLES:
        assert split_auth(files[name])[4] == efitools_esl(tmp_path, ours)
    assert split_auth(files_ms["PK.auth"])[4] == efitools_esl(tmp_path, ours)
    for name, kind in (("KEK.auth", "kek"), ("db.auth", "db")):
        assert split_auth(files_ms[name])[4] == efitools_esl(tmp_path, ours + microsoft_pems(tmp_path, kind))


@pytest.mark.usefixtures("efitools")
def test_the_enrolled_certificate_is_der_not_pem(
    tmp_path: Path, signer: CertificateSigner, files: dict[str, bytes]
) -> None:
    """Upstream enrols the PEM text, which OVMF refuses (siderolabs/talos#8131); we enrol the DER."""
    (tmp_path / "pk.esl").write_bytes(split_auth(files["PK.auth"])[4])
    proc = run("sig-list-to-certs", tmp_path / "pk.esl", tmp_path / "pk")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Guid {owner_guid(signer.certificate)}" in proc.stdout
    assert sorted(p.name for p in tmp_path.glob("pk-*")) == ["pk-0.der"]
    assert (tmp_path / "pk-0.der").read_bytes() == signer.certificate


@pytest.mark.usefixtures("efitools")
def test_well_known_certificates_are_microsofts_in_order(
    tmp_path: Path, signer: CertificateSigner, files_ms: dict[str, bytes]
) -> None:
    ours = str(owner_guid(signer.certificate))
    expected_subjects = {
        "KEK.auth": ["Microsoft Corporation KEK CA 2011", "Microsoft Corporation KEK 2K CA 2023"],
        "db.auth": [
            "Microsoft Corporation UEFI CA 2011",
            "Microsoft Option ROM UEFI CA 2023",
            "Microsoft UEFI CA 2023",
        ],
    }
    for name, subjects in expected_subjects.items():
        esl = tmp_path / f"{name}.esl"
        esl.write_bytes(split_auth(files_ms[name])[4])
        proc = run("sig-list-to-certs", esl, tmp_path / name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [line.split("Guid ")[1] for line in proc.stdout.splitlines() if "Guid " in line] == [ours] + [
            MICROSOFT
        ] * len(subjects)
        certs = [
            x509.load_der_x509_certificate((tmp_path / f"{name}-{i}.der").read_bytes())
            for i in range(1 + len(subjects))
        ]
        assert certs[0].public_bytes(serialization.Encoding.DER) == signer.certificate
        names = [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in certs[1:]]
        assert names == subjects
        assert all(
            c.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value
            == "Microsoft Corporation"
            for c in certs[1:]
        )


@pytest.mark.usefixtures("efitools")
def test_entries_share_a_list_only_when_their_sizes_match(tmp_path: Path) -> None:
    """go-uefi's ``Append``: the first list with the same signature size, else a new one. Read back by
    ``sig-list-to-certs``, which prints each entry's list size (28-byte header + entries) and owner."""
    a, b = uuid.UUID(int=1), uuid.UUID("12345678-9abc-def0-1122-334455667788")  # mixed-endian on disk
    esl = tmp_path / "mixed.esl"
    esl.write_bytes(signature_database([(a, b"x" * 10), (b, b"y" * 20), (b, b"z" * 10), (a, b"w" * 30)]))
    proc = run("sig-list-to-certs", esl, tmp_path / "e")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sizes = [int(line.split("sls=")[1].split(",")[0]) for line in proc.stdout.splitlines() if "sls=" in line]
    owners = [line.split("Guid ")[1] for line in proc.stdout.splitlines() if "Guid " in line]
    entries = [(tmp_path / f"e-{i}.der").read_bytes() for i in range(4)]
    assert entries == [b"x" * 10, b"z" * 10, b"y" * 20, b"w" * 30]  # list by list
    assert owners == [str(a), str(b), str(b), str(a)]
    assert sizes == [28 + 2 * 26, 28 + 2 * 26, 28 + 36, 28 + 46]
    assert esl.read_bytes()[:16] == uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le  # X.509


def test_vendored_certificates_are_upstreams_and_ship_in_the_wheel() -> None:
    for kind, entries in UPSTREAM_CERTS.items():
        assert sorted(p.name for p in (CERTS / kind).iterdir()) == sorted(name for name, _ in entries)
        for name, blob_id in entries:
            data = (CERTS / kind / name).read_bytes()
            assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob_id
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    shipped = {
        p
        for pattern in package_data["worker.secureboot"]
        for p in (REPO_ROOT / "worker" / "secureboot").glob(pattern)
    }
    assert shipped == set(CERTS.glob("*/*.der")) and len(shipped) == 5


# --- the authenticated variables ------------------------------------------------------------------


@pytest.mark.usefixtures("efitools")
@pytest.mark.parametrize("well_known", [False, True])
def test_auth_files_equal_sign_efi_sig_list(
    tmp_path: Path, pair: KeyPair, files: dict[str, bytes], files_ms: dict[str, bytes], well_known: bool
) -> None:
    """``sign-efi-sig-list -t <UTC time> -k key -c cert <var> <lists>``: the same bytes, PKCS #7 included
    (vendor GUID by variable name, EFI_TIME, WIN_CERTIFICATE_UEFI_GUID, detached SignedData)."""
    produced = files_ms if well_known else files
    for name, variable in VARIABLES.items():
        esl, auth = tmp_path / f"{variable}.esl", tmp_path / name
        esl.write_bytes(split_auth(produced[name])[4])
        check(
            "sign-efi-sig-list",
            "-t",
            EFITOOLS_STAMP,
            "-k",
            pair.key_path,
            "-c",
            pair.cert_path,
            variable,
            esl,
            auth,
        )
        assert produced[name] == auth.read_bytes(), name


@pytest.mark.usefixtures("efitools")
def test_openssl_verifies_the_signature_over_the_spec_payload(
    tmp_path: Path, pair: KeyPair, files: dict[str, bytes]
) -> None:
    """UEFI 2.10 §8.2.2: name (UTF-16LE, no NUL) ‖ vendor GUID ‖ attributes 0x27 ‖ EFI_TIME ‖ lists,
    rebuilt here and checked against efitools' ``-o`` bundle; a flipped byte in the lists fails."""
    vendors = {
        "PK": "8be4df61-93ca-11d2-aa0d-00e098032b8c",
        "KEK": "8be4df61-93ca-11d2-aa0d-00e098032b8c",
        "db": "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
    }
    other = make_key_pair(tmp_path, "other")  # a certificate that did not sign them
    for name, variable in VARIABLES.items():
        time, _, _, _, lists = split_auth(files[name])
        payload = (
            variable.encode("utf-16-le")
            + uuid.UUID(vendors[variable]).bytes_le
            + struct.pack("<I", 0x27)
            + time
            + lists
        )
        esl, bundle = tmp_path / "v.esl", tmp_path / "v.bundle"
        esl.write_bytes(lists)
        check("sign-efi-sig-list", "-o", "-t", EFITOOLS_STAMP, variable, esl, bundle)
        assert payload == bundle.read_bytes()
        proc = openssl_verify(tmp_path, files[name], payload, pair.cert_path)
        assert proc.returncode == 0 and "Verification successful" in proc.stderr, proc.stderr
        tampered = bytearray(payload)
        tampered[-100] ^= 0x01
        assert openssl_verify(tmp_path, files[name], bytes(tampered), pair.cert_path).returncode != 0
        assert openssl_verify(tmp_path, files[name], payload, other.cert_path).returncode != 0


def test_headers_pass_edk2s_checks(files: dict[str, bytes]) -> None:
    """What ``VerifyTimeBasedPayload`` refuses with EFI_SECURITY_VIOLATION before any cryptography."""
    for auth in files.values():
        time, (length, revision, cert_type), guid, signed_data, lists = split_auth(auth)
        year, month, day, hour, minute, second, pad1, nanosecond, tz, daylight, pad2 = struct.unpack(
            "<HBBBBBBIhBB", time
        )
        assert (year, month, day, hour, minute, second) == (2024, 1, 2, 3, 4, 5)  # UTC, whole seconds
        assert (pad1, nanosecond, tz, daylight, pad2) == (0, 0, 0, 0, 0)
        assert (revision, cert_type) == (0x0200, 0x0EF1)
        assert guid == uuid.UUID("4aafd29d-68df-49ee-8aa9-347d375665a7").bytes_le
        assert length == 24 + len(signed_data)
        # A bare SignedData (no ContentInfo) with a two-byte length: the SHA-256 OID sits at offset 13.
        assert (
            signed_data[:2] == b"\x30\x82" and int.from_bytes(signed_data[2:4], "big") == len(signed_data) - 4
        )
        assert signed_data[13:22] == bytes.fromhex("608648016503040201")
        assert lists[:16] == uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072").bytes_le


# --- what is refused ------------------------------------------------------------------------------


class WrongKeySigner:
    """Claims a certificate but signs with another key (a misconfigured remote signer)."""

    def __init__(self, certificate: bytes, sign: Callable[[bytes, str], bytes]) -> None:
        self._certificate = certificate
        self._sign = sign
        self.calls = 0

    @property
    def certificate(self) -> bytes:
        return self._certificate

    def sign_pe(self, path: Path) -> None:
        raise AssertionError("not a PE signing test")

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        self.calls += 1
        return self._sign(digest, hash_name)


def test_ecdsa_keys_are_refused_before_anything_is_signed(tmp_path: Path) -> None:
    """EDK2 enrols only RSA X.509 certificates and §8.2.2 only RSA PKCS #1 v1.5 signatures."""
    ec_pair = make_key_pair(tmp_path, "ec", "ec")
    key = ec_pair.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    spy = WrongKeySigner(ec_pair.cert_der, lambda d, h: key.sign(d, ec.ECDSA(Prehashed(hashes.SHA256()))))
    signer: PESigner = spy
    with pytest.raises(EnrollmentError, match=r"for an ECDSA signing key: .* use an RSA key") as info:
        enrollment_auth_files(signer, include_well_known=True, timestamp=STAMP)
    assert isinstance(info.value, SignerError)  # what the imager already reports for signer trouble
    assert spy.calls == 0


def test_a_signature_from_another_key_is_refused(tmp_path: Path, pair: KeyPair) -> None:
    other_pair = make_key_pair(tmp_path, "other")
    other = file_pe_signer(other_pair.key_path, other_pair.cert_path)
    spy = WrongKeySigner(pair.cert_der, other.sign_digest)
    with pytest.raises(EnrollmentError, match="does not verify"):
        enrollment_auth_files(spy, include_well_known=False, timestamp=STAMP)
    assert spy.calls == 1


def test_naive_timestamps_are_refused(signer: CertificateSigner) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        enrollment_auth_files(signer, include_well_known=False, timestamp=datetime.datetime(2024, 1, 2))


def test_certificate_signer_signs_digests_with_its_key(tmp_path: Path) -> None:
    """The ``PESigner.sign_digest`` the databases are signed with, for both key kinds the backends hold."""
    for kind in ("rsa", "ec"):
        p = make_key_pair(tmp_path, kind, kind)
        s = file_pe_signer(p.key_path, p.cert_path)
        digest = hashlib.sha384(b"payload").digest()
        signature = s.sign_digest(digest, "sha384")
        public = p.cert.public_key()
        if kind == "rsa":
            assert isinstance(public, rsa.RSAPublicKey)
            public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA384()))
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA384())))
