"""Overlays (single-board computers): the overlay's profile, its installer run in a box, and what the
installer asked for, checked before any of it reaches an asset.

An overlay image (``siderolabs/sbc-*``) holds ``installers/<name>`` (an executable for the factory's
own arch), ``artifacts/<arch>/…`` (firmware, U-Boot, device trees) and ``profiles/<name>.yaml``
(a profile fragment). The installer speaks two commands, YAML on stdin and stdout
(``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/overlay/overlay.go`` and
``pkg/imager/overlay/executor``; the brief is ``talos-imager.md`` §9):

* ``get-options`` (stdin: the schematic's ``overlay.options``) answers the board's kernel arguments
  and ``partitionOptions.offset``, LBAs to leave free before the GPT entries for a bootloader;
* ``install`` (stdin: ``installDisk``, ``mountPrefix``, ``artifactsPath``, ``extraOptions``) writes
  raw bytes into the disk image and files under ``<mountPrefix>/boot/EFI``.

Upstream runs that executable on the factory host, with the factory's rights. Here it is third-party
code treated as such: it runs under bubblewrap with no network, no view of the host's ``/etc`` or
keys (only ``/usr`` read-only, the overlay read-only and one empty scratch folder writable), in its
own PID namespace that dies with it, under ``prlimit`` bounds (address space, file size, CPU) and a
wall-clock timeout. Its results are then checked: the disk it wrote may differ from zero only in the
gaps the GPT leaves free (between the primary header and the entries, whose size ``offset`` sets,
and between the entries and the first partition); the files it left must be plain files under
``boot/EFI`` that collide with nothing the image already has. Only then are the bytes copied into
the real disk and the files into the EFI partition, where boards' ROMs and U-Boot read them.

Deliberate difference: upstream's v1.13+ image mode calls ``install`` only for GRUB disk images and
puts the ``boot/EFI`` files into the XFS BOOT tree (talos-imager.md §9.3). This factory calls it for
every disk image and puts them on the FAT EFI partition, the one place Raspberry Pi firmware can
read them, so an overlay image boots whichever bootloader the schematic picks.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.config.options import OverlayInstallerOptions
from common.errors import BadSourceError, UnavailableError
from common.profile.model import Bootloader, MetaValue, OutputKind, Profile
from common.schematic.emit import marshal_value
from worker.imager import gpt
from worker.imager.sparse import nonzero_blocks

log = logging.getLogger(__name__)

__all__ = [
    "HOST_ARCH",
    "InstallResult",
    "Limits",
    "OverlayError",
    "OverlayOptions",
    "OverlayRunner",
    "OverlayTimeoutError",
    "merge_profile",
]

#: The arch whose overlay image holds an executable this host can run (upstream ``runtime.GOARCH``).
HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "amd64")

MIB = 1024 * 1024
_BLOCK = 64 * 1024
_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
#: ``partitionOptions.offset`` above this many bytes is refused (Rockchip asks for 10 MiB).
_MAX_OFFSET_BYTES = 128 * MIB


class OverlayError(BadSourceError):
    """The overlay image or its installer misbehaved: 502 naming the overlay; nothing is published."""


class OverlayTimeoutError(OverlayError):
    """The overlay installer ran past its time (504: the factory gave up waiting on it)."""

    status = 504


class SandboxUnavailableError(UnavailableError):
    """bubblewrap or prlimit is missing on this worker: overlay builds wait for one that has them."""


@dataclass(frozen=True)
class Limits:
    """Bounds for one installer run; ``memory`` is address space (``RLIMIT_AS``) per process."""

    seconds: float = 60.0
    memory: int = 1024 * MIB
    files_bytes: int = 256 * MIB  # total size of the files it leaves under mountPrefix
    tmpfs_bytes: int = 64 * MIB  # its /tmp
    stdout_bytes: int = 1 * MIB

    @classmethod
    def from_options(cls, options: OverlayInstallerOptions) -> Limits:
        """The bounds ``build.overlayInstaller`` configures (the rest keep their defaults)."""
        return cls(
            seconds=options.timeout.total_seconds(),
            memory=options.memoryLimit,
            files_bytes=options.maxOutputSize,
        )


@dataclass(frozen=True)
class OverlayOptions:
    """``overlay.Options``: what ``get-options`` answered."""

    name: str
    kernel_args: tuple[str, ...] = ()
    offset_lbas: int = 0


@dataclass(frozen=True)
class InstallResult:
    """What ``install`` asked for, checked: raw writes (disk offset, bytes) and files put on the ESP."""

    raw_writes: tuple[tuple[int, bytes], ...]
    esp_files: tuple[str, ...]


def merge_profile(profile: Profile, document: bytes, overlay: str) -> Profile:
    """Merges the overlay's ``profiles/<name>.yaml`` into ``profile`` (upstream ``EnhanceFromSchematic``).

    Upstream blanks input, arch, platform, overlay, version, secureboot, output kind and format and the
    disk format and size, then does a Talos config merge; what is left to merge is the customization
    and the disk's bootloader and sector size. Upstream merges before the schematic's own choices are
    applied, so here the overlay's kernel arguments and META come first and its bootloader and sector
    size only fill what the schematic left unset.
    """
    try:
        doc = yaml.safe_load(document) or {}
    except yaml.YAMLError as exc:
        raise OverlayError(f"overlay {overlay!r}: profiles/{overlay}.yaml is not YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise OverlayError(f"overlay {overlay!r}: profiles/{overlay}.yaml is not a mapping")
    custom = doc.get("customization") or {}
    output = doc.get("output") or {}
    if not isinstance(custom, dict) or not isinstance(output, dict):
        raise OverlayError(
            f"overlay {overlay!r}: profiles/{overlay}.yaml has a malformed customization/output"
        )
    args = custom.get("extraKernelArgs") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise OverlayError(f"overlay {overlay!r}: customization.extraKernelArgs is not a list of strings")
    metas = custom.get("metaContents") or []
    if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
        raise OverlayError(f"overlay {overlay!r}: customization.metaContents is not a list of mappings")
    profile.customization.extra_kernel_args[:0] = args
    profile.customization.meta_contents[:0] = [
        MetaValue(int(m.get("key") or 0), str(m.get("value") or "")) for m in metas
    ]
    image = output.get("imageOptions") or {}
    if profile.output.kind is OutputKind.IMAGE and isinstance(image, dict) and profile.output.image_options:
        opts = profile.output.image_options
        if image.get("bootloader") and opts.bootloader is Bootloader.NONE:
            try:
                opts.bootloader = Bootloader(str(image["bootloader"]))
            except ValueError as exc:
                raise OverlayError(
                    f"overlay {overlay!r}: unknown bootloader {image['bootloader']!r}"
                ) from exc
        sector = image.get("diskSectorSize")
        if sector and not opts.disk_sector_size:
            if sector not in gpt.SECTOR_SIZES:
                raise OverlayError(f"overlay {overlay!r}: disk sector size {sector!r} is not supported")
            opts.disk_sector_size = int(sector)
    return profile


def _sandbox_tools() -> tuple[str, str]:
    bwrap, prlimit = shutil.which("bwrap", path=_PATH), shutil.which("prlimit", path=_PATH)
    if bwrap is None or prlimit is None:
        raise SandboxUnavailableError(
            "overlay builds need bubblewrap (bwrap) and prlimit on the worker "
            "to contain the overlay installer"
        )
    problem = _sandbox_problem(bwrap)
    if problem:
        raise SandboxUnavailableError(f"this worker cannot contain an overlay installer: {problem}")
    return bwrap, prlimit


@functools.cache
def _sandbox_problem(bwrap: str) -> str:
    """Why bubblewrap cannot make its namespaces here ("" if it can), asked once per process.

    Without this a worker whose kernel or seccomp profile forbids user namespaces would blame every
    overlay (502) for what is its own configuration (503: another worker may build it).
    """
    cmd = [bwrap, "--unshare-all", "--die-with-parent", *_system_binds(), "--", "/bin/true"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace").strip()[-500:]


def _system_binds() -> list[str]:
    """``/usr`` read-only and the usual top-level links into it (nothing else of the host)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


class OverlayRunner:
    """Runs one overlay's installer (``executable_root/installers/<name>``) contained in ``work``.

    ``artifacts`` is the target arch's ``artifacts`` folder; ``work`` must be inside the build's
    scratch (it is created here, and everything the installer writes stays in it).
    """

    def __init__(
        self,
        name: str,
        *,
        executable_root: Path,
        artifacts: Path,
        options: Mapping[str, Any],
        work: Path,
        limits: Limits | None = None,
    ) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise OverlayError(f"invalid overlay installer name {name!r}")
        self.name = name
        self.installers = executable_root / "installers"
        if not (self.installers / name).is_file():
            raise OverlayError(f"overlay {name!r}: the image has no installers/{name}")
        self.artifacts = artifacts
        self.options = dict(options)
        self.work = work.absolute()
        self.work.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits()
        self._runs = 0

    @property
    def options_yaml(self) -> bytes:
        """The extra options as the installer reads them (go-yaml's encoding of the map)."""
        return marshal_value(self.options)

    # --- running ---------------------------------------------------------------------------------

    def _run(self, command: str, stdin: bytes, box: Path, file_limit: int) -> bytes:
        bwrap, prlimit = _sandbox_tools()
        box.mkdir(parents=True, exist_ok=True)
        self._runs += 1
        out_path = self.work / f"{command}-{self._runs}.stdout"
        err_path = self.work / f"{command}-{self._runs}.stderr"
        artifacts = (
            ["--ro-bind", str(self.artifacts), "/overlay/artifacts"] if self.artifacts.is_dir() else []
        )
        cmd = [
            prlimit,
            f"--as={self.limits.memory}",
            f"--fsize={file_limit}",
            f"--cpu={int(self.limits.seconds) + 1}",
            "--core=0",
            bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv",
            "PATH",
            _PATH,
            "--setenv",
            "HOME",
            "/work",
            "--setenv",
            "LC_ALL",
            "C",
            *_system_binds(),
            "--ro-bind",
            str(self.installers),
            "/overlay/installers",
            *artifacts,
            "--bind",
            str(box),
            "/work",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--size",
            str(self.limits.tmpfs_bytes),
            "--tmpfs",
            "/tmp",
            "--chdir",
            "/work",
            "--",
            f"/overlay/installers/{self.name}",
            command,
        ]
        started = time.monotonic()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                env={"PATH": _PATH},
            )
            try:
                proc.communicate(stdin, timeout=self.limits.seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
                raise OverlayTimeoutError(
                    f"overlay {self.name!r}: installer {command} did not finish "
                    f"within {self.limits.seconds:g}s"
                ) from None
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
                raise
        log.info(
            "overlay installer %s %s exited %d in %.2fs",
            self.name,
            command,
            proc.returncode,
            time.monotonic() - started,
            extra={"overlay": self.name},
        )
        if proc.returncode != 0:
            with err_path.open("rb") as f:
                f.seek(max(0, err_path.stat().st_size - 2000))
                tail = f.read().decode(errors="replace").strip()
            why = (
                f"killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exit code {proc.returncode}"
            )
            raise OverlayError(f"overlay {self.name!r}: installer {command} failed ({why}): {tail}")
        if out_path.stat().st_size > self.limits.stdout_bytes:
            raise OverlayError(
                f"overlay {self.name!r}: installer {command} wrote more than {self.limits.stdout_bytes} bytes"
            )
        return out_path.read_bytes()

    def get_options(self) -> OverlayOptions:
        """``get-options``, its answer validated (kernel args, a sane partition offset)."""
        raw = self._run("get-options", self.options_yaml, self.work / "get-options", 16 * MIB)
        try:
            doc = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise OverlayError(f"overlay {self.name!r}: get-options answered invalid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise OverlayError(f"overlay {self.name!r}: get-options did not answer a mapping")
        args = doc.get("kernelArgs") or []
        if not isinstance(args, list) or not all(isinstance(a, str) and a and a.isprintable() for a in args):
            raise OverlayError(f"overlay {self.name!r}: get-options kernelArgs is not a list of arguments")
        if any(" " in a and "=" not in a for a in args):
            raise OverlayError(f"overlay {self.name!r}: get-options kernelArgs has an argument with spaces")
        part = doc.get("partitionOptions") or {}
        offset = part.get("offset", 0) if isinstance(part, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise OverlayError(
                f"overlay {self.name!r}: get-options partitionOptions.offset is not a count of LBAs"
            )
        return OverlayOptions(
            name=str(doc.get("name") or self.name), kernel_args=tuple(args), offset_lbas=offset
        )

    def install(self, layout: gpt.GptLayout, esp: Path) -> InstallResult:
        """``install`` against a blank copy of the disk; then the checks, then the files onto ``esp``.

        The raw writes are returned for the caller to put into the real disk (after its partitions).
        """
        box = self.work / "install"
        disk = box / "disk.raw"
        mount = box / "mnt"
        box.mkdir(parents=True, exist_ok=True)
        mount.mkdir()
        with disk.open("wb") as f:
            f.truncate(layout.disk_size)
        request = {
            "installDisk": "/work/disk.raw",
            "mountPrefix": "/work/mnt",
            "artifactsPath": "/overlay/artifacts",
            "extraOptions": self.options,
        }
        self._run("install", marshal_value(request), box, layout.disk_size)
        writes = self._check_disk(disk, layout)
        files = self._check_files(mount)
        placed = self._place(mount / "boot" / "EFI", files, esp)
        return InstallResult(raw_writes=tuple(writes), esp_files=tuple(placed))

    # --- checking ----------------------------------------------------------------------------------

    def _check_disk(self, disk: Path, layout: gpt.GptLayout) -> list[tuple[int, bytes]]:
        st = os.lstat(disk)
        if not stat.S_ISREG(st.st_mode) or st.st_size != layout.disk_size:
            raise OverlayError(
                f"overlay {self.name!r}: installer replaced or resized the disk image "
                f"({st.st_size} bytes, expected {layout.disk_size})"
            )
        allowed = allowed_ranges(layout)
        writes: list[tuple[int, bytes]] = []
        with disk.open("rb") as f:
            for pos, data in nonzero_blocks(f.fileno(), layout.disk_size, _BLOCK):
                writes.extend(_split_block(pos, data, allowed, self.name))
        return _coalesce(writes)

    def _check_files(self, mount: Path) -> list[Path]:
        """Plain files and folders only, all under ``boot/EFI``, within the size bound."""
        files: list[Path] = []
        total = 0
        allowed_dirs = {mount / "boot", mount / "boot" / "EFI"}
        efi = mount / "boot" / "EFI"
        for dirpath, dirnames, filenames in os.walk(mount):
            for entry in [*dirnames, *filenames]:
                path = Path(dirpath, entry)
                st = os.lstat(path)
                inside = path == efi or efi in path.parents
                if stat.S_ISDIR(st.st_mode):
                    if not inside and path not in allowed_dirs:
                        raise OverlayError(
                            f"overlay {self.name!r}: installer wrote {path.relative_to(mount)} "
                            "outside boot/EFI of its mount prefix"
                        )
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise OverlayError(
                        f"overlay {self.name!r}: installer left {path.relative_to(mount)}, "
                        "which is not a regular file (links and devices are refused)"
                    )
                if not inside:
                    raise OverlayError(
                        f"overlay {self.name!r}: installer wrote {path.relative_to(mount)} "
                        "outside boot/EFI of its mount prefix"
                    )
                total += st.st_size
                if total > self.limits.files_bytes:
                    raise OverlayError(
                        f"overlay {self.name!r}: installer wrote more than "
                        f"{self.limits.files_bytes} bytes of files"
                    )
                files.append(path)
        return sorted(files)

    def _place(self, src_root: Path, files: Sequence[Path], esp: Path) -> list[str]:
        placed = []
        for src in files:
            rel = src.relative_to(src_root)
            dst = esp / rel
            if dst.exists() or dst.is_symlink():
                raise OverlayError(
                    f"overlay {self.name!r}: installer file {rel} would replace the image's own"
                )
            for parent in reversed(rel.parents[:-1]):
                d = esp / parent
                if not d.is_dir():
                    d.mkdir(mode=0o755)
            shutil.copyfile(src, dst)
            dst.chmod(0o644)
            placed.append(rel.as_posix())
        return placed


def allowed_ranges(layout: gpt.GptLayout) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` an overlay may write raw: the gap ``partitionOptions.offset`` opens
    between the primary GPT header and its entries, and the alignment gap before the first partition."""
    ss = layout.sector_size
    entries_end = layout.entries_lba + -(-gpt.NUM_ENTRIES * gpt.ENTRY_SIZE // ss)
    first = min((p.first_lba for p in layout.partitions), default=layout.first_usable)
    ranges = [(2 * ss, layout.entries_lba * ss), (entries_end * ss, first * ss)]
    return [(a, b) for a, b in ranges if b > a]


def _split_block(
    pos: int, data: bytes, allowed: Sequence[tuple[int, int]], name: str
) -> list[tuple[int, bytes]]:
    """The non-zero parts of one block inside ``allowed``; any non-zero byte outside is refused."""
    end = pos + len(data)
    out: list[tuple[int, bytes]] = []
    cursor = pos
    for a, b in allowed:
        if b <= cursor or a >= end:
            continue
        lo, hi = max(a, cursor), min(b, end)
        _require_zero(data, pos, cursor, lo, allowed, name)
        piece = data[lo - pos : hi - pos]
        trimmed = piece.lstrip(b"\0")
        if trimmed:
            out.append((lo + len(piece) - len(trimmed), trimmed.rstrip(b"\0")))
        cursor = hi
    _require_zero(data, pos, cursor, end, allowed, name)
    return out


def _require_zero(
    data: bytes, pos: int, lo: int, hi: int, allowed: Sequence[tuple[int, int]], name: str
) -> None:
    piece = data[lo - pos : hi - pos]
    if piece.strip(b"\0"):
        first = lo + len(piece) - len(piece.lstrip(b"\0"))
        where = ", ".join(f"[{a:#x}, {b:#x})" for a, b in allowed)
        raise OverlayError(
            f"overlay {name!r}: installer wrote to disk offset {first:#x}, "
            f"outside the gaps it may use ({where})"
        )


def _coalesce(writes: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Pieces that touch are joined (each starts and ends with a non-zero byte)."""
    out: list[tuple[int, bytearray]] = []
    for off, data in sorted(writes):
        if out and out[-1][0] + len(out[-1][1]) == off:
            out[-1][1].extend(data)
        else:
            out.append((off, bytearray(data)))
    return [(off, bytes(data)) for off, data in out]
