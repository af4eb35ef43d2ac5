"""Profile hash (asset cache key): upstream's vectors (internal/profile/hash_test.go) and our salt."""

from __future__ import annotations

import pytest

from common.profile.hash import OUR_ERRATA, clean, errata, profile_hash, profile_yaml
from common.profile.model import (
    ContainerAsset,
    Customization,
    FileAsset,
    Input,
    OutFormat,
    Output,
    OutputKind,
    Overlay,
    Profile,
    SecureBootAssets,
)


def installer_profile(version: str, base: str) -> Profile:
    return Profile(
        platform="metal",
        secureboot=False,
        arch="amd64",
        version=version,
        customization=Customization(extra_kernel_args=["foo", "bar"]),
        input=Input(
            kernel=FileAsset(f"/tmp/foo/kernel-amd64-{version}"),
            initramfs=FileAsset(f"/tmp/foo/initramfs-amd64-{version}"),
            base_installer=ContainerAsset(
                image_ref=f"ghcr.io/siderolabs/{base}:{version}",
                oci_path=f"/tmp/foo/installer-amd64-{version}.oci",
            ),
            system_extensions=[
                ContainerAsset(oci_path="/var/run/amd64-sha256:1234567890.oci"),
                ContainerAsset(
                    tarball_path="/path/some/c36dec8c835049f60b10b8e02c689c47f775a07e9a9d909786e3aacb30af9675.tar"
                ),
            ],
        ),
        output=Output(kind=OutputKind.INSTALLER, out_format=OutFormat.RAW),
    )


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (Profile(), "9bd6614d6687009c562d4ad92f89fbb603d843cda17fea099a00d7df80344f31"),
        (
            installer_profile("v1.5.3", "installer"),
            "28a53cf4327cdaac8d42b9801191bc91a296980cacd51b2b1922be9c84fe1c19",
        ),
        (
            installer_profile("v1.10.0", "installer-base"),
            "1b58cf317b4b56ecf0df6857f73659f558add4b75c2a26ad2fcd7de5e41c2670",
        ),
    ],
)
def test_upstream_vectors(profile: Profile, expected: str) -> None:
    assert profile_hash(profile, ours=False) == expected
    assert profile_hash(profile) != expected  # our salt keeps a shared cache from mixing builds


def test_clean_matches_upstream_and_leaves_the_input_alone() -> None:
    prof = installer_profile("v1.5.3", "installer")
    cleaned = clean(prof)
    assert cleaned.input.kernel.path == "kernel-amd64-v1.5.3"
    assert cleaned.input.base_installer == ContainerAsset(
        image_ref="installer:v1.5.3", oci_path="installer-amd64-v1.5.3.oci"
    )
    assert [e.oci_path or e.tarball_path for e in cleaned.input.system_extensions] == [
        "amd64-sha256:1234567890.oci",
        "c36dec8c835049f60b10b8e02c689c47f775a07e9a9d909786e3aacb30af9675.tar",
    ]
    assert prof.input.kernel.path == "/tmp/foo/kernel-amd64-v1.5.3"


def test_machine_local_paths_do_not_change_the_key() -> None:
    a = installer_profile("v1.10.0", "installer-base")
    b = installer_profile("v1.10.0", "installer-base")
    b.input.kernel.path = "/elsewhere/kernel-amd64-v1.10.0"
    b.input.system_extensions[0].oci_path = "/other/store/amd64-sha256:1234567890.oci"
    b.input.system_extensions[0].force_insecure = True
    assert profile_hash(a) == profile_hash(b)
    b.input.system_extensions[0].oci_path = "/var/run/amd64-sha256:999.oci"  # another extension digest
    assert profile_hash(a) != profile_hash(b)


def test_overlay_paths_are_cleaned_unlike_upstream() -> None:
    """Upstream keeps a random temp dir in overlay paths, so SBC assets are never cache hits."""
    a = Profile(arch="arm64", platform="metal", overlay=Overlay(name="rpi_generic"))
    b = Profile(arch="arm64", platform="metal", overlay=Overlay(name="rpi_generic"))
    a.overlay.image.oci_path = "/tmp/image-factory1/amd64-sha256:abc"  # type: ignore[union-attr]
    b.overlay.image.oci_path = "/tmp/image-factory2/amd64-sha256:abc"  # type: ignore[union-attr]
    a.input.overlay_installer.oci_path = "/tmp/image-factory1/arm64-sha256:abc"
    b.input.overlay_installer.oci_path = "/tmp/image-factory2/arm64-sha256:abc"
    assert profile_hash(a) == profile_hash(b)


def test_prebuilt_auth_paths_do_not_count_but_signer_paths_do() -> None:
    def sb(key: str, pk: str) -> Profile:
        assets = SecureBootAssets(platform_key_path=pk)
        assets.secure_boot_signer.key_path = key
        return Profile(arch="amd64", secureboot=True, input=Input(secure_boot=assets))

    assert profile_hash(sb("/k.pem", "/a/PK.auth")) == profile_hash(sb("/k.pem", "/b/PK.auth"))
    assert profile_hash(sb("/k.pem", "")) != profile_hash(sb("/other.pem", ""))


def test_errata_order_and_conditions() -> None:
    prof = Profile(platform="vmware", arch="arm64", overlay=Overlay(name="x"))
    prof.output.kind = OutputKind.INSTALLER
    assert list(errata(prof)) == [
        "installer fix #8107",
        "overlay installer layout fix",
        "vmware build fix #164",
        "installer tarball fix #9772",
        "installer tarball fix #10278",
        "overlay profile fix #11093",
        "vmware arm64 kernel args fix #11735",
        "overlay extra kernel args fix #376",
        *OUR_ERRATA,
    ]
    iso = Profile(platform="metal", arch="amd64", secureboot=True)
    iso.output.kind = OutputKind.ISO
    assert list(errata(iso)) == ["secureboot iso gen fix #9565", *OUR_ERRATA]


def test_overlay_options_are_a_sorted_map() -> None:
    prof = Profile(overlay=Overlay(name="x", options={"zeta": 1, "alpha": {"b": 2, "a": 1}}))
    text = profile_yaml(prof).decode()
    assert "options:\n        alpha:\n            a: 1\n            b: 2\n        zeta: 1\n" in text
