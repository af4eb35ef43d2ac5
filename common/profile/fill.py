"""Imager-side profile completion, validation and output naming (Talos ``Input/Output.FillDefaults``,
``Profile.Validate``, ``Profile.OutputPath``).

These run on the profile the factory produced, just before building, exactly as the Talos imager would;
the disk-size growth in particular is version dependent and must match upstream's images.
"""

from __future__ import annotations

import copy
import os
import posixpath
from collections.abc import Callable

from common.errors import FactoryError
from common.profile.model import (
    Bootloader,
    ContainerAsset,
    FileAsset,
    ImageOptions,
    Input,
    ISOOptions,
    OutFormat,
    Output,
    OutputKind,
    Profile,
    SecureBootAssets,
)
from common.profile.path import go_quote
from common.talos.quirks import MIB, Quirks

__all__ = [
    "ProfileInvalidError",
    "fill_defaults",
    "final_output_name",
    "output_name",
    "select_bootloader",
    "validate",
]

DEFAULT_SECUREBOOT_PREFIX = "/secureboot"
INSTALLER_REPOSITORY = "ghcr.io/siderolabs/installer"
INSTALLER_BASE_REPOSITORY = "ghcr.io/siderolabs/installer-base"


class ProfileInvalidError(FactoryError):
    """The imager refused the profile; upstream answers 500 for these (they are not the client's fault)."""

    status = 500


def fill_defaults(
    profile: Profile,
    *,
    secureboot_prefix: str = DEFAULT_SECUREBOOT_PREFIX,
    exists: Callable[[str], bool] = os.path.exists,
) -> Profile:
    """A copy of ``profile`` with the imager's defaults applied (inputs, bootloader, disk size).

    ``exists`` decides whether the optional prebuilt ``PK/KEK/db.auth`` files under ``secureboot_prefix``
    are picked up, as upstream does with ``os.Stat``.
    """
    prof = copy.deepcopy(profile)
    _fill_input(prof.input, prof.arch, prof.version, prof.secureboot_enabled, secureboot_prefix, exists)
    _fill_output(prof.output, prof.arch, prof.version, prof.secureboot_enabled)
    return prof


def _fill_input(
    inp: Input, arch: str, version: str, secureboot: bool, prefix: str, exists: Callable[[str], bool]
) -> None:
    base = f"/usr/install/{arch}"
    if inp.kernel.is_zero():
        inp.kernel = FileAsset(f"{base}/vmlinuz")
    if inp.initramfs.is_zero():
        inp.initramfs = FileAsset(f"{base}/initramfs.xz")
    if inp.base_installer.is_zero():
        repo = (
            INSTALLER_BASE_REPOSITORY
            if Quirks(version).supports_unified_installer()
            else INSTALLER_REPOSITORY
        )
        inp.base_installer = ContainerAsset(image_ref=f"{repo}:{version}")
    if inp.sd_stub.is_zero():
        inp.sd_stub = FileAsset(f"{base}/systemd-stub.efi")
    if inp.sd_boot.is_zero():
        inp.sd_boot = FileAsset(f"{base}/systemd-boot.efi")

    if not secureboot:
        return
    if inp.secure_boot is None:
        inp.secure_boot = SecureBootAssets()
    sb = inp.secure_boot
    if sb.secure_boot_signer.is_zero():
        sb.secure_boot_signer.key_path = posixpath.join(prefix, "uki-signing-key.pem")
        sb.secure_boot_signer.cert_path = posixpath.join(prefix, "uki-signing-cert.pem")
    if sb.pcr_signer.is_zero():
        sb.pcr_signer.key_path = posixpath.join(prefix, "pcr-signing-key.pem")
    for attr, name in (
        ("platform_key_path", "PK.auth"),
        ("key_exchange_key_path", "KEK.auth"),
        ("signature_key_path", "db.auth"),
    ):
        candidate = posixpath.join(prefix, name)
        if not getattr(sb, attr) and exists(candidate):
            setattr(sb, attr, candidate)


def select_bootloader(current: Bootloader, arch: str, version: str, secureboot: bool) -> Bootloader:
    """Upstream ``selectBootloader``: an explicit choice wins unless Secure Boot forces sd-boot."""
    if current is not Bootloader.NONE and not secureboot:
        return current
    use_sdboot = Quirks(version).use_sdboot_for_uefi()
    if secureboot:
        return Bootloader.SD_BOOT
    if arch == "arm64" and use_sdboot:
        return Bootloader.SD_BOOT
    if not use_sdboot:
        return Bootloader.GRUB
    return Bootloader.DUAL_BOOT


def _fill_output(out: Output, arch: str, version: str, secureboot: bool) -> None:
    quirks = Quirks(version)
    if out.kind is OutputKind.IMAGE:
        if out.image_options is None:
            out.image_options = ImageOptions()
        opts = out.image_options
        opts.bootloader = select_bootloader(opts.bootloader, arch, version, secureboot)
        sizes = quirks.partition_sizes()
        # disk sizes in the profiles assume a 1000 MiB BOOT; grow by whatever this version adds.
        opts.disk_size += sizes.grub_boot_size - 1000 * MIB
        if opts.bootloader is Bootloader.DUAL_BOOT:
            opts.disk_size += sizes.grub_bios_size + sizes.grub_boot_size
    elif out.kind is OutputKind.ISO:
        if not quirks.supports_iso_bootloader_selection():
            return
        if out.iso_options is None:
            out.iso_options = ISOOptions()
        out.iso_options.bootloader = select_bootloader(out.iso_options.bootloader, arch, version, secureboot)


def _invalid(message: str) -> ProfileInvalidError:
    return ProfileInvalidError(f"profile is invalid: {message}")


def validate(profile: Profile) -> None:
    """Upstream ``Profile.Validate`` (run after :func:`fill_defaults`) plus the imager's UKI version gate."""
    p = profile
    quirks = Quirks(p.version)
    if p.arch not in ("amd64", "arm64"):
        raise _invalid(f"invalid arch {go_quote(p.arch)}")
    if not p.platform:
        raise _invalid("platform is required")
    if p.secureboot_enabled and not quirks.supports_uki():
        raise _invalid(f"secureboot is not supported for Talos version {go_quote(p.version)}")

    kind = p.output.kind
    meta = p.customization.meta_contents
    if kind is OutputKind.UNKNOWN:
        raise _invalid("unknown output kind")
    if kind is OutputKind.ISO:
        iso = p.output.iso_options
        if (
            quirks.supports_iso_bootloader_selection()
            and iso is not None
            and iso.bootloader is Bootloader.NONE
        ):
            raise _invalid("bootloader cannot be 'none' for ISO output")
    elif kind is OutputKind.IMAGE:
        opts = p.output.image_options
        if opts is None:
            raise _invalid("image options are required for image output")
        if opts.disk_size == 0:
            raise _invalid("disk size is required for image output")
        if opts.bootloader is Bootloader.NONE:
            raise _invalid("bootloader cannot be 'none' for disk image output")
    elif kind is OutputKind.INSTALLER:
        if meta:
            raise _invalid(f"customization of meta partition is not supported for {kind} output")
    elif kind in (OutputKind.KERNEL, OutputKind.INITRAMFS):
        if p.secureboot_enabled:
            raise _invalid(f"secureboot is not supported for {kind} output")
        if p.customization.extra_kernel_args:
            raise _invalid(f"customization of kernel args is not supported for {kind} output")
        if meta:
            raise _invalid(f"customization of meta partition is not supported for {kind} output")
    elif kind is OutputKind.UKI and not quirks.supports_uki():
        # upstream raises this later, in Imager.Execute, without the "profile is invalid" prefix
        raise ProfileInvalidError("UKI output is not supported in this Talos version")


def output_name(profile: Profile) -> str:
    """The file the imager writes (before compression), e.g. ``metal-amd64-secureboot.raw``."""
    p = profile
    sb = "-secureboot" if p.secureboot_enabled else ""
    stem = f"{p.platform}-{p.arch}{sb}"
    kind = p.output.kind
    if kind is OutputKind.ISO:
        return stem + ".iso"
    if kind is OutputKind.IMAGE:
        if p.output.image_options is None:
            raise ValueError("image output without image options")  # upstream dereferences nil here
        return f"{stem}.{p.output.image_options.disk_format.value}"
    if kind is OutputKind.INSTALLER:
        return f"installer-{p.arch}{sb}.tar"
    if kind is OutputKind.KERNEL:
        return f"kernel-{p.arch}"
    if kind is OutputKind.INITRAMFS:
        return f"initramfs-{stem}.xz"
    if kind is OutputKind.UKI:
        return stem + "-uki.efi"
    if kind is OutputKind.CMDLINE:
        return f"cmdline-{stem}"
    raise ValueError("unknown output kind")  # upstream panics


def final_output_name(profile: Profile) -> str:
    """:func:`output_name` plus the suffix post-processing appends (``.tar.gz`` wraps the raw file)."""
    name = output_name(profile)
    fmt = profile.output.out_format
    if fmt in (OutFormat.RAW, OutFormat.UNKNOWN):
        return name
    return name + fmt.value
