"""Imager defaults, validation and output names.

``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile/output.go`` (``FillDefaults``) and ``profile.go``
(``Validate``, ``OutputPath``), as ported in ``common/profile/fill.py``.
"""

from __future__ import annotations

import copy

import pytest

from common.profile import (
    Bootloader,
    Customization,
    DiskFormat,
    ImageOptions,
    ISOOptions,
    MetaValue,
    OutFormat,
    Output,
    OutputKind,
    Profile,
    ProfileInvalidError,
    fill_defaults,
    final_output_name,
    output_name,
    parse_path,
    validate,
)
from common.profile.defaults import DEFAULT_PROFILE_NAMES, default_profile
from common.profile.fill import select_bootloader

MIB = 1024 * 1024


def image_profile(
    size_mib: int, arch: str, version: str, sb: bool = False, bl: Bootloader = Bootloader.NONE
) -> Profile:
    opts = ImageOptions(disk_size=size_mib * MIB, disk_format=DiskFormat.RAW, bootloader=bl)
    return Profile(
        arch=arch,
        platform="metal",
        secureboot=sb,
        version=version,
        output=Output(kind=OutputKind.IMAGE, image_options=opts, out_format=OutFormat.RAW),
    )


def filled_image(prof: Profile) -> ImageOptions:
    opts = fill_defaults(prof, exists=lambda _: False).output.image_options
    assert opts is not None
    return opts


# The §2.4 result table: (base MiB, version, arch, secureboot) → (MiB, bootloader).
SIZES = [
    (base, version, arch, sb, result, bootloader)
    for base, row in [
        (1246, (1246, 2247, 1246, 4247, 2246)),
        (8192, (8192, 9193, 8192, 11193, 9192)),
        (10240, (10240, 11241, 10240, 13241, 11240)),
    ]
    for version, arch, sb, result, bootloader in [
        ("v1.9.0", "amd64", False, row[0], Bootloader.GRUB),
        ("v1.9.0", "arm64", False, row[0], Bootloader.GRUB),
        ("v1.10.0", "amd64", False, row[1], Bootloader.DUAL_BOOT),
        ("v1.10.0", "arm64", False, row[2], Bootloader.SD_BOOT),
        ("v1.10.3", "amd64", True, row[2], Bootloader.SD_BOOT),
        ("v1.11.0-alpha.1", "amd64", False, row[3], Bootloader.DUAL_BOOT),
        ("v1.13.0", "amd64", False, row[3], Bootloader.DUAL_BOOT),
        ("v1.11.0", "arm64", False, row[4], Bootloader.SD_BOOT),
        ("v1.12.0", "amd64", True, row[4], Bootloader.SD_BOOT),
    ]
]


@pytest.mark.parametrize(("base", "version", "arch", "sb", "size", "bootloader"), SIZES)
def test_disk_size_growth(
    base: int, version: str, arch: str, sb: bool, size: int, bootloader: Bootloader
) -> None:
    opts = filled_image(image_profile(base, arch, version, sb))
    assert (opts.disk_size // MIB, opts.disk_size % MIB, opts.bootloader) == (size, 0, bootloader)


@pytest.mark.parametrize(
    ("version", "bl", "size"),
    [
        ("v1.11.0", Bootloader.GRUB, 9192),
        ("v1.9.0", Bootloader.DUAL_BOOT, 8192 + 1001),
        ("v1.12.0", Bootloader.SD_BOOT, 9192),
    ],
)
def test_explicit_bootloader_is_kept(version: str, bl: Bootloader, size: int) -> None:
    opts = filled_image(image_profile(8192, "amd64", version, bl=bl))
    assert (opts.bootloader, opts.disk_size) == (bl, size * MIB)


BOOTLOADERS = [
    # current, arch, version, secureboot → result
    (Bootloader.NONE, "amd64", "1.9.0", False, Bootloader.GRUB),
    (Bootloader.NONE, "arm64", "1.9.0", False, Bootloader.GRUB),
    (Bootloader.NONE, "amd64", "1.9.0", True, Bootloader.SD_BOOT),  # secureboot: any version
    (Bootloader.NONE, "amd64", "1.10.0", False, Bootloader.DUAL_BOOT),
    (Bootloader.NONE, "arm64", "1.10.0", False, Bootloader.SD_BOOT),
    (Bootloader.GRUB, "amd64", "1.12.0", True, Bootloader.SD_BOOT),  # secureboot overrides a choice
    (Bootloader.GRUB, "arm64", "1.12.0", False, Bootloader.GRUB),
    (Bootloader.DUAL_BOOT, "amd64", "1.8.0", False, Bootloader.DUAL_BOOT),
    (Bootloader.NONE, "amd64", "garbage", False, Bootloader.GRUB),  # unknown version: no sd-boot for UEFI
    (Bootloader.NONE, "arm64", "garbage", False, Bootloader.GRUB),
]


@pytest.mark.parametrize(("current", "arch", "version", "sb", "expected"), BOOTLOADERS)
def test_select_bootloader(
    current: Bootloader, arch: str, version: str, sb: bool, expected: Bootloader
) -> None:
    assert select_bootloader(current, arch, version, sb) is expected


def test_image_without_options_gets_some() -> None:
    prof = Profile(arch="amd64", platform="metal", version="1.12.0", output=Output(kind=OutputKind.IMAGE))
    opts = filled_image(prof)
    assert (opts.disk_size, opts.bootloader) == (2001 * MIB + 1000 * MIB, Bootloader.DUAL_BOOT)


@pytest.mark.parametrize(
    ("version", "arch", "sb", "expected"),
    [
        ("v1.11.0", "amd64", False, None),
        ("v1.12.0", "amd64", False, ISOOptions(bootloader=Bootloader.DUAL_BOOT)),
        ("v1.12.0", "arm64", False, ISOOptions(bootloader=Bootloader.SD_BOOT)),
        ("v1.13.0", "amd64", True, ISOOptions(bootloader=Bootloader.SD_BOOT)),
    ],
)
def test_iso_bootloader_only_from_1_12(
    version: str, arch: str, sb: bool, expected: ISOOptions | None
) -> None:
    prof = parse_path(f"metal-{arch}{'-secureboot' if sb else ''}.iso")
    prof.version = version
    assert fill_defaults(prof, exists=lambda _: False).output.iso_options == expected


def test_iso_explicit_bootloader_kept() -> None:
    prof = parse_path("metal-amd64.iso")
    prof.version = "v1.12.0"
    prof.output.iso_options = ISOOptions(bootloader=Bootloader.GRUB)
    assert fill_defaults(prof).output.iso_options == ISOOptions(bootloader=Bootloader.GRUB)


def test_fill_defaults_returns_a_copy() -> None:
    prof = parse_path("metal-amd64.raw.xz")
    prof.version = "v1.12.0"
    before = copy.deepcopy(prof)
    filled = fill_defaults(prof)
    assert prof == before
    assert filled != prof


@pytest.mark.parametrize(
    ("version", "ref"),
    [
        ("v1.9.5", "ghcr.io/siderolabs/installer:v1.9.5"),
        ("v1.10.0-alpha.1", "ghcr.io/siderolabs/installer-base:v1.10.0-alpha.1"),
        ("garbage", "ghcr.io/siderolabs/installer-base:garbage"),
    ],
)
def test_input_defaults(version: str, ref: str) -> None:
    prof = parse_path("installer-arm64.tar")
    prof.version = version
    inp = fill_defaults(prof).input
    assert inp.kernel.path == "/usr/install/arm64/vmlinuz"
    assert inp.initramfs.path == "/usr/install/arm64/initramfs.xz"
    assert inp.sd_stub.path == "/usr/install/arm64/systemd-stub.efi"
    assert inp.sd_boot.path == "/usr/install/arm64/systemd-boot.efi"
    assert inp.base_installer.image_ref == ref
    assert inp.secure_boot is None


def test_input_defaults_keep_given_values_and_fill_secureboot() -> None:
    prof = parse_path("metal-amd64-secureboot-uki.efi")
    prof.version = "v1.12.0"
    prof.input.kernel.path = "/tmp/vmlinuz"
    prof.input.base_installer.oci_path = "/tmp/layout"
    seen: list[str] = []

    def exists(path: str) -> bool:
        seen.append(path)
        return path.endswith(("PK.auth", "db.auth"))

    inp = fill_defaults(prof, secureboot_prefix="/keys", exists=exists).input
    assert inp.kernel.path == "/tmp/vmlinuz"
    assert (inp.base_installer.image_ref, inp.base_installer.oci_path) == ("", "/tmp/layout")
    assert inp.secure_boot is not None
    sb = inp.secure_boot
    assert (sb.secure_boot_signer.key_path, sb.secure_boot_signer.cert_path) == (
        "/keys/uki-signing-key.pem",
        "/keys/uki-signing-cert.pem",
    )
    assert sb.pcr_signer.key_path == "/keys/pcr-signing-key.pem"
    assert (sb.platform_key_path, sb.key_exchange_key_path, sb.signature_key_path) == (
        "/keys/PK.auth",
        "",
        "/keys/db.auth",
    )
    assert seen == ["/keys/PK.auth", "/keys/KEK.auth", "/keys/db.auth"]


def test_secureboot_signer_given_is_not_touched() -> None:
    prof = parse_path("metal-amd64-secureboot.iso")
    prof.version = "v1.12.0"
    prof = fill_defaults(prof, exists=lambda _: False)
    assert prof.input.secure_boot is not None
    prof.input.secure_boot.pcr_signer.key_path = ""
    prof.input.secure_boot.pcr_signer.azure_vault_url = "https://vault"
    prof.input.secure_boot.pcr_signer.azure_key_id = "k"
    again = fill_defaults(prof, exists=lambda _: False)
    assert again.input.secure_boot is not None
    assert again.input.secure_boot.pcr_signer.key_path == ""


@pytest.mark.parametrize("name", DEFAULT_PROFILE_NAMES)
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize("version", ["1.9.0", "1.11.0", "1.14.0"])
def test_default_profiles_validate_after_filling(name: str, arch: str, version: str) -> None:
    prof = default_profile(name)
    assert prof is not None
    prof.arch, prof.version = arch, version
    validate(fill_defaults(prof, exists=lambda _: False))


def valid(path: str, version: str = "v1.12.0", **changes: object) -> Profile:
    prof = fill_defaults(parse_path(path), exists=lambda _: False)
    prof.version = version
    for key, value in changes.items():
        setattr(prof, key, value)
    return prof


def with_output(prof: Profile, **changes: object) -> Profile:
    for key, value in changes.items():
        setattr(prof.output, key, value)
    return prof


ARGS = Customization(extra_kernel_args=["console=ttyS0"])
META = Customization(meta_contents=[MetaValue(0xA, "x")])

INVALID = [
    (valid("metal-amd64.iso", arch="arm"), 'profile is invalid: invalid arch "arm"'),
    (valid("metal-amd64.iso", arch=""), 'profile is invalid: invalid arch ""'),
    (valid("metal-amd64.iso", platform=""), "profile is invalid: platform is required"),
    (
        valid("metal-amd64-secureboot.iso", version="v1.4.0"),
        'profile is invalid: secureboot is not supported for Talos version "v1.4.0"',
    ),
    (
        valid("metal-amd64-secureboot.raw", version="1.4.99"),
        'profile is invalid: secureboot is not supported for Talos version "1.4.99"',
    ),
    (
        with_output(valid("metal-amd64.iso"), kind=OutputKind.UNKNOWN),
        "profile is invalid: unknown output kind",
    ),
    (
        with_output(valid("metal-amd64.iso"), iso_options=ISOOptions()),
        "profile is invalid: bootloader cannot be 'none' for ISO output",
    ),
    (
        with_output(valid("metal-amd64.raw"), image_options=None),
        "profile is invalid: image options are required for image output",
    ),
    (
        with_output(valid("metal-amd64.raw"), image_options=ImageOptions(bootloader=Bootloader.GRUB)),
        "profile is invalid: disk size is required for image output",
    ),
    (
        with_output(valid("metal-amd64.raw"), image_options=ImageOptions(disk_size=1)),
        "profile is invalid: bootloader cannot be 'none' for disk image output",
    ),
    (
        valid("installer-amd64.tar", customization=META),
        "profile is invalid: customization of meta partition is not supported for installer output",
    ),
    (
        valid("kernel-amd64", secureboot=True),
        "profile is invalid: secureboot is not supported for kernel output",
    ),
    (
        valid("initramfs-amd64.xz", customization=ARGS),
        "profile is invalid: customization of kernel args is not supported for initramfs output",
    ),
    (
        valid("kernel-amd64", customization=META),
        "profile is invalid: customization of meta partition is not supported for kernel output",
    ),
    (valid("metal-amd64-uki.efi", version="v1.4.1"), "UKI output is not supported in this Talos version"),
]


@pytest.mark.parametrize(("prof", "message"), INVALID, ids=[m for _, m in INVALID])
def test_validate_errors(prof: Profile, message: str) -> None:
    with pytest.raises(ProfileInvalidError) as info:
        validate(prof)
    assert str(info.value) == message
    assert info.value.status == 500


@pytest.mark.parametrize(
    "prof",
    [
        valid("metal-amd64.iso", version="v1.11.0"),  # iso bootloader not checked before 1.12
        with_output(valid("metal-amd64.iso", version="v1.11.0"), iso_options=ISOOptions()),
        valid("metal-amd64-uki.efi", customization=META),
        valid("metal-amd64.raw", customization=META),
        valid("cmdline-metal-amd64-secureboot", customization=ARGS),
        valid("installer-amd64-secureboot.tar", customization=ARGS),
        valid("metal-amd64-secureboot.iso", version="garbage"),  # unknown version = latest
        valid("metal-amd64-secureboot.raw", version="1.5.0-alpha.0"),  # pre-release counts as the release
    ],
)
def test_validate_accepts(prof: Profile) -> None:
    validate(prof)


NAMES = [
    ("metal-amd64.raw.zst", "metal-amd64.raw", "metal-amd64.raw.zst"),
    ("aws-arm64-secureboot.qcow2", "aws-arm64-secureboot.qcow2", "aws-arm64-secureboot.qcow2"),
    ("gcp-amd64.raw.tar.gz", "gcp-amd64.raw", "gcp-amd64.raw.tar.gz"),
    ("azure-amd64.vhd.xz", "azure-amd64.vhd", "azure-amd64.vhd.xz"),
    ("vmware-amd64.ova.gz", "vmware-amd64.ova", "vmware-amd64.ova.gz"),
    ("metal-amd64-secureboot.iso", "metal-amd64-secureboot.iso", "metal-amd64-secureboot.iso"),
    ("digital-ocean-arm64-uki.efi", "digital-ocean-arm64-uki.efi", "digital-ocean-arm64-uki.efi"),
    (
        "aws-installer-amd64-secureboot.tar",
        "installer-amd64-secureboot.tar",
        "installer-amd64-secureboot.tar",
    ),
    ("kernel-x86_64", "kernel-amd64", "kernel-amd64"),
    ("initramfs-arm64.xz", "initramfs-metal-arm64.xz", "initramfs-metal-arm64.xz"),
    ("cmdline-aws-amd64-secureboot", "cmdline-aws-amd64-secureboot", "cmdline-aws-amd64-secureboot"),
]


@pytest.mark.parametrize(("path", "name", "final"), NAMES)
def test_output_names(path: str, name: str, final: str) -> None:
    prof = parse_path(path)
    assert (output_name(prof), final_output_name(prof)) == (name, final)


def test_output_name_refuses_what_upstream_panics_on() -> None:
    with pytest.raises(ValueError):
        output_name(Profile(arch="amd64", platform="metal"))
    with pytest.raises(ValueError):
        output_name(Profile(arch="amd64", platform="metal", output=Output(kind=OutputKind.IMAGE)))
