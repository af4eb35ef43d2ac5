"""The installer image's model: its config and manifests as go-containerregistry marshals them.

The new image is go-containerregistry's ``mutate`` chain re-done by hand (upstream
``siderolabs/talos@v1.14.0-rc.1:pkg/imager/out.go``, ``outInstaller``): an empty OCI image with
``architecture``/``os`` set, the base installer's ``config`` section (re-marshalled the way Go's
``v1.Config`` struct does it), ``created``, then the layers. Each appended layer adds
``{"created":"0001-01-01T00:00:00Z"}`` to ``history`` and its diff id to ``rootfs.diff_ids``; the
base's own history is not kept. Everything is serialised with :func:`common.gojson.marshal`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import FactoryError
from common.gojson import marshal as go_json

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "ZERO_TIME",
    "InstallerError",
    "InstallerImage",
    "Layer",
    "hex_digest",
    "image_config",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
#: ``types.MediaType.IsDistributable() == false``: tarball.Write lists them under LayerSources.
_FOREIGN = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    }
)
#: Go's zero ``time.Time`` as encoding/json writes it (``v1.Time`` has no omitempty effect).
ZERO_TIME = "0001-01-01T00:00:00Z"


class InstallerError(FactoryError):
    """The base image or the inputs cannot make an installer image."""


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_digest(digest: str) -> str:
    """The hex part of a ``sha256:`` digest, refusing anything else (it becomes a file name)."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InstallerError(f"unsupported digest {digest!r}")
    return hexpart


@dataclass(frozen=True)
class Layer:
    """One layer blob on disk, with what a manifest descriptor and the config need to know."""

    digest: str  # sha256 of the compressed blob
    diff_id: str  # sha256 of the uncompressed tar
    size: int
    media_type: str
    path: Path
    # Carried over from a base layer's descriptor (partial.Descriptor keeps them).
    annotations: Mapping[str, str] | None = None
    urls: tuple[str, ...] | None = None

    def descriptor(self) -> dict[str, Any]:
        """The ``v1.Descriptor`` for the OCI manifest, in Go field order."""
        out: dict[str, Any] = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @property
    def distributable(self) -> bool:
        return self.media_type not in _FOREIGN


@dataclass(frozen=True)
class InstallerImage:
    """A single-platform image: config JSON plus layer blobs (what a registry frontend serves)."""

    config: bytes
    layers: list[Layer]

    @property
    def config_digest(self) -> str:
        return _sha256(self.config)

    def manifest(self) -> bytes:
        """The OCI manifest mutate would compute (OCI manifest and config media types)."""
        return go_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "size": len(self.config), "digest": self.config_digest},
                "layers": [layer.descriptor() for layer in self.layers],
            }
        )

    def docker_manifest(self) -> bytes:
        """The manifest of this image once read back from its docker archive (``tarball.Image``).

        The factory publishes *that* image, so its registry serves Docker schema 2 media types
        (config and layer descriptors rewritten; foreign layers keep their descriptor).
        """
        layers: list[dict[str, Any]] = []
        for layer in self.layers:
            if layer.distributable:
                layers.append({"mediaType": DOCKER_LAYER, "size": layer.size, "digest": layer.digest})
            else:
                layers.append(layer.descriptor())
        return go_json(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG,
                    "size": len(self.config),
                    "digest": self.config_digest,
                },
                "layers": layers,
            }
        )


# v1.Config fields in struct order, with their JSON kind.
_CONFIG_FIELDS: tuple[tuple[str, str], ...] = (
    ("AttachStderr", "bool"),
    ("AttachStdin", "bool"),
    ("AttachStdout", "bool"),
    ("Cmd", "strings"),
    ("Healthcheck", "health"),
    ("Domainname", "string"),
    ("Entrypoint", "strings"),
    ("Env", "strings"),
    ("Hostname", "string"),
    ("Image", "string"),
    ("Labels", "labels"),
    ("OnBuild", "strings"),
    ("OpenStdin", "bool"),
    ("StdinOnce", "bool"),
    ("Tty", "bool"),
    ("User", "string"),
    ("Volumes", "set"),
    ("WorkingDir", "string"),
    ("ExposedPorts", "set"),
    ("ArgsEscaped", "bool"),
    ("NetworkDisabled", "bool"),
    ("MacAddress", "string"),
    ("StopSignal", "string"),
    ("Shell", "strings"),
)
_HEALTH_FIELDS: tuple[tuple[str, str], ...] = (
    ("Test", "strings"),
    ("Interval", "int"),
    ("Timeout", "int"),
    ("StartPeriod", "int"),
    ("Retries", "int"),
)


def _go_struct(section: Mapping[str, Any], fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Unmarshal into a Go struct and marshal back: known fields only, struct order, omitempty.

    Go matches keys case-insensitively (the last matching key wins) and sorts map keys.
    """
    folded = {name.casefold(): (name, kind) for name, kind in fields}
    values: dict[str, Any] = {}
    for key, value in section.items():
        match = folded.get(key.casefold())
        if match is None or value is None:
            continue
        name, kind = match
        ok = {
            "bool": isinstance(value, bool),
            "string": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "strings": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "labels": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
            "set": isinstance(value, dict),
            "health": isinstance(value, dict),
        }[kind]
        if not ok:
            raise InstallerError(f"base installer config: {key} has an unexpected type")
        if kind == "labels":
            value = dict(sorted(value.items()))
        elif kind == "set":
            value = {k: {} for k in sorted(value)}
        elif kind == "health":
            value = _go_struct(value, _HEALTH_FIELDS)
        values[name] = value
    out: dict[str, Any] = {}
    for name, kind in fields:
        if name not in values:
            continue
        value = values[name]
        if kind != "health" and not value:  # omitempty (a non-nil *HealthConfig is always kept)
            continue
        out[name] = value
    return out


def image_config(base: Mapping[str, Any], arch: str, created: str | None, diff_ids: list[str]) -> bytes:
    """The new image's config, as json.Marshal(v1.ConfigFile) after the mutate chain."""
    section = base.get("config") or {}
    if not isinstance(section, dict):
        raise InstallerError("base installer config has no usable config section")
    if created is None:
        base_created = base.get("created")
        created = base_created if isinstance(base_created, str) and base_created else ZERO_TIME
    return go_json(
        {
            "architecture": arch,
            "created": created,
            "history": [{"created": ZERO_TIME} for _ in diff_ids],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": _go_struct(section, _CONFIG_FIELDS),
        }
    )
