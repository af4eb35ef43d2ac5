"""Talos-version-dependent behaviour (``talos:pkg/machinery/imager/quirks``, v1.14.0-rc.1).

Every build for an old Talos release must look like that release's own imager made it, so each switch
is keyed on the target version. As upstream: the version is parsed like blang/semver ``ParseTolerant``,
pre-release and build parts are dropped (``1.10.0-alpha.1`` counts as 1.10.0), and an unparsable
version means "latest Talos" (each method documents what that yields).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.talos.version import Version, release_core

MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class PartitionSizes:
    """Partition sizes (bytes) of disk images; only BOOT depends on the version."""

    boot_size: int

    grub_efi_size: int = 100 * MIB
    grub_bios_size: int = 1 * MIB
    meta_size: int = 1 * MIB
    state_size: int = 100 * MIB
    ephemeral_min_size: int = 2 * GIB

    @property
    def grub_boot_size(self) -> int:
        return self.boot_size

    @property
    def uki_efi_size(self) -> int:
        """With UKIs everything lives on EFI: old EFI + BIOS + BOOT (1101 or 2101 MiB)."""
        return self.grub_efi_size + self.grub_bios_size + self.boot_size


class Quirks:
    """Feature switches for one target Talos version."""

    def __init__(self, version: str) -> None:
        self.version_text = version
        self.version: Version | None = release_core(version)

    def __repr__(self) -> str:
        return f"Quirks({self.version_text!r})"

    def _gte(self, minimum: tuple[int, int, int], *, unknown: bool = True) -> bool:
        return unknown if self.version is None else self.version >= minimum

    def _lt(self, bound: tuple[int, int, int], *, unknown: bool = False) -> bool:
        return unknown if self.version is None else self.version < bound

    # --- ≥ 1.4 / 1.5 ---------------------------------------------------------------------------------

    def supports_reset_grub_option(self) -> bool:
        """GRUB "Reset Talos installation" menu entry (ISO and disk): ≥1.4.0; unknown → True."""
        return self._gte((1, 4, 0))

    def supports_uki(self) -> bool:
        """UKI, Secure Boot and sd-boot assets: ≥1.5.0; unknown → True."""
        return self._gte((1, 5, 0))

    def supports_multidoc(self) -> bool:
        """Multi-document machine configs: ≥1.5.0; unknown → True."""
        return self._gte((1, 5, 0))

    def supports_compressed_meta(self) -> bool:
        """META env var (``INSTALLER_META_BASE64``) may be gzipped when >256 bytes: ≥1.6.3; unknown → True."""
        return self._gte((1, 6, 3))

    # --- 1.7 / 1.8 -----------------------------------------------------------------------------------

    def supports_overlay(self) -> bool:
        """Overlays (SBCs) and ``extraInfo`` in the schematic extension: ≥1.7.0; unknown → True."""
        return self._gte((1, 7, 0))

    def supports_zstd(self) -> bool:
        """zstd (instead of xz) for extension cpios and squashfs: ≥1.8.0; unknown → True."""
        return self._gte((1, 8, 0))

    def supports_iso_label(self) -> bool:
        """ISO volume id/volume set labels: ≥1.8.0; unknown → True."""
        return self._gte((1, 8, 0))

    def metal_console_ttys0(self) -> bool:
        """``console=ttyS0`` in the metal platform args: only <1.8.0; unknown → False."""
        return self._lt((1, 8, 0))

    def supports_halt_if_installed(self) -> bool:
        """ISO kernel arg ``talos.halt_if_installed=1``: ≥1.8.0; unknown → True."""
        return self._gte((1, 8, 0))

    def skip_data_partitions(self) -> bool:
        """Disk images without STATE/EPHEMERAL (Talos creates them on boot): ≥1.8.0; unknown → True."""
        return self._gte((1, 8, 0))

    def disk_image_has_data_partitions(self) -> bool:
        """Disk images carry STATE and EPHEMERAL partitions: <1.8.0 (inverse of skip_data_partitions)."""
        return not self.skip_data_partitions()

    # --- 1.10 ----------------------------------------------------------------------------------------

    def supports_selinux(self) -> bool:
        """``selinux=1`` in the default args: ≥1.10.0; unknown → True."""
        return self._gte((1, 10, 0))

    def use_sdboot_for_uefi(self) -> bool:
        """sd-boot for UEFI (amd64 dual-boot, arm64 sd-boot; UKIs in ISO/disk): ≥1.10.0; unknown → False."""
        return self._gte((1, 10, 0), unknown=False)

    def usr_merge(self) -> bool:
        """``/lib`` and ``/bin`` merged into ``/usr``: ≥1.10.0; unknown → True."""
        return self._gte((1, 10, 0))

    def kernel_modules_path(self) -> str:
        """Modules directory: ``/usr/lib/modules`` ≥1.10.0 (and unknown), else ``/lib/modules``."""
        return "/usr/lib/modules" if self.usr_merge() else "/lib/modules"

    def firmware_path(self) -> str:
        """``/usr/lib/firmware`` ≥1.10.0 (and unknown), else ``/lib/firmware``."""
        return "/usr/lib/firmware" if self.usr_merge() else "/lib/firmware"

    def supports_uki_profiles(self) -> bool:
        """Multi-profile UKIs (reset/maintenance entries): ≥1.10.0; unknown → True."""
        return self._gte((1, 10, 0))

    def supports_unified_installer(self) -> bool:
        """``installer-base`` image and kernel args in non-SB installer/UKI: ≥1.10.0; unknown → True."""
        return self._gte((1, 10, 0))

    def supports_ima(self) -> bool:
        """IMA args (``ima_template=ima-ng ima_appraise=fix ima_hash=sha512``): ≤1.10.99; unknown → False."""
        return self.version is not None and self.version <= (1, 10, 99)

    def ima_args(self) -> bool:
        """Alias of :meth:`supports_ima` under the name the cmdline builder looks for."""
        return self.supports_ima()

    # --- 1.11 ----------------------------------------------------------------------------------------

    def supports_talosctl(self) -> bool:
        """talosctl-all image served by the factory: ≥1.11.0 (upstream: 1.11.0-alpha.3); unknown → True."""
        return self._gte((1, 11, 0))

    def partition_sizes(self) -> PartitionSizes:
        """BOOT is 2000 MiB from 1.11.0 (and unknown), 1000 MiB before (EFI-UKI 2101 vs 1101 MiB)."""
        boot = 1000 * MIB if self._lt((1, 11, 0)) else 2000 * MIB
        return PartitionSizes(boot_size=boot)

    def boot_partition_size(self) -> int:
        return self.partition_sizes().boot_size

    # --- 1.12 ----------------------------------------------------------------------------------------

    def supports_embedded_config(self) -> bool:
        """``customization.embeddedMachineConfiguration``: ≥1.12.0; unknown → True."""
        return self._gte((1, 12, 0))

    def module_sig_enforce(self) -> bool:
        """``module.sig_enforce=1`` in the args (can be turned off by the user): ≥1.12.0; unknown → True."""
        return self._gte((1, 12, 0))

    def supports_disabling_module_signature_verification(self) -> bool:
        """Upstream's name for :meth:`module_sig_enforce`."""
        return self.module_sig_enforce()

    def supports_iso_bootloader_selection(self) -> bool:
        """``isoOptions.bootloader`` honoured (and must not be none): ≥1.12.0; unknown → True."""
        return self._gte((1, 12, 0))

    # --- 1.13 / 1.14 ---------------------------------------------------------------------------------

    def proc_mem_force_override(self) -> bool:
        """``proc_mem.force_override=never``: ≥1.13.0; unknown → True."""
        return self._gte((1, 13, 0))

    def drop_init_on_alloc(self) -> bool:
        """No ``init_on_alloc=1`` in the default args: ≥1.14.0; unknown → True."""
        return self._gte((1, 14, 0))

    def nvme_io_timeout_aws_only(self) -> bool:
        """``nvme_core.io_timeout=4294967295`` only on AWS (before: everywhere): ≥1.14.0; unknown → True."""
        return self._gte((1, 14, 0))

    def disk_image_enrolls_secureboot_keys(self) -> bool:
        """Secure Boot disk images carry ``loader/keys/auto`` and ``secure-boot-enroll`` (imageOptions
        ``sdBootEnrollKeys``, ``pkg/imager/out.go`` ``buildImage``): ≥1.14.0 (first in v1.14.0-alpha.1;
        before, only the ISO enrols); unknown → True."""
        return self._gte((1, 14, 0))

    def forces_lockdown_confidentiality(self) -> bool:
        """``lockdown=confidentiality`` in the default args: <1.14.0 only (Talos main); unknown → False."""
        return self._lt((1, 14, 0))

    def xfs_mkfs_config(self) -> str:
        """mkfs.xfs config: lts_6.1 <1.8, lts_6.6 <1.10, lts_6.12 <1.13, lts_6.18 ≥1.13 (and unknown)."""
        v = self.version
        if v is None or v >= (1, 13, 0):
            name = "lts_6.18"
        elif v >= (1, 10, 0):
            name = "lts_6.12"
        elif v >= (1, 8, 0):
            name = "lts_6.6"
        else:
            name = "lts_6.1"
        return f"/usr/share/xfsprogs/mkfs/{name}.conf"

    def xfs_config_profile_name(self) -> str:
        """Just the profile name of :meth:`xfs_mkfs_config` (``lts_6.12`` …)."""
        return self.xfs_mkfs_config().rsplit("/", 1)[-1].removesuffix(".conf")

    def xfs_min_allocation_group_size(self) -> int:
        """Minimum XFS AG size (bytes) when a device size is given: 64 GiB ≥1.14.0 (and unknown), else 0."""
        return 0 if self._lt((1, 14, 0)) else 64 * GIB
