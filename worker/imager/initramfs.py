"""The initramfs with system extensions (upstream ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/extensions``).

Output layout: ``[uncompressed newc: kernel/x86/microcode/*.bin]`` (only if an extension carries
microcode) + ``[the base initramfs, byte for byte]`` + ``[newc compressed like Talos does: extensions.yaml,
0.sqsh…, modules.dep.sqsh, firmware]``. The kernel unpacks concatenated archives in order, and its
early microcode loader only looks at an uncompressed archive at the very start.

Unlike upstream, every mtime is the build's epoch so the same inputs always give the same bytes.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from common.talos.quirks import Quirks
from worker.imager import cpio
from worker.imager.extensions.config import extensions_yaml
from worker.imager.extensions.loading import Extension, ExtensionSource, load_all
from worker.imager.extensions.manifest import Metadata
from worker.imager.extensions.modules import MODULES_DEP, build_modules_dep, provides_modules
from worker.imager.extensions.squashfs import compress, make_squashfs
from worker.imager.tools import ToolError, stream_from_tool, stream_to_tool

__all__ = ["EXTENSIONS_YAML", "XZ_MAGIC", "build_initramfs", "compressor", "extract_member"]

log = logging.getLogger(__name__)

EXTENSIONS_YAML = "extensions.yaml"
ROOTFS_ASSET = "rootfs.sqsh"
XZ_MAGIC = b"\xfd7zX"
_EARLY = "kernel"


def compressor(quirks: Quirks) -> list[str]:
    """The appended archive's compressor, exactly upstream's flags (multi-threaded, deterministic)."""
    if quirks.supports_zstd():
        return ["zstd", "-T0", "-18", "-c", "--quiet"]
    return ["xz", "-v", "-C", "crc32", "-0", "-e", "-T", "0", "-z", "--quiet"]


def _decompressor(path: Path) -> list[str]:
    """Upstream's ``autoDecompress``: xz by magic, anything else is taken for zstd."""
    with open(path, "rb") as f:
        magic = f.read(4)
    return ["xz", "-d", "-c", "-q"] if magic == XZ_MAGIC else ["zstd", "-d", "-c", "-q"]


def extract_member(initramfs: Path, name: str, dest: Path) -> None:
    """Streams member ``name`` of the (compressed) base initramfs' first archive into ``dest``."""
    with open(initramfs, "rb") as src, stream_from_tool(_decompressor(initramfs), stdin=src) as stream:
        reader = cpio.NewcReader(stream)
        for member in reader:
            if member.name == name and member.is_file:
                with open(dest, "wb") as out:
                    reader.copy_data(out)
                for _ in reader:  # let the decompressor finish: upstream reads every record too
                    pass
                return
    raise ToolError(f"the base initramfs has no {name}")


def _layers_dicts(layers: Sequence[tuple[str, Metadata]]) -> list[dict[str, Any]]:
    return [{"image": image, "metadata": md.to_dict()} for image, md in layers]


def _log_extensions(extensions: Sequence[Extension]) -> None:
    for ext in extensions:
        md = ext.metadata
        log.info("extension %s: %s %s (%s) from %s", ext.directory, md.name, md.version, md.author, ext.name)


def _assemble(base: Path, staging: Path, out: Path, quirks: Quirks, epoch: int) -> None:
    names = list(cpio.walk(staging))
    early = [n for n in names if n == _EARLY or n.startswith(_EARLY + "/")]
    rest = [n for n in names if n != _EARLY and not n.startswith(_EARLY + "/")]
    with open(out, "wb") as f:
        if early:
            cpio.write_tree(f, staging, early, mtime=epoch)
        with open(base, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
    with open(out, "ab") as f:

        def produce(pipe: IO[bytes]) -> None:
            cpio.write_tree(pipe, staging, rest, mtime=epoch)

        stream_to_tool(compressor(quirks), produce, stdout=f)


def build_initramfs(
    *,
    base: Path,
    extensions: Sequence[ExtensionSource],
    version: str,
    arch: str,
    workdir: Path,
    out: Path,
    epoch: int,
) -> list[dict[str, Any]]:
    """Writes ``base`` + ``extensions`` for Talos ``version`` to ``out``; returns the extensions.yaml layers.

    Without extensions the base is copied untouched (upstream does not rebuild then). ``workdir`` holds
    all scratch files; the extension trees are only read.
    """
    quirks = Quirks(version)
    workdir.mkdir(parents=True, exist_ok=True)
    loaded = load_all(extensions, version)
    if not loaded:
        shutil.copyfile(base, out)
        return []
    log.info("rebuilding the %s initramfs for Talos %s with %d extensions", arch, version, len(loaded))
    _log_extensions(loaded)

    modules_dep: tuple[Path, Metadata] | None = None
    with_modules = [ext for ext in loaded if provides_modules(ext, quirks)]
    if with_modules:
        depmod_dir = workdir / "depmod"
        depmod_dir.mkdir()
        rootfs = depmod_dir / ROOTFS_ASSET
        extract_member(base, ROOTFS_ASSET, rootfs)
        modules_dep = build_modules_dep(rootfs, with_modules, quirks, depmod_dir)
        rootfs.unlink()

    staging = workdir / "initramfs"
    staging.mkdir()
    layers = [(compress(ext, staging, quirks, epoch), ext.metadata) for ext in loaded]
    if modules_dep is not None:
        layer_root, metadata = modules_dep
        image = f"{MODULES_DEP}.sqsh"
        make_squashfs(layer_root, staging / image, quirks=quirks, epoch=epoch)
        (staging / image).chmod(0o644)
        layers.append((image, metadata))
    (staging / EXTENSIONS_YAML).write_bytes(extensions_yaml(layers))
    (staging / EXTENSIONS_YAML).chmod(0o644)

    _assemble(base, staging, out, quirks, epoch)
    return _layers_dicts(layers)
