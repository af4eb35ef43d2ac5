"""Bootable ISOs (``pkg/imager/iso``): GRUB, UEFI (systemd-boot + UKI) and hybrid (BIOS GRUB + sd-boot).

A port of Talos ``pkg/imager/iso`` (v1.14.0-rc.1) plus ``outISO``'s generator choice. Everything is
built from plain files in the caller's ``workdir``: no loop devices, mounts or root.

GRUB comes from ``inputs.grub_dirs``: the release's imager image where it has a platform, this
factory's own otherwise (:mod:`worker.imager.grub`; upstream always uses its container's).
``grub-mkrescue`` (2.06 here) only ever reads platform
directories from its compiled-in ``/usr/lib/grub`` (no environment override) unless ``-d`` is given,
and ``-d`` names exactly one platform (the last one wins). So, like upstream's hybrid ISO does,
``grub-mkrescue -d <i386-pc>`` builds the BIOS side, and the UEFI GRUB side (what ``grub-mkrescue``
would add for each EFI platform present) is built here with ``grub-mkimage -d <efi dir>``: modules
copied xz-compressed to ``/boot/grub/<platform>``, ``efi/boot/boot*.efi`` in a FAT ``/efi.img`` that
becomes the UEFI El Torito entry and a GPT partition (``--efi-boot … -efi-boot-part --efi-boot-image``).

Reproducibility: upstream is reproducible only with ``SOURCE_DATE_EPOCH``; here ``epoch`` is always
given and used the same way (staged files touched, ``SOURCE_DATE_EPOCH`` in the tools' environment so
xorriso derives GPT GUIDs from the volume date and mtools stamps with it, ``-volume_date`` overrides,
fixed FAT serials), plus what upstream leaves to chance: FAT contents are copied in sorted order
(``mcopy -s`` follows the host's readdir order), xorrisofs records owner 0 whoever builds, and the
GRUB EFI images find the ISO by its epoch-derived volume UUID, as grub-mkrescue's ``make_image_abs``
does with its wall-clock UUID (newer GRUBs search a ``/.disk/<wall-clock>.uuid`` marker file instead).

Other deviations, all where upstream's result would be broken or host-dependent: an ``efiboot.img``
too small for FAT32 is grown to the FAT32 minimum (small test UKIs only), and the GRUB ISO has no
Apple HFS+/``mach_kernel`` extras (grub-mkrescue adds those for x86_64-efi; Talos does not boot Macs).
"""

from __future__ import annotations

import enum
import lzma
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidInputError
from common.profile.model import Bootloader, SDBootEnrollKeys
from common.talos.quirks import Quirks
from worker.imager import tools
from worker.imager.grub import grub_platform_dir
from worker.imager.staging import Stage, fat_copy

__all__ = [
    "IsoGenerator",
    "IsoInputs",
    "build_iso",
    "grub_cfg",
    "grub_quote",
    "iso_label",
    "loader_conf",
    "native_args",
    "select_generator",
    "volume_id",
    "volume_uuid",
]

MIB = 1024 * 1024

#: Smallest ``efiboot.img`` for which ``mkfs.vfat -F 32`` (512-byte clusters) gives ≥65525 clusters.
_FAT32_MIN_BYTES = 33 * MIB

#: UEFI removable-media boot file name of systemd-boot per Talos arch.
_SDBOOT_EFI_NAME = {"amd64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI"}

#: EFI GRUB platforms grub-mkrescue knows, with the file name it gives their image in ``efi/boot``.
_GRUB_EFI_IMAGES = {
    "x86_64-efi": "bootx64.efi",
    "i386-efi": "bootia32.efi",
    "arm64-efi": "bootaa64.efi",
    "arm-efi": "bootarm.efi",
    "riscv64-efi": "bootriscv64.efi",
}

#: Modules grub-mkrescue builds into an EFI core image (its pushed modules plus the xz decompressor
#: that ``--compress=xz`` requires); dependencies are resolved by grub-mkimage.
_GRUB_EFI_CORE_MODULES = ("part_gpt", "part_msdos", "fat", "ntfs", "part_apple", "search", "iso9660")
_GRUB_XZ_MODULES = ("xzio", "gcry_crc")

#: Non-module files grub-install copies next to the modules (grub_install_copy_files).
_GRUB_PLATFORM_FILES = (
    "efiemu32.o",
    "efiemu64.o",
    "moddep.lst",
    "command.lst",
    "fs.lst",
    "partmap.lst",
    "parttool.lst",
    "video.lst",
    "crypto.lst",
    "terminal.lst",
    "modinfo.sh",
)

#: ``--compress=xz`` as grub-mkrescue runs it: ``xz --lzma2=dict=128KiB --check=none``.
_GRUB_XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 128 * 1024}]

_GRUB_CFG_HEAD = """\
set default=0
set timeout=3

insmod all_video

terminal_input console
terminal_output console

"""

_GRUB_ENTRY = """\
menuentry "{title}" {{
\tset gfxmode=auto
\tset gfxpayload=text
\tlinux /boot/vmlinuz {cmdline}
\tinitrd /boot/initramfs.xz
}}
"""

_LOADER_CONF = """\
# systemd-boot configuration

timeout 10

secure-boot-enroll {enroll}
"""


class IsoGenerator(enum.StrEnum):
    """Which of upstream's three ISO layouts to build."""

    GRUB = "grub"  # grub-mkrescue: BIOS + UEFI GRUB
    UEFI = "uefi"  # xorrisofs: UEFI only, systemd-boot + UKI
    HYBRID = "hybrid"  # grub-mkrescue: BIOS GRUB + UEFI systemd-boot


def select_generator(*, version: str, bootloader: Bootloader, secureboot: bool) -> IsoGenerator:
    """``outISO``'s switch: Secure Boot → UEFI; ≥1.12 the (already resolved) bootloader; then by version.

    ``bootloader`` is only read for ≥1.12 (where ``select_bootloader`` filled it in); older versions
    get hybrid from 1.10 (sd-boot for UEFI) and GRUB before, whatever the architecture.
    """
    if secureboot:
        return IsoGenerator.UEFI
    quirks = Quirks(version)
    if quirks.supports_iso_bootloader_selection():
        if bootloader is Bootloader.DUAL_BOOT:
            return IsoGenerator.HYBRID
        if bootloader is Bootloader.SD_BOOT:
            return IsoGenerator.UEFI
        if bootloader is Bootloader.GRUB:
            return IsoGenerator.GRUB
        raise InvalidInputError("cannot create ISO with no bootloader")
    if quirks.use_sdboot_for_uefi():
        return IsoGenerator.HYBRID
    return IsoGenerator.GRUB


@dataclass(frozen=True)
class IsoInputs:
    """Everything one ISO is made of; the files are read only (they may live in a shared store)."""

    arch: str  # amd64 | arm64
    version: str  # Talos tag, e.g. "v1.12.4": label, file names and quirks
    kernel: Path
    initramfs: Path  # already with extensions
    cmdline: str  # final command line (GRUB entries)
    uki: Path | None  # UEFI/HYBRID: EFI/Linux/Talos-<version>.efi
    sd_boot: Path | None  # UEFI/HYBRID: EFI/BOOT/BOOT<arch>.EFI
    #: GRUB platform ("i386-pc", "x86_64-efi", "arm64-efi") -> its module directory (worker.imager.grub)
    grub_dirs: Mapping[str, Path]
    enroll_keys: SDBootEnrollKeys = SDBootEnrollKeys.OFF  # loader.conf secure-boot-enroll
    # Secure Boot only (upstream's signed ISO): the UKI signing certificate (DER) and key auto-enrolment
    uki_signing_cert_der: Path | None = None
    pk_auth: Path | None = None
    kek_auth: Path | None = None
    db_auth: Path | None = None


# --------------------------------------------------------------------------------------------------
# text helpers (pure)


def iso_label(version: str) -> str:
    """``iso.Label(version, false)``: ``Talos-<version>``; the factory never uses the ``SB-`` form."""
    return f"Talos-{version}"


def volume_id(label: str) -> str:
    """``iso.VolumeID``: uppercase; ``_``, ``-`` and ``.`` become ``_``; other non-``A-Z0-9`` dropped; ≤32."""
    out = []
    for ch in label:
        upper = ch.upper()
        # Go's unicode.ToUpper is the simple (1:1) mapping: "ß" stays "ß" where Python gives "SS"
        ch = upper if len(upper) == 1 else ch
        if "A" <= ch <= "Z" or "0" <= ch <= "9":
            out.append(ch)
        elif ch in "_-.":
            out.append("_")
    # Go cuts at 32 bytes; only ASCII is left here, so bytes and characters agree
    return "".join(out)[:32]


def volume_uuid(epoch: int) -> str:
    """xorriso ``-volume_date uuid`` string (``YYYYMMDDhhmmss00``, UTC) for ``epoch``."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch)) + "00"


def grub_quote(text: str) -> str:
    """``grub.Quote``: backslash-escape each of ``\\ { } & $ | ; < > "`` (backslash first)."""
    for ch in '\\{}&$|;<>"':
        text = text.replace(ch, "\\" + ch)
    return text


def grub_cfg(cmdline: str, version: str) -> str:
    """The ISO's ``boot/grub/grub.cfg``; the reset entry exists from Talos 1.4 on.

    Upstream's template leaves an empty line after the first entry and trims the rest, so the text
    ends ``}\\n`` with the reset entry and ``}\\n\\n`` without it.
    """
    quoted = grub_quote(cmdline)
    text = _GRUB_CFG_HEAD + _GRUB_ENTRY.format(title="Talos ISO", cmdline=quoted) + "\n"
    if Quirks(version).supports_reset_grub_option():
        text += _GRUB_ENTRY.format(
            title="Reset Talos installation", cmdline=f"{quoted} talos.experimental.wipe=system"
        )
    return text


def loader_conf(enroll: SDBootEnrollKeys) -> str:
    """systemd-boot's ``loader/loader.conf`` (one trailing newline)."""
    return _LOADER_CONF.format(enroll=enroll.value)


def native_args(version: str, epoch: int) -> list[str]:
    """xorriso native commands appended after ``--`` (``ExecutorOptions.Generate`` with an epoch).

    Dates always (upstream: only with SOURCE_DATE_EPOCH, which the factory always has here); the
    volume id / volume set id only from Talos 1.8, older ISOs keep xorriso's default ``ISOIMAGE``.
    """
    args = ["-volume_date", "all_file_dates", f"={epoch}", "-volume_date", "uuid", volume_uuid(epoch)]
    if Quirks(version).supports_iso_label():
        label = iso_label(version)
        args += ["-volid", volume_id(label), "-volset-id", label]
    return args


# --------------------------------------------------------------------------------------------------
# the three preparations (CreateGRUB / CreateUEFI) and the final commands


def _prepare_grub(stage: Stage, inputs: IsoInputs) -> None:
    """``CreateGRUB``'s tree: kernel, initramfs and grub.cfg under ``boot/``."""
    stage.link(inputs.kernel, "boot/vmlinuz")
    stage.link(inputs.initramfs, "boot/initramfs.xz")
    stage.write("boot/grub/grub.cfg", grub_cfg(inputs.cmdline, inputs.version).encode())
    stage.touch()


def _efiboot_size(sd_boot: Path, uki: Path) -> int:
    """10 MiB plus each of sd-boot and the UKI rounded up to whole MiB (upstream's formula).

    Real Talos UKIs (~100 MiB) always give FAT32 enough clusters. A small one (test payloads) would
    give a "FAT32" of fewer than 65525 clusters, which mtools (and EDK2) take for FAT16 and cannot
    read, so upstream's build would fail in ``mcopy``; here the image grows to the FAT32 minimum.
    """
    size = 10 * MIB
    for path in (sd_boot, uki):
        size += (path.stat().st_size + MIB - 1) // MIB * MIB
    return max(size, _FAT32_MIN_BYTES)


def _prepare_uefi(stage: Stage, inputs: IsoInputs) -> Path:
    """``CreateUEFI``: ``efiboot.img`` (FAT with sd-boot, the UKI and loader config) and the same files
    as plain ISO9660 files; returns the image path (inside the tree, excluded from the ISO by ``-m``).
    """
    if inputs.uki is None or inputs.sd_boot is None:
        raise ValueError("UEFI and hybrid ISOs need a UKI and systemd-boot")
    boot_name = _SDBOOT_EFI_NAME.get(inputs.arch)
    if boot_name is None:
        raise ValueError(f"unsupported architecture {inputs.arch!r}")
    env = stage.env
    efiboot = stage.tree / "efiboot.img"
    with efiboot.open("wb") as fh:
        fh.truncate(_efiboot_size(inputs.sd_boot, inputs.uki))
    tools.run(["mkfs.vfat", "-F", "32", "-n", "EFI", "--invariant", efiboot], env=env)

    stage.mkdir("EFI/Linux")
    stage.copy(inputs.sd_boot, f"EFI/BOOT/{boot_name}")
    stage.copy(inputs.uki, f"EFI/Linux/Talos-{inputs.version}.efi")
    stage.write("loader/loader.conf", loader_conf(inputs.enroll_keys).encode())
    # placeholder seed so systemd-boot ≥261 never tries to create one on read-only media (upstream #14029)
    stage.write("loader/random-seed", bytes(32), mode=0o444)
    if inputs.uki_signing_cert_der is not None:
        stage.copy(inputs.uki_signing_cert_der, "EFI/keys/uki-signing-cert.der")
    auto_enroll = {"PK.auth": inputs.pk_auth, "KEK.auth": inputs.kek_auth, "db.auth": inputs.db_auth}
    for name, src in auto_enroll.items():
        if src is not None:
            stage.copy(src, f"loader/keys/auto/{name}")
    stage.touch()

    fat_copy(efiboot, stage.tree, ["EFI", "loader"], env)
    # read-only, so systemd-boot ≥261.2 leaves it alone and older ones fail the open before writing
    tools.run(["mattrib", "-i", efiboot, "+r", "::/loader/random-seed"], env=env)
    return efiboot


def _grub_copy_modules(src: Path, dst: Path) -> None:
    """``grub_install_copy_files`` for one platform with ``--compress=xz``: every file xz-compressed."""
    dst.mkdir(mode=0o755, parents=True, exist_ok=True)
    names = sorted(p.name for p in src.iterdir() if p.name.endswith(".mod"))
    names += [n for n in _GRUB_PLATFORM_FILES if (src / n).is_file()]
    for name in names:
        data = (src / name).read_bytes()
        packed = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=_GRUB_XZ_FILTERS)
        (dst / name).write_bytes(packed)
        (dst / name).chmod(0o644)


def _prepare_grub_efi(stage: Stage, inputs: IsoInputs) -> list[str]:
    """The UEFI half of a GRUB ISO, as grub-mkrescue makes it for each EFI platform directory.

    Returns the extra mkisofs arguments. The core images look for the ISO by its volume UUID (the
    ``-volume_date uuid`` we set) and take their prefix from there, so they find ``/boot/grub``
    whether booted from the El Torito image or from the GPT partition of the ISO written to a disk.
    """
    platforms = [p for p in _GRUB_EFI_IMAGES if p in inputs.grub_dirs]
    if not platforms:
        return []
    env = stage.env
    uuid = volume_uuid(stage.epoch)
    fs_uuid = "-".join((uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:12], uuid[12:14], uuid[14:16]))
    efi_root = stage.workdir / "grub-efi"
    boot_dir = efi_root / "efi" / "boot"
    boot_dir.mkdir(mode=0o755, parents=True)
    for platform in platforms:
        src = grub_platform_dir(inputs.grub_dirs, platform)
        _grub_copy_modules(src, stage.tree / "boot" / "grub" / platform)
        load_cfg = stage.workdir / f"load-{platform}.cfg"
        lines = [f"search --fs-uuid --set=root {fs_uuid}", "set prefix=(${root})/boot/grub"]
        partmaps = (src / "partmap.lst").read_text().split() if (src / "partmap.lst").is_file() else []
        lines += [f"insmod {name}" for name in partmaps]
        load_cfg.write_text("\n".join(lines) + "\n")
        modules = [m for m in _GRUB_EFI_CORE_MODULES + _GRUB_XZ_MODULES if (src / f"{m}.mod").is_file()]
        image = boot_dir / _GRUB_EFI_IMAGES[platform]
        cmd: list[str | os.PathLike[str]] = ["grub-mkimage", "-d", src, "-O", platform, "-p", "/boot/grub"]
        tools.run([*cmd, "-c", load_cfg, "-o", image, *modules], env=env)
    for path in (efi_root, *efi_root.rglob("*")):
        os.utime(path, (stage.epoch, stage.epoch))
    efi_img = stage.tree / "efi.img"
    serial = env["GRUB_FAT_SERIAL_NUMBER"]
    tools.run(["mformat", "-C", "-f", "2880", "-L", "16", "-N", serial, "-i", efi_img, "::"], env=env)
    fat_copy(efi_img, efi_root, ["efi"], env)
    stage.touch()
    return ["--efi-boot", "efi.img", "-efi-boot-part", "--efi-boot-image"]


def _grub_mkrescue(inputs: IsoInputs, out: Path, extra: Sequence[str]) -> list[str | os.PathLike[str]]:
    """``grub-mkrescue`` with the release's i386-pc GRUB (upstream's hybrid passes that directory too)."""
    return [
        "grub-mkrescue",
        "--compress=xz",
        f"--output={out}",
        "--verbose",
        f"--directory={grub_platform_dir(inputs.grub_dirs, 'i386-pc')}",
        *extra,
    ]


_APPENDED_ESP = [
    "-e",
    "--interval:appended_partition_2:all::",
    "-append_partition",
    "2",
    "0xef",
]

_PARTITION_LAYOUT = [
    "-partition_cyl_align",
    "all",
    "-partition_offset",
    "16",
    "-iso_mbr_part_type",
    "0x83",
    "-no-emul-boot",
]


def build_iso(generator: IsoGenerator, inputs: IsoInputs, out: Path, *, workdir: Path, epoch: int) -> None:
    """Writes the ISO to ``out``; all staging happens in ``workdir`` (created and removed by the caller).

    The same inputs and ``epoch`` always give the same bytes.
    """
    stage = Stage(workdir, epoch)
    env = stage.env
    native = ["--", *native_args(inputs.version, epoch)]
    cmd: list[str | os.PathLike[str]]
    if generator is IsoGenerator.GRUB:
        _prepare_grub(stage, inputs)
        efi_args = _prepare_grub_efi(stage, inputs)
        cmd = _grub_mkrescue(inputs, out, [])
        cmd += [stage.tree, "-iso-level", "3", *efi_args, *native]
    elif generator is IsoGenerator.UEFI:
        efiboot = _prepare_uefi(stage, inputs)
        cmd = ["xorrisofs", *_APPENDED_ESP, efiboot, *_PARTITION_LAYOUT]
        cmd += ["-m", "efiboot.img", "-iso-level", "3", "-o", out, stage.tree, *native]
        # no -r here (as upstream): Rock Ridge records owners, so make them root's whoever builds
        cmd += ["-chown_r", "0", "/", "--", "-chgrp_r", "0", "/", "--"]
    elif generator is IsoGenerator.HYBRID:
        _prepare_grub(stage, inputs)
        efiboot = _prepare_uefi(stage, inputs)
        cmd = _grub_mkrescue(inputs, out, ["-m", "efiboot.img", "-iso-level", "3"])
        cmd += [stage.tree, "-eltorito-alt-boot", *_APPENDED_ESP, efiboot, "-appended_part_as_gpt"]
        cmd += [*_PARTITION_LAYOUT, *native]
    else:  # pragma: no cover - exhaustive enum
        raise ValueError(f"unknown ISO generator {generator!r}")
    tools.run(cmd, env=env)
