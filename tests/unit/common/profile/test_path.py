"""Asset path → profile (``siderolabs/image-factory:internal/profile/profile.go`` ``ParseFromPath``,
``InstallerProfile``; its ``profile_test.go`` ported)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from common.errors import InvalidInputError
from common.profile import (
    DiskFormat,
    ImageOptions,
    OutFormat,
    Output,
    OutputKind,
    Profile,
    go_quote,
    installer_profile,
    parse_path,
)

MIB = 1024 * 1024
MIN = 1246 * MIB
DEF = 8192 * MIB


def simple(kind: OutputKind, platform: str, arch: str, secureboot: bool | None = None) -> Profile:
    return Profile(
        platform=platform,
        arch=arch,
        secureboot=secureboot,
        output=Output(kind=kind, out_format=OutFormat.RAW),
    )


def image(
    platform: str,
    arch: str,
    out: OutFormat,
    disk: DiskFormat,
    size: int,
    options: str = "",
    secureboot: bool | None = None,
) -> Profile:
    opts = ImageOptions(disk_size=size, disk_format=disk, disk_format_options=options)
    return Profile(
        platform=platform,
        arch=arch,
        secureboot=secureboot,
        output=Output(kind=OutputKind.IMAGE, image_options=opts, out_format=out),
    )


def error_of(path: str) -> str:
    with pytest.raises(InvalidInputError) as info:
        parse_path(path)
    assert info.value.status == 400
    return str(info.value)


# Every successful case of upstream's TestParseFromPath, in its order.
UPSTREAM = [
    ("kernel-amd64", simple(OutputKind.KERNEL, "metal", "amd64")),
    ("kernel-arm64", simple(OutputKind.KERNEL, "metal", "arm64")),
    ("cmdline-metal-arm64", simple(OutputKind.CMDLINE, "metal", "arm64")),
    ("cmdline-aws-amd64-secureboot", simple(OutputKind.CMDLINE, "aws", "amd64", True)),
    ("initramfs-amd64.xz", simple(OutputKind.INITRAMFS, "metal", "amd64")),
    ("metal-arm64-secureboot.iso", simple(OutputKind.ISO, "metal", "arm64", True)),
    ("metal-amd64-secureboot-uki.efi", simple(OutputKind.UKI, "metal", "amd64", True)),
    ("metal-amd64-uki.efi", simple(OutputKind.UKI, "metal", "amd64")),
    ("installer-amd64.tar", simple(OutputKind.INSTALLER, "metal", "amd64")),
    ("metal-installer-amd64.tar", simple(OutputKind.INSTALLER, "metal", "amd64")),
    ("digital-ocean-installer-amd64.tar", simple(OutputKind.INSTALLER, "digital-ocean", "amd64")),
    ("metal-arm64.raw.xz", image("metal", "arm64", OutFormat.XZ, DiskFormat.RAW, MIN)),
    ("metal-arm64.raw.zst", image("metal", "arm64", OutFormat.ZSTD, DiskFormat.RAW, MIN)),
    (
        "aws-amd64-secureboot.qcow2.tar.gz",
        image("aws", "amd64", OutFormat.TAR, DiskFormat.QCOW2, DEF, "cluster_size=8k", True),
    ),
    (
        "azure-amd64.vhd",
        image("azure", "amd64", OutFormat.RAW, DiskFormat.VPC, DEF, "subformat=fixed,force_size"),
    ),
    ("digital-ocean-amd64.raw.gz", image("digital-ocean", "amd64", OutFormat.GZ, DiskFormat.RAW, DEF)),
]


@pytest.mark.parametrize(("path", "expected"), UPSTREAM, ids=[p for p, _ in UPSTREAM])
def test_upstream_cases(path: str, expected: Profile) -> None:
    assert parse_path(path) == expected


# One row per line of the §3.1 grammar table (plus the secureboot variants it allows).
GRAMMAR = [
    ("kernel-x86_64", simple(OutputKind.KERNEL, "metal", "amd64")),
    ("cmdline-metal-amd64", simple(OutputKind.CMDLINE, "metal", "amd64")),
    ("cmdline-digital-ocean-arm64-secureboot", simple(OutputKind.CMDLINE, "digital-ocean", "arm64", True)),
    ("initramfs-arm64.xz", simple(OutputKind.INITRAMFS, "metal", "arm64")),
    ("metal-amd64.iso", simple(OutputKind.ISO, "metal", "amd64")),
    ("foo-amd64.iso", simple(OutputKind.ISO, "foo", "amd64")),  # platforms are not validated
    ("aws-arm64-uki.efi", simple(OutputKind.UKI, "aws", "arm64")),
    ("installer-arm64-secureboot.tar", simple(OutputKind.INSTALLER, "metal", "arm64", True)),
    ("aws-installer-arm64-secureboot.tar", simple(OutputKind.INSTALLER, "aws", "arm64", True)),
    ("nocloud-amd64.raw", image("nocloud", "amd64", OutFormat.RAW, DiskFormat.RAW, MIN)),
    ("gcp-amd64.raw.tar.gz", image("gcp", "amd64", OutFormat.TAR, DiskFormat.RAW, DEF)),
    ("vmware-arm64.ova", image("vmware", "arm64", OutFormat.RAW, DiskFormat.OVA, DEF)),
    ("metal-amd64.qcow2", image("metal", "amd64", OutFormat.RAW, DiskFormat.QCOW2, MIN, "cluster_size=8k")),
    ("nocloud-amd64.vhd.xz", image("nocloud", "amd64", OutFormat.XZ, DiskFormat.VPC, MIN)),
    ("equinixMetal-amd64.raw.xz", image("equinixMetal", "amd64", OutFormat.XZ, DiskFormat.RAW, DEF)),
    (
        "metal-amd64-secureboot.raw.zst",
        image("metal", "amd64", OutFormat.ZSTD, DiskFormat.RAW, MIN, "", True),
    ),
]


@pytest.mark.parametrize(("path", "expected"), GRAMMAR, ids=[p for p, _ in GRAMMAR])
def test_grammar_rows(path: str, expected: Profile) -> None:
    assert parse_path(path) == expected


# (platform, size, options for a .raw, options for a .qcow2) per the platform default table.
PLATFORM_DEFAULTS = [
    ("metal", MIN, "", "cluster_size=8k"),
    ("hcloud", MIN, "", "cluster_size=8k"),
    ("nocloud", MIN, "", "cluster_size=8k"),
    ("opennebula", MIN, "", "cluster_size=8k"),
    ("openstack", MIN, "", "cluster_size=8k"),
    ("scaleway", MIN, "", "cluster_size=8k"),
    ("akamai", MIN, "", "cluster_size=8k"),
    ("alibabacloud", MIN, "cluster_size=8k", "cluster_size=8k"),
    ("aws", DEF, "", "cluster_size=8k"),
    ("cloudstack", DEF, "", "cluster_size=8k"),
    ("digital-ocean", DEF, "", "cluster_size=8k"),
    ("gcp", DEF, "", "cluster_size=8k"),
    ("upcloud", DEF, "", "cluster_size=8k"),
    ("vultr", DEF, "", "cluster_size=8k"),
    ("vmware", DEF, "", "cluster_size=8k"),
    ("azure", DEF, "subformat=fixed,force_size", "subformat=fixed,force_size"),
    ("exoscale", 10240 * MIB, "cluster_size=8k", "cluster_size=8k"),
    ("oracle", DEF, "cluster_size=8k", "cluster_size=8k"),
    ("equinixMetal", DEF, "", "cluster_size=8k"),
    ("foo", DEF, "", "cluster_size=8k"),
    # built-in profiles without image options: upstream would panic; we keep the path's defaults
    ("iso", DEF, "", "cluster_size=8k"),
    ("installer", DEF, "", "cluster_size=8k"),
]


@pytest.mark.parametrize(("platform", "size", "raw_opts", "qcow_opts"), PLATFORM_DEFAULTS)
def test_platform_disk_defaults(platform: str, size: int, raw_opts: str, qcow_opts: str) -> None:
    raw = parse_path(f"{platform}-amd64.raw").output.image_options
    qcow = parse_path(f"{platform}-arm64-secureboot.qcow2.xz").output.image_options
    assert raw is not None and qcow is not None
    assert (raw.disk_size, raw.disk_format_options) == (size, raw_opts)
    assert (qcow.disk_size, qcow.disk_format_options) == (size, qcow_opts)


@pytest.mark.parametrize(
    ("suffix", "out_format"),
    [
        ("", OutFormat.RAW),
        (".tar.gz", OutFormat.TAR),
        (".gz", OutFormat.GZ),
        (".xz", OutFormat.XZ),
        (".zst", OutFormat.ZSTD),
    ],
)
@pytest.mark.parametrize("disk", [DiskFormat.RAW, DiskFormat.QCOW2, DiskFormat.VPC, DiskFormat.OVA])
def test_compression_and_disk_matrix(suffix: str, out_format: OutFormat, disk: DiskFormat) -> None:
    prof = parse_path(f"aws-amd64.{disk.value}{suffix}")
    assert prof.output.out_format is out_format
    assert prof.output.image_options is not None
    assert prof.output.image_options.disk_format is disk


@pytest.mark.parametrize("alias", ["x86_64", "i386", "amd64"])
@pytest.mark.parametrize(
    "template",
    [
        "kernel-{a}",
        "cmdline-metal-{a}",
        "initramfs-{a}.xz",
        "metal-{a}.iso",
        "metal-{a}-secureboot-uki.efi",
        "installer-{a}.tar",
        "metal-installer-{a}.tar",
        "metal-{a}.raw.xz",
    ],
)
def test_arch_aliases_everywhere(template: str, alias: str) -> None:
    assert parse_path(template.format(a=alias)).arch == "amd64"


ERRORS = [
    # from upstream's test
    ("kernel-foo", 'invalid architecture: "foo"'),
    ("metal-rpi_generic-arm64.raw.xz", 'invalid architecture: "rpi_generic-arm64"'),
    # kernel takes no platform and no -secureboot
    ("kernel-", 'invalid architecture: ""'),
    ("kernel-amd64-secureboot", 'invalid architecture: "amd64-secureboot"'),
    ("kernel-aarch64", 'invalid architecture: "aarch64"'),
    ("kernel-armv7", 'invalid architecture: "armv7"'),
    ("kernel-AMD64", 'invalid architecture: "AMD64"'),
    ("cmdline-metal", 'invalid platform-arch: "metal"'),
    ("cmdline-", 'invalid platform-arch: ""'),
    ("cmdline-metal-secureboot", 'invalid platform-arch: "metal"'),
    ("cmdline-metal-amd64-secureboot-secureboot", 'invalid architecture: "amd64-secureboot"'),
    ("initramfs-metal-amd64.xz", 'invalid architecture: "metal-amd64"'),
    ("initramfs-foo.xz", 'invalid architecture: "foo"'),
    ("metal.iso", 'invalid platform-arch: "metal"'),
    ("metal-amd64-uki", 'invalid profile path: "metal-amd64-uki"'),
    ("installer-foo.tar", 'invalid architecture: "foo"'),
    ("installer-amd64-secureboot-secureboot.tar", 'invalid architecture: "amd64-secureboot"'),
    ("digital-ocean-installer-foo.tar", 'invalid architecture: "foo"'),
    ("a-b-installer-amd64.tar", 'invalid architecture: "b-amd64"'),
    ("metal-installer.tar", 'invalid profile path: "metal-installer.tar"'),
    ("cmdline-metal-amd64.iso", 'invalid architecture: "amd64.iso"'),  # cmdline- prefix wins over .iso
    ("metal-amd64", 'invalid profile path: "metal-amd64"'),
    ("metal-amd64.img", 'invalid profile path: "metal-amd64.img"'),
    ("metal-amd64.tar.gz", 'invalid profile path: "metal-amd64"'),
    ("metal-amd64.raw.bz2", 'invalid profile path: "metal-amd64.raw.bz2"'),
    ("metal-amd64.xz.raw.xz", 'invalid architecture: "amd64.xz"'),
    ("metal-amd64.raw.xz.gz", 'invalid profile path: "metal-amd64.raw.xz"'),
    ("metal-amd64.qcow2.raw", 'invalid architecture: "amd64.qcow2"'),
    ("metal.raw", 'invalid platform-arch: "metal"'),
    ("metal-secureboot.raw", 'invalid platform-arch: "metal"'),
    ("", 'invalid profile path: ""'),
    (".raw", 'invalid platform-arch: ""'),
    ("kernel", 'invalid profile path: "kernel"'),
    ("initramfs-amd64", 'invalid profile path: "initramfs-amd64"'),
    ("metal-amd64.ISO", 'invalid profile path: "metal-amd64.ISO"'),
    ("../metal-amd64", 'invalid profile path: "../metal-amd64"'),
]


@pytest.mark.parametrize(("path", "message"), ERRORS, ids=[e[0] or "<empty>" for e in ERRORS])
def test_error_texts(path: str, message: str) -> None:
    assert error_of(path) == message


def test_digital_without_ocean_is_platform_digital() -> None:
    assert parse_path("digital-amd64.raw").platform == "digital"
    assert parse_path("digital-ocean-amd64.raw").platform == "digital-ocean"
    assert error_of("digital-ocean.raw") == 'invalid architecture: "ocean"'


def test_oddities_upstream_accepts() -> None:
    # empty platform, and prefixes that only match their own rule when the suffix also matches
    assert parse_path("-amd64.iso") == simple(OutputKind.ISO, "", "amd64")
    assert parse_path("initramfs-amd64.raw").platform == "initramfs"
    assert parse_path("initramfs-amd64.iso").output.kind is OutputKind.ISO
    assert parse_path("installer-amd64.raw").platform == "installer"
    assert parse_path("kernel-x86_64").output.kind is OutputKind.KERNEL
    # secureboot suffix stripped only once, before the dash split
    assert parse_path("metal-amd64-secureboot.iso").secureboot is True
    assert parse_path("metal-amd64.iso").secureboot is None


def test_secureboot_before_uki_suffix_only() -> None:
    assert (
        error_of("metal-amd64-uki-secureboot.efi") == 'invalid profile path: "metal-amd64-uki-secureboot.efi"'
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("kernel-ämd64", 'invalid architecture: "ämd64"'),
        ("kernel-\u00a0", 'invalid architecture: "\\u00a0"'),
        ("kernel-a\nb", 'invalid architecture: "a\\nb"'),
        ("kernel-\x00", 'invalid architecture: "\\x00"'),
        ('kernel-"\\', 'invalid architecture: "\\"\\\\"'),
        ("metal-amd64.\u202eraw", 'invalid profile path: "metal-amd64.\\u202eraw"'),
        ("métal-☃.iso", 'invalid architecture: "☃"'),
        ("\U0001f600-amd64.raw", None),
    ],
)
def test_unicode_and_control_characters(path: str, message: str | None) -> None:
    if message is None:
        assert parse_path(path).platform == "\U0001f600"
    else:
        assert error_of(path) == message


def test_very_long_paths_are_linear() -> None:
    long = "a" * 200_000
    start = time.perf_counter()
    assert error_of(long) == f'invalid profile path: "{long}"'
    assert error_of(f"kernel-{long}") == f'invalid architecture: "{long}"'
    assert error_of("x-" * 50_000 + "amd64.raw") == 'invalid architecture: "' + "x-" * 49_999 + 'amd64"'
    assert parse_path(long + "-amd64.raw.xz").platform == long
    assert time.perf_counter() - start < 1.0


def test_results_are_independent() -> None:
    first = parse_path("metal-amd64.raw")
    assert first.output.image_options is not None
    first.output.image_options.disk_size = 1
    again = parse_path("metal-amd64.raw")
    assert again.output.image_options == ImageOptions(disk_size=MIN, disk_format=DiskFormat.RAW)
    assert replace(again, arch="arm64") != again


GO_QUOTE = [
    ("", '""'),
    ("abc", '"abc"'),
    ('a"b', '"a\\"b"'),
    ("a\\b", '"a\\\\b"'),
    ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
    ("\x00\x01\x1f\x7f", '"\\x00\\x01\\x1f\\x7f"'),
    ("\x80\x9f", '"\\u0080\\u009f"'),
    ("\u00a0\u2028\u200b\ufeff", '"\\u00a0\\u2028\\u200b\\ufeff"'),
    ("é☃日本", '"é☃日本"'),
    ("\U0001f600", '"\U0001f600"'),
    ("\U000e0001", '"\\U000e0001"'),
    ("\udcff", '"\\xff"'),  # surrogateescape'd invalid byte
    ("\ud800", '"\\ufffd"'),
    (" ~", '" ~"'),
    ("'", '"\'"'),
]


@pytest.mark.parametrize(("text", "quoted"), GO_QUOTE)
def test_go_quote_matches_strconv_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


INSTALLERS = [
    ("installer", "amd64", "metal", None),
    ("installer-secureboot", "arm64", "metal", True),
    ("metal-installer", "amd64", "metal", None),
    ("metal-installer-secureboot", "amd64", "metal", True),
    ("aws-installer", "arm64", "aws", None),
    ("digital-ocean-installer-secureboot", "amd64", "digital-ocean", True),
    ("-installer", "amd64", "metal", None),  # empty platform falls back to metal, as upstream
]


@pytest.mark.parametrize(("name", "arch", "platform", "secureboot"), INSTALLERS)
def test_installer_profile(name: str, arch: str, platform: str, secureboot: bool | None) -> None:
    assert installer_profile(name, arch) == simple(OutputKind.INSTALLER, platform, arch, secureboot)


@pytest.mark.parametrize("name", ["talos", "installer-foo", "metal-installer-", "imager", ""])
def test_installer_profile_rejects_other_images(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        installer_profile(name, "amd64")
    assert str(info.value) == f"invalid image: {name}"


def test_installer_profile_rejects_unknown_arch() -> None:
    with pytest.raises(ValueError):
        installer_profile("installer", "x86_64")
