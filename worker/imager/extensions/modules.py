"""The combined ``modules.dep`` layer: depmod over the base kernel's modules plus every extension's.

Upstream: ``GenerateKernelModuleDependencyTreeExtension`` in
``siderolabs/talos@v1.14.0-rc.1:pkg/imager/extensions``, run in the imager container whose
``/etc/modules.d/10-extra-modules.conf`` tells depmod to search ``extras`` first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from common.talos.quirks import Quirks
from worker.imager.extensions.loading import Extension
from worker.imager.extensions.manifest import ExtensionError, Metadata
from worker.imager.extensions.rootfs import copy_file, copy_tree, mkdirs, resolve
from worker.imager.tools import ToolError, run

__all__ = ["DEPMOD_CONFIG", "MODULES_DEP", "build_modules_dep", "provides_modules"]

MODULES_DEP = "modules.dep"
#: ``/etc/modules.d/10-extra-modules.conf`` of the imager image.
DEPMOD_CONFIG = "search extras built-in\n"


def provides_modules(ext: Extension, quirks: Quirks) -> bool:
    """Whether the extension has a kernel modules directory (``/usr/lib/modules`` ≥1.10, else ``/lib``)."""
    return resolve(ext.rootfs, quirks.kernel_modules_path().strip("/")).exists()


def build_modules_dep(
    rootfs_sqsh: Path, extensions: Sequence[Extension], quirks: Quirks, workdir: Path
) -> tuple[Path, Metadata]:
    """depmod over the base modules plus every extension's; returns (layer rootfs, its metadata).

    The layer holds only the regenerated ``modules.*`` files of the one kernel in the base rootfs.
    """
    modules = quirks.kernel_modules_path().strip("/")
    base = workdir / "base"
    run(["unsquashfs", "-no-xattrs", "-d", base, "-f", "-n", rootfs_sqsh, modules])
    tree = base / modules
    kernels = sorted(os.listdir(tree)) if tree.is_dir() else []
    if len(kernels) != 1 or not (tree / kernels[0]).is_dir() or (tree / kernels[0]).is_symlink():
        raise ToolError(f"invalid kernel modules path in the base rootfs: /{modules} holds {kernels}")
    kver = kernels[0]
    _make_writable(tree / kver)
    for ext in extensions:
        if not resolve(ext.rootfs, f"{modules}/{kver}").is_dir():
            shipped = sorted(os.listdir(resolve(ext.rootfs, modules)))
            raise ExtensionError(
                f'extension "{ext.name}" has no kernel modules for kernel {kver} '
                f"(/{modules} holds {', '.join(shipped) or 'nothing'})"
            )
        copy_tree(ext, f"{modules}/{kver}", tree / kver)
    config = workdir / "10-extra-modules.conf"
    config.write_text(DEPMOD_CONFIG)
    basedir = str(tree).removesuffix("/lib/modules")
    run(["depmod", "--all", "--basedir", basedir, "--config", config, kver])

    layer = workdir / MODULES_DEP
    dest = layer / modules / kver
    mkdirs(dest, 0o755)
    layer.chmod(0o755)
    for name in sorted(os.listdir(tree / kver), key=os.fsencode):
        src = tree / kver / name
        if name.startswith("modules.") and src.is_file():
            copy_file(src, dest / name, src.stat().st_mode)
    metadata = Metadata(
        name=MODULES_DEP,
        version=kver,
        author="Talos Machinery",
        description="Combined modules.dep for all extensions",
    )
    return layer, metadata


def _make_writable(tree: Path) -> None:
    """unsquashfs keeps the rootfs' modes; the overlay copy and depmod need to write into it."""
    for directory, _, _ in os.walk(tree):
        os.chmod(directory, os.stat(directory).st_mode | 0o700)
