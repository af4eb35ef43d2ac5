"""Deterministic OCI images for the fixture release: same entries in, same digests out.

Layers are gzip'd tars with sorted entries, owner 0:0, mtime 0 and a zero gzip header time, so
the digests only change when the content does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from common.registry.client import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, RegistryClient

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CREATED = "2019-06-01T21:34:52Z"  # SOURCE_DATE_EPOCH 1559424892, as Talos builds use


@dataclass(frozen=True)
class Entry:
    """A file (``data``), directory (``data is None and not link``) or symlink (``link``)."""

    path: str
    data: bytes | None = None
    mode: int = 0o644
    link: str | None = None


def file(path: str, data: bytes | str, mode: int = 0o644) -> Entry:
    return Entry(path, data.encode() if isinstance(data, str) else data, mode)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, None, mode)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, None, 0o777, target)


def tree(root: Path, prefix: str = "") -> list[Entry]:
    """Entries for everything under ``root``, placed under ``prefix`` in the layer."""
    entries: list[Entry] = []
    for path in sorted(root.rglob("*")):
        name = "/".join(p for p in (prefix.strip("/"), path.relative_to(root).as_posix()) if p)
        if path.is_symlink():
            entries.append(symlink(name, str(path.readlink())))
        elif path.is_dir():
            entries.append(directory(name, path.stat().st_mode & 0o7777))
        else:
            entries.append(file(name, path.read_bytes(), path.stat().st_mode & 0o7777))
    return entries


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Adds the missing parent directories, as image builders do, and sorts by path."""
    by_path = {e.path.strip("/"): e for e in entries}
    for name in list(by_path):
        parts = name.split("/")
        for i in range(1, len(parts)):
            by_path.setdefault("/".join(parts[:i]), directory("/".join(parts[:i])))
    return [by_path[k] for k in sorted(by_path)]


def tar_bytes(entries: Iterable[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in with_parents(entries):
            info = tarfile.TarInfo(entry.path.strip("/"))
            info.mode = entry.mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                archive.addfile(info)
            elif entry.data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
    return buffer.getvalue()


@dataclass
class Layer:
    tar: bytes

    @cached_property
    def blob(self) -> bytes:
        return gzip.compress(self.tar, compresslevel=6, mtime=0)

    @cached_property
    def diff_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.tar).hexdigest()


def layer(entries: Iterable[Entry]) -> Layer:
    return Layer(tar_bytes(entries))


@dataclass
class Image:
    """One platform's image: its layers and the container config bits Talos images carry."""

    layers: Sequence[Layer]
    architecture: str = "amd64"
    env: Sequence[str] = ()
    entrypoint: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def config_bytes(self) -> bytes:
        config: dict[str, Any] = {
            "architecture": self.architecture,
            "created": CREATED,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": [
                {"created": CREATED, "created_by": "image-factory fixture release"} for _ in self.layers
            ],
        }
        if self.env:
            config["config"]["Env"] = list(self.env)
        if self.entrypoint:
            config["config"]["Entrypoint"] = list(self.entrypoint)
        if self.labels:
            config["config"]["Labels"] = dict(self.labels)
        return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Pushed:
    digest: str
    size: int
    media_type: str


def push_image(client: RegistryClient, image: Image, tag: str | None = None) -> Pushed:
    """Pushes blobs and the manifest (by digest, and by ``tag`` if given)."""
    config = image.config_bytes()
    descriptors = []
    for item in image.layers:
        blob = item.blob
        descriptors.append(
            {"mediaType": LAYER_MEDIA_TYPE, "size": len(blob), "digest": client.push_blob(blob)}
        )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": client.push_blob(config)},
        "layers": descriptors,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    client.put_manifest_bytes(tag or digest, body, OCI_MANIFEST)
    return Pushed(digest, len(body), OCI_MANIFEST)


def push_index(client: RegistryClient, images: Sequence[Image], tag: str | None = None) -> Pushed:
    """Pushes one manifest per platform and an OCI index over them."""
    manifests = []
    for image in images:
        pushed = push_image(client, image)
        manifests.append(
            {
                "mediaType": pushed.media_type,
                "size": pushed.size,
                "digest": pushed.digest,
                "platform": {"architecture": image.architecture, "os": "linux"},
            }
        )
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, separators=(",", ":")
    )
    data = body.encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    client.put_manifest_bytes(tag or digest, data, OCI_INDEX)
    return Pushed(digest, len(data), OCI_INDEX)
