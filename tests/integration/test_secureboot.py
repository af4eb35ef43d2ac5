"""Secure Boot, the first slice (file backend), through real APIs and a worker: the signed UKI.

The UKI from ``/image/<id>/<version>/metal-amd64-secureboot-uki.efi`` is checked with independent
tools and independent arithmetic: ``sbverify`` (Debian sbsigntool) against the configured
certificate, and the ``.pcrsig`` recomputed from the UKI's own measured sections with the PCR key
(RSA PKCS #1 v1.5 is deterministic, so equal means the same policy signed by the same key).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pefile
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

import worker.secureboot as worker_certs
from devstack.release.release import Release
from devstack.services import RegistryServer, ensure_system_packages
from tests.support.secureboot import (
    TOOLS,
    KeyPair,
    assert_sbverify_ok,
    flip_byte,
    make_key_pair,
    sbverify,
)
from tests.support.stack import Stack, factory_stack
from worker.imager.cmdline import build_cmdline
from worker.secureboot.pcr import BANKS, MEASURED_SECTIONS, sign_pcr_policy

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"
BUILD_WAIT = 600
SCHEMATIC = "customization:\n  extraKernelArgs:\n    - sb=test\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair]:
    ensure_system_packages(TOOLS)
    root = tmp_path_factory.mktemp("sb-keys")
    return make_key_pair(root, "db"), make_key_pair(root, "pcr")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    registry: RegistryServer,
    fixture_release: Release,
    keys: tuple[KeyPair, KeyPair],
) -> Iterator[Stack]:
    db, pcr = keys
    with factory_stack(
        tmp_path_factory.mktemp("secureboot"),
        None,
        registry,
        fixture_release,
        **{
            "secureBoot.enabled": True,
            "secureBoot.file.signingKeyPath": str(db.key_path),
            "secureBoot.file.signingCertPath": str(db.cert_path),
            "secureBoot.file.pcrKeyPath": str(pcr.key_path),
        },
    ) as s:
        yield s


@pytest.fixture(scope="module")
def disabled(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("sb-disabled"), None, registry, fixture_release, workers=0
    ) as s:
        yield s


def _get(stack: Stack, sid: str, path: str) -> requests.Response:
    return requests.get(f"{stack.api.url}/image/{sid}/{VERSION}/{path}", timeout=BUILD_WAIT)


def sections(data: bytes) -> list[tuple[str, bytes]]:
    """Each section's name and the bytes systemd-stub measures (VirtualSize bytes), in file order."""
    pe = pefile.PE(data=data, fast_load=True)
    return [(s.Name.rstrip(b"\0").decode(), s.get_data()[: s.Misc_VirtualSize]) for s in pe.sections]


@pytest.fixture(scope="module")
def uki(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    sid = stack.create_schematic(SCHEMATIC)
    response = _get(stack, sid, "metal-amd64-secureboot-uki.efi")
    assert response.status_code == 200, response.text
    path = tmp_path_factory.mktemp("sb-uki") / "uki.efi"
    path.write_bytes(response.content)
    return sid, path


def test_uki_is_authenticode_signed_with_the_configured_certificate(
    uki: tuple[str, Path], keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    db, pcr = keys
    _, path = uki
    assert_sbverify_ok(db.cert_path, path)
    assert sbverify(pcr.cert_path, path).returncode != 0  # another certificate does not verify it
    tampered = tmp_path / "tampered.efi"
    tampered.write_bytes(path.read_bytes())
    by_name = dict(sections(path.read_bytes()))
    linux = pefile.PE(str(path), fast_load=True)
    (section,) = [s for s in linux.sections if s.Name.rstrip(b"\0") == b".linux"]
    flip_byte(tampered, section.PointerToRawData + 4096)
    assert by_name[".linux"]  # the byte flipped is inside the kernel
    assert sbverify(db.cert_path, tampered).returncode != 0


def test_pcrsig_is_the_policy_over_its_own_measured_sections(
    uki: tuple[str, Path], keys: tuple[KeyPair, KeyPair]
) -> None:
    _, pcr = keys
    _, path = uki
    listed = sections(path.read_bytes())
    names = [name for name, _ in listed]
    # upstream's signed order: .pcrpkey before .linux, .pcrsig after the (main) profile
    assert names.index(".pcrpkey") < names.index(".linux") and names[-1] == ".pcrsig"
    assert names.count(".pcrsig") == 1
    by_name = dict(listed)
    pcrpkey = serialization.load_pem_public_key(by_name[".pcrpkey"])
    assert isinstance(pcrpkey, rsa.RSAPublicKey)
    assert pcrpkey.public_numbers() == pcr.key.public_key().public_numbers()
    measured = {name: data for name, data in listed if name in MEASURED_SECTIONS}
    assert set(measured) >= {".linux", ".initrd", ".cmdline", ".osrel", ".sbat", ".pcrpkey", ".profile"}
    key = pcr.key
    assert isinstance(key, rsa.RSAPrivateKey)

    def sign(digest: bytes, bank: str) -> bytes:
        return key.sign(digest, padding.PKCS1v15(), Prehashed(_hash(bank)))

    expected = sign_pcr_policy(measured, by_name[".pcrpkey"], sign)
    assert by_name[".pcrsig"] == expected
    document = json.loads(by_name[".pcrsig"])
    assert list(document) == list(BANKS)
    for bank, entries in document.items():
        (entry,) = entries
        assert entry["pcrs"] == [11]
        digest = hashlib.new(bank, bytes.fromhex(entry["pol"])).digest()
        pcrpkey.verify(base64.b64decode(entry["sig"]), digest, padding.PKCS1v15(), Prehashed(_hash(bank)))


def _hash(bank: str):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import hashes

    return {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}[bank]()


def test_uki_carries_the_secure_boot_cmdline(stack: Stack, uki: tuple[str, Path]) -> None:
    sid, path = uki
    cmdline = dict(sections(path.read_bytes()))[".cmdline"].decode()
    expected = build_cmdline(
        version=VERSION, platform="metal", arch="amd64", secureboot=True, extra_args=["sb=test"], kind="uki"
    )
    assert cmdline == expected and "sb=test" in cmdline
    assert cmdline != build_cmdline(
        version=VERSION, platform="metal", arch="amd64", secureboot=False, extra_args=["sb=test"], kind="uki"
    )
    served = _get(stack, sid, "cmdline-metal-amd64-secureboot")
    assert served.status_code == 200, served.text
    assert served.text == build_cmdline(
        version=VERSION,
        platform="metal",
        arch="amd64",
        secureboot=True,
        extra_args=["sb=test"],
        kind="cmdline",
    )


def test_signing_certificate_is_served(stack: Stack, keys: tuple[KeyPair, KeyPair]) -> None:
    db, _ = keys
    response = requests.get(f"{stack.api.url}/secureboot/signing-cert.pem", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-pem-file"
    assert response.content == db.cert_path.read_bytes()


def _layer_files(layout: Path, wanted: set[str]) -> dict[str, bytes]:
    """``wanted`` files from the image skopeo copied into the ``dir:`` transport at ``layout``
    (the last layer that has a file wins, as in the container's file system)."""
    manifest = json.loads((layout / "manifest.json").read_text())
    found: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        blob = layout / layer["digest"].split(":", 1)[1]
        with tarfile.open(blob, "r:*") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    found[name] = extracted.read()
    return found


def test_secure_boot_installer_pulled_by_skopeo_ships_signed_boot_files(
    stack: Stack, keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    """The registry frontend's ``installer-secureboot`` image, as skopeo pulls it: systemd-boot and the
    UKI it installs are both signed with the configured certificate."""
    db, _ = keys
    sid = stack.create_schematic(SCHEMATIC)
    host = stack.api.url.removeprefix("http://")
    layout = tmp_path / "installer"
    copied = subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--override-arch", "amd64",
         f"docker://{host}/installer-secureboot/{sid}:{VERSION}", f"dir:{layout}"],
        capture_output=True, text=True, timeout=BUILD_WAIT, check=False,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    files = _layer_files(layout, {"usr/install/amd64/systemd-boot.efi", "usr/install/amd64/vmlinuz.efi"})
    assert set(files) == {"usr/install/amd64/systemd-boot.efi", "usr/install/amd64/vmlinuz.efi"}
    for name, data in files.items():
        target = tmp_path / Path(name).name
        target.write_bytes(data)
        assert_sbverify_ok(db.cert_path, target)
    cmdline = dict(sections(files["usr/install/amd64/vmlinuz.efi"]))[".cmdline"].decode()
    assert "sb=test" in cmdline and "lockdown=confidentiality" in cmdline


def _iso_file(iso: Path, name: str, out: Path) -> bytes:
    """One file of the ISO9660 tree, extracted by xorriso (Debian's, independent of our writer)."""
    done = subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", f"/{name}", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out.read_bytes()


def test_secure_boot_iso_carries_signed_systemd_boot_and_the_enrolment_databases(
    stack: Stack, keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    """``includeWellKnownCertificates`` puts Microsoft's certificates (the DER files upstream ships)
    next to ours in the ISO's db, systemd-boot is signed, and loader.conf asks for the schematic's
    enrolment mode. (The databases' format is proven against efitools in the unit tests, and by
    firmware enrolling them in ``tests/e2e/test_secureboot_boot.py``.)"""
    db, _ = keys
    sid = stack.create_schematic(
        SCHEMATIC + "  secureboot:\n    includeWellKnownCertificates: true\n    enrollKeys: force\n"
    )
    response = _get(stack, sid, "metal-amd64-secureboot.iso")
    assert response.status_code == 200, response.text
    iso = tmp_path / "sb.iso"
    iso.write_bytes(response.content)
    sd_boot = tmp_path / "BOOTX64.EFI"
    _iso_file(iso, "EFI/BOOT/BOOTX64.EFI", sd_boot)
    assert_sbverify_ok(db.cert_path, sd_boot)
    loader = _iso_file(iso, "loader/loader.conf", tmp_path / "loader.conf").decode()
    assert loader.endswith("\nsecure-boot-enroll force\n"), loader
    assert _iso_file(iso, "EFI/keys/uki-signing-cert.der", tmp_path / "cert.der") == db.cert_der
    enrolled = {
        name: _iso_file(iso, f"loader/keys/auto/{name}", tmp_path / name)
        for name in ("PK.auth", "KEK.auth", "db.auth")
    }
    assert all(db.cert_der in data for data in enrolled.values())
    microsoft_db = (Path(worker_certs.__file__).parent / "certs" / "db").glob("*.der")
    for cert in microsoft_db:
        assert cert.read_bytes() in enrolled["db.auth"], cert.name
        assert cert.read_bytes() not in enrolled["PK.auth"]


def test_secure_boot_pxe_script_boots_the_signed_uki(
    stack: Stack, uki: tuple[str, Path], keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    db, _ = keys
    sid, path = uki
    script = requests.get(f"{stack.api.url}/pxe/{sid}/{VERSION}/metal-amd64-secureboot", timeout=BUILD_WAIT)
    assert script.status_code == 200, script.text
    lines = script.text.splitlines()
    assert lines[0] == "#!ipxe"
    (kernel,) = [line for line in lines if line.startswith("kernel ")]
    url, _, cmdline = kernel.removeprefix("kernel ").partition(" ")
    assert url.endswith(f"/image/{sid}/{VERSION}/metal-amd64-secureboot-uki.efi")
    assert "sb=test" in cmdline
    served = requests.get(url.replace(url.split("/image/")[0], stack.api.url), timeout=BUILD_WAIT)
    assert served.status_code == 200
    fetched = tmp_path / "pxe-uki.efi"
    fetched.write_bytes(served.content)
    assert_sbverify_ok(db.cert_path, fetched)
    assert served.content == path.read_bytes()


def test_disabled_secure_boot_is_a_400(disabled: Stack) -> None:
    sid = disabled.create_schematic(SCHEMATIC)
    for path in (
        "metal-amd64-secureboot-uki.efi",
        "cmdline-metal-amd64-secureboot",
        "metal-amd64-secureboot.iso",
        "metal-amd64-secureboot.raw.xz",
        "installer-amd64-secureboot.tar",
        "metal-installer-amd64-secureboot.tar",
    ):
        response = _get(disabled, sid, path)
        assert response.status_code == 400, response.text
        assert "secure boot is disabled" in response.text
    pxe = requests.get(f"{disabled.api.url}/pxe/{sid}/{VERSION}/metal-amd64-secureboot", timeout=30)
    assert pxe.status_code == 400 and "secure boot is disabled" in pxe.text, pxe.text
    cert = requests.get(f"{disabled.api.url}/secureboot/signing-cert.pem", timeout=30)
    assert cert.status_code == 500  # upstream: ErrDisabled reaches the handler untagged
