"""Enhancement of a parsed asset profile from a schematic (upstream EnhanceFromSchematic)."""

from __future__ import annotations

import re

import pytest

from common.artifacts.catalog import ExtensionRef, ImageDependency, OverlayRef, TaggedRef
from common.errors import InvalidInputError
from common.profile.enhance import BuildPlan, enhance
from common.profile.hash import profile_yaml
from common.profile.model import Bootloader, MetaValue, SDBootEnrollKeys, SecureBootAssets
from common.profile.path import parse_path
from common.schematic.emit import marshal, schematic_id
from common.schematic.model import Customization, Overlay, Schematic, SecureBoot
from common.schematic.model import MetaValue as SchematicMeta
from common.talos.version import Version

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
DIGEST_C = "sha256:" + "c" * 64


class FakeCatalogs:
    """The two catalog reads enhancement makes, recorded so tests can see what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.extensions = [
            ExtensionRef(TaggedRef("ghcr.io", "siderolabs/gvisor", "1.0"), DIGEST_A),
            ExtensionRef(TaggedRef("ghcr.io", "siderolabs/i915", "2.0"), DIGEST_B),
            ExtensionRef(TaggedRef("ghcr.io", "siderolabs/amd-ucode", "3.0"), DIGEST_C),
        ]

    def official_extensions(self, version: Version) -> list[ExtensionRef]:
        self.asked.append(f"extensions {version}")
        return self.extensions

    def official_overlays(self, version: Version) -> list[OverlayRef]:
        self.asked.append(f"overlays {version}")
        return [OverlayRef("rpi_generic", TaggedRef("ghcr.io", "siderolabs/sbc-raspberrypi", "v1"), DIGEST_A)]

    def installer_dependency(self, version: Version, arch: str) -> ImageDependency:
        self.asked.append(f"installer {version} {arch}")
        repository = (
            "siderolabs/installer-base" if version >= Version.parse("1.10.0") else "siderolabs/installer"
        )
        manifest = DIGEST_C if arch == "amd64" else DIGEST_B
        return ImageDependency(repository, DIGEST_A, manifest, f"ghcr.io/{repository}@{manifest}")


def plan_for(path: str, customization: Customization, version: str = "v1.12.4", **kw: object) -> BuildPlan:
    schematic = Schematic(customization=customization, **kw)  # type: ignore[arg-type]
    return enhance(
        parse_path(path),
        schematic,
        schematic_id=schematic_id(schematic),
        schematic_yaml=marshal(schematic),
        version=version,
        catalogs=FakeCatalogs(),
    )


FULL = Customization(
    official_extensions=("siderolabs/i915-ucode", "siderolabs/gvisor"),
    extra_kernel_args=("console=ttyS1", "-selinux"),
    meta=(SchematicMeta(10, "net"), SchematicMeta(12, "x")),
    bootloader="sd-boot",
)


def test_extensions_in_schematic_order_with_aliases_then_the_schematic_extension() -> None:
    plan = plan_for("metal-amd64.iso", FULL)
    sid = plan.schematic_id
    assert [(s.repository, s.digest, s.name) for s in plan.extensions] == [
        ("siderolabs/i915", DIGEST_B, "siderolabs/i915-ucode"),
        ("siderolabs/gvisor", DIGEST_A, "siderolabs/gvisor"),
    ]
    exts = plan.profile.input.system_extensions
    assert [e.oci_path or e.tarball_path for e in exts] == [
        f"amd64-{DIGEST_B}",
        f"amd64-{DIGEST_A}",
        f"{sid}-true.tar",
    ]
    assert plan.profile.version == "v1.12.4"
    assert plan.profile.name == "Talos"


def test_schematic_extension_name_says_whether_overlays_are_supported() -> None:
    plan = plan_for("metal-amd64.iso", Customization(), version="v1.6.7")
    assert plan.profile.input.system_extensions[0].tarball_path == f"{plan.schematic_id}-false.tar"


def test_unknown_extension_is_a_400_naming_it_and_the_version() -> None:
    with pytest.raises(InvalidInputError) as err:
        plan_for("metal-amd64.iso", Customization(official_extensions=("siderolabs/nope",)))
    assert str(err.value) == 'official extension "siderolabs/nope" is not available for Talos version v1.12.4'
    assert err.value.status == 400


@pytest.mark.parametrize("path", ["kernel-amd64", "cmdline-metal-amd64"])
def test_kernel_and_cmdline_carry_no_extensions(path: str) -> None:
    plan = plan_for(path, FULL)
    assert plan.extensions == []
    assert plan.profile.input.system_extensions == []


def test_iso_gets_args_meta_and_bootloader() -> None:
    prof = plan_for("metal-amd64.iso", FULL).profile
    assert prof.customization.extra_kernel_args == ["console=ttyS1", "-selinux"]
    assert prof.customization.meta_contents == [MetaValue(10, "net"), MetaValue(12, "x")]
    assert prof.output.iso_options is not None
    assert prof.output.iso_options.bootloader is Bootloader.SD_BOOT


def test_initramfs_gets_extensions_but_no_args_or_meta() -> None:
    prof = plan_for("initramfs-amd64.xz", FULL).profile
    assert len(prof.input.system_extensions) == 3
    assert prof.customization.extra_kernel_args == []
    assert prof.customization.meta_contents == []


@pytest.mark.parametrize(("version", "args"), [("v1.9.5", []), ("v1.10.7", ["console=ttyS1", "-selinux"])])
def test_uki_takes_args_only_from_the_unified_installer_on(version: str, args: list[str]) -> None:
    prof = plan_for("metal-amd64-uki.efi", FULL, version=version).profile
    assert prof.customization.extra_kernel_args == args
    assert prof.customization.meta_contents == []


def test_disk_image_gets_bootloader_and_sector_size() -> None:
    prof = plan_for("metal-amd64.raw.xz", Customization(bootloader="grub", sector_size=4096)).profile
    assert prof.output.image_options is not None
    assert prof.output.image_options.bootloader is Bootloader.GRUB
    assert prof.output.image_options.disk_sector_size == 4096


def test_embedded_config_needs_1_12() -> None:
    custom = Customization(embedded_machine_configuration="version: v1alpha1\n")
    with pytest.raises(
        InvalidInputError,
        match=re.escape("embedding configuration is not supported for Talos version v1.11.3"),
    ):
        plan_for("metal-amd64.iso", custom, version="v1.11.3")
    plan = plan_for("metal-amd64.iso", custom)
    assert plan.embedded_config == "version: v1alpha1\n"
    assert plan.profile.customization.embedded_machine_configuration == "version: v1alpha1\n"
    # not for outputs without an initramfs
    assert plan_for("cmdline-metal-amd64", custom, version="v1.11.3").embedded_config == ""


def test_secureboot_disabled_is_a_400() -> None:
    with pytest.raises(InvalidInputError, match=r"^secure boot is disabled$"):
        plan_for("metal-amd64-secureboot.iso", Customization())


def test_secureboot_assets_and_enroll_keys() -> None:
    schematic = Schematic(
        customization=Customization(
            secureboot=SecureBoot(enroll_keys="Force", include_well_known_certificates=True)
        )
    )
    assets = SecureBootAssets()
    assets.secure_boot_signer.key_path = "/keys/uki.pem"
    plan = enhance(
        parse_path("metal-amd64-secureboot.iso"),
        schematic,
        schematic_id=schematic_id(schematic),
        schematic_yaml=marshal(schematic),
        version="v1.12.4",
        catalogs=FakeCatalogs(),
        secureboot=assets,
    )
    sb = plan.profile.input.secure_boot
    assert (
        sb is not None and sb.include_well_known_certs and sb.secure_boot_signer.key_path == "/keys/uki.pem"
    )
    assert not assets.include_well_known_certs  # the configured assets are copied, not changed
    assert plan.profile.output.iso_options is not None
    assert plan.profile.output.iso_options.sd_boot_enroll_keys is SDBootEnrollKeys.FORCE


def test_overlay_gates() -> None:
    overlay = Overlay(name="rpi_generic", image="siderolabs/sbc-raspberrypi")
    with pytest.raises(
        InvalidInputError, match=re.escape("overlay is not supported for Talos version v1.6.7")
    ):
        plan_for("metal-arm64.raw.xz", Customization(), version="v1.6.7", overlay=overlay)
    with pytest.raises(
        InvalidInputError,
        match=re.escape('official overlay "nope" is not available for Talos version v1.12.4'),
    ):
        plan_for("metal-arm64.raw.xz", Customization(), overlay=Overlay(name="nope"))
    plan = plan_for("metal-arm64.raw.xz", Customization(), overlay=overlay)
    assert plan.overlay is not None and plan.overlay.digest == DIGEST_A


def test_overlay_is_pinned_by_digest_with_its_options() -> None:
    """The catalog entry is found by name (the schematic's image is ignored, as upstream); the
    profile carries upstream's layout names and the schematic's options; kernel/cmdline skip it."""
    overlay = Overlay(name="rpi_generic", image="ignored/elsewhere", options={"configTxtAppend": "x=1"})
    plan = plan_for("metal-arm64.raw.xz", Customization(extra_kernel_args=["a=1"]), overlay=overlay)
    prof = plan.profile
    assert prof.overlay is not None
    assert prof.overlay.name == "rpi_generic"
    assert prof.overlay.image.oci_path == f"amd64-{DIGEST_A}"
    assert prof.overlay.options == {"configTxtAppend": "x=1"}
    assert prof.input.overlay_installer.oci_path == f"arm64-{DIGEST_A}"
    other = plan_for(
        "metal-arm64.raw.xz",
        Customization(extra_kernel_args=["a=1"]),
        overlay=Overlay(name="rpi_generic", options={"configTxtAppend": "x=2"}),
    )
    assert other.key != plan.key  # options are part of the cache key
    for path in ("kernel-arm64", "cmdline-metal-arm64"):
        assert plan_for(path, Customization(), overlay=overlay).profile.overlay is None


def test_installer_is_pinned_to_the_base_installer_platform_manifest() -> None:
    plan = plan_for("installer-arm64.tar", FULL)
    base = plan.profile.input.base_installer
    # upstream HEAD: imageRef is the digest reference of the arch's manifest, ociPath <arch>-installer-<tag>
    assert base.image_ref == f"ghcr.io/siderolabs/installer-base@{DIGEST_B}"
    assert base.oci_path == "arm64-installer-v1.12.4"
    assert plan.installer_base == ImageDependency(
        "siderolabs/installer-base", DIGEST_A, DIGEST_B, f"ghcr.io/siderolabs/installer-base@{DIGEST_B}"
    )
    # installers carry extensions and (from 1.10) the extra args, never META
    assert len(plan.profile.input.system_extensions) == 3
    assert plan.profile.customization.extra_kernel_args == ["console=ttyS1", "-selinux"]
    assert plan.profile.customization.meta_contents == []
    old = plan_for("installer-amd64.tar", FULL, version="v1.9.5")
    assert old.profile.input.base_installer.image_ref == f"ghcr.io/siderolabs/installer@{DIGEST_C}"
    assert old.profile.customization.extra_kernel_args == []


def test_installer_key_follows_the_pinned_base() -> None:
    amd = plan_for("installer-amd64.tar", Customization())
    arm = plan_for("installer-arm64.tar", Customization())
    assert amd.key != arm.key
    assert ("installer-base@" + DIGEST_C).encode() in profile_yaml(amd.profile)


def test_key_depends_on_what_is_built_not_on_the_request_shape() -> None:
    a = plan_for("metal-amd64.iso", FULL)
    b = plan_for("metal-amd64.iso", FULL)
    assert a.key == b.key
    assert a.key != plan_for("metal-amd64.iso", FULL, version="v1.12.5").key
    assert a.key != plan_for("metal-amd64.iso", Customization(official_extensions=("siderolabs/gvisor",))).key
    # x86_64 is an alias of amd64: same asset, same key
    assert plan_for("metal-x86_64.iso", FULL).key == a.key
