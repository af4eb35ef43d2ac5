"""A parsed asset profile completed from a schematic (upstream ``EnhanceFromSchematic``).

The result is a :class:`BuildPlan`: the enhanced profile, whose hash is the asset's cache key and
Celery task id, plus the exact source images (by digest) the worker must pull to build it. The API
computes it from catalogs alone (no image pulls), so it can answer cache hits and bad requests
without a worker; the worker re-checks what only the images can tell (extension compatibility).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.artifacts.catalog import ExtensionRef, ImageDependency, OverlayRef
from common.errors import InvalidInputError
from common.profile.hash import profile_hash
from common.profile.model import (
    Bootloader,
    ContainerAsset,
    ImageOptions,
    ISOOptions,
    MetaValue,
    OutputKind,
    Overlay,
    Profile,
    SDBootEnrollKeys,
    SecureBootAssets,
)
from common.profile.path import go_quote
from common.schematic.model import Schematic
from common.talos.quirks import Quirks
from common.talos.version import Version, parse_tolerant

__all__ = [
    "EXTENSION_ALIASES",
    "TALOS_NAME",
    "BuildPlan",
    "Catalogs",
    "ImageSource",
    "enhance",
    "find_extension",
]

TALOS_NAME = "Talos"

#: The arch named in ``overlay.image`` (upstream: ``runtime.GOARCH`` of the factory). Fixed rather than
#: taken from the API host, so every API replica computes the same key; the worker runs the installer
#: from the image for its own arch whatever this says.
OVERLAY_HOST_ARCH = "amd64"

#: Names clients still use for renamed official extensions (upstream ``ExtensionNameAlias``).
EXTENSION_ALIASES: dict[str, str] = {
    "siderolabs/v4l-uvc": "siderolabs/v4l-uvc-drivers",
    "siderolabs/usb-modem": "siderolabs/usb-modem-drivers",
    "siderolabs/gasket": "siderolabs/gasket-driver",
    "siderolabs/talos-vmtoolsd": "siderolabs/vmtoolsd-guest-agent",
    "siderolabs/xe-guest-utilities": "siderolabs/xen-guest-agent",
    "siderolabs/nvidia-container-toolkit": "siderolabs/nvidia-container-toolkit-lts",
    "siderolabs/nvidia-open-gpu-kernel-modules": "siderolabs/nvidia-open-gpu-kernel-modules-lts",
    "siderolabs/nonfree-kmod-nvidia": "siderolabs/nonfree-kmod-nvidia-lts",
    "siderolabs/nvidia-fabricmanager": "siderolabs/nvidia-fabric-manager-lts",
    "siderolabs/i915-ucode": "siderolabs/i915",
    "siderolabs/amdgpu-firmware": "siderolabs/amdgpu",
}


class Catalogs(Protocol):
    """What enhancement reads: the version's catalogs (``ArtifactsManager`` provides them)."""

    def official_extensions(self, version: Version) -> list[ExtensionRef]: ...

    def official_overlays(self, version: Version) -> list[OverlayRef]: ...

    def installer_dependency(self, version: Version, arch: str) -> ImageDependency: ...


@dataclass(frozen=True)
class ImageSource:
    """A source image the worker pulls by digest; ``name`` is what the schematic asked for."""

    repository: str  # repository path under the core registry, e.g. siderolabs/gvisor
    digest: str
    name: str


@dataclass
class BuildPlan:
    """Everything a worker needs to build one asset, and the key it is cached under."""

    profile: Profile
    schematic_id: str
    schematic_yaml: bytes  # canonical form; the schematic extension's extraInfo (>= 1.7)
    extensions: list[ImageSource] = field(default_factory=list)  # official ones, profile order
    overlay: OverlayRef | None = None
    embedded_config: str = ""
    installer_base: ImageDependency | None = None  # installer outputs only

    @property
    def key(self) -> str:
        return profile_hash(self.profile)

    @property
    def version(self) -> str:
        return self.profile.version


def find_extension(available: Sequence[ExtensionRef], name: str) -> ExtensionRef | None:
    """Exact repository-path match, then the alias table, as upstream."""
    for candidate in (name, EXTENSION_ALIASES.get(name)):
        if candidate is None:
            continue
        for ref in available:
            if ref.name == candidate:
                return ref
    return None


def enhance(
    profile: Profile,
    schematic: Schematic,
    *,
    schematic_id: str,
    schematic_yaml: bytes,
    version: str,
    catalogs: Catalogs,
    secureboot: SecureBootAssets | None = None,
) -> BuildPlan:
    """Upstream's enhancement, step for step, returning the plan instead of pulling images.

    ``version`` is the Talos tag (``v1.12.4``); ``secureboot`` is the configured signing material,
    ``None`` when Secure Boot is disabled.
    """
    prof = copy.deepcopy(profile)
    quirks = Quirks(version)
    custom = schematic.customization
    kind = prof.output.kind
    builds_initramfs = kind not in (OutputKind.CMDLINE, OutputKind.KERNEL)
    plan = BuildPlan(profile=prof, schematic_id=schematic_id, schematic_yaml=schematic_yaml)

    if builds_initramfs and custom.embedded_machine_configuration:
        if not quirks.supports_embedded_config():
            raise InvalidInputError(f"embedding configuration is not supported for Talos version {version}")
        prof.customization.embedded_machine_configuration = custom.embedded_machine_configuration
        plan.embedded_config = custom.embedded_machine_configuration

    if prof.secureboot_enabled:
        _apply_secureboot(prof, schematic, secureboot)

    if schematic.overlay.name and not quirks.supports_overlay():
        raise InvalidInputError(f"overlay is not supported for Talos version {version}")

    if kind is OutputKind.INSTALLER:
        dependency = catalogs.installer_dependency(parse_tolerant(version), prof.arch)
        # upstream HEAD: the ref is the immutable platform-manifest digest (it is what the hash sees);
        # the OCI path's base name is upstream's <arch>-installer-<tag>
        prof.input.base_installer = ContainerAsset(
            image_ref=dependency.reference, oci_path=f"{prof.arch}-installer-{version}"
        )
        plan.installer_base = dependency

    if builds_initramfs:
        parsed = parse_tolerant(version)
        if custom.official_extensions:
            available = catalogs.official_extensions(parsed)
            for name in custom.official_extensions:
                ref = find_extension(available, name)
                if ref is None:
                    raise InvalidInputError(
                        f"official extension {go_quote(name)} is not available for Talos version {version}"
                    )
                plan.extensions.append(ImageSource(ref.ref.repository, ref.digest, name))
                # upstream's OCI layout path; only its base name is hashed, so the digest keys the cache
                prof.input.system_extensions.append(ContainerAsset(oci_path=f"{prof.arch}-{ref.digest}"))
        supports_overlay = "true" if quirks.supports_overlay() else "false"
        prof.input.system_extensions.append(
            ContainerAsset(tarball_path=f"{schematic_id}-{supports_overlay}.tar")
        )
        if schematic.overlay.name:
            overlays = catalogs.official_overlays(parse_tolerant(version))
            found = next((o for o in overlays if o.name == schematic.overlay.name), None)
            if found is None:
                # upstream formats the zero-value struct here instead of the name; we name the overlay
                raise InvalidInputError(
                    f"official overlay {go_quote(schematic.overlay.name)} is not available "
                    f"for Talos version {version}"
                )
            plan.overlay = found
            # Upstream's layout paths: <arch>-<digest> for the image the installer runs from (the
            # factory host's arch) and for the target arch's (profile and artifacts). Only the base
            # names are hashed, so the catalog digest keys the cache; the worker merges the overlay's
            # profiles/<name>.yaml (worker.imager.overlay), which that digest pins too.
            prof.overlay = Overlay(
                name=found.name,
                image=ContainerAsset(oci_path=f"{OVERLAY_HOST_ARCH}-{found.digest}"),
                options=copy.deepcopy(schematic.overlay.options),
            )
            prof.input.overlay_installer = ContainerAsset(oci_path=f"{prof.arch}-{found.digest}")

    _apply_args_and_meta(prof, schematic, quirks)
    prof.version = version
    prof.name = TALOS_NAME
    return plan


def _apply_secureboot(prof: Profile, schematic: Schematic, assets: SecureBootAssets | None) -> None:
    if assets is None:
        raise InvalidInputError("secure boot is disabled")
    copied = copy.deepcopy(assets)
    if schematic.customization.secureboot.include_well_known_certificates:
        copied.include_well_known_certs = True
    prof.input.secure_boot = copied
    enroll = schematic.customization.secureboot.enroll_keys
    if not enroll:
        return
    try:
        keys = SDBootEnrollKeys(enroll.lower())
    except ValueError as exc:  # validated when the schematic was created; kept for old schematics
        raise InvalidInputError(f"invalid secureboot enrollKeys value {go_quote(enroll)}") from exc
    # loader.conf's secure-boot-enroll only exists on the ESP of ISOs and disk images
    if prof.output.kind is OutputKind.ISO:
        prof.output.iso_options = prof.output.iso_options or ISOOptions()
        prof.output.iso_options.sd_boot_enroll_keys = keys
    elif prof.output.kind is OutputKind.IMAGE:
        prof.output.image_options = prof.output.image_options or ImageOptions()
        prof.output.image_options.sd_boot_enroll_keys = keys


def _apply_args_and_meta(prof: Profile, schematic: Schematic, quirks: Quirks) -> None:
    custom = schematic.customization
    kind = prof.output.kind
    if kind in (OutputKind.INITRAMFS, OutputKind.KERNEL):
        return
    if kind in (OutputKind.INSTALLER, OutputKind.UKI):
        # the UKI carries its command line; without SB it only honours extra args from 1.10 on
        if prof.secureboot_enabled or quirks.supports_unified_installer():
            prof.customization.extra_kernel_args.extend(custom.extra_kernel_args)
        return
    prof.customization.extra_kernel_args.extend(custom.extra_kernel_args)
    prof.customization.meta_contents.extend(MetaValue(m.key, m.value) for m in custom.meta)
    if not custom.bootloader:
        pass
    elif kind is OutputKind.ISO:
        prof.output.iso_options = prof.output.iso_options or ISOOptions()
        prof.output.iso_options.bootloader = Bootloader(custom.bootloader)
    elif kind is OutputKind.IMAGE:
        prof.output.image_options = prof.output.image_options or ImageOptions()
        prof.output.image_options.bootloader = Bootloader(custom.bootloader)
    if kind is OutputKind.IMAGE and custom.sector_size:
        prof.output.image_options = prof.output.image_options or ImageOptions()
        prof.output.image_options.disk_sector_size = custom.sector_size
