"""Boot something in QEMU and collect the fixture's ``IMAGE-FACTORY-BOOT-REPORT`` line.

General enough for every boot test: a kernel + initrd given directly, a CD-ROM (ISO), disks
(raw/qcow2 on virtio, SATA or NVMe), BIOS (SeaBIOS) or UEFI (OVMF with a private copy of the
variable store, optionally a prepared one for Secure Boot). Always TCG (KVM hangs on the CI hosts),
``-no-reboot`` and ``-nic none`` unless asked otherwise; the serial port is read through a pipe so a
boot ends as soon as the report (or an error / a Secure Boot refusal) shows up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ERROR_MARKER",
    "OVMF_CODE",
    "OVMF_CODE_SECBOOT",
    "OVMF_VARS",
    "REPORT_MARKER",
    "BootResult",
    "Disk",
    "boot",
    "esp_image",
    "meta_disk",
    "qemu_available",
    "talos_adv",
]

QEMU = "qemu-system-x86_64"
OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.fd"
OVMF_CODE_SECBOOT = OVMF_DIR / "OVMF_CODE_4M.secboot.fd"
OVMF_VARS = OVMF_DIR / "OVMF_VARS_4M.fd"

#: arm64: ``-M virt`` under TCG with AAVMF (Debian ``qemu-system-arm``, ``qemu-efi-aarch64``).
QEMU_ARM64 = "qemu-system-aarch64"
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
#: cortex-a57 rather than ``max``: TCG emulates its pointer authentication slowly (a boot takes 1.5x).
ARM64_CPU = "cortex-a57"

REPORT_MARKER = "IMAGE-FACTORY-BOOT-REPORT "
ERROR_MARKER = "IMAGE-FACTORY-BOOT-ERROR"
#: Firmware refusing an unsigned/untrusted binary never ends on its own; stop at once.
_REFUSALS = ("Access Denied", "Security Violation")


@dataclass(frozen=True)
class Disk:
    """A disk image attached to the guest; ``snapshot`` keeps the file unchanged."""

    path: Path
    format: str = "raw"
    interface: Literal["virtio", "sata", "nvme"] = "virtio"
    snapshot: bool = True


@dataclass
class BootResult:
    """What a boot produced. ``report`` is the parsed JSON of the first report line, if any."""

    report: dict[str, Any] | None
    serial: str
    returncode: int | None
    seconds: float
    timed_out: bool
    error: str | None = None
    refused: str | None = None
    command: list[str] = field(default_factory=list)

    def describe(self, tail: int = 60) -> str:
        """Failure context for assertion messages: how it ended plus the end of the serial log."""
        lines = self.serial.splitlines()[-tail:]
        return (
            f"rc={self.returncode} timed_out={self.timed_out} seconds={self.seconds:.1f} error={self.error!r}"
            f" refused={self.refused!r}\n$ {' '.join(self.command)}\n" + "\n".join(lines)
        )


def qemu_available(arch: str = "amd64") -> bool:
    """Whether QEMU and its UEFI firmware (OVMF, or AAVMF for arm64) are installed."""
    if arch == "arm64":
        return shutil.which(QEMU_ARM64) is not None and AAVMF_CODE.is_file() and AAVMF_VARS.is_file()
    return shutil.which(QEMU) is not None and OVMF_CODE.is_file() and OVMF_VARS.is_file()


def _disk_args(disks: Sequence[Disk]) -> list[str]:
    args: list[str] = []
    ahci = False
    for i, disk in enumerate(disks):
        snap = ",snapshot=on" if disk.snapshot else ""
        drive = f"file={disk.path},format={disk.format}{snap}"
        if disk.interface == "virtio":
            args += ["-drive", f"{drive},if=virtio"]
        elif disk.interface == "sata":
            if not ahci:
                args += ["-device", "ahci,id=ahci0"]
                ahci = True
            args += ["-drive", f"{drive},if=none,id=disk{i}"]
            args += ["-device", f"ide-hd,drive=disk{i},bus=ahci0.{i % 6}"]
        elif disk.interface == "nvme":
            args += ["-drive", f"{drive},if=none,id=disk{i}", "-device", f"nvme,drive=disk{i},serial=nvme{i}"]
        else:
            raise ValueError(f"unknown disk interface {disk.interface!r}")
    return args


def _parse(serial: str) -> tuple[dict[str, Any] | None, str | None]:
    report: dict[str, Any] | None = None
    error: str | None = None
    for raw in serial.splitlines():
        line = raw.strip("\r\x00 ")
        if report is None and (at := line.find(REPORT_MARKER)) >= 0:
            try:
                report = json.loads(line[at + len(REPORT_MARKER) :])
            except ValueError as exc:
                error = error or f"unparsable report line ({exc}): {line[at:][:300]}"
        elif error is None and (at := line.find(ERROR_MARKER)) >= 0:
            error = line[at:]
    return report, error


def boot(
    *,
    kernel: Path | None = None,
    initrd: Path | None = None,
    append: str | None = None,
    firmware: Literal["bios", "uefi"] = "bios",
    cdrom: Path | None = None,
    disks: Sequence[Disk] = (),
    timeout: float = 120,
    memory_mb: int = 512,
    extra_args: Sequence[str] = (),
    ovmf_code: Path | None = None,
    ovmf_vars: Path | None = None,
    secure_boot: bool = False,
    boot_order: str | None = None,
    network: bool = False,
    persist_vars: bool = False,
    arch: Literal["amd64", "arm64"] = "amd64",
) -> BootResult:
    """Boot once and return what the serial port showed.

    UEFI uses ``-machine q35`` with OVMF (``ovmf_code``/``ovmf_vars`` override the stock files, e.g. a
    variable store with enrolled keys; it is copied, never written, unless ``persist_vars``: then the
    guest writes ``ovmf_vars`` itself, as firmware enrolling keys must); ``secure_boot`` adds the SMM
    settings the secboot CODE image needs. QEMU is stopped early once the report or an
    ``IMAGE-FACTORY-BOOT-ERROR`` line arrived and the guest does not power off by itself, or when the
    firmware refuses to run an image; on ``timeout`` the whole process group is killed.

    ``arch="arm64"``: ``qemu-system-aarch64 -M virt`` (``firmware="bios"`` there means QEMU's own
    direct kernel boot, no firmware) with AAVMF for UEFI; the CD-ROM is on virtio-scsi (virt has no IDE).
    """
    if arch == "arm64":
        return _boot_arm64(
            kernel=kernel,
            initrd=initrd,
            append=append,
            firmware=firmware,
            cdrom=cdrom,
            disks=disks,
            timeout=timeout,
            memory_mb=memory_mb,
            extra_args=extra_args,
        )
    if not qemu_available():
        raise RuntimeError(f"{QEMU} or OVMF missing: install qemu-system-x86 and ovmf")
    with tempfile.TemporaryDirectory(prefix="qemu-") as tmp:
        cmd = [QEMU, "-accel", "tcg", "-m", str(memory_mb), "-no-reboot", "-display", "none"]
        cmd += ["-monitor", "none", "-serial", "stdio"]
        if not network:
            cmd += ["-nic", "none"]
        if firmware == "uefi":
            code = ovmf_code or (OVMF_CODE_SECBOOT if secure_boot else OVMF_CODE)
            if persist_vars:
                if ovmf_vars is None:
                    raise ValueError("persist_vars needs the ovmf_vars file to write")
                vars_copy = ovmf_vars
            else:
                vars_copy = Path(tmp, "OVMF_VARS.fd")
                shutil.copyfile(ovmf_vars or OVMF_VARS, vars_copy)
            machine = "q35,smm=on" if secure_boot else "q35"
            cmd += ["-machine", machine]
            if secure_boot:
                cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,file={code},readonly=on"]
            cmd += ["-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        elif firmware == "bios":
            cmd += ["-machine", "pc"]
        else:
            raise ValueError(f"unknown firmware {firmware!r}")
        if kernel is not None:
            cmd += ["-kernel", str(kernel)]
        if initrd is not None:
            cmd += ["-initrd", str(initrd)]
        if append is not None:
            cmd += ["-append", append]
        if cdrom is not None:
            cmd += ["-cdrom", str(cdrom)]
        cmd += _disk_args(disks)
        if boot_order is not None:
            cmd += ["-boot", boot_order]
        cmd += list(extra_args)
        return _run(cmd, timeout)


def _boot_arm64(
    *,
    kernel: Path | None,
    initrd: Path | None,
    append: str | None,
    firmware: str,
    cdrom: Path | None,
    disks: Sequence[Disk],
    timeout: float,
    memory_mb: int,
    extra_args: Sequence[str],
) -> BootResult:
    if not qemu_available("arm64"):
        raise RuntimeError(f"{QEMU_ARM64} or AAVMF missing: install qemu-system-arm and qemu-efi-aarch64")
    with tempfile.TemporaryDirectory(prefix="qemu-") as tmp:
        cmd = [QEMU_ARM64, "-machine", "virt", "-cpu", ARM64_CPU, "-accel", "tcg", "-m", str(memory_mb)]
        cmd += ["-no-reboot", "-display", "none", "-monitor", "none", "-serial", "stdio", "-nic", "none"]
        if firmware == "uefi":
            vars_copy = Path(tmp, "AAVMF_VARS.fd")
            shutil.copyfile(AAVMF_VARS, vars_copy)
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,file={AAVMF_CODE},readonly=on"]
            cmd += ["-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        elif firmware != "bios":
            raise ValueError(f"unknown firmware {firmware!r}")
        for flag, value in (("-kernel", kernel), ("-initrd", initrd), ("-append", append)):
            if value is not None:
                cmd += [flag, str(value)]
        if cdrom is not None:
            cmd += ["-device", "virtio-scsi-pci,id=scsi0"]
            cmd += ["-drive", f"file={cdrom},format=raw,if=none,id=cd0,media=cdrom,readonly=on"]
            cmd += ["-device", "scsi-cd,drive=cd0,bus=scsi0.0"]
        cmd += _disk_args(disks)
        cmd += list(extra_args)
        return _run(cmd, timeout)


def _run(cmd: list[str], timeout: float, grace: float = 15.0) -> BootResult:
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so a timeout can take down QEMU and anything it spawned
    )
    buf = bytearray()
    eof = threading.Event()
    lock = threading.Lock()

    def reader() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            with lock:
                buf.extend(chunk)
        eof.set()

    def seen(marker: str) -> bool:
        with lock:
            at = buf.find(marker.encode())
            return at >= 0 and buf.find(b"\n", at) >= 0

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    timed_out = False
    refused: str | None = None
    ended_at: float | None = None  # when a complete report/error line arrived
    while not eof.wait(0.1):
        now = time.monotonic()
        refused = next((word for word in _REFUSALS if seen(word)), None)
        if refused:
            break
        if ended_at is None and (seen(REPORT_MARKER) or seen(ERROR_MARKER)):
            ended_at = now
        if ended_at is not None and now - ended_at > grace:
            break  # the guest should have powered off by now
        if now - start > timeout:
            timed_out = True
            break
    if eof.is_set():
        try:
            proc.wait(10)  # EOF on the serial pipe: QEMU is exiting
        except subprocess.TimeoutExpired:
            _kill(proc)
    else:
        _kill(proc)
    thread.join(5)
    serial = bytes(buf).decode(errors="replace")
    report, error = _parse(serial)
    return BootResult(
        report=report,
        serial=serial,
        returncode=proc.returncode,
        seconds=time.monotonic() - start,
        timed_out=timed_out,
        error=error,
        refused=refused,
        command=cmd,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill QEMU's process group (ours: start_new_session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------------
# disk images


ADV_LENGTH = 256 * 1024


def talos_adv(values: Mapping[int, bytes | str]) -> bytes:
    """One copy of Talos' META block: magic, big-endian records, sha256, magic.

    As ``siderolabs/go-adv:adv/talos/talos.go`` (``internal/pkg/meta/internal/adv/talos`` before 1.14).
    """
    buf = bytearray(ADV_LENGTH)
    struct.pack_into(">I", buf, 0, 0x5A4B3C2D)
    struct.pack_into(">I", buf, ADV_LENGTH - 4, 0xA5B4C3D2)
    off = 4
    for tag, value in values.items():
        raw = value.encode() if isinstance(value, str) else value
        if off + 8 + len(raw) > ADV_LENGTH - 36:
            raise ValueError("META values do not fit")
        struct.pack_into(">II", buf, off, tag, len(raw))
        buf[off + 8 : off + 8 + len(raw)] = raw
        off += 8 + len(raw)
    buf[ADV_LENGTH - 36 : ADV_LENGTH - 4] = hashlib.sha256(buf).digest()
    return bytes(buf)


def meta_disk(path: Path, values: Mapping[int, bytes | str] | None, *, size_mib: int = 16) -> Path:
    """A raw GPT disk shaped like a Talos one (EFI, META, STATE), META holding ``values`` twice.

    Built with sgdisk on a plain file (no loop devices). ``values=None`` leaves META all zeros.
    """
    with path.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    meta_start = 2048 + 4 * 2048  # sectors: EFI is 4 MiB from 1 MiB
    parts = ["-n", "1:2048:+4M", "-t", "1:ef00", "-c", "1:EFI"]
    parts += ["-n", f"2:{meta_start}:+1M", "-t", "2:8300", "-c", "2:META"]
    parts += ["-n", "3:0:0", "-t", "3:8300", "-c", "3:STATE"]
    proc = subprocess.run(["sgdisk", *parts, str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"sgdisk failed: {proc.stderr or proc.stdout}")
    if values is not None:
        adv = talos_adv(values)
        with path.open("r+b") as fh:
            fh.seek(meta_start * 512)
            fh.write(adv + adv)
    return path


def esp_image(path: Path, files: dict[str, Path | bytes]) -> Path:
    """A FAT ESP as a plain file (mkfs.vfat + mtools, no mounting); OVMF boots it as removable media."""
    subprocess.run(["mkfs.vfat", "-C", str(path), "65536"], check=True, capture_output=True)
    dirs = {"/".join(Path(name).parts[:i]) for name in files for i in range(1, len(Path(name).parts))}
    for d in sorted(dirs, key=len):
        subprocess.run(["mmd", "-i", str(path), f"::/{d}"], check=True)
    for name, content in files.items():
        src = content
        if isinstance(content, bytes):
            src = path.with_name(Path(name).name + ".tmp")
            src.write_bytes(content)
        subprocess.run(["mcopy", "-o", "-i", str(path), str(src), f"::/{name}"], check=True)
    return path
