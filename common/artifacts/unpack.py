"""Applies image layers onto a directory the way container runtimes do, without trusting them.

Whiteouts (``.wh.<name>``, ``.wh..wh..opq``) are honoured; names that would leave the destination
(absolute, ``..``, or through a symlink planted by an earlier entry) are refused; device nodes are
skipped; nothing is chowned, so no privileges are needed. SELinux labels from PAX records
(``SCHILY.xattr.security.selinux``) are returned rather than set, for the imager to re-apply.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO

from common.errors import FactoryError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
SELINUX_XATTR = "SCHILY.xattr.security.selinux"


class UnpackError(FactoryError):
    """A layer is malformed or tries to write outside its destination."""


def apply_layers(layers: Iterable[IO[bytes]], dest: Path) -> dict[str, str]:
    """Applies gzip/zstd/plain tar streams in order; returns ``{path: selinux label}``."""
    labels: dict[str, str] = {}
    root = dest.resolve()
    for stream in layers:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                _apply(archive, member, root, labels)
    return labels


def _safe_name(name: str) -> str | None:
    path = PurePosixPath(name.lstrip("/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnpackError(f"layer entry {name!r} leaves the image root")
    return "/".join(parts) or None


def _target(root: Path, relative: str) -> Path:
    target = root / relative
    parent = target.parent.resolve()
    if parent != root and root not in parent.parents:
        raise UnpackError(f"layer entry {relative!r} resolves outside the image root")
    return target


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _apply(archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path, labels: dict[str, str]) -> None:
    relative = _safe_name(member.name)
    if relative is None:
        return
    base = relative.rsplit("/", 1)[-1]
    if base == OPAQUE:
        directory = _target(root, relative).parent
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                _remove(child)
        return
    if base.startswith(WHITEOUT):
        hidden = relative[: -len(base)] + base[len(WHITEOUT) :]
        target = _target(root, hidden)
        if target.exists() or target.is_symlink():
            _remove(target)
        return
    target = _target(root, relative)
    label = member.pax_headers.get(SELINUX_XATTR)
    if label:
        labels[relative] = label
    if member.isdir():
        if target.exists() and not target.is_dir():
            _remove(target)
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, (member.mode & 0o7777) | stat.S_IRWXU)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        _remove(target)
    if member.issym():
        os.symlink(member.linkname, target)
    elif member.islnk():
        source_name = _safe_name(member.linkname)
        if source_name is None:
            raise UnpackError(f"hard link {relative!r} has no target")
        source = _target(root, source_name)
        if source.is_symlink() or not source.is_file():
            raise UnpackError(f"hard link {relative!r} points at {member.linkname!r}, not a regular file")
        os.link(source, target)
    elif member.isreg():
        extracted = archive.extractfile(member)
        if extracted is None:
            raise UnpackError(f"cannot read layer entry {relative!r}")
        with extracted, open(target, "wb") as out:
            shutil.copyfileobj(extracted, out, 1 << 20)
        os.chmod(target, (member.mode & 0o7777) | stat.S_IRUSR | stat.S_IWUSR)
    # character/block devices and FIFOs are skipped: nothing the factory uses, and they need root
