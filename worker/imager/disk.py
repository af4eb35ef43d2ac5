"""Raw disk images (``pkg/imager/out.go``, ``outImage``): GPT, ESP, GRUB's BIOS and BOOT partitions, META.

A port of Talos' rootless image mode (``siderolabs/talos@v1.14.0-rc.1:cmd/installer/pkg/install``
with ``ModeImage``, v1.13+ library): every partition is built as a plain file (mkfs + populate),
then copied into a sparse disk file at its offset; GRUB's BIOS wiring is done by patching
``boot.img`` and ``core.img`` instead of
``grub-install``. Nothing is mounted, no loop device, no root.

Reproducibility: GUIDs come from the partition labels (as upstream), FAT uses ``--invariant`` and
SOURCE_DATE_EPOCH, staged files carry the epoch as mtime, and ``mkfs.xfs`` runs with a frozen clock
(libfaketime), because Debian's xfsprogs 6.1 stamps inodes with the wall clock whatever
SOURCE_DATE_EPOCH says. Copies skip zero blocks, so an 8 GiB image costs what its data costs.

Deliberate differences, each where the host's tools cannot do what upstream's can:

* XFS features come from a table mirroring upstream's ``lts_*.conf`` files. The host's mkfs.xfs
  (6.1) knows neither ``exchange`` nor ``parent`` (on in ``lts_6.18``, Talos ≥ 1.13); those are left
  off. Talos reads such a BOOT either way.
* Upstream adds ``META`` values in Go map order (random); here in ascending tag order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import InvalidInputError
from common.profile.model import Bootloader, SDBootEnrollKeys
from common.talos.quirks import Quirks
from worker.imager import gpt, tools
from worker.imager.grub import grub_platform_dir
from worker.imager.iso import grub_quote
from worker.imager.meta import meta_partition
from worker.imager.sparse import nonzero_blocks
from worker.imager.staging import fat_copy

log = logging.getLogger(__name__)

__all__ = ["DiskInputs", "build_disk", "grub_disk_cfg", "partition_specs", "protofile", "xfs_options"]

MIB = 1024 * 1024

#: META tag 0x11 (DiskImageBootloader): tells Talos on first boot that the image is dual-boot.
META_DISK_IMAGE_BOOTLOADER = 0x11

_EFI_NAME = {"amd64": "BOOTX64.efi", "arm64": "BOOTAA64.efi"}
_GRUB_EFI_FORMAT = {"amd64": "x86_64-efi", "arm64": "arm64-efi"}
_GRUB_PREFIX = "(hd0,gpt3)/grub"
_GRUB_MODULES = (
    "part_gpt",
    "ext2",
    "fat",
    "xfs",
    "normal",
    "configfile",
    "linux",
    "boot",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "ls",
    "cat",
    "echo",
    "test",
    "help",
    "reboot",
    "halt",
    "all_video",
)
_GRUB_BIOS_MODULES = ("biosdisk", "part_msdos")

# boot.img / core.img offsets grub-install patches (include/grub/i386/pc/boot.h, diskboot.S)
_BOOT_KERNEL_SECTOR = 0x5C
_BOOT_JUMP = 0x66
_CORE_BLOCKLIST = 0x1F4
_MBR_CODE = 446

_LOADER_CONF = "# systemd-boot configuration\n\ntimeout 10\n"

# Upstream's mkfs.xfs config files (xfsprogs mkfs/lts_*.conf) as options Debian's mkfs.xfs 6.1 takes.
# Everything the files set to 0 that 6.1 does not know (metadir, exchange, parent, autofsck) is off
# there anyway; lts_6.18's exchange=1 and parent=1 cannot be had from 6.1 and are left off.
_XFS_FEATURES: dict[str, tuple[str, str]] = {
    "lts_6.1": ("bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=0", "sparse=1,nrext64=0"),
    "lts_6.6": ("bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=1", "sparse=1,nrext64=1"),
    "lts_6.12": ("bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=1", "sparse=1,nrext64=1"),
    "lts_6.18": ("bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=1", "sparse=1,nrext64=1"),
}

_FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)


@dataclass(frozen=True)
class DiskInputs:
    """What one disk image is made of; ``bootloader`` is already resolved (never ``none``)."""

    arch: str
    version: str
    bootloader: Bootloader
    disk_size: int
    kernel: Path
    initramfs: Path
    cmdline: str
    grub_dirs: Mapping[str, Path]
    sector_size: int = 512
    uki: Path | None = None  # sd-boot and dual-boot
    sd_boot: Path | None = None
    meta: Sequence[tuple[int, str]] = ()
    enroll_keys: SDBootEnrollKeys | None = None  # secure-boot-enroll line (Secure Boot images only)
    auto_enroll: Mapping[str, Path] = field(default_factory=dict)  # PK.auth, KEK.auth, db.auth
    skip_lbas: int = 0  # an overlay's partitionOptions.offset: LBAs kept free before the GPT entries
    #: An overlay's ``install`` step (worker.imager.overlay): given the layout and the staged ESP, it
    #: adds files to the ESP and returns checked raw writes (disk offset, bytes) for the gaps.
    overlay_install: Callable[[gpt.GptLayout, Path], Sequence[tuple[int, bytes]]] | None = None


@dataclass(frozen=True)
class PartitionPlan:
    """A partition to create and how to fill it."""

    spec: gpt.PartitionSpec
    filesystem: str  # "vfat", "xfs", "zeroes" or "none"
    source: Path | None = None


def grub_disk_cfg(cmdline: str, version: str) -> str:
    """``grub.Config.Encode`` for an image: entry A, plus the reset entry from Talos 1.4."""
    quoted = grub_quote(cmdline)
    title = f"A - Talos {version}"
    entry = (
        'menuentry "{title}" {{\n  set gfxmode=auto\n  set gfxpayload=text\n'
        "  linux /A/vmlinuz {cmdline}\n  initrd /A/initramfs.xz\n}}\n"
    )
    text = f'set default="{title}"\n'
    text += "\nset timeout=3\n\ninsmod all_video\n\nterminal_input console\nterminal_output console\n\n"
    text += entry.format(title=title, cmdline=quoted)
    if Quirks(version).supports_reset_grub_option():
        text += entry.format(
            title="Reset Talos installation and return to maintenance mode",
            cmdline=f"{quoted} talos.experimental.wipe=system:EPHEMERAL,STATE",
        )
    return text


def partition_specs(
    bootloader: Bootloader, version: str, *, efi: Path | None = None, boot: Path | None = None
) -> list[PartitionPlan]:
    """Boot partitions per bootloader, then META (and STATE/EPHEMERAL before Talos 1.8)."""
    q = Quirks(version)
    sizes = q.partition_sizes()
    bios = PartitionPlan(
        gpt.PartitionSpec("BIOS", gpt.BIOS_BOOT, sizes.grub_bios_size, gpt.LEGACY_BIOS_BOOTABLE), "zeroes"
    )
    boot_part = PartitionPlan(gpt.PartitionSpec("BOOT", gpt.LINUX_FILESYSTEM, sizes.boot_size), "xfs", boot)
    if bootloader is Bootloader.SD_BOOT:
        parts = [PartitionPlan(gpt.PartitionSpec("EFI", gpt.EFI_SYSTEM, sizes.uki_efi_size), "vfat", efi)]
    elif bootloader is Bootloader.DUAL_BOOT:
        parts = [
            PartitionPlan(gpt.PartitionSpec("EFI", gpt.EFI_SYSTEM, sizes.uki_efi_size), "vfat", efi),
            bios,
            boot_part,
        ]
    elif bootloader is Bootloader.GRUB:
        parts = [
            PartitionPlan(gpt.PartitionSpec("EFI", gpt.EFI_SYSTEM, sizes.grub_efi_size), "vfat", efi),
            bios,
            boot_part,
        ]
    else:
        raise ValueError(f"no disk layout for bootloader {bootloader.value!r}")
    parts.append(PartitionPlan(gpt.PartitionSpec("META", gpt.LINUX_FILESYSTEM, sizes.meta_size), "zeroes"))
    if q.disk_image_has_data_partitions():
        parts.append(
            PartitionPlan(gpt.PartitionSpec("STATE", gpt.LINUX_FILESYSTEM, sizes.state_size), "none")
        )
        parts.append(PartitionPlan(gpt.PartitionSpec("EPHEMERAL", gpt.LINUX_FILESYSTEM, 0), "none"))
    return parts


def xfs_options(version: str) -> list[str]:
    """mkfs.xfs feature options equivalent to the version's ``-c options=lts_*.conf``."""
    metadata, inode = _XFS_FEATURES[Quirks(version).xfs_config_profile_name()]
    return ["-m", metadata, "-i", inode]


def _proto_mode(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        kind = "-"
    elif stat.S_ISDIR(mode):
        kind = "d"
    elif stat.S_ISLNK(mode):
        kind = "l"
    else:
        raise ValueError(f"unsupported file type in a BOOT partition: {oct(mode)}")
    suid = "u" if mode & stat.S_ISUID else "-"
    sgid = "g" if mode & stat.S_ISGID else "-"
    return f"{kind}{suid}{sgid}{stat.S_IMODE(mode) & 0o777:03o} 0 0"


def protofile(root: Path) -> str:
    """``makefs.GenerateProtofile``: files before directories, each level in name order, owner 0:0."""
    lines = ["/", "0 0", _proto_mode(root.stat())]

    def walk(path: Path, depth: int) -> None:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        indent = " " * depth
        for e in entries:
            if " " in e.name:
                raise ValueError(f"spaces not allowed in file names: {e.name}")
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
            extra = os.readlink(e.path) if e.is_symlink() else os.path.abspath(e.path)
            lines.append(f"{indent}{e.name} {_proto_mode(st)} {extra}")
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                lines.append(f"{indent}{e.name} {_proto_mode(e.stat(follow_symlinks=False))}")
                walk(Path(e.path), depth + 1)
        if depth > 1:
            lines.append(" " * (depth - 1) + "$")

    walk(root, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def _frozen_clock_env(epoch: int) -> dict[str, str]:
    """LD_PRELOAD of libfaketime with the clock stopped at ``epoch`` (empty if not installed)."""
    for lib in _FAKETIME_LIBS:
        if os.path.exists(lib):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
            return {"LD_PRELOAD": lib, "FAKETIME": stamp, "TZ": "UTC", "FAKETIME_DONT_RESET": "1"}
    log.warning("libfaketime is not installed: XFS BOOT partitions carry the build time (not reproducible)")
    return {}


def _touch_tree(root: Path, epoch: int) -> None:
    """``utils.TouchFiles``: everything gets the epoch as atime and mtime (modes are kept)."""
    stamp = (epoch, epoch)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.utime(Path(dirpath, name), stamp, follow_symlinks=False)
    os.utime(root, stamp)


def _copy(src: Path, dst: Path, mode: int = 0o644) -> None:
    dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(mode)


def copy_nonzero(src: Path, dst_fd: int, offset: int, length: int, chunk: int = MIB) -> None:
    """Copies ``src`` into ``dst_fd`` at ``offset``, skipping holes and all-zero blocks.

    The destination is a freshly truncated (all-zero, sparse) disk, so skipping zeros is exact and
    keeps the disk sparse however many zeros mkfs wrote (the XFS log, FAT tables).
    """
    size = src.stat().st_size
    if size != length:
        raise ValueError(f"{src.name} is {size} bytes, its partition {length}")
    with src.open("rb") as f:
        for pos, data in nonzero_blocks(f.fileno(), size, chunk):
            os.pwrite(dst_fd, data, offset + pos)


class _DiskBuild:
    def __init__(self, inputs: DiskInputs, workdir: Path, epoch: int) -> None:
        self.i = inputs
        self.work = workdir.absolute()
        self.epoch = epoch
        self.efi = self.work / "EFI"
        self.boot = self.work / "boot"
        self.tmp = self.work / "tmp"
        self.tmp.mkdir(mode=0o755, exist_ok=True)
        self.env = {"SOURCE_DATE_EPOCH": str(epoch), "TMPDIR": str(self.tmp)}

    # --- staging (PrepareBootPartitions) ------------------------------------------------------

    def stage_grub(self, with_efi: bool) -> None:
        """BOOT: kernel, initramfs and grub.cfg under A/ and grub/; core.img and boot.img for BIOS."""
        i = self.i
        _copy(i.kernel, self.boot / "A" / "vmlinuz")
        _copy(i.initramfs, self.boot / "A" / "initramfs.xz")
        grub = self.boot / "grub"
        grub.mkdir(mode=0o700)
        grub.chmod(0o700)  # grub.Config.Write: MkdirAll 0700, file 0600
        (grub / "grub.cfg").write_text(grub_disk_cfg(i.cmdline, i.version))
        (grub / "grub.cfg").chmod(0o600)
        if i.arch == "amd64":
            pc = grub_platform_dir(i.grub_dirs, "i386-pc")
            modules = (*_GRUB_MODULES, *_GRUB_BIOS_MODULES)
            core = self.work / "core.img"
            cmd: list[str | os.PathLike[str]] = [
                "grub-mkimage",
                "-d",
                pc,
                "--format",
                "i386-pc",
                "--output",
                core,
                "--prefix",
                _GRUB_PREFIX,
            ]
            cmd += modules
            tools.run(cmd, env=self.env)
            shutil.copyfile(pc / "boot.img", self.work / "boot.img")
        if with_efi:
            fmt = _GRUB_EFI_FORMAT[i.arch]
            out = self.efi / "EFI" / "boot" / _EFI_NAME[i.arch]
            out.parent.mkdir(mode=0o755, parents=True)
            efi_cmd: list[str | os.PathLike[str]] = [
                "grub-mkimage",
                "-d",
                grub_platform_dir(i.grub_dirs, fmt),
                "--format",
                fmt,
                "--output",
                out,
            ]
            efi_cmd += ["--prefix", _GRUB_PREFIX, "--compression", "xz", *_GRUB_MODULES]
            tools.run(efi_cmd, env=self.env)
            out.chmod(0o644)

    def stage_sdboot(self) -> None:
        """ESP: systemd-boot on the removable-media path, the UKI as Talos-<version>.efi, loader.conf."""
        i = self.i
        if i.uki is None or i.sd_boot is None:
            raise ValueError("sd-boot and dual-boot images need a UKI and systemd-boot")
        _copy(i.sd_boot, self.efi / "EFI" / "boot" / _EFI_NAME[i.arch])
        _copy(i.uki, self.efi / "EFI" / "Linux" / f"Talos-{i.version}.efi")
        conf = _LOADER_CONF
        if i.enroll_keys is not None:
            conf += f"\nsecure-boot-enroll {i.enroll_keys.value}\n"
            for name, src in sorted(i.auto_enroll.items()):
                _copy(src, self.efi / "loader" / "keys" / "auto" / name)
        (self.efi / "loader").mkdir(mode=0o755, exist_ok=True)
        (self.efi / "loader" / "loader.conf").write_text(conf)
        (self.efi / "loader" / "loader.conf").chmod(0o644)

    def stage(self) -> None:
        self.efi.mkdir(mode=0o755)
        bl = self.i.bootloader
        if bl is Bootloader.DUAL_BOOT and self.i.arch != "amd64":
            raise InvalidInputError(
                "dual-boot bootloader is not supported on arm64 architecture, "
                "either GRUB or sd-boot must be used"
            )
        if bl in (Bootloader.GRUB, Bootloader.DUAL_BOOT):
            self.boot.mkdir(mode=0o755)
            self.stage_grub(with_efi=bl is Bootloader.GRUB)
            _touch_tree(self.boot, self.epoch)
        if bl in (Bootloader.SD_BOOT, Bootloader.DUAL_BOOT):
            self.stage_sdboot()
        _touch_tree(self.efi, self.epoch)

    # --- filesystems --------------------------------------------------------------------------

    def vfat(self, image: Path, source: Path) -> None:
        cmd: list[str | os.PathLike[str]] = ["mkfs.vfat", "-F", "32", "-n", "EFI", "--invariant"]
        if self.i.sector_size != 512:
            cmd += ["-S", str(self.i.sector_size)]
        tools.run([*cmd, image], env=self.env)
        names = sorted(p.name for p in source.iterdir())
        if names:
            fat_copy(image, source, names, self.env)

    def xfs(self, image: Path, source: Path) -> None:
        proto = self.work / "BOOT.proto"
        proto.write_text(protofile(source))
        cmd: list[str | os.PathLike[str]] = ["mkfs.xfs", "-q", "-n", "ftype=1", *xfs_options(self.i.version)]
        cmd += ["-f", "-L", "BOOT"]
        if self.i.sector_size != 512:
            cmd += ["-s", f"size={self.i.sector_size}"]
        cmd += ["-p", proto, "-m", f"uuid={gpt.guid_from_label('BOOT')}", image]
        tools.run(cmd, env={**self.env, **_frozen_clock_env(self.epoch)})

    # --- the whole disk -----------------------------------------------------------------------

    def build(self, out: Path) -> gpt.GptLayout:
        i = self.i
        self.stage()
        parts = partition_specs(i.bootloader, i.version, efi=self.efi, boot=self.boot)
        layout = gpt.plan_layout(
            i.disk_size, [p.spec for p in parts], sector_size=i.sector_size, skip_lbas=i.skip_lbas
        )
        raw_writes: Sequence[tuple[int, bytes]] = ()
        if i.overlay_install is not None:
            raw_writes = i.overlay_install(layout, self.efi)
            _touch_tree(self.efi, self.epoch)
        with out.open("wb") as f:
            f.truncate(i.disk_size)
        with out.open("r+b") as disk:
            gpt.write_gpt(disk, layout)
            disk.flush()
            for part, placed in zip(parts, layout.partitions, strict=True):
                if part.filesystem not in ("vfat", "xfs") or part.source is None:
                    continue
                image = self.work / f"{placed.label}.img"
                with image.open("wb") as f:
                    f.truncate(placed.length)
                os.utime(image, (self.epoch, self.epoch))
                (self.vfat if part.filesystem == "vfat" else self.xfs)(image, part.source)
                copy_nonzero(image, disk.fileno(), placed.start, placed.length)
                image.unlink()
            if i.arch == "amd64" and i.bootloader in (Bootloader.GRUB, Bootloader.DUAL_BOOT):
                self.wire_bios(disk.fileno(), layout.partition("BIOS"))
            for offset, data in raw_writes:  # checked to lie in the GPT's free gaps only
                os.pwrite(disk.fileno(), data, offset)
            values = list(i.meta)
            if values:
                meta = layout.partition("META")
                os.pwrite(disk.fileno(), meta_partition(values), meta.start)
        return layout

    def wire_bios(self, fd: int, bios: gpt.Partition) -> None:
        """``PatchBlocklistsForDiskImage``, then boot.img's code into sector 0 and core.img into BIOS."""
        boot = bytearray((self.work / "boot.img").read_bytes())
        core = bytearray((self.work / "core.img").read_bytes())
        if len(core) > bios.length:
            raise tools.ToolError(f"GRUB core.img ({len(core)} bytes) does not fit the BIOS partition")
        start = bios.first_lba
        boot[_BOOT_KERNEL_SECTOR : _BOOT_KERNEL_SECTOR + 8] = start.to_bytes(8, "little")
        boot[_BOOT_JUMP : _BOOT_JUMP + 2] = b"\x90\x90"
        core[_CORE_BLOCKLIST : _CORE_BLOCKLIST + 8] = (start + 1).to_bytes(8, "little")
        os.pwrite(fd, bytes(boot[:_MBR_CODE]), 0)
        os.pwrite(fd, bytes(core), bios.start)


def build_disk(inputs: DiskInputs, out: Path, *, workdir: Path, epoch: int) -> gpt.GptLayout:
    """Writes the raw (sparse) disk image ``out``; returns its partition layout."""
    try:
        return _DiskBuild(inputs, workdir, epoch).build(out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        raise
