"""Installer container images (``kind: installer``), as the Talos imager's ``outInstaller`` builds them.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/out.go`` (``outInstaller``) and
``pkg/imager/filemap``. The image (config, manifests) is modelled in
:mod:`worker.imager.installer_image`: the base layers (only the first one when there are exactly
two: older installers kept stock boot assets in layer 2), one artifacts layer and, for SBC
overlays, one overlay layer.

New layers are Go ``archive/tar`` streams (:data:`worker.imager.tar.GO`) reproduced byte for byte:
USTAR headers (PAX only for what USTAR cannot hold), entries sorted by path, uid/gid 0, mtime 0,
no record padding. Artifacts are written with mode 0 and no parent directory entries, exactly as
upstream (the installer runs as root, and runtimes create missing parents). Compression is gzip
with Go's header (no name, mtime 0, XFL 4 for BestSpeed) over zlib level 1: reproducible on one
zlib build, but not the same compressed bytes as Go's ``compress/flate`` (diff ids do match).

The result is written as a "docker save" archive by :mod:`worker.imager.docker_archive`.
Everything streams through files; no layer is ever held in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common.artifacts.manager import ImageLayers
from worker.imager import tar
from worker.imager.installer_image import (
    DOCKER_LAYER,
    OCI_LAYER,
    InstallerError,
    InstallerImage,
    Layer,
    hex_digest,
    image_config,
)

__all__ = ["OverlayLayerSource", "artifact_paths", "build_installer_image"]


@dataclass(frozen=True)
class OverlayLayerSource:
    """The target-arch overlay image (unpacked) and the board's choices for the overlay layer."""

    root: Path  # has artifacts/ and installers/<name>
    installer_name: str
    extra_options_yaml: bytes


def artifact_paths(arch: str, *, use_sdboot_for_uefi: bool, secureboot: bool) -> list[str]:
    """In-image paths of the artifacts layer, in upstream's order.

    sd-boot installers (≥1.10, or any secure boot build) carry ``systemd-boot.efi`` and the UKI
    (``vmlinuz.efi.signed`` for secure boot before 1.10); older ones ``vmlinuz`` and ``initramfs.xz``.
    """
    base = f"usr/install/{arch}/"
    if use_sdboot_for_uefi or secureboot:
        uki = base + "vmlinuz.efi" + (".signed" if secureboot and not use_sdboot_for_uefi else "")
        return [base + "systemd-boot.efi", uki]
    return [base + "vmlinuz", base + "initramfs.xz"]


# --- layer contents ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    source: Path | None  # None: a directory
    size: int = 0


def _write_tar(entries: Iterable[_Entry], out: tar.Sink) -> None:
    """A Go ``archive/tar`` stream: headers, data padded to 512, two zero blocks, no record padding."""
    writer = tar.TarWriter(out, tar.GO)
    for entry in entries:
        if entry.source is None:
            writer.add(tar.Member(entry.name, tar.DIRTYPE, entry.mode))
            continue
        try:
            writer.add_file(tar.Member(entry.name, tar.REGTYPE, entry.mode, entry.size), entry.source)
        except tar.ArchiveError as exc:
            raise InstallerError(exc.message) from exc
    writer.close()


# --- gzip layer blobs ------------------------------------------------------------------------------


class _LayerSink:
    """Gzips what is written into a file, hashing both sides (digest and diff id) on the way."""

    # Go's gzip header: no name, mtime 0, XFL 4 (BestSpeed), OS 255 (unknown).
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.compressed = hashlib.sha256()
        self.uncompressed = hashlib.sha256()
        self.crc = 0
        self.length = 0
        self.size = 0
        self._emit(self.HEADER)

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.compressed.update(data)
            self.size += len(data)

    def write(self, data: bytes) -> int:
        self.uncompressed.update(data)
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self._emit(self.compressor.compress(data))
        return len(data)

    def close(self) -> None:
        self._emit(self.compressor.flush(zlib.Z_FINISH))
        self._emit(struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF))


def _build_layer(entries: Sequence[_Entry], workdir: Path, name: str) -> Layer:
    """Writes one layer blob into ``workdir`` (sorted like filemap.Layer) and describes it."""
    ordered = sorted(entries, key=lambda e: e.name.encode())
    for previous, current in itertools.pairwise(ordered):
        if previous.name == current.name:
            raise InstallerError(f"duplicate path {current.name!r} in the {name} layer")
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / f".{name}.tar.gz.partial"
    with open(partial, "wb") as out:
        sink = _LayerSink(out)
        _write_tar(ordered, sink)
        sink.close()
    digest = "sha256:" + sink.compressed.hexdigest()
    path = workdir / f"{name}-{sink.compressed.hexdigest()}.tar.gz"
    os.replace(partial, path)
    return Layer(
        digest=digest,
        diff_id="sha256:" + sink.uncompressed.hexdigest(),
        size=sink.size,
        media_type=OCI_LAYER,
        path=path,
    )


def _artifact_entries(files: Sequence[tuple[str, Path]]) -> list[_Entry]:
    """filemap.File{ImagePath, SourcePath} with ImageMode unset: mode 0, no directory entries."""
    entries = []
    for image_path, source in files:
        name = image_path.lstrip("/")  # upstream: strings.TrimLeft(path, "/")
        if not name or ".." in name.split("/") or name.endswith("/"):
            raise InstallerError(f"invalid installer artifact path {image_path!r}")
        st = os.stat(source)
        if not stat.S_ISREG(st.st_mode):
            raise InstallerError(f"installer artifact {source} is not a regular file")
        entries.append(_Entry(name=name, mode=0, source=source, size=st.st_size))
    return entries


def _walk(source: Path, image_base: str) -> Iterator[_Entry]:
    """filemap.Walk: every entry below ``source`` (the root itself only when it is a file).

    Modes are the lstat permission bits; contents are read through symlinks, as os.Open does.
    """

    def entry(path: Path, image_path: str) -> _Entry:
        mode = stat.S_IMODE(os.lstat(path).st_mode) & 0o777
        st = os.stat(path)  # follows symlinks like upstream's os.Open + Stat
        if stat.S_ISDIR(st.st_mode):
            return _Entry(name=image_path, mode=mode, source=None)
        if not stat.S_ISREG(st.st_mode):
            raise InstallerError(f"overlay entry {path} is not a regular file or directory")
        return _Entry(name=image_path, mode=mode, source=path, size=st.st_size)

    if not source.is_dir() or source.is_symlink():
        yield entry(source, image_base)
        return
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for child in sorted(dirnames + filenames):
            path = Path(dirpath, child)
            rel = path.relative_to(source).as_posix()
            yield entry(path, f"{image_base}/{rel}")


def _overlay_entries(overlay: OverlayLayerSource, workdir: Path) -> list[_Entry]:
    """``overlay/artifacts/…``, ``overlay/installers/default`` and ``overlay/extra-options``."""
    name = overlay.installer_name
    if not name or "/" in name or name in (".", ".."):
        raise InstallerError(f"invalid overlay installer name {name!r}")
    installer = overlay.root / "installers" / name
    if not installer.is_file():
        raise InstallerError(f"overlay has no installer {name!r}")
    artifacts = overlay.root / "artifacts"
    if not artifacts.is_dir():
        raise InstallerError("overlay image has no artifacts directory")
    workdir.mkdir(parents=True, exist_ok=True)
    options = workdir / "overlay-extra-options"
    options.write_bytes(overlay.extra_options_yaml)
    return [
        *_walk(artifacts, "overlay/artifacts"),
        *_walk(installer, "overlay/installers/default"),
        _Entry(
            name="overlay/extra-options", mode=0o644, source=options, size=len(overlay.extra_options_yaml)
        ),
    ]


def _base_layers(base: ImageLayers, config: Mapping[str, Any]) -> list[Layer]:
    """The kept base layers with their diff ids (by position, as partial.BlobToDiffID does)."""
    rootfs = config.get("rootfs") or {}
    diff_ids = (rootfs.get("diff_ids") or []) if isinstance(rootfs, dict) else []
    if len(diff_ids) != len(base.layers):
        raise InstallerError(
            f"base installer has {len(base.layers)} layers but {len(diff_ids)} diff ids in its config"
        )
    kept = list(zip(base.layers, diff_ids, strict=True))
    if len(kept) == 2:
        # Talos ≥1.5 installers put the stock boot assets in layer 2: drop it, we add our own.
        kept = kept[:1]
    layers = []
    for (descriptor, path), diff_id in kept:
        digest, size = str(descriptor["digest"]), int(descriptor["size"])
        hex_digest(digest)
        hex_digest(str(diff_id))
        actual = os.stat(path).st_size
        if actual != size:
            raise InstallerError(f"base layer {digest} is {actual} bytes on disk, expected {size}")
        urls = descriptor.get("urls")
        layers.append(
            Layer(
                digest=digest,
                diff_id=str(diff_id),
                size=size,
                media_type=str(descriptor.get("mediaType") or DOCKER_LAYER),
                path=Path(path),
                annotations=descriptor.get("annotations") or None,
                urls=tuple(urls) if urls else None,
            )
        )
    return layers


def build_installer_image(
    base: ImageLayers,
    files: Sequence[tuple[str, Path]],
    *,
    arch: str,
    workdir: Path,
    created: str | None,
    overlay: OverlayLayerSource | None = None,
) -> InstallerImage:
    """The installer image for one arch: kept base layers + artifacts layer (+ overlay layer).

    ``files`` are (in-image path, source file); ``created`` replaces upstream's ``time.Now()`` so
    builds are reproducible (None keeps the base's). New layer blobs are written into ``workdir``.
    """
    if not files:
        raise InstallerError("an installer image needs boot artifacts")
    try:
        base_config = json.loads(base.config)
    except ValueError as e:
        raise InstallerError(f"base installer config is not JSON: {e}") from e
    if not isinstance(base_config, dict):
        raise InstallerError("base installer config is not a JSON object")
    layers = _base_layers(base, base_config)
    layers.append(_build_layer(_artifact_entries(files), workdir, "artifacts"))
    if overlay is not None:
        layers.append(_build_layer(_overlay_entries(overlay, workdir), workdir, "overlay"))
    config = image_config(base_config, arch, created, [layer.diff_id for layer in layers])
    return InstallerImage(config=config, layers=layers)
