"""The boot payload of the miniature Talos release fixture, made from real Debian packages.

It imitates ``ghcr.io/siderolabs/imager:<v>``'s ``/usr/install/<arch>/{vmlinuz, initramfs.xz,
systemd-stub.efi, systemd-boot.efi}`` (amd64 and arm64) closely enough that the factory's imager code
cannot tell the difference in shape: the initramfs is one compressed newc cpio (xz before 1.8, zstd
from 1.8) holding exactly ``init`` and ``rootfs.sqsh``, modules live under ``/usr/lib/modules`` from
1.10 (``/lib/modules`` before), the rootfs carries an os-release with the Talos version, and
systemd-stub/-boot are bookworm's 252 before 1.10 but trixie's ≥ 257 from 1.10 (multi-profile UKIs,
see ``systemd_boot_suite``).
Booted, ``init`` (a small static C program, ``init/init.c``) mounts the rootfs and runs
``init/report.sh``, which consumes extensions, firmware, microcode and META the way Talos does and prints
one ``IMAGE-FACTORY-BOOT-REPORT <json>`` line.

The arm64 payload has the same shape from Debian's arm64 packages (kernel ``Image``, its modules,
``linuxaa64.efi.stub``/``systemd-bootaa64.efi``), and the same ``init`` cross-compiled with Debian's
``gcc-aarch64-linux-gnu`` (static, against ``libc6-dev-arm64-cross``), so it boots under
``qemu-system-aarch64 -M virt`` and prints the same report.

Everything is deterministic (fixed mtimes, sorted entries, root ownership, single-threaded compressors),
and finished payloads are cached per (version, arch, inputs) so a warm build is a file copy.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import semver

from common.talos.quirks import Quirks
from devstack import debian

__all__ = [
    "ARCHES",
    "ARM64_IMAGE_MAGIC",
    "BOOT_MODULES",
    "INIT_MODULES",
    "SOURCE_DATE_EPOCH",
    "CpioEntry",
    "Payload",
    "PayloadError",
    "PayloadFlavour",
    "build_payload",
    "compress",
    "decompress",
    "kernel_module",
    "kernel_version",
    "make_squashfs",
    "module_kinds",
    "newc_archive",
    "normalise_kernel",
    "read_newc",
    "systemd_boot_suite",
]

#: Talos' fixed SOURCE_DATE_EPOCH: every mtime in the payload.
SOURCE_DATE_EPOCH = 1559424892

#: The architectures of a payload, as the imager image's ``usr/install/<arch>`` names them.
ARCHES: tuple[str, ...] = ("amd64", "arm64")
#: systemd-boot-efi's file names per architecture: (stub, boot loader).
_EFI_FILES = {
    "amd64": ("linuxx64.efi.stub", "systemd-bootx64.efi"),
    "arm64": ("linuxaa64.efi.stub", "systemd-bootaa64.efi"),
}
#: arm64 ``Image`` header (Documentation/arch/arm64/booting.rst): the magic at 0x38.
ARM64_IMAGE_MAGIC = b"ARM\x64"

#: Modules the report script loads (with their dependencies) so disks, CDs, overlayfs and efivarfs work.
BOOT_MODULES: tuple[str, ...] = (
    "loop",
    "squashfs",
    "overlay",
    "efivarfs",
    "sd_mod",
    "sr_mod",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "ata_piix",
    "ahci",
    "nvme",
)
#: What /init itself needs before the rootfs exists (embedded into it when they are modules).
INIT_MODULES: tuple[str, ...] = ("loop", "squashfs")

#: Where /init mounts rootfs.sqsh (Talos' place for it when extensions are present) and what it runs.
ROOT_MOUNT = "/layers/root"
REPORT_PATH = "/usr/libexec/image-factory/report.sh"

_INIT_DIR = Path(__file__).with_name("init")
#: Bump to invalidate cached payloads when the build changes in a way the input hash cannot see.
_FORMAT = "payload-1"

Compression = Literal["xz", "zstd"]


class PayloadError(RuntimeError):
    """The payload could not be built (missing tool, unexpected kernel package, ...)."""


# --------------------------------------------------------------------------------------------------
# flavour


def _parse_version(version: str) -> semver.Version:
    try:
        return semver.Version.parse(version.removeprefix("v"))
    except ValueError as exc:
        raise PayloadError(f"not a Talos version: {version!r}") from exc


@dataclass(frozen=True)
class PayloadFlavour:
    """The version-dependent shape of the payload (compressor and file system layout)."""

    compression: Compression
    usr_merged: bool

    @classmethod
    def for_version(cls, version: str) -> PayloadFlavour:
        """Flavour of a Talos version; a pre-release counts as its core version (1.8.0-alpha.1 is zstd)."""
        _parse_version(version)
        quirks = Quirks(version)
        return cls(compression="zstd" if quirks.supports_zstd() else "xz", usr_merged=quirks.usr_merge())

    @property
    def modules_dir(self) -> str:
        """Kernel modules, relative to the root (no leading slash)."""
        return "usr/lib/modules" if self.usr_merged else "lib/modules"

    @property
    def firmware_dir(self) -> str:
        """Firmware, relative to the root (no leading slash)."""
        return "usr/lib/firmware" if self.usr_merged else "lib/firmware"


@dataclass(frozen=True)
class Payload:
    """The four files of ``/usr/install/<arch>`` as built into a destination directory."""

    version: str
    kernel_version: str
    flavour: PayloadFlavour
    vmlinuz: Path
    initramfs: Path
    systemd_stub: Path
    systemd_boot: Path
    arch: str = "amd64"


# --------------------------------------------------------------------------------------------------
# newc cpio


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive; ``data`` is the content (the target for a symlink)."""

    name: str
    mode: int
    data: bytes = b""

    @classmethod
    def file(cls, name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
        """A regular file."""
        return cls(name, stat.S_IFREG | perm, data)

    @classmethod
    def directory(cls, name: str, perm: int = 0o755) -> CpioEntry:
        """A directory (the kernel does not create missing parents, so list them first)."""
        return cls(name, stat.S_IFDIR | perm)

    @classmethod
    def symlink(cls, name: str, target: str) -> CpioEntry:
        """A symbolic link."""
        return cls(name, stat.S_IFLNK | 0o777, target.encode())


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def newc_archive(entries: Iterable[CpioEntry], *, mtime: int = SOURCE_DATE_EPOCH) -> bytes:
    """A newc ("070701") archive as ``cpio --reproducible -H newc -R +0:+0`` writes it.

    Inode numbers count from 1, device numbers are 0, owners root, the trailer is followed by zero
    padding to a 512-byte block like GNU cpio's. Entries are written in the order given.
    """
    out = bytearray()

    def member(ino: int, name: str, mode: int, nlink: int, data: bytes) -> None:
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(raw), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out.extend(header + raw + b"\0" * _pad4(len(header) + len(raw)))
        out.extend(data + b"\0" * _pad4(len(data)))

    for ino, entry in enumerate(entries, start=1):
        name = entry.name.strip("/")
        if not name or name.startswith("../") or "/../" in f"/{name}/":
            raise ValueError(f"bad cpio member name {entry.name!r}")
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        member(ino, name, entry.mode, nlink, b"" if stat.S_ISDIR(entry.mode) else entry.data)
    member(0, "TRAILER!!!", 0, 1, b"")
    out.extend(b"\0" * ((512 - len(out) % 512) % 512))
    return bytes(out)


def read_newc(data: bytes, offset: int = 0) -> tuple[list[CpioEntry], int]:
    """Members of the newc archive at ``offset`` and the offset just past its trailer (padding skipped)."""
    entries: list[CpioEntry] = []
    pos = offset
    while True:
        header = data[pos : pos + 110]
        if len(header) < 110 or header[:6] not in (b"070701", b"070702"):
            raise ValueError(f"no newc header at offset {pos}")
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += _pad4(pos - offset)
        body = data[pos : pos + size]
        pos += size + _pad4(size)
        if name == "TRAILER!!!":
            while pos < len(data) and data[pos] == 0:
                pos += 1
            return entries, pos
        entries.append(CpioEntry(name, mode, body))


# --------------------------------------------------------------------------------------------------
# compression and squashfs


def _run(cmd: Sequence[str], *, stdin: bytes | None = None, cwd: Path | None = None) -> bytes:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"} | {"LC_ALL": "C"}
    try:
        proc = subprocess.run(list(cmd), input=stdin, cwd=cwd, env=env, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise PayloadError(f"{cmd[0]} not found: install devstack.debian.SYSTEM_PACKAGES") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-3000:]
        raise PayloadError(f"{' '.join(cmd[:4])}… exited {proc.returncode}: {err}")
    return proc.stdout


def compress(data: bytes, compression: Compression) -> bytes:
    """Talos' initramfs compressors (``xz -C crc32 -0 -e``, ``zstd -18``), single-threaded: reproducible."""
    if compression == "xz":
        return _run(["xz", "-C", "crc32", "-0", "-e", "-T", "1", "-z", "-c", "-q"], stdin=data)
    if compression == "zstd":
        return _run(["zstd", "-18", "--single-thread", "-c", "-q"], stdin=data)
    raise ValueError(f"unknown compression {compression!r}")


def decompress(data: bytes) -> bytes:
    """Inverse of :func:`compress`, told apart by magic (``FD 37 7A 58`` is xz, as the imager does)."""
    if data[:4] == b"\xfd7zX":
        return lzma.decompress(data, format=lzma.FORMAT_XZ)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return _run(["zstd", "-d", "-c", "-q"], stdin=data)
    raise ValueError("neither xz nor zstd data")


def make_squashfs(src: Path, dest: Path, compression: Compression) -> None:
    """``mksquashfs`` as Talos runs it (``-all-root -noappend``, its compressor settings), fixed times."""
    if compression == "xz":
        comp = ["-comp", "xz", "-Xdict-size", "100%"]
    else:
        comp = ["-comp", "zstd", "-Xcompression-level", "18"]
    epoch = str(SOURCE_DATE_EPOCH)
    dest.unlink(missing_ok=True)
    fixed = [
        "-all-root",
        "-noappend",
        "-no-progress",
        "-quiet",
        "-no-xattrs",
        "-mkfs-time",
        epoch,
        "-all-time",
        epoch,
    ]
    _run(["mksquashfs", str(src), str(dest), *fixed, *comp])


# --------------------------------------------------------------------------------------------------
# kernel modules


def _check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise PayloadError(f"no payload for architecture {arch!r} (only {', '.join(ARCHES)})")


def kernel_version(arch: str = "amd64") -> str:
    """The fixture's kernel version, e.g. ``6.1.0-56-amd64`` (Debian's current kernel ABI)."""
    _check_arch(arch)
    return debian.kernel_tree(arch)[1]


def _norm(name: str) -> str:
    return name.removesuffix(".ko").replace("-", "_")


@functools.cache
def _module_index(arch: str = "amd64") -> dict[str, Path]:
    """Normalised module name -> .ko file in the downloaded kernel package."""
    tree, kver = debian.kernel_tree(arch)
    base = tree / "lib/modules" / kver
    index: dict[str, Path] = {}
    for path in sorted((base / "kernel").rglob("*.ko")):
        index.setdefault(_norm(path.name), path)
    return index


@functools.cache
def _builtin_modules(arch: str = "amd64") -> frozenset[str]:
    tree, kver = debian.kernel_tree(arch)
    lines = (tree / "lib/modules" / kver / "modules.builtin").read_text().split()
    return frozenset(_norm(Path(line).name) for line in lines)


def _modinfo(data: bytes, key: str) -> list[str]:
    """Values of ``key`` in the ELF ``.modinfo`` section (no modinfo subprocess per module)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise PayloadError("not a little-endian ELF64 kernel module")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        (name,) = struct.unpack_from("<I", data, shoff + i * shentsize)
        offset, size = struct.unpack_from("<QQ", data, shoff + i * shentsize + 24)
        return name, offset, size

    _, str_off, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if data[str_off + name : data.index(b"\0", str_off + name)] == b".modinfo":
            items = data[offset : offset + size].split(b"\0")
            prefix = key.encode() + b"="
            return [item[len(prefix) :].decode() for item in items if item.startswith(prefix)]
    return []


def kernel_module(name: str, arch: str = "amd64") -> bytes:
    """The bytes of a module of the fixture's kernel (``dummy`` -> ``dummy.ko``), e.g. for an extension."""
    _check_arch(arch)
    path = _module_index(arch).get(_norm(name))
    if path is None:
        builtin = _norm(name) in _builtin_modules(arch)
        raise KeyError(f"no loadable module {name!r} in the {arch} kernel package (built-in: {builtin})")
    return path.read_bytes()


def module_kinds(
    names: Iterable[str] = BOOT_MODULES, arch: str = "amd64"
) -> dict[str, Literal["builtin", "module"]]:
    """Whether each named module is built into the fixture's kernel or a loadable ``.ko``."""
    _check_arch(arch)
    kinds: dict[str, Literal["builtin", "module"]] = {}
    for name in names:
        if _norm(name) in _module_index(arch):
            kinds[name] = "module"
        elif _norm(name) in _builtin_modules(arch):
            kinds[name] = "builtin"
        else:
            raise PayloadError(f"kernel {kernel_version(arch)} has no module {name!r}, loadable or built-in")
    return kinds


def _closure(names: Iterable[str], arch: str = "amd64") -> list[str]:
    """The loadable modules among ``names`` plus their dependencies, dependencies first."""
    index = _module_index(arch)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        norm = _norm(name)
        if norm in seen:
            return
        seen.add(norm)
        path = index.get(norm)
        if path is None:
            if norm not in _builtin_modules(arch):
                raise PayloadError(f"kernel {kernel_version(arch)} has no module {name!r}")
            return
        for dep in _modinfo(path.read_bytes(), "depends"):
            for d in filter(None, dep.split(",")):
                visit(d)
        order.append(norm)

    for name in names:
        visit(name)
    return order


# --------------------------------------------------------------------------------------------------
# building


def _os_release(version: str) -> str:
    return (
        'NAME="Talos"\n'
        "ID=talos\n"
        f"VERSION_ID={version}\n"
        f'PRETTY_NAME="Talos ({version})"\n'
        'HOME_URL="https://www.talos.dev/"\n'
        'BUG_REPORT_URL="https://github.com/siderolabs/talos/issues"\n'
        'VENDOR_NAME="Sidero Labs"\n'
        'VENDOR_URL="https://www.siderolabs.com/"\n'
    )


def _busybox(arch: str = "amd64") -> Path:
    path = debian.arch_package_tree("busybox-static", arch) / "bin/busybox"
    if not path.is_file():
        raise PayloadError(f"{path} missing from busybox-static ({arch})")
    return path


def _shell_path(flavour: PayloadFlavour) -> str:
    return "/usr/bin/busybox" if flavour.usr_merged else "/bin/busybox"


def _stage_rootfs(root: Path, version: str, flavour: PayloadFlavour, arch: str = "amd64") -> None:
    """The tiny root filesystem: busybox + applet links, boot modules (+ depmod), os-release, script.

    The applet list comes from the host's busybox (the arm64 one cannot run here; same Debian build).
    """
    tree, kver = debian.kernel_tree(arch)
    busybox = _busybox(arch)
    for d in ("dev", "proc", "sys", "tmp", "run", "etc/image-factory", "usr/bin", "usr/lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shell = root / _shell_path(flavour).lstrip("/")
    shell.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, shell)
    applets = _run([str(_busybox()), "--list-full"]).decode().split()
    if flavour.usr_merged:
        links = {"bin": "usr/bin", "sbin": "usr/bin", "lib": "usr/lib", "usr/sbin": "bin"}
        for link, target in links.items():
            (root / link).symlink_to(target)
        applets = [f"usr/bin/{Path(a).name}" for a in applets]
    for applet in sorted(set(applets)):
        path = root / applet
        if path == shell or path.exists() or path.is_symlink():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(os.path.relpath(shell, path.parent))

    src = tree / "lib/modules" / kver
    dst = root / flavour.modules_dir / kver
    index = _module_index(arch)
    loadable = _closure(BOOT_MODULES, arch)
    for name in loadable:
        rel = index[name].relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(index[name], dst / rel)
    for extra in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        shutil.copyfile(src / extra, dst / extra)
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp, "depmod.conf")
        conf.write_text("search built-in\n")  # the host's /etc/depmod.d must not matter
        base = root / "usr" if flavour.usr_merged else root
        _run(["depmod", "--all", "--basedir", str(base), "--config", str(conf), kver])

    (root / "etc/os-release").write_text(_os_release(version))
    # Only what is loadable; the order is the dependency order so even insmod would do.
    (root / "etc/image-factory/boot-modules").write_text("".join(f"{m}\n" for m in loadable))
    script = root / REPORT_PATH.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_INIT_DIR / "report.sh", script)

    for path in [root, *root.rglob("*")]:  # the umask and the cache's modes must not leak in
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() or path in (shell, script) else 0o644)


def _c_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of ASCII is a valid C string literal


#: The C compiler that builds each arch's static ``init`` (and the Debian packages that provide it).
_COMPILERS = {
    "amd64": ("gcc", "gcc and libc6-dev"),
    "arm64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu and libc6-dev-arm64-cross"),
}


def _compiler(arch: str) -> str:
    cc, packages = _COMPILERS[arch]
    if shutil.which(cc) is None:
        raise PayloadError(f"{cc} not found: install {packages} (devstack.debian.SYSTEM_PACKAGES)")
    libc = _run([cc, "-print-file-name=libc.a"]).decode().strip()
    if not os.path.isabs(libc) or not os.path.isfile(libc):
        raise PayloadError(f"static libc.a not found for {arch}: install {packages}")
    return cc


def _build_init(workdir: Path, flavour: PayloadFlavour, arch: str = "amd64") -> bytes:
    """Compile ``init/init.c`` statically with the INIT_MODULES that are loadable embedded in it."""
    cc = _compiler(arch)
    index = _module_index(arch)
    lines = [
        "/* generated by devstack/release/payload.py */",
        f"#define ROOT_MOUNT {_c_string(ROOT_MOUNT)}",
        f"#define SHELL_PATH {_c_string(_shell_path(flavour))}",
        f"#define REPORT_PATH {_c_string(REPORT_PATH)}",
    ]
    table = []
    for i, name in enumerate(_closure(INIT_MODULES, arch)):
        data = index[name].read_bytes()
        lines.append(f"static const unsigned char module_{i}[] = {{")
        lines.extend(",".join(map(str, data[j : j + 32])) + "," for j in range(0, len(data), 32))
        lines.append("};")
        table.append(f"    {{{_c_string(name)}, module_{i}, sizeof module_{i}}},")
    lines += [
        "static const struct { const char *name; const unsigned char *data; unsigned long size; }",
        "init_modules[] = {",
        *table,
        "    {0, 0, 0},",
        "};",
        "",
    ]
    (workdir / "fixture.h").write_text("\n".join(lines))
    shutil.copyfile(_INIT_DIR / "init.c", workdir / "init.c")
    flags = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-fno-ident", "-Wl,--build-id=none"]
    _run([cc, *flags, "-o", "init", "init.c"], cwd=workdir)
    return (workdir / "init").read_bytes()


def systemd_boot_suite(version: str) -> str | None:
    """Debian suite of the payload's systemd-stub/-boot; None is the host's apt (bookworm: 252).

    Talos ≥ 1.10 builds multi-profile UKIs, which only systemd ≥ 257 understands (an older stub takes
    the last ``.cmdline`` section, i.e. the wrong profile), so those versions get trixie's.
    """
    _parse_version(version)
    return debian.UKI_PROFILES_SUITE if Quirks(version).supports_uki_profiles() else None


def _systemd_boot_deb(version: str, arch: str = "amd64") -> Path:
    suite = systemd_boot_suite(version)
    if arch != "amd64":
        return debian.suite_deb_file("systemd-boot-efi", suite or debian.host_suite(), arch=arch)
    if suite is None:
        return debian.deb_file("systemd-boot-efi")
    return debian.suite_deb_file("systemd-boot-efi", suite)


def _inputs_key(version: str, flavour: PayloadFlavour, arch: str = "amd64") -> str:
    """Everything a payload depends on: exact package versions, our sources, the toolchain."""
    h = hashlib.sha256()
    parts = [
        _FORMAT,
        version,
        json.dumps(asdict(flavour), sort_keys=True),
        *(str(debian.deb_file(p).name) for p in ("linux-image-amd64", "busybox-static")),
        # the stub's source suite and exact version: a 1.9 and a 1.10 payload differ here
        f"systemd-boot-efi@{systemd_boot_suite(version) or 'apt'}:{_systemd_boot_deb(version).name}",
        _run(["gcc", "-dumpfullversion", "-dumpmachine"]).decode(),
        _run(["mksquashfs", "-version"]).decode().splitlines()[0],
    ]
    if arch != "amd64":  # its own kernel, busybox and stub (the amd64 parts stay: applet list)
        kernel = debian.kernel_package(arch)
        parts += [
            f"arch={arch}",
            f"{kernel.suite}:{kernel.deb_name}:{kernel.sha256}",
            debian.suite_deb_file("busybox-static", debian.host_suite(), arch=arch).name,
            f"systemd-boot-efi:{_systemd_boot_deb(version, arch).name}",
            "init: " + _run([_compiler(arch), "-dumpfullversion", "-dumpmachine"]).decode(),
        ]
    for part in parts:
        h.update(part.encode() + b"\0")
    for path in (Path(__file__), _INIT_DIR / "init.c", _INIT_DIR / "report.sh"):
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:32]


_FILES = {
    "vmlinuz": "vmlinuz",
    "initramfs": "initramfs.xz",
    "systemd_stub": "systemd-stub.efi",
    "systemd_boot": "systemd-boot.efi",
}


def _link_or_copy(src: Path, dest: Path) -> None:
    """Cache entries share the (8 MB, read-only by convention) kernel with the extracted package."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _prune(root: Path, version: str, keep: Path, min_age: float = 600.0) -> None:
    """Drop this version's payloads built from older inputs (code edits), unless possibly still in use."""
    now = time.time()
    for old in root.glob(f"{version}-*"):
        key = old.name[len(version) + 1 :]
        if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
            continue  # another version that merely starts alike (v1.10.3-beta.1 vs v1.10.3)
        if old != keep and old.is_dir() and now - old.stat().st_mtime > min_age:
            shutil.rmtree(old, ignore_errors=True)


def normalise_kernel(data: bytes) -> bytes:
    """An arm64 kernel as Talos ships it: the uncompressed, EFI-stub ``Image``.

    Debian's arm64 ``vmlinuz`` may be a gzip'd ``Image`` (the signed package we fetch already ships the
    PE ``Image`` itself), so gzip is undone; the result must have the ``MZ`` stub and ``ARM\\x64`` magic.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:2] != b"MZ" or data[0x38:0x3C] != ARM64_IMAGE_MAGIC:
        raise PayloadError("the arm64 kernel is not an EFI-stub Image (no MZ / ARM\\x64 magic)")
    return data


def _build_into(out: Path, version: str, flavour: PayloadFlavour, *, link: bool, arch: str = "amd64") -> None:
    """The four files plus ``payload.json`` into ``out``.

    Every arch's ``init`` is the C program, compiled for that arch (``_COMPILERS``).
    """
    tree, kver = debian.kernel_tree(arch)
    efi = debian.systemd_boot_tree(systemd_boot_suite(version), arch) / "usr/lib/systemd/boot/efi"
    with tempfile.TemporaryDirectory(prefix="payload-") as tmp:
        work = Path(tmp)
        (work / "rootfs").mkdir()
        _stage_rootfs(work / "rootfs", version, flavour, arch)
        make_squashfs(work / "rootfs", work / "rootfs.sqsh", flavour.compression)
        (work / "init").mkdir()
        init = _build_init(work / "init", flavour, arch)
        rootfs = (work / "rootfs.sqsh").read_bytes()
        archive = newc_archive([CpioEntry.file("init", init, 0o755), CpioEntry.file("rootfs.sqsh", rootfs)])
    (out / _FILES["initramfs"]).write_bytes(compress(archive, flavour.compression))
    vmlinuz = tree / "boot" / f"vmlinuz-{kver}"
    raw = vmlinuz.read_bytes() if arch != "amd64" else b""
    image = normalise_kernel(raw) if arch != "amd64" else raw
    if image is not raw:  # gunzipped: a new file (Debian's signed arm64 Image is used as it is)
        (out / _FILES["vmlinuz"]).write_bytes(image)
    elif link:
        _link_or_copy(vmlinuz, out / _FILES["vmlinuz"])
    else:
        shutil.copyfile(vmlinuz, out / _FILES["vmlinuz"])
    stub, boot = _EFI_FILES[arch]
    shutil.copyfile(efi / stub, out / _FILES["systemd_stub"])
    shutil.copyfile(efi / boot, out / _FILES["systemd_boot"])
    meta = {"version": version, "kernel_version": kver} | ({"arch": arch} if arch != "amd64" else {})
    (out / "payload.json").write_text(json.dumps(meta) + "\n")


def build_payload(version: str, dest: Path, *, cache: bool = True, arch: str = "amd64") -> Payload:
    """Write ``arch``'s ``vmlinuz``, ``initramfs.xz``, ``systemd-stub.efi``, ``systemd-boot.efi`` to ``dest``.

    With ``cache`` the finished files are kept under ``debian.cache_dir()/payloads`` (``payloads/<arch>``
    for arm64) keyed by every input, so repeated builds are copies; ``cache=False`` builds from scratch
    (determinism checks).
    """
    _check_arch(arch)
    flavour = PayloadFlavour.for_version(version)
    dest.mkdir(parents=True, exist_ok=True)
    kver = kernel_version(arch)
    if cache:
        root = debian.cache_dir() / "payloads"
        if arch != "amd64":
            root /= arch
        root.mkdir(parents=True, exist_ok=True)
        built = root / f"{version}-{_inputs_key(version, flavour, arch)}"
        if not (built / "payload.json").is_file():
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
            try:
                _build_into(tmp, version, flavour, link=True, arch=arch)
                tmp.chmod(0o755)
                try:
                    tmp.rename(built)
                except OSError:  # a concurrent build won; its bytes are the same
                    if not (built / "payload.json").is_file():
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            _prune(root, version, built)
        for name in _FILES.values():
            shutil.copyfile(built / name, dest / name)
    else:
        _build_into(dest, version, flavour, link=False, arch=arch)
        (dest / "payload.json").unlink()
    return Payload(
        version=version,
        kernel_version=kver,
        flavour=flavour,
        vmlinuz=dest / _FILES["vmlinuz"],
        initramfs=dest / _FILES["initramfs"],
        systemd_stub=dest / _FILES["systemd_stub"],
        systemd_boot=dest / _FILES["systemd_boot"],
        arch=arch,
    )
