"""Talos-like releases this factory has never seen, made from the fixture release for one version.

Each variant lives in a fresh namespace of the session's registry and is signed with the release key,
so a factory configured for it (``dataclasses.replace(release, namespace=…)`` then
``factory_overrides``) trusts it like the real one. Untouched images are copied by cross-repository
mounts (no bytes travel); changed ones are rewritten layer by layer, deterministically.

- :func:`imager_variant`: the imager image with files dropped (e.g. ``usr/lib/grub``) or replaced
  (e.g. an older ``systemd-stub.efi``).
- :func:`corrupt_extension_release`: an extensions catalog listing one extra, signed extension whose
  layer blob is then damaged in the registry's storage, so the registry serves bytes that do not match
  the digest the signed manifest names (the blob is new and unique: no other test reads it).
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from devstack import debian
from devstack.release import content
from devstack.release.oci import Image, layer
from devstack.release.release import UPSTREAM_REGISTRY, Publisher, Release, signing_key
from devstack.services import RegistryServer
from tests.support.oci_tools import MANIFEST_ACCEPT, get_manifest, mount_copy, put_manifest

__all__ = [
    "CorruptExtension",
    "bookworm_stub",
    "corrupt_extension_release",
    "imager_variant",
    "signature_tag",
]

IMAGER = "siderolabs/imager"
#: What a factory reads besides the imager for a version (installer-base only exists from 1.10).
COMPANIONS = ("siderolabs/extensions", "siderolabs/overlays", "siderolabs/installer-base")


def signature_tag(digest: str) -> str:
    return "sha256-" + digest.split(":", 1)[1] + ".sig"


def _copy_signed(registry: RegistryServer, source: str, target: str, repository: str, tag: str) -> bool:
    """Mount-copies ``repository:tag`` and its legacy signature; False when the source has no such tag."""
    url = f"http://{registry.host}/v2/{source}/{repository}/manifests/{tag}"
    if requests.head(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=60).status_code != 200:
        return False
    digest = mount_copy(registry.host, f"{source}/{repository}", f"{target}/{repository}", tag)
    mount_copy(registry.host, f"{source}/{repository}", f"{target}/{repository}", signature_tag(digest))
    return True


def _blob(registry: RegistryServer, repository: str, digest: str) -> bytes:
    publisher = Publisher(registry.host, "", signing_key(), None)
    data = publisher.client(repository).get_blob(digest, 1 << 31)
    assert data is not None and "sha256:" + hashlib.sha256(data).hexdigest() == digest, digest
    return data


def _rewrite_layer(
    blob: bytes, drop: Callable[[str], bool], replace: Mapping[str, bytes]
) -> tuple[bytes, bytes] | None:
    """``(gzip blob, tar)`` of the layer without the entries ``drop`` selects and with ``replace``'s
    files swapped in (same metadata); None when no regular file is left."""
    out = io.BytesIO()
    files = 0
    with (
        tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as source,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target,
    ):
        for member in source.getmembers():
            name = member.name.strip("/")
            if drop(name):
                continue
            if member.isfile():
                files += 1
                extracted = source.extractfile(member)
                assert extracted is not None
                data = replace[name] if name in replace else extracted.read()
                info = copy.copy(member)
                info.size = len(data)
                target.addfile(info, io.BytesIO(data))
            else:
                target.addfile(member)
    if not files:
        return None
    tar = out.getvalue()
    return gzip.compress(tar, compresslevel=6, mtime=0), tar


def imager_variant(
    registry: RegistryServer,
    release: Release,
    version: str,
    *,
    drop: Callable[[str], bool] = lambda name: False,
    replace: Mapping[str, bytes] | None = None,
    label: str = "variant",
) -> Release:
    """``release`` reduced to ``version``, its imager image rewritten: entries ``drop`` selects removed
    (a layer left without files is dropped whole), files in ``replace`` (layer path -> bytes) swapped;
    every variant of the index (amd64 and arm64) alike. Everything else is the fixture's own."""
    replace = dict(replace or {})
    namespace = f"{label}-{uuid.uuid4().hex[:8]}"
    for repository in COMPANIONS:
        _copy_signed(registry, release.namespace, namespace, repository, version)
    source = f"{release.namespace}/{IMAGER}"
    publisher = Publisher(registry.host, namespace, signing_key(), None)
    client = publisher.client(IMAGER)
    body, media_type, _ = get_manifest(registry.host, source, version)
    index = json.loads(body)
    replaced: set[str] = set()
    for entry in index["manifests"]:
        manifest = json.loads(get_manifest(registry.host, source, entry["digest"])[0])
        config = json.loads(_blob(registry, source, manifest["config"]["digest"]))
        layers, diff_ids = [], []
        for descriptor in manifest["layers"]:
            rewritten = _rewrite_layer(_blob(registry, source, descriptor["digest"]), drop, replace)
            if rewritten is None:
                continue
            blob, tar = rewritten
            digest = client.push_blob(blob)
            layers.append({**descriptor, "digest": digest, "size": len(blob)})
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            with tarfile.open(fileobj=io.BytesIO(tar)) as names:
                replaced |= {m.name.strip("/") for m in names.getmembers()} & set(replace)
        config["rootfs"]["diff_ids"] = diff_ids
        config["history"] = config.get("history", [])[: len(diff_ids)]
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        manifest["config"] = {
            **manifest["config"],
            "digest": client.push_blob(config_bytes),
            "size": len(config_bytes),
        }
        manifest["layers"] = layers
        new_body = json.dumps(manifest, separators=(",", ":")).encode()
        entry["digest"] = put_manifest(
            registry.host,
            f"{namespace}/{IMAGER}",
            "sha256:" + hashlib.sha256(new_body).hexdigest(),
            new_body,
            entry["mediaType"],
        )
        entry["size"] = len(new_body)
    assert replaced == set(replace), f"not in the imager image: {set(replace) - replaced}"
    new_index = json.dumps(index, separators=(",", ":")).encode()
    digest = put_manifest(registry.host, f"{namespace}/{IMAGER}", version, new_index, media_type)
    publisher.sign(IMAGER, digest)
    return dataclasses.replace(release, namespace=namespace, versions=[version], broken=[])


@dataclasses.dataclass(frozen=True)
class CorruptExtension:
    release: Release
    name: str  # e.g. siderolabs/corrupt-ext, as schematics name it
    image: str  # <registry>/<namespace>/<repository>@<index digest>, as the factory names it
    layer: str  # the damaged layer's digest


def corrupt_extension_release(registry: RegistryServer, release: Release, version: str) -> CorruptExtension:
    """``release`` reduced to ``version``, its extensions catalog listing one more extension, signed
    like every other, whose only layer the registry then serves damaged (its first bytes flipped, the
    size unchanged: the layer is no gzip stream any more, so unpacking fails before the digest can be
    checked at the end of the blob, and the factory must still name the digest as the cause)."""
    namespace = f"corrupt-ext-{uuid.uuid4().hex[:8]}"
    for repository in (IMAGER, "siderolabs/overlays", "siderolabs/installer-base"):
        _copy_signed(registry, release.namespace, namespace, repository, version)
    publisher = Publisher(registry.host, namespace, signing_key(), None)
    repository = "siderolabs/corrupt-ext"
    unique = uuid.uuid4().hex  # a blob no other test shares (blobs are stored once per registry)
    spec = content.ExtensionSpec(
        repository=repository,
        tag="1.0.0",
        description="Its layer blob is damaged in the registry: the factory must refuse it (502).",
        constraint=">= v1.0.0",
        entries=(content.file("rootfs/usr/local/share/corrupt-ext/README", f"{unique}\n" + "x" * 65536),),
    )
    labels = content.image_labels(version)
    pushed = publisher.publish(
        repository,
        spec.tag,
        [Image([layer(spec.layer_entries(a))], a, labels=labels) for a in spec.architectures],
    )
    lines = [(f"{UPSTREAM_REGISTRY}/{repository}:{spec.tag}", pushed.digest, spec.description)]
    publisher.publish(
        "siderolabs/extensions",
        version,
        [Image([layer(content.extensions_catalog(lines))], a, labels=labels) for a in ("amd64", "arm64")],
    )
    index = json.loads(get_manifest(registry.host, f"{namespace}/{repository}", pushed.digest)[0])
    amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
    manifest = json.loads(get_manifest(registry.host, f"{namespace}/{repository}", amd64["digest"])[0])
    (descriptor,) = manifest["layers"]
    hexdigest = descriptor["digest"].split(":", 1)[1]
    data = registry.data_dir / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    damaged = bytearray(data.read_bytes())
    damaged[:64] = bytes(b ^ 0xFF for b in damaged[:64])
    data.write_bytes(bytes(damaged))
    image = f"{registry.host}/{namespace}/{repository}@{pushed.digest}"
    return CorruptExtension(
        dataclasses.replace(release, namespace=namespace, versions=[version], broken=[]),
        repository,
        image,
        descriptor["digest"],
    )


def bookworm_stub() -> Path:
    """Debian bookworm's systemd-stub (systemd 252): it predates multi-profile UKIs (systemd 257)."""
    return debian.systemd_boot_tree("bookworm") / "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
