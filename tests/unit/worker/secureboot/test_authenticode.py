"""Authenticode signing of a real systemd-boot binary, checked with sbverify, sbsign and osslsigncode."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pefile
import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.support.secureboot import (
    KeyPair,
    assert_sbverify_ok,
    flip_byte,
    make_key_pair,
    osslsigncode_digests,
    sbverify,
)
from worker.imager.uki import build_uki
from worker.secureboot.authenticode import (
    SPC_INDIRECT_DATA_OBJID,
    AuthenticodeError,
    SignDigest,
    SpcIndirectDataContent,
    digest_info,
    image_hash,
    pe_checksum,
    read_layout,
    sign_pe,
    signatures,
)


def local_signer(pair: KeyPair) -> tuple[list[bytes], SignDigest]:
    """A callback that signs with the local key and records the digests it was handed."""
    seen: list[bytes] = []

    def sign(digest: bytes) -> bytes:
        seen.append(digest)
        if isinstance(pair.key, rsa.RSAPrivateKey):
            return pair.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return pair.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    return seen, sign


def sign_with(pair: KeyPair, image: Path) -> bytes:
    _, sign = local_signer(pair)
    return sign_pe(image, pair.cert_der, sign)


def embedded_pe_hash(image: Path, index: int = 0) -> bytes:
    info = cms.ContentInfo.load(signatures(image)[index])
    content = info["content"]["encap_content_info"]["content"]
    idc = content.parse(SpcIndirectDataContent)
    return bytes(idc["message_digest"]["digest"].native)


def test_image_hash_matches_sbsign(efi: Path, rsa_pair: KeyPair, tmp_path: Path) -> None:
    """sbsign's embedded digest and osslsigncode's computed one both equal our image hash."""
    ours = image_hash(efi)
    out = tmp_path / "sbsigned.efi"
    subprocess.run(
        [
            "sbsign",
            "--key",
            str(rsa_pair.key_path),
            "--cert",
            str(rsa_pair.cert_path),
            "--output",
            str(out),
            str(efi),
        ],
        check=True,
        capture_output=True,
    )
    assert embedded_pe_hash(out) == ours
    current, calculated = osslsigncode_digests(out)
    assert current == calculated == ours.hex()


def test_rsa_signature_verifies_and_breaks_on_a_byte(efi: Path, rsa_pair: KeyPair) -> None:
    unsigned_size = efi.stat().st_size
    pe_hash = sign_with(rsa_pair, efi)
    assert_sbverify_ok(rsa_pair.cert_path, efi)
    current, calculated = osslsigncode_digests(efi, rsa_pair.cert_path)
    assert current == calculated == pe_hash.hex()
    assert embedded_pe_hash(efi) == pe_hash

    # The certificate table: 8-byte aligned, at the end, in the Certificate Table data directory.
    layout = read_layout(efi)
    assert layout.cert_table_offset == unsigned_size + (-unsigned_size % 8)
    assert layout.cert_table_offset % 8 == 0
    assert layout.cert_table_offset + layout.cert_table_size == efi.stat().st_size
    assert layout.cert_table_size % 8 == 0
    with efi.open("rb") as f:
        f.seek(layout.cert_table_offset)
        length, revision, cert_type = struct.unpack("<IHH", f.read(8))
    assert (revision, cert_type) == (0x0200, 0x0002)
    assert length <= layout.cert_table_size < length + 8

    # The CheckSum is the one pefile (and so Windows' CheckSumMappedFile) computes.
    pe = pefile.PE(str(efi), fast_load=True)
    try:
        assert pe.OPTIONAL_HEADER.CheckSum == pe.generate_checksum()
    finally:
        pe.close()

    # One byte of a section changed after signing: the image hash no longer matches.
    flip_byte(efi, layout.sections[0][0] + 100)
    proc = sbverify(rsa_pair.cert_path, efi)
    assert proc.returncode != 0
    assert "Signature verification OK" not in proc.stdout


def test_a_byte_in_the_headers_breaks_it_too(efi: Path, rsa_pair: KeyPair) -> None:
    sign_with(rsa_pair, efi)
    flip_byte(efi, 0x40)  # the DOS stub: hashed
    assert sbverify(rsa_pair.cert_path, efi).returncode != 0


def test_the_wrong_certificate_does_not_verify(efi: Path, rsa_pair: KeyPair, tmp_path: Path) -> None:
    other = make_key_pair(tmp_path, "other")
    sign_with(rsa_pair, efi)
    assert sbverify(other.cert_path, efi).returncode != 0


def test_ecdsa_signature_verifies(efi: Path, tmp_path: Path) -> None:
    pair = make_key_pair(tmp_path, "ec", kind="ec")
    sign_with(pair, efi)
    assert_sbverify_ok(pair.cert_path, efi)
    info = cms.ContentInfo.load(signatures(efi)[0])
    signer = info["content"]["signer_infos"][0]
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"


def test_signed_data_structure(efi: Path, rsa_pair: KeyPair) -> None:
    seen, sign = local_signer(rsa_pair)
    sign_pe(efi, rsa_pair.cert_der, sign)
    info = cms.ContentInfo.load(signatures(efi)[0])
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    assert signed["version"].native == "v1"
    assert [a["algorithm"].native for a in signed["digest_algorithms"]] == ["sha256"]
    assert signed["encap_content_info"]["content_type"].dotted == SPC_INDIRECT_DATA_OBJID
    assert signed["certificates"][0].chosen.dump() == rsa_pair.cert_der
    signer = signed["signer_infos"][0]
    assert signer["digest_algorithm"]["algorithm"].native == "sha256"
    assert signer["signature_algorithm"]["algorithm"].native == "rsassa_pkcs1v15"
    assert signer["sid"].chosen["serial_number"].native == rsa_pair.cert.serial_number
    attrs = {a["type"].dotted: a["values"] for a in signer["signed_attrs"]}
    assert set(attrs) == {"1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4"}
    assert attrs["1.2.840.113549.1.9.3"][0].dotted == SPC_INDIRECT_DATA_OBJID
    content = signed["encap_content_info"]["content"]
    assert attrs["1.2.840.113549.1.9.4"][0].native == hashlib.sha256(content.contents).digest()
    # The callback was handed the digest of the signed attributes (as a SET OF), nothing else.
    set_of = b"\x31" + signer["signed_attrs"].dump()[1:]
    assert seen == [hashlib.sha256(set_of).digest()]


def test_an_unaligned_image_is_padded_inside_the_hash(efi: Path, rsa_pair: KeyPair) -> None:
    for extra in (b"", b"a", b"abc"):  # trailing data after the sections, of every alignment
        with efi.open("ab") as f:
            f.write(extra)
        if efi.stat().st_size % 8:
            break
    size = efi.stat().st_size
    assert size % 8
    pe_hash = sign_with(rsa_pair, efi)
    assert read_layout(efi).cert_table_offset == size + (-size % 8)
    assert_sbverify_ok(rsa_pair.cert_path, efi)
    current, calculated = osslsigncode_digests(efi, rsa_pair.cert_path)
    assert current == calculated == pe_hash.hex()


def test_a_second_signature_is_appended(efi: Path, rsa_pair: KeyPair, tmp_path: Path) -> None:
    other = make_key_pair(tmp_path, "second", kind="ec")
    first = sign_with(rsa_pair, efi)
    second = sign_with(other, efi)
    assert first == second  # the certificate table is outside the image hash
    assert len(signatures(efi)) == 2
    assert embedded_pe_hash(efi, 1) == first
    # Separate WIN_CERTIFICATE entries, as sbsign adds and UEFI firmware checks each of (osslsigncode
    # only knows Windows' nested signatures, so sbverify is the judge here).
    listing = subprocess.run(["sbverify", "--list", str(efi)], capture_output=True, text=True, check=True)
    assert "signature 2" in listing.stdout and "/CN=test second" in listing.stdout
    assert_sbverify_ok(rsa_pair.cert_path, efi)
    assert_sbverify_ok(other.cert_path, efi)


def test_a_bad_signature_is_refused_before_writing(efi: Path, rsa_pair: KeyPair) -> None:
    before = efi.read_bytes()
    with pytest.raises(AuthenticodeError, match="does not verify"):
        sign_pe(efi, rsa_pair.cert_der, lambda digest: b"\x01" * 256)
    assert efi.read_bytes() == before


def test_not_a_pe_image(tmp_path: Path, rsa_pair: KeyPair) -> None:
    path = tmp_path / "not.efi"
    path.write_bytes(b"MZ" + b"\0" * 200)
    with pytest.raises(AuthenticodeError):
        sign_pe(path, rsa_pair.cert_der, lambda digest: b"")


def test_a_certificate_table_not_at_the_end_is_refused(efi: Path, rsa_pair: KeyPair) -> None:
    sign_with(rsa_pair, efi)
    with efi.open("ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(AuthenticodeError, match="not at the end"):
        sign_with(rsa_pair, efi)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4097, 1 << 20, (1 << 20) + 3])
def test_pe_checksum_matches_pefile(tmp_path: Path, efi: Path, size: int) -> None:
    data = efi.read_bytes()
    pe = pefile.PE(data=data, fast_load=True)
    offset = pe.OPTIONAL_HEADER.get_field_absolute_offset("CheckSum")
    blob = data + bytes((i * 7 + 3) % 256 for i in range(size))
    path = tmp_path / "blob.efi"
    path.write_bytes(blob)
    assert pe_checksum(path, offset) == pefile.PE(data=blob, fast_load=True).generate_checksum()


def test_pe_checksum_of_all_ones(tmp_path: Path) -> None:
    """End-around carry: a sum that is a non-zero multiple of 0xFFFF folds to 0xFFFF, not 0."""
    path = tmp_path / "ones"
    path.write_bytes(b"\0" * 64 + b"\xff\xff" * 3)
    assert pe_checksum(path, 0) == 0xFFFF + 70


def test_digest_info() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert digest_info(digest).hex().startswith("3031300d06096086480165030402010500")
    assert len(digest_info(hashlib.sha384(b"x").digest(), "sha384")) == 19 + 48
    with pytest.raises(ValueError):
        digest_info(b"short")
    with pytest.raises(ValueError):
        digest_info(digest, "md5")


def test_the_original_is_left_alone(systemd_boot_efi: Path, efi: Path, rsa_pair: KeyPair) -> None:
    before = hashlib.sha256(systemd_boot_efi.read_bytes()).digest()
    sign_with(rsa_pair, efi)
    assert hashlib.sha256(systemd_boot_efi.read_bytes()).digest() == before
    assert shutil.which("sbverify")


def test_a_uki_from_the_imager(
    tmp_path: Path, systemd_boot_efi: Path, rsa_pair: KeyPair, signing_tools: None
) -> None:
    """A UKI from ``worker.imager.uki`` (Debian's stub, stand-in kernel and initrd) signs and verifies."""
    stub = systemd_boot_efi.with_name("linuxx64.efi.stub")
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initramfs.xz"
    kernel.write_bytes(bytes(range(256)) * 4099)
    initrd.write_bytes(b"initrd" * 50001)
    uki = tmp_path / "vmlinuz.efi"
    build_uki(
        stub=stub,
        kernel=kernel,
        initrd=initrd,
        cmdline="talos.platform=metal",
        version="v1.12.4",
        profiles=None,
        epoch=1_700_000_000,
        out=uki,
    )
    pe_hash = sign_with(rsa_pair, uki)
    assert_sbverify_ok(rsa_pair.cert_path, uki)
    current, calculated = osslsigncode_digests(uki, rsa_pair.cert_path)
    assert current == calculated == pe_hash.hex()
    layout = read_layout(uki)
    flip_byte(uki, layout.sections[-1][0] + layout.sections[-1][1] // 2)
    assert sbverify(rsa_pair.cert_path, uki).returncode != 0
