"""Paths inside an extension rootfs, and the copies upstream makes out of one.

Symlinks are resolved as if chrooted into the rootfs (absolute targets start at it), so an image
can never reach the host. Upstream *moves* firmware and modules out of an unpacked extension
(``siderolabs/talos@v1.14.0-rc.1:pkg/imager/extensions``); the trees here are shared read-only
caches, so they are copied instead, through the imager container's umask like upstream's copies.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from worker.imager.extensions.loading import Extension
from worker.imager.extensions.manifest import ROOTFS, ExtensionError

__all__ = ["CHUNK", "copy_file", "copy_tree", "mkdirs", "mode_of", "resolve"]

#: the imager container's umask, which upstream's copies of firmware and modules.* go through.
_UMASK = 0o022
CHUNK = 1 << 20
_MAX_SYMLINKS = 40


def resolve(rootfs: Path, rel: str) -> Path:
    """``rootfs/rel`` with every symlink resolved inside ``rootfs`` (absolute targets start at it)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise ExtensionError(f"too many levels of symbolic links under {rootfs}/{rel}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def mode_of(ext_modes: Mapping[str, int], key: str, st: os.stat_result) -> int:
    """The exact permission bits recorded for ``key``, else the ones on disk."""
    return ext_modes.get(key, st.st_mode & 0o7777)


def mkdirs(path: Path, mode: int) -> None:
    """``os.MkdirAll(path, mode)``: missing directories get ``mode`` (after the umask), others are kept."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir()
        directory.chmod(mode & ~_UMASK & 0o7777)


def copy_file(src: Path, dst: Path, mode: int) -> None:
    """Copies one regular file, replacing a regular file already there, with ``mode`` after the umask."""
    if dst.is_symlink() or (dst.exists() and not dst.is_file()):
        raise ExtensionError(f"cannot copy {src.name}: {dst} exists and is not a regular file")
    dst.unlink(missing_ok=True)
    with open(src, "rb") as s, open(dst, "wb") as d:
        while chunk := s.read(CHUNK):
            d.write(chunk)
    dst.chmod(mode & 0o777 & ~_UMASK)


def copy_tree(
    ext: Extension, rel: str, dest: Path, *, skip: frozenset[str] = frozenset(), stack: tuple[Path, ...] = ()
) -> None:
    """Upstream ``copyFiles``/``moveFiles`` from an extension: symlinks followed (inside the image)."""
    real = resolve(ext.rootfs, rel)
    try:
        st = real.stat()
    except OSError as exc:
        raise ExtensionError(f'extension "{ext.name}": /{rel}: {exc.strerror}') from exc
    mode = mode_of(ext.source.modes, f"{ROOTFS}/{rel}", st)
    if stat.S_ISDIR(st.st_mode):
        if real in stack:
            raise ExtensionError(f'extension "{ext.name}": /{rel}: symbolic link loop')
        if dest.exists() and not dest.is_dir():
            raise ExtensionError(f'extension "{ext.name}": /{rel} collides with a file of another extension')
        mkdirs(dest, mode | 0o700)
        for name in sorted(os.listdir(real), key=os.fsencode):
            child = f"{rel}/{name}"
            if child not in skip:
                copy_tree(ext, child, dest / name, skip=skip, stack=(*stack, real))
    elif stat.S_ISREG(st.st_mode):
        copy_file(real, dest, mode)
    else:
        raise ExtensionError(f'extension "{ext.name}": /{rel} is not a regular file or directory')
