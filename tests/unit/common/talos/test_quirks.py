"""Version quirks.

``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/imager/quirks`` (``quirks.go``, ``partitions.go``,
``quirks_test.go``), plus the gates ``siderolabs/image-factory:internal/profile/profile.go``
(``EnhanceFromSchematic``) applies.
"""

from __future__ import annotations

import pytest

from common.talos.quirks import GIB, MIB, Quirks
from common.talos.version import release_core as parse_version

# (method, [(version, expected), ...]); "garbage" exercises the unparsable → "latest Talos" default.
TABLE: list[tuple[str, list[tuple[str, object]]]] = [
    ("supports_reset_grub_option", [("1.3.7", False), ("v1.4.0-alpha.0", True), ("garbage", True)]),
    ("supports_uki", [("1.4.9", False), ("1.5.0-alpha.1", True), ("v1.5.0", True), ("garbage", True)]),
    ("supports_multidoc", [("1.4.0", False), ("1.5.0", True)]),
    ("supports_compressed_meta", [("1.6.2", False), ("1.6.3-beta.0", True), ("1.7.0", True), ("", True)]),
    ("supports_overlay", [("1.6.7", False), ("v1.7.0-alpha.1", True), ("garbage", True)]),
    ("supports_zstd", [("1.7.6", False), ("1.8.0", True), ("garbage", True)]),
    ("supports_iso_label", [("1.7.6", False), ("1.8.0", True)]),
    ("metal_console_ttys0", [("1.7.6", True), ("1.8.0-alpha.0", False), ("garbage", False)]),
    ("supports_halt_if_installed", [("1.7.6", False), ("1.8.0", True), ("garbage", True)]),
    ("skip_data_partitions", [("1.7.6", False), ("1.8.0", True), ("garbage", True)]),
    ("disk_image_has_data_partitions", [("1.7.6", True), ("1.8.0", False)]),
    ("supports_selinux", [("1.9.5", False), ("1.10.0-alpha.1", True), ("garbage", True)]),
    (
        "use_sdboot_for_uefi",
        [("1.9.5", False), ("1.10.0-alpha.1", True), ("v1.12.0", True), ("garbage", False)],
    ),
    ("usr_merge", [("1.9.5", False), ("1.10.0", True)]),
    (
        "kernel_modules_path",
        [("1.9.5", "/lib/modules"), ("1.10.0", "/usr/lib/modules"), ("x", "/usr/lib/modules")],
    ),
    ("firmware_path", [("1.9.5", "/lib/firmware"), ("1.10.0", "/usr/lib/firmware")]),
    ("supports_uki_profiles", [("1.9.5", False), ("1.10.0", True)]),
    ("supports_unified_installer", [("1.9.5", False), ("1.10.0-alpha.1", True), ("garbage", True)]),
    (
        "supports_ima",
        [("1.5.0", True), ("1.10.7", True), ("1.10.99", True), ("1.11.0-alpha.0", False), ("x", False)],
    ),
    ("ima_args", [("1.10.3", True), ("1.11.0", False)]),
    ("supports_talosctl", [("1.10.9", False), ("1.11.0-alpha.1", True), ("1.11.0", True), ("garbage", True)]),
    (
        "boot_partition_size",
        [("1.10.5", 1000 * MIB), ("1.11.0-alpha.0", 2000 * MIB), ("garbage", 2000 * MIB)],
    ),
    ("supports_embedded_config", [("1.11.5", False), ("1.12.0", True), ("garbage", True)]),
    ("module_sig_enforce", [("1.11.5", False), ("1.12.0-beta.1", True), ("garbage", True)]),
    ("supports_disabling_module_signature_verification", [("1.11.5", False), ("1.12.0", True)]),
    ("supports_iso_bootloader_selection", [("1.11.5", False), ("1.12.0", True), ("garbage", True)]),
    ("proc_mem_force_override", [("1.12.4", False), ("1.13.0", True), ("garbage", True)]),
    ("drop_init_on_alloc", [("1.13.4", False), ("1.14.0-rc.1", True), ("garbage", True)]),
    ("nvme_io_timeout_aws_only", [("1.13.4", False), ("1.14.0", True), ("garbage", True)]),
    ("forces_lockdown_confidentiality", [("1.13.4", True), ("1.14.0", False), ("garbage", False)]),
    ("disk_image_enrolls_secureboot_keys", [("1.13.9", False), ("1.14.0", True), ("garbage", True)]),
    (
        "xfs_mkfs_config",
        [
            ("1.5.0", "/usr/share/xfsprogs/mkfs/lts_6.1.conf"),
            ("1.7.9", "/usr/share/xfsprogs/mkfs/lts_6.1.conf"),
            ("1.8.0", "/usr/share/xfsprogs/mkfs/lts_6.6.conf"),
            ("1.9.9", "/usr/share/xfsprogs/mkfs/lts_6.6.conf"),
            ("1.10.0", "/usr/share/xfsprogs/mkfs/lts_6.12.conf"),
            ("1.12.9", "/usr/share/xfsprogs/mkfs/lts_6.12.conf"),
            ("1.13.0", "/usr/share/xfsprogs/mkfs/lts_6.18.conf"),
            ("garbage", "/usr/share/xfsprogs/mkfs/lts_6.18.conf"),
        ],
    ),
    ("xfs_config_profile_name", [("1.9.0", "lts_6.6"), ("1.11.0", "lts_6.12")]),
    ("xfs_min_allocation_group_size", [("1.13.9", 0), ("1.14.0", 64 * GIB), ("garbage", 64 * GIB)]),
]

CASES = [(method, version, expected) for method, rows in TABLE for version, expected in rows]


@pytest.mark.parametrize(("method", "version", "expected"), CASES)
def test_quirk(method: str, version: str, expected: object) -> None:
    assert getattr(Quirks(version), method)() == expected


def test_partition_sizes() -> None:
    old, new = Quirks("1.10.0").partition_sizes(), Quirks("1.11.0").partition_sizes()
    assert (old.grub_boot_size, old.uki_efi_size) == (1000 * MIB, 1101 * MIB)
    assert (new.grub_boot_size, new.uki_efi_size) == (2000 * MIB, 2101 * MIB)
    assert (new.grub_efi_size, new.grub_bios_size, new.meta_size) == (100 * MIB, MIB, MIB)
    assert (new.state_size, new.ephemeral_min_size) == (100 * MIB, 2 * GIB)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.10.0", (1, 10, 0)),
        ("v1.10.0", (1, 10, 0)),
        ("  v1.10.0\n", (1, 10, 0)),
        ("1.10.0-alpha.1", (1, 10, 0)),
        ("1.10.0-alpha.1+build.5", (1, 10, 0)),
        ("1.10", (1, 10, 0)),
        ("1", (1, 0, 0)),
        ("01.010.00", (1, 10, 0)),
        ("1.2.3-0-x", (1, 2, 3)),
        ("vv1.2.3", None),
        ("V1.2.3", None),
        ("1.10-alpha.1", None),  # short versions may not carry a pre-release
        ("1.2.3-01", None),  # numeric pre-release identifiers may not have leading zeros
        ("1.2.3-", None),
        ("1.2.3+", None),
        ("1.2.3.4", None),
        ("1.x.0", None),
        ("", None),
        ("latest", None),
        ("1.٣.0", None),
    ],
)
def test_parse_version_is_tolerant_like_blang_semver(
    text: str, expected: tuple[int, int, int] | None
) -> None:
    assert parse_version(text) == expected


def test_prerelease_counts_as_release() -> None:
    assert Quirks("1.10.0-alpha.1").version == Quirks("v1.10.0").version == (1, 10, 0)
    assert repr(Quirks("v1.9.0")) == "Quirks('v1.9.0')"
