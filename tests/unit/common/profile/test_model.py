"""Profile document shape: field order and omitempty.

``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile/*.go``, whose YAML is also the cache-key input
(``siderolabs/image-factory:internal/profile/hash.go``); see ``common/profile/model.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from common.profile import (
    Bootloader,
    ContainerAsset,
    Customization,
    DiskFormat,
    FileAsset,
    ImageOptions,
    Input,
    ISOOptions,
    MetaValue,
    OutFormat,
    Output,
    OutputKind,
    Overlay,
    Profile,
    SDBootEnrollKeys,
    SecureBootAssets,
    SigningKey,
    SigningKeyAndCertificate,
    fill_defaults,
    parse_path,
)
from common.profile.defaults import default_profile


def shape(value: Any) -> Any:
    """Order-sensitive view (dict equality in Python ignores order)."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("enum", "texts"),
    [
        (OutputKind, ["unknown", "iso", "image", "installer", "kernel", "initramfs", "uki", "cmdline"]),
        (OutFormat, ["unknown", "raw", ".tar.gz", ".xz", ".gz", ".zst"]),
        (DiskFormat, ["unknown", "raw", "qcow2", "vhd", "ova"]),
        (Bootloader, ["none", "dual-boot", "sd-boot", "grub"]),
        (SDBootEnrollKeys, ["if-safe", "manual", "force", "off"]),
    ],
)
def test_enum_texts_in_go_order(enum: Any, texts: list[str]) -> None:
    assert [m.value for m in enum] == texts
    assert [str(m) for m in enum] == texts


def test_minimal_profile() -> None:
    assert shape(Profile().to_yaml_dict()) == shape(
        {
            "arch": "",
            "platform": "",
            "secureboot": None,
            "version": "",
            "input": {"kernel": {"path": ""}, "initramfs": {"path": ""}},
            "output": {"kind": "unknown", "outFormat": "unknown"},
        }
    )


def test_parsed_path_document() -> None:
    prof = parse_path("aws-amd64-secureboot.qcow2.tar.gz")
    prof.version = "v1.10.0"
    assert yaml.safe_dump(prof.to_yaml_dict(), sort_keys=False) == (
        "arch: amd64\n"
        "platform: aws\n"
        "secureboot: true\n"
        "version: v1.10.0\n"
        "input:\n"
        "  kernel:\n"
        "    path: ''\n"
        "  initramfs:\n"
        "    path: ''\n"
        "output:\n"
        "  kind: image\n"
        "  imageOptions:\n"
        "    diskSize: 8589934592\n"
        "    diskFormat: qcow2\n"
        "    diskFormatOptions: cluster_size=8k\n"
        "  outFormat: .tar.gz\n"
    )


def test_every_field_in_order() -> None:
    prof = Profile(
        base_profile_name="metal",
        arch="arm64",
        platform="metal",
        secureboot=True,
        name="Talos",
        version="v1.12.0",
        customization=Customization(
            extra_kernel_args=["a=1", "b"],
            meta_contents=[MetaValue(0xA, '{"x":1}'), MetaValue(0, "")],
            embedded_machine_configuration="version: v1alpha1\n",
        ),
        input=Input(
            kernel=FileAsset("/k"),
            initramfs=FileAsset("/i"),
            sd_stub=FileAsset("/stub"),
            sd_boot=FileAsset("/boot"),
            base_installer=ContainerAsset(image_ref="r/installer-base:v1.12.0", oci_path="/oci"),
            image_cache=ContainerAsset(image_ref="cache", force_insecure=True),
            overlay_installer=ContainerAsset(oci_path="/ov"),
            secure_boot=SecureBootAssets(
                secure_boot_signer=SigningKeyAndCertificate(
                    key_path="/k.pem",
                    cert_path="/c.pem",
                    azure_vault_url="u",
                    azure_certificate_id="c",
                    aws_kms_key_id="a",
                    aws_region="r",
                    aws_cert_path="p",
                    aws_cert_arn="arn",
                    signer_address="unix:///s",
                ),
                pcr_signer=SigningKey(
                    key_path="/p.pem",
                    azure_vault_url="u",
                    azure_key_id="i",
                    azure_key_version="v",
                    aws_kms_key_id="a",
                    aws_region="r",
                    signer_address="unix:///p",
                ),
                platform_key_path="/PK.auth",
                key_exchange_key_path="/KEK.auth",
                signature_key_path="/db.auth",
                include_well_known_certs=True,
            ),
            system_extensions=[
                ContainerAsset(image_ref="ext", tarball_path="/e.tar"),
                ContainerAsset(image_ref="", oci_path="/e2"),
            ],
        ),
        overlay=Overlay(name="rpi_generic", image=ContainerAsset(oci_path="/o"), options={"configTxt": "x"}),
        output=Output(
            kind=OutputKind.IMAGE,
            image_options=ImageOptions(
                disk_size=1,
                disk_format=DiskFormat.RAW,
                disk_format_options="o",
                disk_sector_size=4096,
                bootloader=Bootloader.SD_BOOT,
                sd_boot_enroll_keys=SDBootEnrollKeys.FORCE,
            ),
            iso_options=ISOOptions(sd_boot_enroll_keys=SDBootEnrollKeys.OFF, bootloader=Bootloader.GRUB),
            out_format=OutFormat.XZ,
        ),
    )
    expected = {
        "baseProfileName": "metal",
        "arch": "arm64",
        "platform": "metal",
        "secureboot": True,
        "name": "Talos",
        "version": "v1.12.0",
        "customization": {
            "extraKernelArgs": ["a=1", "b"],
            "metaContents": [{"key": 10, "value": '{"x":1}'}, {"key": 0, "value": ""}],
            "embeddedMachineConfiguration": "version: v1alpha1\n",
        },
        "input": {
            "kernel": {"path": "/k"},
            "initramfs": {"path": "/i"},
            "sdStub": {"path": "/stub"},
            "sdBoot": {"path": "/boot"},
            "baseInstaller": {"imageRef": "r/installer-base:v1.12.0", "ociPath": "/oci"},
            "imageCache": {"imageRef": "cache", "forceInsecure": True},
            "overlayInstaller": {"imageRef": "", "ociPath": "/ov"},
            "secureboot": {
                "secureBootSigner": {
                    "keyPath": "/k.pem",
                    "certPath": "/c.pem",
                    "azureVaultURL": "u",
                    "azureCertificateID": "c",
                    "awsKMSKeyID": "a",
                    "awsRegion": "r",
                    "awsCertPath": "p",
                    "awsCertARN": "arn",
                    "signerAddress": "unix:///s",
                },
                "pcrSigner": {
                    "keyPath": "/p.pem",
                    "azureVaultURL": "u",
                    "azureKeyID": "i",
                    "azureKeyVersion": "v",
                    "awsKMSKeyID": "a",
                    "awsRegion": "r",
                    "signerAddress": "unix:///p",
                },
                "platformKeyPath": "/PK.auth",
                "keyExchangeKeyPath": "/KEK.auth",
                "signatureKeyPath": "/db.auth",
                "includeWellKnownCerts": True,
            },
            "systemExtensions": [
                {"imageRef": "ext", "tarballPath": "/e.tar"},
                {"imageRef": "", "ociPath": "/e2"},
            ],
        },
        "overlay": {
            "name": "rpi_generic",
            "image": {"imageRef": "", "ociPath": "/o"},
            "options": {"configTxt": "x"},
        },
        "output": {
            "kind": "image",
            "imageOptions": {
                "diskSize": 1,
                "diskFormat": "raw",
                "diskFormatOptions": "o",
                "diskSectorSize": 4096,
                "bootloader": "sd-boot",
                "sdBootEnrollKeys": "force",
            },
            "isoOptions": {"sdBootEnrollKeys": "off", "bootloader": "grub"},
            "outFormat": ".xz",
        },
    }
    assert shape(prof.to_yaml_dict()) == shape(expected)
    # deep copies are independent and equal
    clone = copy.deepcopy(prof)
    assert clone == prof
    clone.customization.extra_kernel_args.append("c")
    assert prof.customization.extra_kernel_args == ["a=1", "b"]


def test_omitempty_of_nested_zero_values() -> None:
    prof = Profile(
        customization=Customization(extra_kernel_args=[], meta_contents=[]),
        input=Input(secure_boot=SecureBootAssets(), system_extensions=[]),
        overlay=Overlay(),
        output=Output(kind=OutputKind.ISO, image_options=ImageOptions(), iso_options=ISOOptions()),
    )
    doc = prof.to_yaml_dict()
    assert "customization" not in doc
    assert shape(doc["input"]) == shape(
        {
            "kernel": {"path": ""},
            "initramfs": {"path": ""},
            "secureboot": {"secureBootSigner": {}, "pcrSigner": {}},
        }
    )
    assert shape(doc["overlay"]) == shape({"name": "", "image": {"imageRef": ""}})
    assert shape(doc["output"]) == shape(
        {
            "kind": "iso",
            "imageOptions": {"diskSize": 0},
            "isoOptions": {"sdBootEnrollKeys": "if-safe"},
            "outFormat": "unknown",
        }
    )
    assert Profile(secureboot=False).to_yaml_dict()["secureboot"] is False


def test_customization_with_only_embedded_config_is_emitted() -> None:
    doc = Profile(customization=Customization(embedded_machine_configuration="x")).to_yaml_dict()
    assert doc["customization"] == {"embeddedMachineConfiguration": "x"}


# Verbatim copies of talos pkg/imager/profile/testdata golden files (v1.14.0-rc.1).
GOLDEN = {
    ("azure", "amd64", "1.11.0"): """\
arch: amd64
platform: azure
secureboot: false
version: 1.11.0
input:
  kernel:
    path: /usr/install/amd64/vmlinuz
  initramfs:
    path: /usr/install/amd64/initramfs.xz
  sdStub:
    path: /usr/install/amd64/systemd-stub.efi
  sdBoot:
    path: /usr/install/amd64/systemd-boot.efi
  baseInstaller:
    imageRef: ghcr.io/siderolabs/installer-base:1.11.0
output:
  kind: image
  imageOptions:
    diskSize: 11736711168
    diskFormat: vhd
    diskFormatOptions: subformat=fixed,force_size
    bootloader: dual-boot
  outFormat: .zst
""",
    ("secureboot-iso", "arm64", "1.12.0"): """\
arch: arm64
platform: metal
secureboot: true
version: 1.12.0
input:
  kernel:
    path: /usr/install/arm64/vmlinuz
  initramfs:
    path: /usr/install/arm64/initramfs.xz
  sdStub:
    path: /usr/install/arm64/systemd-stub.efi
  sdBoot:
    path: /usr/install/arm64/systemd-boot.efi
  baseInstaller:
    imageRef: ghcr.io/siderolabs/installer-base:1.12.0
  secureboot:
    secureBootSigner:
      keyPath: /secureboot/uki-signing-key.pem
      certPath: /secureboot/uki-signing-cert.pem
    pcrSigner:
      keyPath: /secureboot/pcr-signing-key.pem
output:
  kind: iso
  isoOptions:
    sdBootEnrollKeys: if-safe
    bootloader: sd-boot
  outFormat: raw
""",
    ("metal-4k", "amd64", "1.9.0"): """\
arch: amd64
platform: metal
secureboot: false
version: 1.9.0
input:
  kernel:
    path: /usr/install/amd64/vmlinuz
  initramfs:
    path: /usr/install/amd64/initramfs.xz
  sdStub:
    path: /usr/install/amd64/systemd-stub.efi
  sdBoot:
    path: /usr/install/amd64/systemd-boot.efi
  baseInstaller:
    imageRef: ghcr.io/siderolabs/installer:1.9.0
output:
  kind: image
  imageOptions:
    diskSize: 1306525696
    diskFormat: raw
    diskSectorSize: 4096
    bootloader: grub
  outFormat: .zst
""",
    ("installer", "arm64", "1.9.0"): """\
arch: arm64
platform: metal
secureboot: false
version: 1.9.0
input:
  kernel:
    path: /usr/install/arm64/vmlinuz
  initramfs:
    path: /usr/install/arm64/initramfs.xz
  sdStub:
    path: /usr/install/arm64/systemd-stub.efi
  sdBoot:
    path: /usr/install/arm64/systemd-boot.efi
  baseInstaller:
    imageRef: ghcr.io/siderolabs/installer:1.9.0
output:
  kind: installer
  outFormat: raw
""",
}


@pytest.mark.parametrize(("name", "arch", "version"), list(GOLDEN))
def test_golden_default_profiles(name: str, arch: str, version: str) -> None:
    prof = default_profile(name)
    assert prof is not None
    prof.arch, prof.version = arch, version
    doc = fill_defaults(prof, exists=lambda _: False).to_yaml_dict()
    assert shape(doc) == shape(yaml.safe_load(GOLDEN[(name, arch, version)]))
    # PyYAML's block style with 2-space indent happens to match Dump() for these documents
    assert yaml.safe_dump(doc, sort_keys=False) == GOLDEN[(name, arch, version)]


def test_default_profile_is_a_fresh_copy() -> None:
    first = default_profile("metal")
    assert first is not None and first.output.image_options is not None
    first.output.image_options.disk_size = 0
    again = default_profile("metal")
    assert again is not None and again.output.image_options is not None
    assert again.output.image_options.disk_size == 1246 * 1024 * 1024
    assert default_profile("equinixMetal") is None
