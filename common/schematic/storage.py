"""Schematics in an OCI repository, laid out exactly as upstream stores them.

One blob holds the canonical YAML, so its digest is ``sha256:<id>``; a Docker schema 2 manifest
tagged ``<id>`` references it only to keep the blob from being garbage-collected. Reads go straight
to the blob by digest, so a repository written by the Go factory reads back here and vice versa.
"""

from __future__ import annotations

import hashlib
import json
import re

from common.registry.client import DOCKER_CONFIG, DOCKER_MANIFEST, RegistryClient

SCHEMATIC_MEDIA_TYPE = "application/vnd.sidero.dev-image.schematic"
VALID_ID = re.compile(r"^[0-9a-f]{64}$")
#: Upper bound for reading a stored schematic; the API refuses larger bodies long before this.
MAX_STORED_SIZE = 4 * 1024 * 1024


def is_valid_id(schematic_id: str) -> bool:
    return bool(VALID_ID.match(schematic_id))


def hashes_to(data: bytes, schematic_id: str) -> bool:
    return hashlib.sha256(data).hexdigest() == schematic_id


class SchematicStorage:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def exists(self, schematic_id: str) -> bool:
        return self.client.blob_exists(f"sha256:{schematic_id}")

    def get(self, schematic_id: str) -> bytes | None:
        """Stored bytes, or None when absent. The caller checks that they still hash to the ID."""
        return self.client.get_blob(f"sha256:{schematic_id}", MAX_STORED_SIZE)

    def put(self, schematic_id: str, canonical: bytes) -> None:
        layer_digest = self.client.push_blob(canonical, f"sha256:{schematic_id}")
        config = _image_config(layer_digest)
        config_digest = self.client.push_blob(config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": SCHEMATIC_MEDIA_TYPE, "size": len(canonical), "digest": layer_digest}],
        }
        self.client.put_manifest(schematic_id, manifest, DOCKER_MANIFEST)


def _image_config(layer_digest: str) -> bytes:
    """A minimal image config naming the one layer, as go-containerregistry's empty image + layer."""
    config = {
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "0001-01-01T00:00:00Z"}],
    }
    return json.dumps(config, separators=(",", ":")).encode()
