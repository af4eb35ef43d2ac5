"""The imager end to end without booting: structure (upstream's integration checks), reproducibility,
errors, and arm64 outputs, built from the fixture release through verified pulls and enhancement.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pefile
import pytest
import yaml

from common.schematic.emit import marshal, schematic_id
from common.schematic.model import Customization, MetaValue, Schematic
from common.talos.version import parse_tolerant
from devstack.release.release import Release
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.initramfs import decompose
from worker.imager.build import build
from worker.imager.extensions.manifest import ExtensionError

pytestmark = pytest.mark.integration

EMPTY = Schematic()
EXTENSIONS = Schematic(
    customization=Customization(
        official_extensions=("siderolabs/amd-ucode", "siderolabs/dummy-module", "siderolabs/test-firmware")
    )
)


Factory = ImagerHarness


@pytest.fixture(scope="module")
def factory(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with imager_harness(fixture_release, tmp_path_factory.mktemp("imager")) as harness:
        yield harness


def since(version: str, minimum: str) -> bool:
    return parse_tolerant(version) >= parse_tolerant(minimum)


def uki_section(path: Path, name: str) -> bytes:
    pe = pefile.PE(str(path), fast_load=True)
    for section in pe.sections:
        if section.Name.rstrip(b"\0").decode() == name:
            return section.get_data()[: section.Misc_VirtualSize]
    raise AssertionError(f"{path.name} has no {name} section")


# --- initramfs (upstream initramfs_test.go) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "arch"),
    [("v1.6.7", "amd64"), ("v1.7.6", "amd64"), ("v1.12.4", "amd64"), ("v1.12.4", "arm64")],
)
def test_initramfs_structure(factory: Factory, version: str, arch: str) -> None:
    built = factory.build(f"initramfs-{arch}.xz", version, EXTENSIONS)
    assert built.name == f"initramfs-metal-{arch}.xz"
    parts = decompose(built.path, factory.base_initramfs(version, arch))
    # microcode goes into an early, uncompressed archive ahead of the untouched base
    assert [m.name for m, _ in parts.early][-1] == "kernel/x86/microcode/AuthenticAMD.bin"
    assert parts.compressed_magic == (b"\x28\xb5\x2f\xfd" if since(version, "v1.8.0") else b"\xfd7zX")
    layers = yaml.safe_load(parts.members["extensions.yaml"][1])["layers"]
    names = [layer["metadata"]["name"] for layer in layers]
    if arch == "amd64":
        assert names == ["amd-ucode", "dummy-module", "test-firmware", "schematic", "modules.dep"]
    else:
        assert names[:4] == ["amd-ucode", "dummy-module", "test-firmware", "schematic"]
    assert [layer["image"] for layer in layers][:4] == ["0.sqsh", "1.sqsh", "2.sqsh", "3.sqsh"]
    schematic_layer = layers[3]["metadata"]
    assert schematic_layer["version"] == schematic_id(EXTENSIONS)
    assert schematic_layer["author"] == "Image Factory (http://factory.test/)"
    # extraInfo carries the canonical schematic from Talos 1.7 on
    if parse_tolerant(version) >= parse_tolerant("v1.7.0"):
        assert schematic_layer["extraInfo"].encode() == marshal(EXTENSIONS)
    else:
        assert "extraInfo" not in schematic_layer
    if "modules.dep" in names:
        dep = parts.members["modules.dep.sqsh"]
        assert dep[1][:4] == b"hsqs"
    firmware = "usr/lib/firmware" if parse_tolerant(version) >= parse_tolerant("v1.10.0") else "lib/firmware"
    assert f"{firmware}/test-firmware/nic.bin" in parts.members


# --- UKI .cmdline (upstream download_test.go / uki_test.go) ----------------------------------------

DEFAULTS = (
    "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on"
)
NOCLOUD = "talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 " + DEFAULTS
IMA = " ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
METAL_ARM64 = "talos.platform=metal console=ttyAMA0 console=tty0 " + DEFAULTS


@pytest.mark.parametrize(
    ("path", "version", "expected"),
    [
        ("nocloud-amd64-uki.efi", "v1.9.5", NOCLOUD + IMA),
        ("nocloud-amd64-uki.efi", "v1.10.7", NOCLOUD + IMA + " selinux=1"),
        ("nocloud-amd64-uki.efi", "v1.11.3", NOCLOUD + " selinux=1"),
        ("nocloud-amd64-uki.efi", "v1.12.4", NOCLOUD + " selinux=1 module.sig_enforce=1"),
        (
            "nocloud-amd64-uki.efi",
            "v1.13.0-beta.1",
            NOCLOUD + " selinux=1 module.sig_enforce=1 proc_mem.force_override=never",
        ),
        ("metal-arm64-uki.efi", "v1.12.4", METAL_ARM64 + " selinux=1 module.sig_enforce=1"),
    ],
)
def test_uki_cmdline_matches_upstream(factory: Factory, path: str, version: str, expected: str) -> None:
    uki = factory.build(path, version)
    assert uki_section(uki.path, ".cmdline").decode() == expected
    osrel = uki_section(uki.path, ".osrel").decode()
    assert f"VERSION_ID={version}\n" in osrel
    # the multi-profile layout only from 1.10 on; a uki output carries the main profile alone
    profiles = [
        s.Name.rstrip(b"\0")
        for s in pefile.PE(str(uki.path), fast_load=True).sections
        if s.Name.startswith(b".profile")
    ]
    assert len(profiles) == (1 if parse_tolerant(version) >= parse_tolerant("v1.10.0") else 0)


def test_uki_extra_args_from_1_10(factory: Factory) -> None:
    args = Schematic(customization=Customization(extra_kernel_args=("nolapic", "nomodeset")))
    new = factory.build("metal-amd64-uki.efi", "v1.12.4", args)
    assert uki_section(new.path, ".cmdline").decode().endswith(" module.sig_enforce=1 nolapic nomodeset")
    old = factory.build("metal-amd64-uki.efi", "v1.9.5", args)
    assert "nolapic" not in uki_section(old.path, ".cmdline").decode()


# --- cmdline assets (upstream download_test.go "cmdline") -------------------------------------------


def test_cmdline_assets(factory: Factory) -> None:
    meta = Schematic(customization=Customization(meta=(MetaValue(0xA, '{"externalIPs":["1.2.3.4"]}'),)))
    body = factory.build("cmdline-metal-amd64", "v1.7.6").path.read_bytes()
    assert body == f"talos.platform=metal console=ttyS0 console=tty0 {DEFAULTS}{IMA}".encode()
    assert (
        factory.build("cmdline-aws-arm64", "v1.11.3")
        .path.read_text()
        .startswith("talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 ")
    )
    assert (
        factory.build("cmdline-metal-amd64", "v1.11.3", meta)
        .path.read_text()
        .endswith(
            " selinux=1 talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="
        )
    )


# --- reproducibility, errors, cleanliness ---------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["initramfs-amd64.xz", "metal-amd64-uki.efi", "metal-amd64.iso", "metal-arm64.iso"]
)
def test_same_profile_twice_gives_identical_bytes(factory: Factory, path: str) -> None:
    first = factory.build(path, "v1.12.4", EXTENSIONS if "amd64" in path else EMPTY, dest="a")
    second = factory.build(path, "v1.12.4", EXTENSIONS if "amd64" in path else EMPTY, dest="b")
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.peak_disk > 0 and first.peak_rss > 0


def test_incompatible_extension_is_a_400_and_leaves_nothing(factory: Factory) -> None:
    schematic = Schematic(customization=Customization(official_extensions=("siderolabs/hello-world",)))
    plan = factory.plan("metal-amd64.iso", "v1.9.5", schematic)
    dest = factory.root / "failed"
    with pytest.raises(ExtensionError) as err:
        build(
            plan,
            sources=factory.artifacts,
            external_url="http://x/",
            dest=dest,
            scratch_root=factory.scratch,
        )
    assert err.value.status == 400
    assert "siderolabs/hello-world" in str(err.value) and "v1.9.5" in str(err.value)
    assert not dest.exists() or not any(dest.iterdir())
    assert not any(factory.scratch.iterdir())


def test_arm64_iso_is_uefi_only_with_sd_boot(factory: Factory, tmp_path: Path) -> None:
    import subprocess

    iso = factory.build("metal-arm64.iso", "v1.12.4")
    listing = subprocess.run(
        ["xorriso", "-indev", str(iso.path), "-find", "/", "-type", "f"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "/EFI/BOOT/BOOTAA64.EFI" in listing and "/EFI/Linux/Talos-v1.12.4.efi" in listing
    assert "/boot/grub/grub.cfg" not in listing
    subprocess.run(
        [
            "xorriso",
            "-osirrox",
            "on",
            "-indev",
            str(iso.path),
            "-extract",
            "/EFI/Linux/Talos-v1.12.4.efi",
            str(tmp_path / "uki.efi"),
        ],
        capture_output=True,
        check=True,
    )
    cmdline = uki_section(tmp_path / "uki.efi", ".cmdline").decode()
    assert cmdline.startswith("talos.platform=metal console=ttyAMA0 console=tty0 talos.halt_if_installed=1 ")
    assert pefile.PE(str(tmp_path / "uki.efi"), fast_load=True).FILE_HEADER.Machine == 0xAA64
