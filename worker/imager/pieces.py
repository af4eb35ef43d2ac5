"""Pieces one build can hand to the next: today the initramfs with extensions.

Every boot asset of a schematic starts from the same initramfs (kernel arguments, platform and
output kind do not change it), and it is the costly step (a squashfs per extension, then the
compression). A user who boots the ISO and then installs pulls the installer next: with pieces the
installer build reuses the ISO's initramfs instead of making it again. Pieces live in the asset cache
under a key of their own — the sha256 of everything the bytes depend on — so a wrong hit is as
unlikely as a profile-hash collision, and a changed input is simply a miss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from common.profile.hash import OUR_ERRATA

__all__ = ["NO_PIECES", "Pieces", "initramfs_key"]

#: Bump to stop reusing pieces made by an older imager (their bytes would differ now).
PIECES_VERSION = "pieces v1"


class Pieces(Protocol):
    def fetch(self, key: str, dest: Path) -> bool:
        """Writes the piece ``key`` to ``dest``; False (nothing written) when there is none."""
        ...

    def store(self, key: str, path: Path, name: str) -> None:
        """Keeps ``path`` as the piece ``key`` (``name`` is its file name); failures are not fatal."""
        ...


class _NoPieces:
    def fetch(self, key: str, dest: Path) -> bool:
        return False

    def store(self, key: str, path: Path, name: str) -> None:
        return None


#: Every build makes its own pieces (tests, benchmarks, and a worker without a cache).
NO_PIECES: Pieces = _NoPieces()


def initramfs_key(
    *,
    imager_digest: str,
    arch: str,
    version: str,
    extension_digests: Sequence[str],
    schematic_id: str,
    schematic_yaml: bytes | None,
    external_url: str,
    embedded_config: str,
) -> str:
    """The inputs of ``build_initramfs``: the release's base initramfs (the imager image, whose
    ``created`` also dates the output), the extension images by digest in order, the schematic
    extension (its ID, canonical YAML and the factory URL it records) and the embedded config."""
    document = {
        "piece": "initramfs",
        "code": [PIECES_VERSION, *OUR_ERRATA],
        "imager": imager_digest,
        "arch": arch,
        "version": version,
        "extensions": list(extension_digests),
        "schematic": schematic_id,
        "schematicYAML": hashlib.sha256(schematic_yaml).hexdigest() if schematic_yaml is not None else None,
        "externalURL": external_url,
        "embeddedConfig": hashlib.sha256(embedded_config.encode()).hexdigest() if embedded_config else None,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
