"""Shared builders for the extension tests: manifests, extension trees, squashfs inspection."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from worker.imager.extensions.loading import Extension, ExtensionSource, load

EPOCH = 1559424892


LABEL = "system_u:object_r:hello_t:s0"


def manifest(name: str = "hello", constraint: str = ">= v1.0.0", **extra: object) -> bytes:
    meta: dict[str, object] = {
        "name": name,
        "version": "1.0.0",
        "author": "tests",
        "description": "a test extension",
        "compatibility": {"talos": {"version": constraint}},
    }
    meta.update(extra)
    return yaml.safe_dump({"version": "v1alpha1", "metadata": meta}).encode()


def make_extension(root: Path, files: Mapping[str, bytes], *, data: bytes | None = None) -> Path:
    """An extension tree: manifest.yaml + rootfs/ with ``files`` (paths relative to rootfs)."""
    (root / "rootfs").mkdir(parents=True)
    (root / "manifest.yaml").write_bytes(data if data is not None else manifest(root.name))
    for rel, content in files.items():
        path = root / "rootfs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def tree_digest(root: Path) -> str:
    """Everything about a tree an accidental write would change: names, types, modes, mtimes, bytes."""
    h = hashlib.sha256()
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        h.update(f"{path.relative_to(root)}|{st.st_mode:o}|{st.st_mtime_ns}|{st.st_nlink}\n".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def sqfs_entries(image: Path) -> dict[str, tarfile.TarInfo]:
    """Members of a squashfs via ``sqfs2tar`` (the only listing that carries xattrs, as PAX records)."""
    data = subprocess.run(["sqfs2tar", str(image)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: m for m in archive}


def sqfs_read(image: Path, path: str) -> bytes:
    return subprocess.run(["rdsquashfs", "-c", path, str(image)], capture_output=True, check=True).stdout


def sqfs_xattrs(image: Path, path: str) -> str:
    return subprocess.run(
        ["rdsquashfs", "-x", path, str(image)], capture_output=True, check=True
    ).stdout.decode()


def loaded(tmp_path: Path, files: Mapping[str, bytes], directory: str = "0", **kw: object) -> Extension:
    root = make_extension(tmp_path / f"ext{directory}", files)
    return load(ExtensionSource(root=root, name=f"test/ext{directory}", **kw), directory)  # type: ignore[arg-type]
