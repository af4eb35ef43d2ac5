"""The "schematic" virtual system extension every built asset carries (upstream HEAD's layout).

Booted Talos lists it as extension ``schematic`` with the schematic ID as its version, which is
how a running node reports the schematic it was built from; from Talos 1.7 its ``extraInfo`` holds
the canonical schematic YAML itself.
"""

from __future__ import annotations

import io

from common.schematic.emit import Struct, marshal_value
from worker.imager import tar

NAME = "schematic"
AUTHOR = "Image Factory"
DIRECTORIES = (
    "rootfs/",
    "rootfs/usr/",
    "rootfs/usr/local/",
    "rootfs/usr/local/share/",
    "rootfs/usr/local/share/schematic/",
)


def manifest(schematic_id: str, canonical: bytes | None, external_url: str) -> bytes:
    """``manifest.yaml`` as go-yaml marshals Talos' ``extensions.Manifest``.

    ``canonical`` is the schematic's canonical YAML, passed only for Talos >= 1.7 (``extraInfo``).
    """
    metadata: list[tuple[str, object]] = [
        ("name", NAME),
        ("version", schematic_id),
        ("author", f"{AUTHOR} ({external_url})"),
        # upstream builds this sentence from the extension's name, hence "built with schematic."
        ("description", f"Virtual extension which specifies the schematic of the image built with {NAME}."),
        ("compatibility", Struct((("talos", Struct((("version", ">= 1.0.0"),))),))),
    ]
    if canonical:
        metadata.append(("extraInfo", canonical.decode()))
    return marshal_value(Struct((("version", "v1alpha1"), ("metadata", Struct(tuple(metadata))))))


def tarball(schematic_id: str, canonical: bytes | None, external_url: str) -> bytes:
    """The extension as a plain tar: manifest, the rootfs directories, one empty marker file."""
    buffer = io.BytesIO()
    writer = tar.TarWriter(buffer, tar.USTAR)
    data = manifest(schematic_id, canonical, external_url)
    writer.add(tar.Member("manifest.yaml", tar.REGTYPE, 0o644, len(data)), data)
    for directory in DIRECTORIES:
        writer.add(tar.Member(directory, tar.DIRTYPE, 0o755))
    writer.add(tar.Member(f"rootfs/usr/local/share/schematic/{schematic_id}", tar.REGTYPE, 0o644))
    writer.close()
    return buffer.getvalue()
