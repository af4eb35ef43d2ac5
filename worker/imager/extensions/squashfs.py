"""Per-extension squashfs images (upstream ``Extension.Compress``): microcode, firmware, ``tar2sqfs``.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/extensions`` (``mksquashfs`` over an unpacked
extension after moving its microcode and firmware out). Here squashfs images are made with
``tar2sqfs`` from a tar stream (root ownership, fixed mtimes, SELinux labels as PAX xattr records)
because SELinux labels cannot be set on disk without privileges; what upstream moves is copied into
the staging tree and excluded from the stream, leaving the shared source tree untouched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

from common.artifacts.unpack import SELINUX_XATTR
from common.talos.quirks import Quirks
from worker.imager import tar
from worker.imager.extensions.loading import Extension
from worker.imager.extensions.manifest import ROOTFS, ExtensionError
from worker.imager.extensions.rootfs import CHUNK, copy_tree, mkdirs, mode_of, resolve
from worker.imager.tools import stream_to_tool

__all__ = ["MICROCODE", "SQUASHFS_BLOCK_SIZE", "compress", "make_squashfs"]

#: early-load CPU microcode: (glob under the firmware directory, blob in the uncompressed initramfs).
MICROCODE = (
    ("intel-ucode/*", "kernel/x86/microcode/GenuineIntel.bin"),
    ("amd-ucode/microcode_amd*.bin", "kernel/x86/microcode/AuthenticAMD.bin"),
)
#: mksquashfs' and tar2sqfs' default block size.
SQUASHFS_BLOCK_SIZE = 131072

_DEVICE_TYPES = {stat.S_IFCHR: tar.CHRTYPE, stat.S_IFBLK: tar.BLKTYPE, stat.S_IFIFO: tar.FIFOTYPE}


def _compressor_args(quirks: Quirks) -> list[str]:
    """mksquashfs ``-comp zstd -Xcompression-level 18`` (≥1.8) / ``-comp xz -Xdict-size 100%``.

    tar2sqfs 1.2.0 fails to parse ``dictsize=100%``, so the block size is spelled out.
    """
    if quirks.supports_zstd():
        return ["-c", "zstd", "-X", "level=18"]
    return ["-c", "xz", "-X", f"dictsize={SQUASHFS_BLOCK_SIZE}"]


def _tar_entries(root: Path, exclude: frozenset[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative name, path, lstat) for ``root`` ("" first) and everything below, sorted, dirs first."""

    def visit(directory: Path, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if rel in exclude:
                continue
            st = entry.stat(follow_symlinks=False)
            yield rel, Path(entry.path), st
            if stat.S_ISDIR(st.st_mode):
                yield from visit(Path(entry.path), rel + "/")

    yield "", root, root.lstat()
    yield from visit(root, "")


def _write_tar(
    out: IO[bytes],
    root: Path,
    *,
    epoch: int,
    labels: Mapping[str, str],
    modes: Mapping[str, int],
    exclude: frozenset[str],
) -> None:
    """A PAX tar of ``root``: uid/gid 0, mtimes ``epoch``, labels as ``SCHILY.xattr.security.selinux``."""
    links: dict[tuple[int, int], str] = {}
    writer = tar.TarWriter(out, tar.PAX)
    for rel, path, st in _tar_entries(root, exclude):
        name = rel or "."
        pax = {SELINUX_XATTR: labels[rel]} if rel in labels else {}
        base = tar.Member(name, mode=mode_of(modes, rel, st), mtime=epoch, pax=pax)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            writer.add(replace(base, typeflag=tar.DIRTYPE))
        elif kind == stat.S_IFLNK:
            writer.add(replace(base, typeflag=tar.SYMTYPE, linkname=os.readlink(path)))
        elif kind == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                writer.add(replace(base, typeflag=tar.LNKTYPE, linkname=links[key]))
            else:
                links[key] = rel
                writer.add_file(replace(base, typeflag=tar.REGTYPE, size=st.st_size), path)
        elif kind in _DEVICE_TYPES:
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            writer.add(replace(base, typeflag=_DEVICE_TYPES[kind], devmajor=major, devminor=minor))
        # sockets cannot be archived
    writer.close()


def make_squashfs(
    root: Path,
    out: Path,
    *,
    quirks: Quirks,
    epoch: int,
    labels: Mapping[str, str] | None = None,
    modes: Mapping[str, int] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> None:
    """``mksquashfs root out -all-root -noappend`` + the version's compressor, via ``tar2sqfs``.

    ``labels``/``modes`` are keyed relative to ``root`` (``""`` is the root itself); ``exclude`` drops
    those subtrees (what upstream moved out before packing).
    """
    cmd: list[str | os.PathLike[str]] = ["tar2sqfs", "--quiet", "--force", "--no-skip"]
    # mksquashfs' defaults: an NFS export table, no tail-end packing, 128 KiB blocks
    cmd += ["--exportable", "--no-tail-packing", "--block-size", str(SQUASHFS_BLOCK_SIZE)]
    cmd += [*_compressor_args(quirks), "--defaults", f"mode=0755,mtime={epoch}", out]

    def produce(pipe: IO[bytes]) -> None:
        _write_tar(pipe, root, epoch=epoch, labels=labels or {}, modes=modes or {}, exclude=exclude)

    stream_to_tool(cmd, produce)


# --------------------------------------------------------------------------------------------------
# per-extension processing (upstream Extension.Compress)


def _relative(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys under ``prefix/`` re-rooted at it (``prefix`` itself becomes ``""``)."""
    out = {}
    for key, value in mapping.items():
        key = key.strip("/")
        if key == prefix:
            out[""] = value
        elif key.startswith(prefix + "/"):
            out[key[len(prefix) + 1 :]] = value
    return out


def _glob(rootfs: Path, directory: str, pattern: str) -> list[str]:
    """Go ``filepath.Glob(dir/pattern)``: sorted names, dot files included; logical rootfs paths."""
    real = resolve(rootfs, directory)
    if not real.is_dir():
        return []
    names = sorted((n for n in os.listdir(real) if fnmatchcase(n, pattern)), key=os.fsencode)
    return [f"{directory}/{n}" for n in names]


def _append_file(ext: Extension, rel: str, out: IO[bytes]) -> None:
    real = resolve(ext.rootfs, rel)
    if not real.is_file():
        raise ExtensionError(f'extension "{ext.name}": microcode /{rel} is not a regular file')
    with open(real, "rb") as src:
        while chunk := src.read(CHUNK):
            out.write(chunk)


def _moved_away(rootfs: Path, rel: str) -> frozenset[str]:
    """What upstream's move of ``rel`` deletes, as tar paths: the directory (through symlinked parents);
    if ``rel`` itself is a symlink, the link and everything inside the directory it points to."""
    parent, _, leaf = rel.rpartition("/")
    path = resolve(rootfs, parent) / leaf
    gone = {path.relative_to(rootfs).as_posix()}
    if path.is_symlink():
        target = resolve(rootfs, rel)
        inside = target.relative_to(rootfs).as_posix()
        gone.update(f"{inside}/{name}" for name in os.listdir(target))
    return frozenset(gone)


def compress(ext: Extension, staging: Path, quirks: Quirks, epoch: int) -> str:
    """Microcode and firmware into ``staging``, the rest into ``staging/<directory>.sqsh``; returns its name.

    Microcode (``FW/intel-ucode/*``, ``FW/amd-ucode/microcode_amd*.bin``) is appended to
    ``kernel/x86/microcode/{GenuineIntel,AuthenticAMD}.bin``; the rest of ``FW`` (``/usr/lib/firmware``
    from 1.10, ``/lib/firmware`` before) goes to ``staging/FW``; neither ends up in the squashfs.
    """
    firmware = quirks.firmware_path().strip("/")
    consumed: set[str] = set()
    for pattern, blob in MICROCODE:
        directory, glob = pattern.rsplit("/", 1)
        matches = _glob(ext.rootfs, f"{firmware}/{directory}", glob)
        if not matches:
            continue
        target = staging / blob
        mkdirs(target.parent, 0o755)
        with open(target, "ab") as out:
            for rel in matches:
                _append_file(ext, rel, out)
        target.chmod(0o644)
        consumed.update(matches)

    exclude: frozenset[str] = frozenset()
    if resolve(ext.rootfs, firmware).exists():
        copy_tree(ext, firmware, staging / firmware, skip=frozenset(consumed))
        exclude = _moved_away(ext.rootfs, firmware)

    name = f"{ext.directory}.sqsh"
    make_squashfs(
        ext.rootfs,
        staging / name,
        quirks=quirks,
        epoch=epoch,
        labels=_relative(ext.source.labels, ROOTFS),
        modes=_relative(ext.source.modes, ROOTFS),
        exclude=exclude,
    )
    (staging / name).chmod(0o644)
    return name
