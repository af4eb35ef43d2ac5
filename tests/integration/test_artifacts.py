"""The artifacts manager against the fixture release in a real registry (signatures, pulls, store)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from common.artifacts.catalog import ExtensionRef, TaggedRef
from common.artifacts.manager import ArtifactsManager
from common.artifacts.shared_tags import KEY as TAGS_KEY
from common.artifacts.shared_tags import RedisTagMemory
from common.artifacts.store import ArtifactStore
from common.cosign.source import verifier_from_config
from common.cosign.types import SignatureError
from common.errors import NotFoundError, UnavailableError
from common.talos import version as v
from devstack.release import content
from devstack.release.oci import Image
from devstack.release.oci import file as oci_file
from devstack.release.oci import layer as oci_layer
from devstack.release.payload import ARCHES, build_payload, kernel_module, kernel_version
from devstack.release.release import (
    FILTERED_TAGS,
    Publisher,
    Release,
    build_release,
    factory_overrides,
    signing_key,
)
from devstack.services import RedisServer, RegistryServer
from tests.support.artifacts import make_config, manager

pytestmark = pytest.mark.integration
V = v.Version.parse


def test_versions_follow_upstream_selection(fixture_release: Release, tmp_path: Path) -> None:
    m, _ = manager(fixture_release, tmp_path)
    offered = [v.tag(x) for x in m.talos_versions()]
    assert offered == [x for x in fixture_release.versions if x not in fixture_release.broken]
    assert not set(FILTERED_TAGS) & set(offered)
    assert [v.tag(b) for b in m.broken_versions()] == fixture_release.broken
    with pytest.raises(NotFoundError, match=r"^version 1\.11\.2 is not available$"):
        m.official_extensions(V("1.11.2"))


def test_catalogs(fixture_release: Release, tmp_path: Path) -> None:
    m, _ = manager(fixture_release, tmp_path)
    for version in ("v1.7.6", "v1.12.4"):
        extensions = m.official_extensions(v.parse_tolerant(version))
        assert [e.name for e in extensions] == fixture_release.extensions[version]
        assert all(str(e.ref).startswith(f"{fixture_release.registry}/siderolabs/") for e in extensions)
        assert all(e.author == "Sidero Labs" and e.description for e in extensions)
    overlays = m.official_overlays(V("1.9.5"))
    assert [o.name for o in overlays] == ["rpi_generic", "revpi_generic", "rock64"]
    assert str(overlays[0].ref) == "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0"
    assert [t.filename for t in m.talosctl_tuples(V("1.11.3"))][:2] == [
        "talosctl-darwin-amd64",
        "talosctl-darwin-arm64",
    ]
    assert m.talosctl_tuples(V("1.10.7")) == []


def test_imager_payload_is_byte_identical_to_what_was_built(fixture_release: Release, tmp_path: Path) -> None:
    m, _ = manager(fixture_release, tmp_path / "store")
    expected = build_payload("v1.9.5", tmp_path / "payload")
    with m.imager(V("1.9.5")) as imager:
        install = imager.fs / "usr/install/amd64"
        for name, path in (("vmlinuz", expected.vmlinuz), ("initramfs.xz", expected.initramfs)):
            assert (install / name).read_bytes() == path.read_bytes(), name
        assert (imager.fs / "usr/lib/grub/i386-pc/normal.mod").is_file()
        assert imager.config["config"]["Env"] == ["VERSION=v1.9.5"]
        first_manifest = imager.manifest_digest
    # A second pull is a store hit: same entry, nothing downloaded again.
    keys_before = m.store.keys()
    with m.imager(V("1.9.5")) as again:
        assert again.manifest_digest == first_manifest
    assert m.store.keys() == keys_before


def test_extension_images_follow_the_extension_contract(fixture_release: Release, tmp_path: Path) -> None:
    m, _ = manager(fixture_release, tmp_path)
    by_name = {e.name: e for e in m.official_extensions(V("1.10.7"))}
    with m.extension(by_name["siderolabs/dummy-module"], "amd64") as ext:
        assert sorted(p.name for p in ext.fs.iterdir()) == ["manifest.yaml", "rootfs"]
        manifest = yaml.safe_load((ext.fs / "manifest.yaml").read_text())
        assert manifest["version"] == "v1alpha1"
        assert manifest["metadata"]["compatibility"]["talos"]["version"] == ">= v1.10.7"
        module = ext.fs / f"rootfs/usr/lib/modules/{fixture_release.kernel_version}/extras/dummy.ko"
        assert module.read_bytes()[:4] == b"\x7fELF"
    old = {e.name: e for e in m.official_extensions(V("1.7.6"))}
    with m.extension(old["siderolabs/amd-ucode"], "arm64") as ext:
        assert (ext.fs / "rootfs/lib/firmware/amd-ucode").is_dir()  # before usr-merge (1.10)


def test_overlay_installer_speaks_the_protocol(fixture_release: Release, tmp_path: Path) -> None:
    m, _ = manager(fixture_release, tmp_path / "store")
    overlay = m.official_overlays(V("1.12.4"))[0]
    with m.overlay(overlay, "amd64") as image:
        installer = image.fs / "installers/rpi_generic"
        options = subprocess.run([installer, "get-options"], input=b"{}\n", capture_output=True, check=True)
        parsed = yaml.safe_load(options.stdout)
        assert parsed["name"] == "rpi_generic" and "console=ttyAMA0,115200" in parsed["kernelArgs"]
        disk = tmp_path / "disk.raw"
        disk.write_bytes(b"\0" * 4096)
        request = {
            "installDisk": str(disk),
            "mountPrefix": str(tmp_path / "mnt"),
            "artifactsPath": str(image.fs / "artifacts"),
            "extraOptions": {},
        }
        subprocess.run([installer, "install"], input=yaml.safe_dump(request).encode(), check=True)
        assert (tmp_path / "mnt/boot/EFI/fixup.dat").is_file()
        assert (tmp_path / "mnt/boot/EFI/u-boot.bin").is_file()
        bad = subprocess.run([installer, "install"], input=b"mountPrefix: /x\n", capture_output=True)
        assert bad.returncode != 0 and b"installDisk" in bad.stderr


def _negative(release: Release, m: ArtifactsManager, name: str) -> ExtensionRef:
    return next(e for e in m.official_extensions(V("1.13.0-beta.1")) if e.name == name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("siderolabs/unsigned-ext", "is not signed"),
        ("siderolabs/tampered-ext", "does not verify with the configured public key"),
        ("siderolabs/foreign-ext", "does not verify with the configured public key"),
    ],
)
def test_bad_signatures_are_refused_and_nothing_is_unpacked(
    fixture_release: Release, tmp_path: Path, name: str, reason: str
) -> None:
    m, _ = manager(fixture_release, tmp_path / "store")
    ref = _negative(fixture_release, m, name)
    keys_before = set(m.store.keys())
    with pytest.raises(SignatureError, match=reason) as caught, m.extension(ref, "amd64"):
        pass
    assert f"{fixture_release.registry}/fixture/{name}@{ref.digest}" in str(caught.value)
    assert caught.value.status == 502
    assert set(m.store.keys()) == keys_before


def test_keyless_verification_with_an_air_gapped_trust_root(fixture_release: Release, tmp_path: Path) -> None:
    config = make_config(factory_overrides(fixture_release, keyless_only=True))
    verifier = verifier_from_config(config.containerSignature)
    m = ArtifactsManager(config, ArtifactStore(tmp_path, 1024**3), verifier)
    assert [c.name for c in verifier.checks] == ["keyless"]
    with m.imager(V("1.12.4")) as imager:
        assert (imager.fs / "usr/install/amd64/vmlinuz").is_file()
    # overlay catalogs carry their keyless signature as a Sigstore bundle referrer (new format)
    assert [o.name for o in m.official_overlays(V("1.12.4"))] == ["rpi_generic", "revpi_generic", "rock64"]
    # wrong identity: the same signatures no longer verify
    strict = make_config(
        {
            **factory_overrides(fixture_release, keyless_only=True),
            "containerSignature.subjectRegExp": "@example\\.com$",
        }
    )
    m2 = ArtifactsManager(
        strict, ArtifactStore(tmp_path / "2", 1024**3), verifier_from_config(strict.containerSignature)
    )
    with pytest.raises(SignatureError, match="keyless"):
        m2.official_extensions(V("1.12.4"))


def test_disabled_verification_accepts_unsigned(fixture_release: Release, tmp_path: Path) -> None:
    m, _ = manager(fixture_release, tmp_path, **{"containerSignature.disabled": True})
    with m.extension(_negative(fixture_release, m, "siderolabs/unsigned-ext"), "amd64") as ext:
        assert (ext.fs / "manifest.yaml").is_file()


def test_tampered_blob_in_the_registry_is_refused(registry: RegistryServer, tmp_path: Path) -> None:
    """A registry serving bytes that do not match the digest the signed manifest names."""
    release = build_release(registry.host, tmp_path / "out", namespace="tamper", versions=["v1.12.4"])
    m, _ = manager(release, tmp_path / "store")
    ref = next(e for e in m.official_extensions(V("1.12.4")) if e.name == "siderolabs/hello-world")
    client = m.client(ref.ref.repository)
    index = client.get_manifest(ref.digest)
    assert index is not None
    manifest = client.get_manifest(index.document["manifests"][0]["digest"])
    assert manifest is not None
    layer = manifest.document["layers"][0]["digest"].split(":")[1]
    data = registry.data_dir / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    # the registry stores blobs once for all repositories: put the bytes back for other tests
    original = data.read_bytes()
    data.write_bytes(original[:-8] + b"tampered")
    try:
        with pytest.raises(Exception, match="does not match its digest"), m.extension(ref, "amd64"):
            pass
    finally:
        data.write_bytes(original)
    assert "tree-" + manifest.digest.replace(":", "-") not in set(m.store.keys())


def test_stale_version_list_is_served_when_the_registry_goes_away(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    now = [0.0]
    shared = RedisTagMemory(redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/13"))
    shared.redis.delete(TAGS_KEY)
    with RegistryServer(tmp_path / "registry") as private:
        release = build_release(private.host, tmp_path / "out", namespace="stale", versions=["v1.12.4"])
        m, config = manager(release, tmp_path / "store", clock=lambda: now[0])
        m.shared = shared
        before = m.talos_versions()
        assert V("1.12.4") in before
        assert m.versions_note() is None
    now[0] += 3600
    assert m.talos_versions() == before
    note = m.versions_note()
    assert note is not None and "refresh failed" in note and "unavailable" in note
    # A process that never listed (a replica started during the outage) serves the list another
    # process shared through Redis; without it, the outage is a 503.
    fresh = ArtifactsManager(config, ArtifactStore(tmp_path / "fresh", 1024**3), m.verifier, shared=shared)
    assert fresh.talos_versions() == before
    assert "refresh failed" in (fresh.versions_note() or "")
    alone = ArtifactsManager(config, ArtifactStore(tmp_path / "alone", 1024**3), m.verifier)
    with pytest.raises(UnavailableError, match="failed to list Talos versions"):
        alone.talos_versions()
    shared.redis.delete(TAGS_KEY)


def test_release_build_is_deterministic(
    fixture_release: Release, registry: RegistryServer, tmp_path: Path
) -> None:
    again = build_release(
        registry.host, tmp_path, namespace="fixture-again", versions=fixture_release.versions
    )
    assert again.images == fixture_release.images
    assert (tmp_path / "cosign.pub").read_bytes() == Path(fixture_release.public_key).read_bytes()
    summary = json.loads((tmp_path / "release.json").read_text())
    assert summary["versions"] == fixture_release.versions


def test_skopeo_reads_the_release(fixture_release: Release, skopeo: str) -> None:
    ref = f"docker://{fixture_release.registry}/fixture/siderolabs/imager:v1.12.4"
    raw = json.loads(
        subprocess.run(
            [skopeo, "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, check=True
        ).stdout
    )
    assert sorted(m["platform"]["architecture"] for m in raw["manifests"]) == ["amd64", "arm64"]
    info = json.loads(
        subprocess.run([skopeo, "inspect", "--tls-verify=false", ref], capture_output=True, check=True).stdout
    )
    assert info["Labels"]["alpha.talos.dev/version"] == "v1.12.4"
    digest = (
        "sha256:"
        + hashlib.sha256(
            subprocess.run(
                [skopeo, "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, check=True
            ).stdout
        ).hexdigest()
    )
    assert digest == fixture_release.images["siderolabs/imager:v1.12.4"]


def test_imager_carries_the_payload_of_both_arches(fixture_release: Release, tmp_path: Path) -> None:
    """Like real Talos, both variants of the imager index hold ``usr/install/{amd64,arm64}``."""
    m, _ = manager(fixture_release, tmp_path / "store")
    names = ["initramfs.xz", "systemd-boot.efi", "systemd-stub.efi", "vmlinuz"]
    assert fixture_release.kernel_versions == {arch: kernel_version(arch) for arch in ARCHES}
    for version in ("v1.7.6", "v1.12.4"):
        expected = {arch: build_payload(version, tmp_path / version / arch, arch=arch) for arch in ARCHES}
        for variant in ("amd64", "arm64"):
            with m.image_by_tag(m.components.imager, version, variant) as imager:
                for arch, payload in expected.items():
                    install = imager.fs / "usr/install" / arch
                    where = (version, variant, arch)
                    assert sorted(p.name for p in install.iterdir()) == names, where
                    files = (payload.vmlinuz, payload.initramfs, payload.systemd_stub, payload.systemd_boot)
                    for path in files:
                        assert (install / path.name).read_bytes() == path.read_bytes(), (*where, path.name)
                image = (imager.fs / "usr/install/arm64/vmlinuz").read_bytes()
                assert image[:2] == b"MZ" and image[0x38:0x3C] == b"ARM\x64"


def test_dummy_module_extension_has_an_image_per_arch(fixture_release: Release, tmp_path: Path) -> None:
    """The kernel-module extension carries each arch's own dummy.ko under that arch's kernel version."""
    m, _ = manager(fixture_release, tmp_path)
    for version, lib in (("v1.7.6", "lib"), ("v1.10.7", "usr/lib")):
        extensions = m.official_extensions(v.parse_tolerant(version))
        ref = next(e for e in extensions if e.name == "siderolabs/dummy-module")
        for arch in ARCHES:
            kver = fixture_release.kernel_versions[arch]
            with m.extension(ref, arch) as ext:
                assert sorted(p.name for p in (ext.fs / f"rootfs/{lib}/modules").iterdir()) == [kver]
                module = ext.fs / f"rootfs/{lib}/modules/{kver}/extras/dummy.ko"
                assert module.read_bytes() == kernel_module("dummy", arch), (version, arch)


def test_an_image_without_the_platform_variant_is_not_found(fixture_release: Release, tmp_path: Path) -> None:
    """Every fixture extension now has both arches, so a one-arch image is pushed for this path."""
    namespace = "fixture-one-arch"
    publisher = Publisher(fixture_release.registry, namespace, signing_key(), None)
    spec = content.ExtensionSpec(
        repository="siderolabs/amd64-only",
        tag="1.0.0",
        description="Only built for amd64.",
        constraint=">= v1.0.0",
        entries=(oci_file("rootfs/usr/local/share/amd64-only/README", "amd64 only\n"),),
        architectures=("amd64",),
    )
    pushed = publisher.publish(spec.repository, spec.tag, [Image([oci_layer(spec.layer_entries("amd64"))])])
    m, _ = manager(dataclasses.replace(fixture_release, namespace=namespace), tmp_path)
    ref = ExtensionRef(TaggedRef(fixture_release.registry, spec.repository, spec.tag), pushed.digest)
    with m.extension(ref, "amd64") as ext:
        assert (ext.fs / "rootfs/usr/local/share/amd64-only/README").read_text() == "amd64 only\n"
    with pytest.raises(NotFoundError, match="has no linux/arm64 variant"), m.extension(ref, "arm64"):
        pass
