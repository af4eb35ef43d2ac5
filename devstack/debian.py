"""Real Debian packages (kernel, busybox, systemd-boot, GRUB) as inputs for the release fixture.

We cannot pull ``ghcr.io/siderolabs/imager``, so the fixture is made of Debian's own binaries. They are
fetched with ``apt-get download`` (never taken from the host's installed files, so the fixture does not
depend on what happens to be installed) and cached outside the repository, keyed by the exact package
version, so a warm run makes no network access and only a few ``apt-cache`` look-ups.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

__all__ = [
    "SYSTEM_PACKAGES",
    "DebianError",
    "cache_dir",
    "deb_file",
    "grub_dirs",
    "kernel_tree",
    "package_tree",
    "resolve_package",
    "systemd_boot_tree",
]

#: Debian packages the fixture builder, the QEMU helper and the boot tests run at runtime. The kernel,
#: busybox-static, systemd-boot-efi and grub-*-bin are downloaded as .debs instead (not installed).
SYSTEM_PACKAGES: tuple[str, ...] = (
    "apt",  # apt-get download, apt-cache
    "dpkg",  # dpkg-deb -x
    "kmod",  # depmod
    "squashfs-tools",  # mksquashfs, unsquashfs
    "xz-utils",
    "zstd",
    "gcc",  # compiles the fixture's static /init
    "libc6-dev",  # libc.a and the kernel UAPI headers for it
    "qemu-system-x86",
    "qemu-utils",  # qemu-img (qcow2 disks)
    "ovmf",
    "gdisk",  # sgdisk (GPT disks in the boot tests)
    # the imager's tools (worker/imager)
    "xorriso",  # xorrisofs, and grub-mkrescue's ISO writer
    "grub-common",  # grub-mkrescue, grub-mkimage
    "grub-pc-bin",  # i386-pc modules grub-mkrescue falls back to
    "grub-efi-amd64-bin",  # x86_64-efi modules, likewise
    "mtools",  # mcopy, mattrib (FAT images without mounting)
    "dosfstools",  # mkfs.vfat
    "squashfs-tools-ng",  # tar2sqfs: extension squashfs with SELinux xattrs from PAX records
    "cpio",
)

#: Metapackage -> prefix of the real package it depends on (the one carrying the files).
_METAPACKAGES = {"linux-image-amd64": "linux-image-"}

_lock = threading.Lock()
_updated = False


class DebianError(RuntimeError):
    """A Debian package could not be resolved, downloaded or extracted."""


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/image-factory``: shared by checkouts, survives ``make clean``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "image-factory"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _apt_update() -> None:
    """Fetch package lists once per process: a fresh machine (or container) often has none."""
    global _updated
    with _lock:
        if _updated:
            return
        _updated = True
        if os.geteuid() != 0:
            raise DebianError("apt package lists missing or stale and we are not root: run apt-get update")
        proc = _run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"])
        if proc.returncode != 0:
            raise DebianError(f"apt-get update failed: {proc.stderr.strip()[-2000:]}")


def _show(name: str) -> dict[str, str]:
    """The candidate version's control fields (``apt-cache show``), updating the lists once if needed."""
    for attempt in range(2):
        proc = _run(["apt-cache", "show", "--no-all-versions", name])
        fields: dict[str, str] = {}
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                if not line or line[0].isspace() or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key, value.strip())
        if fields.get("Version"):
            return fields
        if attempt == 0:
            _apt_update()
    raise DebianError(f"no installable candidate for Debian package {name!r}: {proc.stderr.strip()}")


def _lists_fingerprint() -> str:
    """Identifies the state of apt's package lists and pinning: candidates only change with it."""
    parts: list[str] = []
    for pattern in ("/var/lib/apt/lists/*Packages*", "/etc/apt/preferences*", "/etc/apt/preferences.d/*"):
        for path in sorted(glob.glob(pattern)):
            with contextlib.suppress(OSError):
                st = os.stat(path)
                parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _resolve_uncached(name: str) -> tuple[str, str, str]:
    fields = _show(name)
    prefix = _METAPACKAGES.get(name)
    if prefix is not None:
        deps = [d.strip().split(" ")[0] for d in fields.get("Depends", "").replace("|", ",").split(",")]
        real = [d for d in deps if d.startswith(prefix) and d != name]
        if len(real) != 1:
            raise DebianError(f"cannot resolve metapackage {name!r}: depends {deps}")
        return _resolve_uncached(real[0])
    return fields["Package"], fields["Version"], fields["Architecture"]


@functools.cache
def resolve_package(name: str) -> tuple[str, str, str]:
    """(package, version, architecture) of the candidate, following metapackages to the real package.

    ``apt-cache`` takes ~1 s per call where apt's binary cache is disabled (Debian container images), so
    answers are remembered on disk for as long as the package lists stay the same.
    """
    memo = cache_dir() / "resolved.json"
    fingerprint = _lists_fingerprint()
    known: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(memo.read_text())
    if known.get("lists") != fingerprint:
        known = {"lists": fingerprint, "packages": {}}
    hit = known["packages"].get(name)
    if isinstance(hit, list) and len(hit) == 3:
        return hit[0], hit[1], hit[2]
    result = _resolve_uncached(name)
    known["lists"] = _lists_fingerprint()  # _show may have run apt-get update
    known["packages"][name] = list(result)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, memo)
    return result


def deb_file(name: str) -> Path:
    """The cached .deb of the candidate version, downloaded (atomically) on first use."""
    package, version, arch = resolve_package(name)
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get download's own naming (epoch ':' URL-encoded), so a manual download is reused as-is.
    path = debs / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        cmd = ["apt-get", "download", f"{package}={version}"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]  # the _apt user cannot write to root's cache
        proc = _run(cmd, cwd=Path(tmp))
        if proc.returncode != 0:
            try:
                _apt_update()  # stale lists point at files the mirror no longer has
            except DebianError as exc:
                raise DebianError(
                    f"apt-get download {package}={version} failed: {proc.stderr.strip()}; {exc}"
                ) from exc
            proc = _run(cmd, cwd=Path(tmp))
        got = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or len(got) != 1:
            raise DebianError(f"apt-get download {package}={version} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(got[0], path)
    return path


def package_tree(name: str) -> Path:
    """The extracted root of a Debian package (``dpkg-deb -x``), cached per exact version.

    Extraction goes to a private temporary directory that is renamed into place, so concurrent callers
    (xdist workers, two test sessions) never see a half-extracted tree; the loser of a race discards
    its copy.
    """
    deb = deb_file(name)
    trees = cache_dir() / "trees"
    trees.mkdir(parents=True, exist_ok=True)
    final = trees / deb.name.removesuffix(".deb")
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(dir=trees, prefix=".extract-"))
    try:
        proc = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        if proc.returncode != 0:
            raise DebianError(f"dpkg-deb -x {deb} failed: {proc.stderr.strip()}")
        tmp.chmod(0o755)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def kernel_tree() -> tuple[Path, str]:
    """(extracted ``linux-image-<kver>`` tree, kernel version such as ``6.1.0-56-amd64``)."""
    package, _, _ = resolve_package("linux-image-amd64")
    kver = package.removeprefix("linux-image-")
    tree = package_tree(package)
    if not (tree / "lib/modules" / kver).is_dir() or not (tree / "boot" / f"vmlinuz-{kver}").is_file():
        raise DebianError(f"{package} has no lib/modules/{kver} or boot/vmlinuz-{kver}")
    return tree, kver


def systemd_boot_tree() -> Path:
    """Extracted systemd-boot-efi: ``usr/lib/systemd/boot/efi/{linuxx64.efi.stub,systemd-bootx64.efi}``."""
    return package_tree("systemd-boot-efi")


def grub_dirs() -> tuple[Path, Path]:
    """The extracted GRUB module directories ``(…/usr/lib/grub/i386-pc, …/usr/lib/grub/x86_64-efi)``."""
    pc = package_tree("grub-pc-bin") / "usr/lib/grub/i386-pc"
    efi = package_tree("grub-efi-amd64-bin") / "usr/lib/grub/x86_64-efi"
    for path in (pc, efi):
        if not path.is_dir():
            raise DebianError(f"{path} missing from the extracted GRUB package")
    return pc, efi
