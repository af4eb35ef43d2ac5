"""The "docker save" archive of an installer image, as go-containerregistry's ``tarball.Write`` writes it.

Upstream's ``/image`` download (``siderolabs/talos@v1.14.0-rc.1:pkg/imager/out.go``, ``outInstaller``)
hands the image to ``tarball.Write``: config, each distinct layer, ``manifest.json``, all as Go
``archive/tar`` entries (:data:`worker.imager.tar.GO`). Layers stream from their blobs on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from common.gojson import marshal as go_json
from worker.imager import tar
from worker.imager.installer_image import InstallerError, InstallerImage, hex_digest

__all__ = ["write_docker_archive"]


def _archive_manifest(image: InstallerImage, repo_tags: list[str] | None) -> bytes:
    """manifest.json: ``[{"Config","RepoTags","Layers"[,"LayerSources"]}]`` as json.Marshal writes it."""
    item: dict[str, Any] = {
        "Config": image.config_digest,
        "RepoTags": repo_tags,
        "Layers": [f"{hex_digest(layer.digest)}.tar.gz" for layer in image.layers],
    }
    sources = {layer.diff_id: layer.descriptor() for layer in image.layers if not layer.distributable}
    if sources:
        item["LayerSources"] = dict(sorted(sources.items()))
    return go_json([item])


def write_docker_archive(image: InstallerImage, out: Path, *, repo_tags: list[str] | None) -> None:
    """A "docker save" tarball as go-containerregistry's ``tarball.Write`` produces it.

    Entries (regular files, mode 0644, mtime 0): ``sha256:<hex>`` config, ``<hex>.tar.gz`` per
    distinct layer, ``manifest.json``. The factory passes a digest reference: ``RepoTags`` null.
    """
    manifest = _archive_manifest(image, repo_tags)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with open(partial, "wb") as stream:
            writer = tar.TarWriter(stream, tar.GO)
            writer.add(tar.Member(image.config_digest, tar.REGTYPE, 0o644, len(image.config)), image.config)
            seen: set[str] = set()
            for layer in image.layers:
                hexpart = hex_digest(layer.digest)
                if hexpart in seen:
                    continue
                seen.add(hexpart)
                member = tar.Member(f"{hexpart}.tar.gz", tar.REGTYPE, 0o644, layer.size)
                try:
                    writer.add_file(member, layer.path)
                except tar.ArchiveError as exc:
                    actual = os.stat(layer.path).st_size
                    message = f"layer {layer.digest} is {actual} bytes, expected {layer.size}"
                    raise InstallerError(message) from exc
            writer.add(tar.Member("manifest.json", tar.REGTYPE, 0o644, len(manifest)), manifest)
            writer.close()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
