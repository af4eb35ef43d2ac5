"""The Talos imager profile: the document a build hands to the imager, and the input of the cache key.

Classes mirror ``talos:pkg/imager/profile`` field for field. Field order and ``omitempty`` rules matter
because the profile hash (the asset cache key) is taken over its YAML form, so :meth:`Profile.to_yaml_dict`
reproduces go-yaml's output order and its zero-value omission exactly. Instances are plain mutable
dataclasses so ``copy.deepcopy`` gives the equivalent of Go's generated ``DeepCopy``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class OutputKind(enum.StrEnum):
    """``profile.OutputKind``; the zero value ``unknown`` is invalid."""

    UNKNOWN = "unknown"
    ISO = "iso"
    IMAGE = "image"
    INSTALLER = "installer"
    KERNEL = "kernel"
    INITRAMFS = "initramfs"
    UKI = "uki"
    CMDLINE = "cmdline"


class OutFormat(enum.StrEnum):
    """``profile.OutFormat``: the compression applied after the build (``raw`` = none)."""

    UNKNOWN = "unknown"
    RAW = "raw"
    TAR = ".tar.gz"
    XZ = ".xz"
    GZ = ".gz"
    ZSTD = ".zst"


class DiskFormat(enum.StrEnum):
    """``profile.DiskFormat``; ``vhd`` is Go's ``DiskFormatVPC`` (qemu-img's name for it)."""

    UNKNOWN = "unknown"
    RAW = "raw"
    QCOW2 = "qcow2"
    VPC = "vhd"
    OVA = "ova"


class Bootloader(enum.StrEnum):
    """``imageropts.BootloaderKind``; ``none`` is the zero value and means "choose for me"."""

    NONE = "none"
    DUAL_BOOT = "dual-boot"
    SD_BOOT = "sd-boot"
    GRUB = "grub"


class SDBootEnrollKeys(enum.StrEnum):
    """``profile.SDBootEnrollKeys`` (loader.conf ``secure-boot-enroll``); zero value is ``if-safe``."""

    IF_SAFE = "if-safe"
    MANUAL = "manual"
    FORCE = "force"
    OFF = "off"


def _drop_empty(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Go ``omitempty`` for scalar/collection fields: zero strings, ints, bools, empty lists/maps go."""
    return {k: v for k, v in pairs if v not in ("", 0, False, None) and v != [] and v != {}}


@dataclass
class MetaValue:
    """One ``meta.Value``; Go has no yaml tags there, so keys are the lower-cased field names."""

    key: int
    value: str = ""

    def to_yaml_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value}


@dataclass
class Customization:
    """``CustomizationProfile``; omitted from the document entirely when all fields are empty."""

    extra_kernel_args: list[str] = field(default_factory=list)
    meta_contents: list[MetaValue] = field(default_factory=list)
    embedded_machine_configuration: str = ""

    def is_zero(self) -> bool:
        return (
            not self.extra_kernel_args and not self.meta_contents and not self.embedded_machine_configuration
        )

    def to_yaml_dict(self) -> dict[str, Any]:
        return _drop_empty(
            [
                ("extraKernelArgs", list(self.extra_kernel_args)),
                ("metaContents", [m.to_yaml_dict() for m in self.meta_contents]),
                ("embeddedMachineConfiguration", self.embedded_machine_configuration),
            ]
        )


@dataclass
class FileAsset:
    path: str = ""

    def is_zero(self) -> bool:
        return not self.path

    def to_yaml_dict(self) -> dict[str, Any]:
        return {"path": self.path}


@dataclass
class ContainerAsset:
    """An image by reference, plain tarball or OCI layout (``tarballPath``/``ociPath`` win over the ref)."""

    image_ref: str = ""
    force_insecure: bool = False
    tarball_path: str = ""
    oci_path: str = ""

    def is_zero(self) -> bool:
        return not (self.image_ref or self.force_insecure or self.tarball_path or self.oci_path)

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"imageRef": self.image_ref}
        out.update(
            _drop_empty(
                [
                    ("forceInsecure", self.force_insecure),
                    ("tarballPath", self.tarball_path),
                    ("ociPath", self.oci_path),
                ]
            )
        )
        return out


@dataclass
class SigningKeyAndCertificate:
    """Secure Boot (UKI/PE) signer: file, Azure, AWS or signerd; every field is omitempty."""

    key_path: str = ""
    cert_path: str = ""
    azure_vault_url: str = ""
    azure_certificate_id: str = ""
    aws_kms_key_id: str = ""
    aws_region: str = ""
    aws_cert_path: str = ""
    aws_cert_arn: str = ""
    signer_address: str = ""

    def is_zero(self) -> bool:
        return not any(self.to_yaml_dict().values())

    def to_yaml_dict(self) -> dict[str, Any]:
        return _drop_empty(
            [
                ("keyPath", self.key_path),
                ("certPath", self.cert_path),
                ("azureVaultURL", self.azure_vault_url),
                ("azureCertificateID", self.azure_certificate_id),
                ("awsKMSKeyID", self.aws_kms_key_id),
                ("awsRegion", self.aws_region),
                ("awsCertPath", self.aws_cert_path),
                ("awsCertARN", self.aws_cert_arn),
                ("signerAddress", self.signer_address),
            ]
        )


@dataclass
class SigningKey:
    """PCR signer; every field is omitempty."""

    key_path: str = ""
    azure_vault_url: str = ""
    azure_key_id: str = ""
    azure_key_version: str = ""
    aws_kms_key_id: str = ""
    aws_region: str = ""
    signer_address: str = ""

    def is_zero(self) -> bool:
        return not any(self.to_yaml_dict().values())

    def to_yaml_dict(self) -> dict[str, Any]:
        return _drop_empty(
            [
                ("keyPath", self.key_path),
                ("azureVaultURL", self.azure_vault_url),
                ("azureKeyID", self.azure_key_id),
                ("azureKeyVersion", self.azure_key_version),
                ("awsKMSKeyID", self.aws_kms_key_id),
                ("awsRegion", self.aws_region),
                ("signerAddress", self.signer_address),
            ]
        )


@dataclass
class SecureBootAssets:
    """Signing keys plus optional prebuilt ``*.auth`` enrollment files (all three or none)."""

    secure_boot_signer: SigningKeyAndCertificate = field(default_factory=SigningKeyAndCertificate)
    pcr_signer: SigningKey = field(default_factory=SigningKey)
    platform_key_path: str = ""
    key_exchange_key_path: str = ""
    signature_key_path: str = ""
    include_well_known_certs: bool = False

    def to_yaml_dict(self) -> dict[str, Any]:
        # the two signer structs are not omitempty in Go: they appear even when empty ({}).
        out: dict[str, Any] = {
            "secureBootSigner": self.secure_boot_signer.to_yaml_dict(),
            "pcrSigner": self.pcr_signer.to_yaml_dict(),
        }
        out.update(
            _drop_empty(
                [
                    ("platformKeyPath", self.platform_key_path),
                    ("keyExchangeKeyPath", self.key_exchange_key_path),
                    ("signatureKeyPath", self.signature_key_path),
                    ("includeWellKnownCerts", self.include_well_known_certs),
                ]
            )
        )
        return out


@dataclass
class Input:
    kernel: FileAsset = field(default_factory=FileAsset)
    initramfs: FileAsset = field(default_factory=FileAsset)
    sd_stub: FileAsset = field(default_factory=FileAsset)
    sd_boot: FileAsset = field(default_factory=FileAsset)
    base_installer: ContainerAsset = field(default_factory=ContainerAsset)
    image_cache: ContainerAsset = field(default_factory=ContainerAsset)
    overlay_installer: ContainerAsset = field(default_factory=ContainerAsset)
    secure_boot: SecureBootAssets | None = None
    system_extensions: list[ContainerAsset] = field(default_factory=list)

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kernel": self.kernel.to_yaml_dict(),
            "initramfs": self.initramfs.to_yaml_dict(),
        }
        optional: list[tuple[str, FileAsset | ContainerAsset]] = [
            ("sdStub", self.sd_stub),
            ("sdBoot", self.sd_boot),
            ("baseInstaller", self.base_installer),
            ("imageCache", self.image_cache),
            ("overlayInstaller", self.overlay_installer),
        ]
        for key, asset in optional:
            if not asset.is_zero():
                out[key] = asset.to_yaml_dict()
        if self.secure_boot is not None:
            out["secureboot"] = self.secure_boot.to_yaml_dict()
        if self.system_extensions:
            out["systemExtensions"] = [e.to_yaml_dict() for e in self.system_extensions]
        return out


@dataclass
class Overlay:
    """``OverlayOptions``: the overlay installer to run and its free-form extra options."""

    name: str = ""
    image: ContainerAsset = field(default_factory=ContainerAsset)
    options: dict[str, Any] = field(default_factory=dict)

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "image": self.image.to_yaml_dict()}
        if self.options:
            out["options"] = dict(self.options)
        return out


@dataclass
class ImageOptions:
    """Options for ``kind: image``; ``disk_size`` is bytes (and grows in :func:`fill_defaults`)."""

    disk_size: int = 0
    disk_format: DiskFormat = DiskFormat.UNKNOWN
    disk_format_options: str = ""
    disk_sector_size: int = 0
    bootloader: Bootloader = Bootloader.NONE
    sd_boot_enroll_keys: SDBootEnrollKeys = SDBootEnrollKeys.IF_SAFE

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"diskSize": self.disk_size}
        # enum omitempty means "omit the Go zero value" (the first member), not an empty string.
        if self.disk_format is not DiskFormat.UNKNOWN:
            out["diskFormat"] = self.disk_format.value
        if self.disk_format_options:
            out["diskFormatOptions"] = self.disk_format_options
        if self.disk_sector_size:
            out["diskSectorSize"] = self.disk_sector_size
        if self.bootloader is not Bootloader.NONE:
            out["bootloader"] = self.bootloader.value
        if self.sd_boot_enroll_keys is not SDBootEnrollKeys.IF_SAFE:
            out["sdBootEnrollKeys"] = self.sd_boot_enroll_keys.value
        return out


@dataclass
class ISOOptions:
    sd_boot_enroll_keys: SDBootEnrollKeys = SDBootEnrollKeys.IF_SAFE
    bootloader: Bootloader = Bootloader.NONE

    def to_yaml_dict(self) -> dict[str, Any]:
        # sdBootEnrollKeys is *not* omitempty here, unlike in imageOptions.
        out: dict[str, Any] = {"sdBootEnrollKeys": self.sd_boot_enroll_keys.value}
        if self.bootloader is not Bootloader.NONE:
            out["bootloader"] = self.bootloader.value
        return out


@dataclass
class Output:
    kind: OutputKind = OutputKind.UNKNOWN
    image_options: ImageOptions | None = None
    iso_options: ISOOptions | None = None
    out_format: OutFormat = OutFormat.UNKNOWN

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.image_options is not None:
            out["imageOptions"] = self.image_options.to_yaml_dict()
        if self.iso_options is not None:
            out["isoOptions"] = self.iso_options.to_yaml_dict()
        out["outFormat"] = self.out_format.value
        return out


@dataclass
class Profile:
    """A whole imager profile; ``secureboot`` is a Go ``*bool`` (``None`` serialises as ``null``)."""

    base_profile_name: str = ""
    arch: str = ""
    platform: str = ""
    secureboot: bool | None = None
    name: str = ""
    version: str = ""
    customization: Customization = field(default_factory=Customization)
    input: Input = field(default_factory=Input)
    overlay: Overlay | None = None
    output: Output = field(default_factory=Output)

    @property
    def secureboot_enabled(self) -> bool:
        return bool(self.secureboot)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The document go-yaml would encode, as ordered plain dicts/lists/scalars."""
        out: dict[str, Any] = {}
        if self.base_profile_name:
            out["baseProfileName"] = self.base_profile_name
        out["arch"] = self.arch
        out["platform"] = self.platform
        out["secureboot"] = self.secureboot
        if self.name:
            out["name"] = self.name
        out["version"] = self.version
        if not self.customization.is_zero():
            out["customization"] = self.customization.to_yaml_dict()
        out["input"] = self.input.to_yaml_dict()
        if self.overlay is not None:
            out["overlay"] = self.overlay.to_yaml_dict()
        out["output"] = self.output.to_yaml_dict()
        return out
