"""Assembles the fixture Talos release and pushes it to a registry, signed like the real one.

The release has several Talos versions chosen to exercise every version-dependent path: xz
before 1.8, zstd from 1.8, installer-base from 1.10, talosctl-all from 1.11, a pre-release of the
newest minor, one version operators mark broken, and tags the version filter must drop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.config.options import RepositoryOptions
from common.cosign.registry import (
    SignatureLayer,
    push_bundle_referrer,
    push_legacy_signatures,
    simple_signing_payload,
)
from common.registry.client import RegistryClient
from common.talos.quirks import Quirks
from devstack.debian import grub_arm64_efi_dir, grub_dirs
from devstack.release import content
from devstack.release.oci import Image, Layer, Pushed, file, layer, push_index, tree
from devstack.release.payload import ARCHES, PayloadFlavour, build_payload, kernel_module, kernel_version
from devstack.release.sigstore_testing import FakeSigstore

log = logging.getLogger(__name__)

SEED = b"image-factory fixture release"
VERSIONS = ("v1.6.7", "v1.7.6", "v1.9.5", "v1.10.7", "v1.11.2", "v1.11.3", "v1.12.4", "v1.13.0-beta.1")
BROKEN = ("v1.11.2",)
# Tags the version filter must drop, each an alias of a real version's imager index.
FILTERED_TAGS = {
    "v1.1.0": "v1.7.6",  # below build.minTalosVersion
    "v1.12.0-rc.1": "v1.12.4",  # pre-release of an older minor
    "v1.13.0-alpha.1-5-gabcdef0": "v1.13.0-beta.1",  # not alpha|beta|rc.N
    "latest": "v1.12.4",  # not a version
}
UPSTREAM_REGISTRY = "ghcr.io"
SIGNING_IDENTITY = "release@siderolabs.com"


def signing_key(seed: bytes = SEED) -> ec.EllipticCurvePrivateKey:
    """The release's cosign key, derived from a seed so every build signs identically."""
    scalar = int.from_bytes(hashlib.sha256(seed + b":cosign").digest(), "big")
    return ec.derive_private_key(scalar % (2**255), ec.SECP256R1())


def public_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    return key.sign(payload, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


@dataclass
class Release:
    """What was pushed: enough for tests and ``make run`` to configure a factory against it."""

    registry: str
    namespace: str
    versions: list[str]
    broken: list[str]
    public_key: str  # path of cosign.pub
    trusted_root: str  # path of the fake Sigstore trusted_root.json ("" when not produced)
    images: dict[str, str] = field(default_factory=dict)  # "<repo>:<tag>" → digest
    extensions: dict[str, list[str]] = field(default_factory=dict)  # version → extension names
    kernel_version: str = ""  # amd64's
    kernel_versions: dict[str, str] = field(default_factory=dict)  # arch → kernel version

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> Release:
        return cls(**json.loads(path.read_text()))


class Publisher:
    """Pushes images and signs them (legacy cosign: key signature, plus keyless when available)."""

    def __init__(
        self, registry: str, namespace: str, key: ec.EllipticCurvePrivateKey, keyless: FakeSigstore | None
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self.key = key
        self.keyless = keyless
        self.images: dict[str, str] = {}

    def client(self, repository: str) -> RegistryClient:
        return RegistryClient(
            RepositoryOptions(
                registry=self.registry, namespace=self.namespace, repository=repository, insecure=True
            )
        )

    def publish(
        self, repository: str, tag: str, images: Sequence[Image], *, signed: bool = True, bundle: bool = False
    ) -> Pushed:
        """``bundle``: the keyless signature goes into a Sigstore bundle referrer (cosign's new format)."""
        client = self.client(repository)
        pushed = push_index(client, images, tag)
        self.images[f"{repository}:{tag}"] = pushed.digest
        if signed:
            self.sign(repository, pushed.digest, keyless_legacy=not bundle)
            if bundle and self.keyless is not None:
                document = self.keyless.sign_bundle(pushed.digest, identity=SIGNING_IDENTITY)
                push_bundle_referrer(client, pushed.digest, pushed.size, pushed.media_type, document)
        return pushed

    def sign(
        self,
        repository: str,
        digest: str,
        key: ec.EllipticCurvePrivateKey | None = None,
        *,
        keyless_legacy: bool = True,
    ) -> None:
        payload = simple_signing_payload(f"{UPSTREAM_REGISTRY}/{repository}", digest)
        layers = [SignatureLayer(payload, sign(key or self.key, payload))]
        if self.keyless is not None and key is None and keyless_legacy:
            signature, annotations = self.keyless.sign_legacy(payload, identity=SIGNING_IDENTITY)
            layers.append(
                SignatureLayer(
                    payload, signature, {k: v for k, v in annotations.items() if "cosignproject" not in k}
                )
            )
        push_legacy_signatures(self.client(repository), digest, layers)

    def alias(self, repository: str, tag: str, source_tag: str) -> None:
        client = self.client(repository)
        manifest = client.get_manifest(source_tag)
        assert manifest is not None, f"{repository}:{source_tag} was not pushed"
        client.put_manifest_bytes(tag, manifest.body, manifest.media_type)
        self.images[f"{repository}:{tag}"] = manifest.digest


def build_release(
    registry: str, out: Path, namespace: str = "", versions: Sequence[str] = VERSIONS
) -> Release:
    """Builds and pushes the whole release.

    Writes ``cosign.pub``, ``trusted_root.json`` and ``release.json`` into ``out``.
    """
    out.mkdir(parents=True, exist_ok=True)
    key = signing_key()
    (out / "cosign.pub").write_bytes(public_key_pem(key))
    keyless = FakeSigstore(SEED)
    trusted_root = str(out / "trusted_root.json")
    keyless.write_trusted_root(Path(trusted_root))
    publisher = Publisher(registry, namespace, key, keyless)
    kver = kernel_version()
    # Every architecture's kernel is fetched here, once, before the versions are built in parallel.
    modules = {arch: (kernel_version(arch), kernel_module("dummy", arch)) for arch in ARCHES}
    i386_pc, x86_64_efi = grub_dirs()
    grub_layer = layer(
        [
            *tree(i386_pc, "usr/lib/grub/i386-pc"),
            *tree(x86_64_efi, "usr/lib/grub/x86_64-efi"),
            *tree(grub_arm64_efi_dir(), "usr/lib/grub/arm64-efi"),
        ]
    )
    release = Release(
        registry=registry,
        namespace=namespace,
        versions=list(versions),
        broken=[b for b in BROKEN if b in versions],
        public_key=str(out / "cosign.pub"),
        trusted_root=trusted_root,
        kernel_version=kver,
        kernel_versions={arch: kv for arch, (kv, _) in modules.items()},
    )
    overlay = publisher.publish(
        "siderolabs/sbc-raspberrypi",
        "v0.1.0",
        [
            Image(
                [layer(content.overlay_entries())],
                arch,
                labels={"org.opencontainers.image.source": content.SOURCE},
            )
            for arch in ("amd64", "arm64")
        ],
    )
    rockchip = publisher.publish(
        content.ROCKCHIP_REPOSITORY,
        content.ROCKCHIP_TAG,
        [
            Image(
                [layer(content.rockchip_overlay_entries())],
                arch,
                labels={"org.opencontainers.image.source": content.SOURCE},
            )
            for arch in ("amd64", "arm64")
        ],
    )
    shared = _Shared(
        publisher, kver, modules, grub_layer, overlay.digest, _publish_hello(publisher), rockchip.digest
    )
    # Versions are independent; pushing is mostly registry round trips, so a few run at once.
    with ThreadPoolExecutor(max_workers=3) as pool:
        for version, names in zip(
            versions, pool.map(lambda ver: _publish_version(shared, ver), versions), strict=True
        ):
            release.extensions[version] = names
    for alias, source in FILTERED_TAGS.items():
        if source in versions:
            publisher.alias("siderolabs/imager", alias, source)
    release.images = publisher.images
    (out / "release.json").write_text(release.to_json())
    return release


HELLO_WORLD = content.hello_world().repository


@dataclass(frozen=True)
class _Shared:
    """Inputs every version's images use."""

    publisher: Publisher
    kernel_version: str
    modules: dict[str, tuple[str, bytes]]  # arch → (kernel version, dummy.ko)
    grub_layer: Layer
    overlay_digest: str
    hello: Pushed
    rockchip_digest: str = ""


def _publish_hello(publisher: Publisher) -> Pushed:
    """Pushed once, with version-independent labels, so every catalog lists the same digest."""
    spec = content.hello_world()
    labels = {"org.opencontainers.image.source": content.SOURCE}
    images = [Image([layer(spec.layer_entries())], arch, labels=labels) for arch in spec.architectures]
    return publisher.publish(spec.repository, spec.tag, images)


def _publish_version(shared: _Shared, version: str) -> list[str]:
    """Pushes one Talos version's images; returns the names its extensions catalog lists."""
    flavour = PayloadFlavour.for_version(version)
    labels = content.image_labels(version)
    env = [f"VERSION={version}"]
    with tempfile.TemporaryDirectory(prefix="fixture-payload-") as scratch:
        # Like real Talos, every variant of the imager index carries the payloads of both arches.
        payloads = {arch: build_payload(version, Path(scratch, arch), arch=arch) for arch in ARCHES}
        payload = payloads["amd64"]
        usr_install = layer(
            [
                *(
                    file(f"usr/install/{arch}/{path.name}", path.read_bytes())
                    for arch, built in payloads.items()
                    for path in (built.vmlinuz, built.initramfs, built.systemd_stub, built.systemd_boot)
                ),
                file("etc/modules.d/10-extra-modules.conf", "search extras built-in\n"),
            ]
        )
        stock_assets = layer(
            [
                file("usr/install/amd64/vmlinuz", payload.vmlinuz.read_bytes()),
                file("usr/install/amd64/initramfs.xz", payload.initramfs.read_bytes()),
            ]
        )
    shared.publisher.publish(
        "siderolabs/imager",
        version,
        [
            Image([usr_install, shared.grub_layer], arch, env, ["/bin/imager"], labels)
            for arch in ("amd64", "arm64")
        ],
    )
    unified = flavour.usr_merged
    base = layer(content.installer_entries(version, unified))
    if unified:
        shared.publisher.publish(
            "siderolabs/installer-base",
            version,
            [Image([base], arch, env, ["/bin/installer"], labels) for arch in ("amd64", "arm64")],
        )
    else:
        shared.publisher.publish(
            "siderolabs/installer",
            version,
            [
                Image([base, stock_assets], "amd64", env, ["/bin/installer"], labels),
                Image([base], "arm64", env, ["/bin/installer"], labels),
            ],
        )
    if Quirks(version).supports_talosctl():
        shared.publisher.publish(
            "siderolabs/talosctl-all",
            version,
            [
                Image([layer(content.talosctl_entries(version))], arch, labels=labels)
                for arch in ("amd64", "arm64")
            ],
        )
    lines = []
    for spec in content.extensions_for(version, flavour, shared.modules):
        if spec.repository == HELLO_WORLD:
            pushed = shared.hello
        else:
            pushed = shared.publisher.publish(
                spec.repository,
                spec.tag,
                [
                    Image([layer(spec.layer_entries(arch))], arch, labels=labels)
                    for arch in spec.architectures
                ],
            )
        lines.append((f"{UPSTREAM_REGISTRY}/{spec.repository}:{spec.tag}", pushed.digest, spec.description))
    if "-" in version:
        lines.extend(_negative_extensions(shared.publisher, labels))
    catalog = layer(content.extensions_catalog(lines))
    shared.publisher.publish(
        "siderolabs/extensions", version, [Image([catalog], a, labels=labels) for a in ("amd64", "arm64")]
    )
    names = [ref.split(":")[0].removeprefix(f"{UPSTREAM_REGISTRY}/") for ref, _, _ in lines]
    if not Quirks(version).supports_overlay():
        return names  # overlays (and their catalog image) start with Talos 1.7
    rockchip_ref = f"{UPSTREAM_REGISTRY}/{content.ROCKCHIP_REPOSITORY}:{content.ROCKCHIP_TAG}"
    overlays = content.overlays_catalog(
        [
            *(
                (name, f"{UPSTREAM_REGISTRY}/siderolabs/sbc-raspberrypi:v0.1.0", shared.overlay_digest)
                for name in content.OVERLAY_NAMES
            ),
            *((name, rockchip_ref, shared.rockchip_digest) for name in content.ROCKCHIP_NAMES),
        ]
    )
    shared.publisher.publish(
        "siderolabs/overlays",
        version,
        [Image([layer(overlays)], a, labels=labels) for a in ("amd64", "arm64")],
        bundle=True,
    )
    return names


def _negative_extensions(publisher: Publisher, labels: dict[str, str]) -> list[tuple[str, str, str]]:
    """Extensions that must be refused: unsigned, tampered after signing, signed by a stranger."""
    lines = []
    for name, description in (
        ("siderolabs/unsigned-ext", "Never signed: the factory must refuse it."),
        ("siderolabs/tampered-ext", "Its signature payload was altered after signing: must be refused."),
        ("siderolabs/foreign-ext", "Signed with a key nobody trusts: must be refused."),
    ):
        spec = content.ExtensionSpec(
            repository=name,
            tag="1.0.0",
            description=description,
            constraint=">= v1.0.0",
            entries=(file(f"rootfs/usr/local/share/{name.split('/')[1]}/README", description + "\n"),),
        )
        images = [Image([layer(spec.layer_entries())], a, labels=labels) for a in spec.architectures]
        pushed = publisher.publish(name, "1.0.0", images, signed=False)
        if name.endswith("tampered-ext"):
            payload = simple_signing_payload(f"{UPSTREAM_REGISTRY}/{name}", pushed.digest)
            signature = sign(publisher.key, payload)
            forged = payload.replace(b'"optional":null', b'"optional":{"note":"altered"}')
            push_legacy_signatures(publisher.client(name), pushed.digest, [SignatureLayer(forged, signature)])
        elif name.endswith("foreign-ext"):
            publisher.sign(name, pushed.digest, key=signing_key(b"somebody else"))
        lines.append((f"{UPSTREAM_REGISTRY}/{name}:1.0.0", pushed.digest, description))
    return lines


def factory_overrides(release: Release, *, keyless_only: bool = False) -> dict[str, Any]:
    """Dotted config keys that point a factory at this release (for ``factory_config(**...)``)."""
    overrides: dict[str, Any] = {
        "artifacts.core.registry": release.registry,
        "artifacts.core.namespace": release.namespace,
        "artifacts.core.insecure": True,
        "containerSignature.disabled": False,
        "containerSignature.publicKeyFile": "" if keyless_only else release.public_key,
        "containerSignature.trustedRootFile": release.trusted_root,
        "build.brokenTalosVersions": list(release.broken),
    }
    return overrides
