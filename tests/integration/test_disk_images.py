"""Disk images, platform images and installer tarballs end to end, checked with independent tools.

Mirrors upstream's integration checks (``downloadDiskImageMatchSizeAndPartitions``,
``assertInstallerTarUKIArtifact``) and goes further: the GPT is parsed here byte by byte and cross-read
with sfdisk/fdisk, the ESP with mtools, BOOT with xfs_db/xfs_repair, META with the ADV reader,
compressed outputs are decoded stream by stream (every stream's check verified, each distinct stream
decoded once, so an 11 GiB ``.xz`` costs what its data costs) into sparse files, and installers are
read both directly and through skopeo.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import mmap
import os
import re
import struct
import subprocess
import tarfile
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pefile
import pytest

from common.errors import FactoryError
from common.schematic.model import Customization, MetaValue, Schematic
from common.talos.version import parse_tolerant
from devstack.release.release import Release
from tests.support.imager import ImagerHarness, imager_harness
from worker.imager.build import BuildResult, kernel_cmdline
from worker.imager.disk import grub_disk_cfg
from worker.imager.meta import parse_adv

pytestmark = pytest.mark.integration

MIB = 1 << 20
ADV = 256 * 1024

EMPTY = Schematic()
GRUB = Schematic(customization=Customization(bootloader="grub"))
SDBOOT = Schematic(customization=Customization(bootloader="sd-boot"))
DUALBOOT = Schematic(customization=Customization(bootloader="dual-boot"))
META_VALUES = (MetaValue(0xA, '{"externalIPs":["1.2.3.4"]}'), MetaValue(0xC, "user-reserved-1"))
META = Schematic(customization=Customization(meta=META_VALUES))
META_4K = Schematic(customization=Customization(meta=META_VALUES, sector_size=4096))
META_BYTES = {m.key: m.value.encode() for m in META_VALUES}
DUAL_TAG = {0x11: b"dual-boot"}


def read_talos_adv(block: bytes) -> dict[int, bytes]:
    """One META ADV copy, checked (magics, checksum) by the factory's reader, values as bytes."""
    return {tag: value.encode("utf-8", "surrogateescape") for tag, value in parse_adv(block).items()}


# type GUIDs (siderolabs/talos@v1.14.0-rc.1:internal/pkg/partition/constants.go) and GUIDFromLabel(<label>)
# values (pkg/makefs/makefs.go, tested in makefs_test.go; disk label in cmd/installer/pkg/install/install.go),
# as literals
EFI_TYPE = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
BIOS_TYPE = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
LINUX_TYPE = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
DISK_GUID = uuid.UUID("d92d45b3-cde9-8760-be9f-a2a71fac8d11")
LABEL_GUIDS = {
    "EFI": uuid.UUID("bca5174b-0118-8a6a-af0b-2c6e1585acae"),
    "BIOS": uuid.UUID("a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3"),
    "BOOT": uuid.UUID("24c73076-4092-85dd-9d98-686a2dbf6d81"),
    "META": uuid.UUID("cf04f137-101e-8ec6-9627-fa3f51cdabb8"),
    "STATE": uuid.UUID("f7f88648-df7c-8acb-b4d2-6f124659d923"),
    "EPHEMERAL": uuid.UUID("c5e02400-0e5e-80bc-99ec-53b3e45ad6c4"),
}
PART_TYPES = {"EFI": EFI_TYPE, "BIOS": BIOS_TYPE}
LOADER_CONF = b"# systemd-boot configuration\n\ntimeout 10\n"
EFI_NAMES = {"amd64": "BOOTX64.efi", "arm64": "BOOTAA64.efi"}
PE_MACHINE = {"amd64": 0x8664, "arm64": 0xAA64}
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def since(version: str, minimum: str) -> bool:
    return parse_tolerant(version) >= parse_tolerant(minimum)


def run(*cmd: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        [os.fspath(c) for c in cmd], capture_output=True, text=True, check=True, env=env
    ).stdout


# --- harness ---------------------------------------------------------------------------------------


class Images:
    """The module's harness plus a cache, so each asset is built once however many tests read it."""

    def __init__(self, harness: ImagerHarness) -> None:
        self.h = harness
        self._built: dict[tuple[str, str, str, str], BuildResult] = {}
        self._payload: dict[tuple[str, str], bytes] = {}

    def build(self, path: str, version: str, schematic: Schematic, dest: str = "out") -> BuildResult:
        key = (path, version, repr(schematic), dest)
        if key not in self._built:
            self._built[key] = self.h.build(path, version, schematic, dest=dest)
        return self._built[key]

    def cmdline(self, path: str, version: str, schematic: Schematic) -> str:
        return kernel_cmdline(self.h.plan(path, version, schematic))

    def payload(self, version: str, rel: str) -> bytes:
        """A file of the release's imager image, e.g. ``usr/install/amd64/systemd-boot.efi``."""
        if (version, rel) not in self._payload:
            with self.h.artifacts.imager(parse_tolerant(version)) as imager:
                self._payload[(version, rel)] = (imager.fs / rel).read_bytes()
        return self._payload[(version, rel)]

    def imager_created(self, version: str) -> str:
        with self.h.artifacts.imager(parse_tolerant(version)) as imager:
            return str(imager.config["created"])


@pytest.fixture(scope="module")
def images(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    with imager_harness(fixture_release, tmp_path_factory.mktemp("disk-images")) as harness:
        yield Images(harness)


# --- GPT, read independently of worker.imager.gpt ----------------------------------------------------


@dataclass(frozen=True)
class Part:
    label: str
    type: uuid.UUID
    guid: uuid.UUID
    first: int
    last: int
    attrs: int

    @property
    def sectors(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Gpt:
    sector: int
    disk_guid: uuid.UUID
    first_usable: int
    last_usable: int
    last_lba: int
    parts: list[Part]

    def part(self, label: str) -> Part:
        return next(p for p in self.parts if p.label == label)

    def has(self, label: str) -> bool:
        return any(p.label == label for p in self.parts)

    def offset(self, label: str) -> int:
        return self.part(label).first * self.sector


_HDR = struct.Struct("<8sIIIIQQQQ16sQIII")


def _read_header(f: Any, lba: int, sector: int) -> tuple[tuple[Any, ...], bytes]:
    f.seek(lba * sector)
    raw = f.read(sector)
    fields = _HDR.unpack_from(raw)
    sig, rev, hsize, crc, reserved = fields[:5]
    assert sig == b"EFI PART" and rev == 0x00010000 and hsize == 92 and reserved == 0
    assert zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:92]) == crc, f"header CRC at LBA {lba}"
    assert raw[92:] == bytes(sector - 92), "a GPT header sector is zero after its 92 bytes"
    return fields, raw


def read_gpt(path: Path, sector: int, disk_size: int | None = None) -> Gpt:
    """Protective MBR, both headers (CRCs, cross-links, identical entry arrays), then the entries."""
    size = disk_size if disk_size is not None else path.stat().st_size
    assert size % sector == 0
    last = size // sector - 1
    entry_lbas = 128 * 128 // sector
    with path.open("rb") as f:
        mbr = f.read(512)
        assert mbr[510:512] == b"\x55\xaa"
        entry = mbr[446:462]
        assert entry[:8] == b"\x00\x00\x02\x00\xee\xff\xff\xff", entry.hex()
        assert struct.unpack_from("<II", entry, 8) == (1, min(last, 0xFFFFFFFF))
        assert mbr[462:510] == bytes(48), "only the protective entry"
        primary, _ = _read_header(f, 1, sector)
        backup, _ = _read_header(f, last, sector)
        f.seek(2 * sector)
        entries = f.read(128 * 128)
        f.seek((last - entry_lbas) * sector)
        backup_entries = f.read(128 * 128)
    (_, _, _, _, _, my, alt, first_usable, last_usable, guid, entries_lba, count, esize, ecrc) = primary
    assert (my, alt, entries_lba, count, esize) == (1, last, 2, 128, 128)
    assert backup[5:7] == (last, 1) and backup[10] == last - entry_lbas
    assert backup[7:10] == primary[7:10] and backup[11:] == primary[11:]
    assert zlib.crc32(entries) == ecrc and backup_entries == entries
    mib = MIB // sector
    assert first_usable == -(-(2 + entry_lbas) // mib) * mib
    assert last_usable == last - entry_lbas - 1
    parts = []
    for i in range(128):
        raw = entries[i * 128 : (i + 1) * 128]
        if raw == bytes(128):
            assert entries[i * 128 :] == bytes(128 * (128 - i)), "entries are packed from the first"
            break
        type_le, guid_le, first, last_lba, attrs, name = struct.unpack("<16s16sQQQ72s", raw)
        label = name.decode("utf-16-le").rstrip("\0")
        parts.append(
            Part(label, uuid.UUID(bytes_le=type_le), uuid.UUID(bytes_le=guid_le), first, last_lba, attrs)
        )
    return Gpt(sector, uuid.UUID(bytes_le=guid), first_usable, last_usable, last, parts)


def expected_layout(bootloader: str, version: str) -> list[tuple[str, int]]:
    """(label, MiB); 0 = the rest of the disk.

    Sizes as ``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/imager/quirks/partitions.go``, order as the
    bootloaders' ``PrepareBootPartitions`` (``internal/app/machined/pkg/runtime/v1alpha1/bootloader``).
    """
    boot = 2000 if since(version, "v1.11.0") else 1000
    uki_efi = 100 + 1 + boot
    layout = {
        "sd-boot": [("EFI", uki_efi), ("META", 1)],
        "dual-boot": [("EFI", uki_efi), ("BIOS", 1), ("BOOT", boot), ("META", 1)],
        "grub": [("EFI", 100), ("BIOS", 1), ("BOOT", boot), ("META", 1)],
    }[bootloader]
    if not since(version, "v1.8.0"):
        layout += [("STATE", 100), ("EPHEMERAL", 0)]
    return layout


def check_layout(gpt: Gpt, bootloader: str, version: str) -> None:
    """Labels, order, types, GUIDs, attributes and LBAs: contiguous, 1 MiB aligned, sized per §7.3."""
    layout = expected_layout(bootloader, version)
    assert [p.label for p in gpt.parts] == [label for label, _ in layout]
    assert gpt.disk_guid == DISK_GUID
    mib = MIB // gpt.sector
    lba = gpt.first_usable
    for part, (label, size) in zip(gpt.parts, layout, strict=True):
        assert part.type == PART_TYPES.get(label, LINUX_TYPE), label
        assert part.guid == LABEL_GUIDS[label], label
        assert part.attrs == (1 << 2 if label == "BIOS" else 0), label
        assert part.first == lba, label
        if size:
            assert part.sectors == size * mib, label
        else:  # the largest free range, its end aligned down to 1 MiB
            assert part.last == (gpt.last_usable + 1) // mib * mib - 1
        lba = part.last + 1


def cross_check_with_tools(path: Path, gpt: Gpt) -> None:
    """sfdisk (512-byte sectors; sgdisk -v too) or fdisk -b 4096 must read the same table."""
    if gpt.sector == 512:
        table = json.loads(run("sfdisk", "--json", path))["partitiontable"]
        assert table["label"] == "gpt" and uuid.UUID(table["id"]) == gpt.disk_guid
        assert (table["firstlba"], table["lastlba"]) == (gpt.first_usable, gpt.last_usable)
        seen = [
            (p["name"], uuid.UUID(p["type"]), uuid.UUID(p["uuid"]), p["start"], p["size"], p.get("attrs", ""))
            for p in table["partitions"]
        ]
        mine = [
            (p.label, p.type, p.guid, p.first, p.sectors, "LegacyBIOSBootable" if p.attrs else "")
            for p in gpt.parts
        ]
        assert seen == mine
        assert "No problems found" in run("sgdisk", "-v", path)
    else:
        out = run("fdisk", "-b", str(gpt.sector), "-l", "-o", "Device,Start,End,Type-UUID,Name,UUID", path)
        assert f"Sector size (logical/physical): {gpt.sector} bytes" in out
        rows = [
            line.split() for line in out.splitlines() if re.match(r"^\S+\s+\d+\s+\d+\s+[0-9A-F-]{36}", line)
        ]
        assert [(int(r[1]), int(r[2]), uuid.UUID(r[3]), r[4], uuid.UUID(r[5])) for r in rows] == [
            (p.first, p.last, p.type, p.label, p.guid) for p in gpt.parts
        ]


# --- partition contents --------------------------------------------------------------------------


def extract(src: Path, offset: int, length: int, dst: Path) -> Path:
    """Copies ``length`` bytes at ``offset`` into a sparse file, reading only allocated extents."""
    fd = os.open(src, os.O_RDONLY)
    try:
        with dst.open("wb") as out:
            out.truncate(length)
            pos, end = offset, offset + length
            while pos < end:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    break
                if data >= end:
                    break
                hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
                while data < hole:
                    chunk = os.pread(fd, min(8 * MIB, hole - data), data)
                    os.pwrite(out.fileno(), chunk, data - offset)
                    data += len(chunk)
                pos = hole
    finally:
        os.close(fd)
    return dst


def esp_files(image: Path, offset: int) -> list[str]:
    listing = run("mdir", "-/", "-b", "-i", f"{image}@@{offset}", "::", env=MTOOLS_ENV)
    return sorted(line.removeprefix("::/") for line in listing.split() if not line.endswith("/"))


def esp_read(image: Path, offset: int, name: str, tmp: Path) -> bytes:
    dst = tmp / ("esp-" + name.replace("/", "_"))
    run("mcopy", "-n", "-i", f"{image}@@{offset}", f"::/{name}", dst, env=MTOOLS_ENV)
    return dst.read_bytes()


def pe_sections(data: bytes) -> list[tuple[str, bytes]]:
    pe = pefile.PE(data=data, fast_load=True)
    return [(s.Name.rstrip(b"\0").decode(), s.get_data()[: s.Misc_VirtualSize]) for s in pe.sections]


def pe_machine(data: bytes) -> int:
    return int(pefile.PE(data=data, fast_load=True).FILE_HEADER.Machine)


def check_uki(uki: bytes, cmdline: str, version: str, arch: str, kernel: bytes) -> dict[str, bytes]:
    """Main .cmdline, kernel, and from 1.10 the reset-to-maintenance profile of §5.3."""
    assert pe_machine(uki) == PE_MACHINE[arch]
    sections = pe_sections(uki)
    names = [n for n, _ in sections]
    first: dict[str, bytes] = {}
    for name, data in sections:
        first.setdefault(name, data)
    assert first[".cmdline"].decode() == cmdline
    assert first[".linux"] == kernel
    assert f"VERSION_ID={version}\n".encode() in first[".osrel"]
    if since(version, "v1.10.0"):
        profiles = [i for i, n in enumerate(names) if n == ".profile"]
        assert len(profiles) == 2
        assert sections[profiles[1]][1] == b"ID=reset-maintenance\nTITLE=Reset to maintenance mode"
        assert sections[profiles[1] + 1] == (
            ".cmdline",
            (cmdline + " talos.experimental.wipe=system:EPHEMERAL,STATE").encode(),
        )
    else:
        assert ".profile" not in names
    return first


_BMAP = re.compile(r"data offset (\d+) startblock \d+ \((\d+)/(\d+)\) count (\d+) flag (\d+)")


class Xfs:
    """Reads an XFS image with xfs_db only (no mount): superblock, directories, file contents."""

    def __init__(self, image: Path) -> None:
        self.image = image
        sb = self.db("sb 0", "print fname uuid blocksize agblocks sectsize")
        self.sb = dict(line.split(" = ", 1) for line in sb.splitlines())
        self.block = int(self.sb["blocksize"])
        self.agblocks = int(self.sb["agblocks"])

    def db(self, *commands: str) -> str:
        args: list[str] = []
        for c in commands:
            args += ["-c", c]
        return run("xfs_db", "-r", *args, self.image)

    def ls(self, path: str) -> dict[str, str]:
        """name -> "directory"/"regular"/…, without . and .."""
        out = {}
        for line in self.db(f"ls {path}").splitlines()[1:]:
            cols = line.split()
            if cols[-2] not in (".", ".."):
                out[cols[-2]] = cols[2]
        return out

    def read(self, path: str) -> bytes:
        out = self.db(f"path {path}", "print core.size core.mode", "bmap")
        size = int(re.search(r"core.size = (\d+)", out).group(1))  # type: ignore[union-attr]
        data = bytearray(size)
        with self.image.open("rb") as f:
            for off, agno, agbno, count, flag in (tuple(map(int, m)) for m in _BMAP.findall(out)):
                assert flag == 0, "no unwritten extents"
                f.seek((agno * self.agblocks + agbno) * self.block)
                start = off * self.block
                piece = f.read(count * self.block)[: max(0, size - start)]
                data[start : start + len(piece)] = piece
        return bytes(data[:size])


# --- the disk image cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: str
    version: str
    schematic: Schematic
    bootloader: str  # what the imager must resolve
    size_mib: int  # §2.4's table
    meta: dict[int, bytes] = field(default_factory=dict)
    sector: int = 512

    @property
    def arch(self) -> str:
        return self.path.split("-")[1].split(".")[0]


CASES = {
    "1.12-amd64-dual": Case("metal-amd64.raw", "v1.12.4", EMPTY, "dual-boot", 4247, DUAL_TAG),
    "1.12-arm64-sdboot": Case("metal-arm64.raw", "v1.12.4", EMPTY, "sd-boot", 2246),
    "1.13-amd64-dual-meta": Case(
        "metal-amd64.raw", "v1.13.0-beta.1", META, "dual-boot", 4247, {**META_BYTES, **DUAL_TAG}
    ),
    "1.10-amd64-dual": Case("metal-amd64.raw", "v1.10.7", EMPTY, "dual-boot", 2247, DUAL_TAG),
    "1.10-arm64-sdboot": Case("metal-arm64.raw", "v1.10.7", EMPTY, "sd-boot", 1246),
    "1.9-amd64-grub": Case("metal-amd64.raw", "v1.9.5", EMPTY, "grub", 1246),
    "1.9-arm64-grub-meta": Case("metal-arm64.raw", "v1.9.5", META, "grub", 1246, META_BYTES),
    "1.7-amd64-grub-data": Case("metal-amd64.raw", "v1.7.6", EMPTY, "grub", 1246),
    "1.12-amd64-grub": Case("metal-amd64.raw", "v1.12.4", GRUB, "grub", 2246),
    "1.12-amd64-sdboot": Case("metal-amd64.raw", "v1.12.4", SDBOOT, "sd-boot", 2246),
    "1.12-arm64-4k-meta": Case("metal-arm64.raw", "v1.12.4", META_4K, "sd-boot", 2246, META_BYTES, 4096),
    "1.12-amd64-4k-meta": Case(
        "metal-amd64.raw", "v1.12.4", META_4K, "dual-boot", 4247, {**META_BYTES, **DUAL_TAG}, 4096
    ),
}

case_params = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
WITH_BOOT = {k: c for k, c in CASES.items() if c.bootloader != "sd-boot"}


def built(images: Images, case: Case) -> Path:
    result = images.build(case.path, case.version, case.schematic)
    assert result.name == case.path
    return result.path


@case_params
def test_partition_table(images: Images, case: Case) -> None:
    """Talos finds its partitions by label/GUID at fixed sizes: any drift makes the image unbootable."""
    image = built(images, case)
    assert image.stat().st_size == case.size_mib * MIB
    gpt = read_gpt(image, case.sector)
    check_layout(gpt, case.bootloader, case.version)
    cross_check_with_tools(image, gpt)


def test_worked_example_lbas(images: Images) -> None:
    """§7.3's worked example pins the exact LBAs of the two most common layouts."""
    dual = read_gpt(built(images, CASES["1.12-amd64-dual"]), 512)
    assert [(p.first, p.last) for p in dual.parts] == [
        (2048, 4304895),
        (4304896, 4306943),
        (4306944, 8402943),
        (8402944, 8404991),
    ]
    assert (dual.last_usable, dual.last_lba) == (8697822, 8697855)
    sd4k = read_gpt(built(images, CASES["1.12-arm64-4k-meta"]), 4096)
    assert [(p.first, p.last) for p in sd4k.parts] == [(256, 538111), (538112, 538367)]


@case_params
def test_esp_contents(images: Images, case: Case, tmp_path: Path) -> None:
    """The firmware boots the ESP's removable-media path: the right loader, UKI and loader.conf."""
    image = built(images, case)
    gpt = read_gpt(image, case.sector)
    offset = gpt.offset("EFI")
    files = esp_files(image, offset)
    arch = case.arch
    loader = f"EFI/boot/{EFI_NAMES[arch]}"
    if case.bootloader == "grub":
        assert files == [loader]
        grub = esp_read(image, offset, loader, tmp_path)
        assert pe_machine(grub) == PE_MACHINE[arch]
        assert pefile.PE(data=grub, fast_load=True).OPTIONAL_HEADER.Subsystem == 10  # EFI application
        assert b"(hd0,gpt3)/grub" in grub
    else:
        uki_name = f"EFI/Linux/Talos-{case.version}.efi"
        assert files == sorted([loader, uki_name, "loader/loader.conf"])
        sd_boot = images.payload(case.version, f"usr/install/{arch}/systemd-boot.efi")
        assert esp_read(image, offset, loader, tmp_path) == sd_boot
        assert esp_read(image, offset, "loader/loader.conf", tmp_path) == LOADER_CONF
        cmdline = images.cmdline(case.path, case.version, case.schematic)
        assert cmdline.startswith("talos.platform=metal ") and "INSTALLER_META" not in cmdline
        kernel = images.payload(case.version, f"usr/install/{arch}/vmlinuz")
        check_uki(esp_read(image, offset, uki_name, tmp_path), cmdline, case.version, arch, kernel)
    esp = extract(image, offset, gpt.part("EFI").sectors * case.sector, tmp_path / "esp.img")
    info = run("minfo", "-i", esp, "::", env=MTOOLS_ENV)
    assert f"sector size: {case.sector} bytes" in info
    assert 'disk label="EFI        "' in info and 'disk type="FAT32   "' in info
    subprocess.run(["fsck.fat", "-n", esp], check=True, capture_output=True)


@pytest.mark.parametrize("case", list(WITH_BOOT.values()), ids=list(WITH_BOOT))
def test_boot_partition(images: Images, case: Case, tmp_path: Path) -> None:
    """GRUB (BIOS, and UEFI for grub images) reads kernel, initramfs and grub.cfg from the XFS BOOT."""
    image = built(images, case)
    gpt = read_gpt(image, case.sector)
    boot = extract(image, gpt.offset("BOOT"), gpt.part("BOOT").sectors * case.sector, tmp_path / "boot.img")
    xfs = Xfs(boot)
    assert xfs.sb["fname"].startswith('"BOOT\\000')
    assert uuid.UUID(xfs.sb["uuid"]) == LABEL_GUIDS["BOOT"]
    assert int(xfs.sb["sectsize"]) == case.sector
    features = set(xfs.db("version").split(" = ", 1)[1].strip().split(","))
    assert {"CRC", "FTYPE", "FINOBT", "REFLINK", "BIGTIME", "INOBTCNT", "SPARSE_INODES"} <= features
    # lts_6.1 (< 1.8) has rmapbt=0 and nrext64=0; lts_6.6 and later turn both on (§7.4)
    assert ("RMAPBT" in features) == since(case.version, "v1.8.0")
    assert ("NREXT64" in features) == since(case.version, "v1.8.0")
    assert xfs.ls("/") == {"A": "directory", "grub": "directory"}
    assert xfs.ls("/A") == {"initramfs.xz": "regular", "vmlinuz": "regular"}
    assert xfs.ls("/grub") == {"grub.cfg": "regular"}
    cmdline = images.cmdline(case.path, case.version, case.schematic)
    assert xfs.read("/grub/grub.cfg").decode() == grub_disk_cfg(cmdline, case.version)
    assert f'set default="A - Talos {case.version}"' in grub_disk_cfg(cmdline, case.version)
    assert xfs.read("/A/vmlinuz") == images.payload(case.version, f"usr/install/{case.arch}/vmlinuz")
    initramfs = xfs.read("/A/initramfs.xz")
    if case.bootloader == "dual-boot":  # the same rebuilt initramfs as the UKI's
        uki = esp_read(image, gpt.offset("EFI"), f"EFI/Linux/Talos-{case.version}.efi", tmp_path)
        assert dict(pe_sections(uki))[".initrd"] == initramfs
    else:
        base = images.payload(case.version, f"usr/install/{case.arch}/initramfs.xz")
        assert initramfs != base and base in initramfs  # base carried, extensions appended
    repair = subprocess.run(["xfs_repair", "-n", "-f", boot], capture_output=True, text=True)
    assert repair.returncode == 0, repair.stderr


@case_params
def test_mbr_and_bios_partition(images: Images, case: Case) -> None:
    """Legacy BIOS boots through boot.img in the MBR pointing at core.img in the BIOS partition."""
    image = built(images, case)
    gpt = read_gpt(image, case.sector)
    with image.open("rb") as f:
        mbr = f.read(512)
        bios = b""
        if gpt.has("BIOS"):
            f.seek(gpt.offset("BIOS"))
            bios = f.read(MIB)
    if case.arch == "amd64" and case.bootloader in ("grub", "dual-boot"):
        s = gpt.part("BIOS").first
        boot_img = bytearray(images.payload(case.version, "usr/lib/grub/i386-pc/boot.img"))
        boot_img[0x5C:0x64] = s.to_bytes(8, "little")
        boot_img[0x66:0x68] = b"\x90\x90"
        assert mbr[:446] == boot_img[:446]
        assert struct.unpack_from("<Q", mbr, 0x5C)[0] == s
        assert bios[:4] != bytes(4), "core.img at the start of BIOS"
        assert struct.unpack_from("<Q", bios, 0x1F4)[0] == s + 1  # first blocklist entry
        assert struct.unpack_from("<H", bios, 0x1FC)[0] > 0
    else:
        assert mbr[:446] == bytes(446), "no BIOS boot code without GRUB on amd64"
        assert bios == bytes(len(bios)), "arm64 GRUB images keep BIOS zeroed"


@case_params
def test_meta_partition(images: Images, case: Case) -> None:
    """Talos applies META on first boot: exactly the schematic's values, plus 0x11 for dual-boot."""
    image = built(images, case)
    gpt = read_gpt(image, case.sector)
    assert gpt.part("META").sectors * case.sector == MIB
    with image.open("rb") as f:
        f.seek(gpt.offset("META"))
        meta = f.read(MIB)
    if not case.meta:
        assert meta == bytes(MIB)
        return
    assert read_talos_adv(meta[:ADV]) == case.meta
    assert meta[ADV : 2 * ADV] == meta[:ADV], "both ADV copies"
    assert meta[2 * ADV :] == bytes(MIB - 2 * ADV), "the legacy syslinux ADV stays zero"


# --- every platform through its public file name ----------------------------------------------------


def _unxz(src: Path, out: int) -> int:
    """Multi-stream xz: structure from ``xz --robot --list``, every distinct stream decoded once."""
    listing = run("xz", "--robot", "--list", "-v", src).splitlines()
    # stream <n> <blocks> <c_off> <u_off> <c_size> <u_size> <ratio> <check> <padding>
    rows = [line.split("\t") for line in listing if line.startswith("stream\t")]
    streams = [(int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[9])) for r in rows]
    # totals <streams> <blocks> <compressed> <uncompressed> …
    totals = next(line.split("\t") for line in listing if line.startswith("totals\t"))
    assert int(totals[3]) == src.stat().st_size
    zero: set[bytes] = set()
    comp_pos = unc_pos = 0
    with src.open("rb") as f:
        for c_off, u_off, c_size, u_size, padding in streams:
            assert (c_off, u_off) == (comp_pos, unc_pos), "streams are back to back"
            f.seek(c_off)
            data = f.read(c_size)
            key = hashlib.sha256(data).digest()
            comp_pos, unc_pos = c_off + c_size + padding, u_off + u_size
            if key in zero:
                continue
            plain = lzma.decompress(data, format=lzma.FORMAT_XZ)  # verifies the stream's check
            assert len(plain) == u_size
            if plain.count(0) == len(plain):
                zero.add(key)
            else:
                os.pwrite(out, plain, u_off)
    assert comp_pos == src.stat().st_size and unc_pos == int(totals[4])
    return unc_pos


def _gunzip(src: Path, out: int) -> int:
    """Multi-member gzip: each member inflated (CRC32 and ISIZE verified by zlib) unless it is
    byte-identical to an all-zero member already verified."""
    zero_members: list[tuple[bytes, int]] = []
    step = 16 * MIB
    pos = total = 0
    with src.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        size = len(mm)
        while pos < size:
            for member, length in zero_members:
                if mm[pos : pos + len(member)] == member:
                    pos += len(member)
                    total += length
                    break
            else:
                start, produced, all_zero = pos, 0, True
                d = zlib.decompressobj(31)
                while not d.eof:
                    assert pos < size, "truncated gzip member"
                    pending = mm[pos : pos + MIB]
                    pos += len(pending)
                    while True:
                        plain = d.decompress(pending, step)
                        if plain.count(0) != len(plain):
                            all_zero = False
                            os.pwrite(out, plain, total + produced)
                        produced += len(plain)
                        pending = d.unconsumed_tail
                        if d.eof or (not pending and len(plain) < step):
                            break
                pos -= len(d.unused_data)
                total += produced
                if all_zero:
                    zero_members.append((bytes(mm[start:pos]), produced))
    return total


def decompress(src: Path, dst: Path) -> int:
    """``src`` decoded into the sparse file ``dst``; returns the decoded size."""
    name = src.name
    if name.endswith(".zst"):
        run("zstd", "-d", "-q", "-f", "--sparse", "-o", dst, src)  # verifies every frame's checksum
        return dst.stat().st_size
    with dst.open("wb") as out:
        if name.endswith(".xz"):
            total = _unxz(src, out.fileno())
        elif name.endswith(".gz"):
            total = _gunzip(src, out.fileno())
        else:
            raise AssertionError(f"unknown compression: {name}")
        out.truncate(total)
    return total


@dataclass(frozen=True)
class Platform:
    path: str
    size_mib: int


PLATFORMS = [
    # suffixes: siderolabs/talos@v1.14.0-rc.1:pkg/machinery/platforms/platforms.go (DiskImageSuffix); sizes:
    # pkg/imager/profile/default.go's bases grown by output.go's FillDefaults (amd64 dual-boot, ≥1.11;
    # golden files pkg/imager/profile/testdata/*-amd64-1.1x.0.yaml)
    Platform("metal-amd64.raw.zst", 4247),
    Platform("aws-amd64.raw.xz", 11193),
    Platform("gcp-amd64.raw.tar.gz", 11193),
    Platform("azure-amd64.vhd.xz", 11193),
    Platform("digital-ocean-amd64.raw.gz", 11193),
    Platform("nocloud-amd64.raw.xz", 4247),
    Platform("openstack-amd64.raw.xz", 4247),
    Platform("vmware-amd64.ova", 11193),
    Platform("akamai-amd64.raw.gz", 4247),
    Platform("cloudstack-amd64.raw.gz", 11193),
    Platform("hcloud-amd64.raw.xz", 4247),
    Platform("oracle-amd64.qcow2", 11193),
    Platform("upcloud-amd64.raw.xz", 11193),
    Platform("exoscale-amd64.qcow2", 13241),
    Platform("opennebula-amd64.raw.zst", 4247),
    Platform("scaleway-amd64.raw.zst", 4247),
    Platform("alibabacloud-amd64.qcow2", 4247),
    Platform("vultr-amd64.raw", 11193),  # in the profile table, but no UI image: plain raw
    # arm64 ≥1.11 is sd-boot: base + 1000
    Platform("aws-arm64.raw.xz", 9192),
    Platform("vmware-arm64.ova", 9192),
    Platform("exoscale-arm64.qcow2", 11240),
]


def _epoch(created: str) -> int:
    return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())


def _qemu_info(path: Path, fmt: str) -> dict[str, Any]:
    return dict(json.loads(run("qemu-img", "info", "--output=json", "-f", fmt, path)))


def _to_raw(src: Path, fmt: str, dst: Path) -> Path:
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", src, dst)
    return dst


def inner_raw(asset: Path, size: int, tmp: Path, created: str) -> Path:
    """The asset's disk as a (sparse) raw file, checking the container on the way."""
    name = asset.name
    if name.endswith(".gz"):  # pigz --no-time: no timestamp in the (first) member header
        with asset.open("rb") as f:
            assert f.read(8) == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
    if name.endswith(".tar.gz"):
        tar_path = tmp / "disk.tar"
        decompress(asset, tar_path)
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            assert [m.name for m in members] == ["disk.raw"]
            (member,) = members
            assert member.isfile() and member.size == size and (member.uid, member.gid) == (0, 0)
            assert member.mode == 0o644 and member.mtime == _epoch(created)
            tar.extract(member, tmp, filter="data")
        return tmp / "disk.raw"
    if name.endswith((".xz", ".gz", ".zst")):
        inner = tmp / name.rsplit(".", 1)[0]
        decompress(asset, inner)
        return inner_raw(inner, size, tmp, created) if not inner.name.endswith(".raw") else inner
    if name.endswith(".raw"):
        return asset
    if name.endswith(".qcow2"):
        info = _qemu_info(asset, "qcow2")
        assert (info["format"], info["virtual-size"], info["cluster-size"]) == ("qcow2", size, 8192)
        run("qemu-img", "check", "-f", "qcow2", asset)
        return _to_raw(asset, "qcow2", tmp / "qcow2.raw")
    if name.endswith(".vhd"):
        info = _qemu_info(asset, "vpc")
        assert (info["format"], info["virtual-size"]) == ("vpc", size)
        assert asset.stat().st_size == size + 512, "fixed VHD: the disk, then a 512-byte footer"
        with asset.open("rb") as f:
            f.seek(size)
            footer = f.read(512)
        assert footer[:8] == b"conectix"
        original, current = struct.unpack_from(">QQ", footer, 40)
        assert (original, current, struct.unpack_from(">I", footer, 60)[0]) == (size, size, 2)  # 2 = fixed
        checksum = struct.unpack_from(">I", footer, 64)[0]
        assert checksum == ~(sum(footer[:64]) + sum(footer[68:])) & 0xFFFFFFFF
        with asset.open("r+b") as f:  # our own decoded copy: cut the footer off, the rest is raw
            f.truncate(size)
        return asset
    if name.endswith(".ova"):
        with tarfile.open(asset) as tar:
            members = tar.getmembers()
            assert [m.name for m in members] == ["disk.ovf", "disk.mf", "disk.vmdk"]
            ovf = tar.extractfile("disk.ovf").read()  # type: ignore[union-attr]
            mf = tar.extractfile("disk.mf").read()  # type: ignore[union-attr]
            tar.extract("disk.vmdk", tmp, filter="data")
        vmdk = tmp / "disk.vmdk"
        vmdk_sha = hashlib.sha256(vmdk.read_bytes()).hexdigest()
        assert mf.decode() == (
            f"SHA256(disk.vmdk)= {vmdk_sha}\nSHA256(disk.ovf)= {hashlib.sha256(ovf).hexdigest()}\n"
        )
        ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1"}
        root = ET.fromstring(ovf)
        file_ref = root.find("ovf:References/ovf:File", ns)
        disk = root.find("ovf:DiskSection/ovf:Disk", ns)
        assert file_ref is not None and disk is not None
        attr = "{http://schemas.dmtf.org/ovf/envelope/1}"
        assert file_ref.get(attr + "href") == "disk.vmdk"
        assert int(file_ref.get(attr + "size", "")) == vmdk.stat().st_size
        assert int(disk.get(attr + "capacity", "")) == size // MIB
        assert disk.get(attr + "capacityAllocationUnits") == "byte * 2^20"
        assert disk.get(attr + "format", "").endswith("vmdk.html#streamOptimized")
        info = _qemu_info(vmdk, "vmdk")
        assert info["virtual-size"] == size
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
        return _to_raw(vmdk, "vmdk", tmp / "vmdk.raw")
    raise AssertionError(f"unexpected asset {name}")


@pytest.mark.parametrize("platform", PLATFORMS, ids=[p.path for p in PLATFORMS])
def test_platform_image(images: Images, platform: Platform, tmp_path: Path) -> None:
    """Each cloud imports its own container (compression, qcow2/vhd/ova) at its own disk size."""
    version = "v1.12.4"
    arch = next(a for a in ("amd64", "arm64") if f"-{a}." in platform.path)
    result = images.build(platform.path, version, EMPTY)
    assert result.name == platform.path
    size = platform.size_mib * MIB
    raw = inner_raw(result.path, size, tmp_path, images.imager_created(version))
    info = _qemu_info(raw, "raw")
    assert (info["format"], info["virtual-size"]) == ("raw", size)
    gpt = read_gpt(raw, 512)
    check_layout(gpt, "dual-boot" if arch == "amd64" else "sd-boot", version)
    # the platform's kernel arguments are what tie the image to its cloud
    cmdline = images.cmdline(platform.path, version, EMPTY)
    plat = platform.path.split(f"-{arch}")[0]
    assert cmdline.startswith(f"talos.platform={plat} ")
    uki = esp_read(raw, gpt.offset("EFI"), f"EFI/Linux/Talos-{version}.efi", tmp_path)
    check_uki(uki, cmdline, version, arch, images.payload(version, f"usr/install/{arch}/vmlinuz"))
    with raw.open("rb") as f:
        f.seek(gpt.offset("META"))
        adv = f.read(ADV)
    if arch == "amd64":
        assert read_talos_adv(adv) == DUAL_TAG
    else:
        assert adv == bytes(ADV)
    for leftover in tmp_path.iterdir():  # decoded copies are sparse, but their data adds up
        leftover.unlink()


# --- reproducibility -------------------------------------------------------------------------------


def content_digest(path: Path) -> str:
    """SHA-256 of the file's content (size and every non-zero 1 MiB block with its offset), reading
    only allocated extents, so a sparse 4 GiB image hashes in well under a second."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = done = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            block = max(start - start % MIB, done)
            while block < end:
                data = os.pread(fd, MIB, block)
                if data.count(0) != len(data):
                    h.update(block.to_bytes(8, "little") + data)
                block += MIB
            done = block
            pos = max(end, done)
    finally:
        os.close(fd)
    h.update(size.to_bytes(8, "little"))
    return h.hexdigest()


@pytest.mark.parametrize(
    ("path", "schematic"),
    [("metal-amd64.raw", EMPTY), ("metal-amd64.raw", GRUB), ("installer-amd64.tar", EMPTY)],
    ids=["dual-boot", "grub", "installer"],
)
def test_reproducible(images: Images, path: str, schematic: Schematic) -> None:
    """Caches, mirrors and signatures rely on one profile always giving the same bytes."""
    first = images.build(path, "v1.12.4", schematic)
    again = images.build(path, "v1.12.4", schematic, dest="again")
    assert first.path != again.path and first.size == again.size
    assert content_digest(first.path) == content_digest(again.path)


# --- installers ------------------------------------------------------------------------------------


@dataclass
class Archive:
    names: list[str]
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[list[tuple[tarfile.TarInfo, bytes]]]  # each layer's entries


def read_archive(path: Path) -> Archive:
    """A docker-archive read with tarfile alone, checking every digest along the way."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert all(m.isfile() and m.mode == 0o644 for m in members)
        blobs = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    names = [m.name for m in members]
    (manifest,) = json.loads(blobs["manifest.json"])
    config_name = manifest["Config"]
    assert names[0] == config_name and names[-1] == "manifest.json"
    assert names[1:-1] == manifest["Layers"]
    assert config_name == "sha256:" + hashlib.sha256(blobs[config_name]).hexdigest()
    config = json.loads(blobs[config_name])
    layers = []
    diff_ids = []
    for name in manifest["Layers"]:
        blob = blobs[name]
        assert name == hashlib.sha256(blob).hexdigest() + ".tar.gz"
        plain = gzip.decompress(blob)
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
        with tarfile.open(fileobj=io.BytesIO(plain)) as layer:
            layers.append([(m, layer.extractfile(m).read() if m.isfile() else b"") for m in layer])  # type: ignore[union-attr]
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
    return Archive(names, manifest, config, layers)


def base_installer(
    images: Images, path: str, version: str, schematic: Schematic
) -> tuple[list[str], dict[str, Any]]:
    """The base installer's layer digests and config, as the registry serves them."""
    plan = images.h.plan(path, version, schematic)
    assert plan.installer_base is not None
    arch = plan.profile.arch
    with images.h.artifacts.installer_base(plan.installer_base, arch) as base:
        return [str(d["digest"]) for d, _ in base.layers], json.loads(base.config)


@dataclass(frozen=True)
class Installer:
    path: str
    version: str
    schematic: Schematic = EMPTY


INSTALLERS = {
    "1.12-amd64": Installer("installer-amd64.tar", "v1.12.4"),
    "1.12-arm64": Installer("installer-arm64.tar", "v1.12.4"),
    "1.12-aws-amd64": Installer("aws-installer-amd64.tar", "v1.12.4"),
    "1.12-amd64-meta-ignored": Installer("installer-amd64.tar", "v1.12.4", META),
    "1.9-amd64": Installer("installer-amd64.tar", "v1.9.5"),
}


@pytest.mark.parametrize("inst", list(INSTALLERS.values()), ids=list(INSTALLERS))
def test_installer_archive(images: Images, inst: Installer, skopeo: str, tmp_path: Path) -> None:
    """`talosctl upgrade` runs this image: the base untouched plus exactly one layer of boot assets."""
    arch = "arm64" if "arm64" in inst.path else "amd64"
    result = images.build(inst.path, inst.version, inst.schematic)
    assert result.name == f"installer-{arch}.tar"  # whatever the platform (§2.6)
    archive = read_archive(result.path)
    base_layers, base_config = base_installer(images, inst.path, inst.version, inst.schematic)
    # installer-base (≥1.10) is one layer; the old installer's second layer (stock assets) is dropped
    kept = base_layers[:1]
    assert [n.removesuffix(".tar.gz") for n in archive.manifest["Layers"][:-1]] == [
        d.removeprefix("sha256:") for d in kept
    ]
    assert len(base_layers) == (1 if since(inst.version, "v1.10.0") else 2)
    cfg = archive.config
    assert (cfg["architecture"], cfg["os"]) == (arch, "linux")
    assert cfg["config"]["Entrypoint"] == base_config["config"]["Entrypoint"]
    assert cfg["config"]["Env"] == base_config["config"]["Env"]
    assert f"VERSION={inst.version}" in cfg["config"]["Env"]
    assert cfg["config"].get("Labels") == base_config["config"].get("Labels")
    assert _epoch(cfg["created"]) == _epoch(images.imager_created(inst.version))

    artifacts = archive.layers[-1]
    names = [m.name for m, _ in artifacts]
    # regular files, root-owned, mtime 0 and (as upstream writes them) mode 0: §10.2
    assert all(m.isfile() and (m.uid, m.gid, m.mtime, m.mode) == (0, 0, 0, 0) for m, _ in artifacts)
    files = {m.name: data for m, data in artifacts}
    prefix = f"usr/install/{arch}/"
    kernel = images.payload(inst.version, prefix + "vmlinuz")
    cmdline = images.cmdline(inst.path, inst.version, inst.schematic)
    platform = "aws" if inst.path.startswith("aws-") else "metal"
    assert cmdline.startswith(f"talos.platform={platform} ") and "INSTALLER_META" not in cmdline
    if since(inst.version, "v1.10.0"):
        assert names == [prefix + "systemd-boot.efi", prefix + "vmlinuz.efi"]
        assert files[prefix + "systemd-boot.efi"] == images.payload(inst.version, prefix + "systemd-boot.efi")
        check_uki(files[prefix + "vmlinuz.efi"], cmdline, inst.version, arch, kernel)
    else:
        assert names == [prefix + "initramfs.xz", prefix + "vmlinuz"]
        assert files[prefix + "vmlinuz"] == kernel
        # the same rebuilt initramfs as the initramfs asset of this schematic (builds are reproducible)
        initramfs = images.build(f"initramfs-{arch}.xz", inst.version, inst.schematic)
        assert files[prefix + "initramfs.xz"] == initramfs.path.read_bytes()

    # an independent OCI client agrees, and can convert it
    info = json.loads(run(skopeo, "inspect", f"docker-archive:{result.path}"))
    assert (info["Architecture"], info["Os"], len(info["Layers"])) == (arch, "linux", len(kept) + 1)
    assert f"VERSION={inst.version}" in info["Env"]
    skopeo_cfg = json.loads(run(skopeo, "inspect", "--config", f"docker-archive:{result.path}"))
    assert skopeo_cfg["config"]["Entrypoint"] == base_config["config"]["Entrypoint"]
    run(
        skopeo,
        "--insecure-policy",
        "copy",
        "-q",
        f"docker-archive:{result.path}",
        f"oci:{tmp_path / 'oci'}:x",
    )
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert len(index["manifests"]) == 1


def test_metal_installer_is_the_installer(images: Images) -> None:
    """``metal-installer-<arch>.tar`` and ``installer-<arch>.tar`` must share one cache entry."""
    metal = images.h.plan("metal-installer-amd64.tar", "v1.12.4", EMPTY)
    plain = images.h.plan("installer-amd64.tar", "v1.12.4", EMPTY)
    assert metal.key == plain.key
    assert images.h.plan("aws-installer-amd64.tar", "v1.12.4", EMPTY).key != plain.key


# --- errors ----------------------------------------------------------------------------------------


def test_dual_boot_on_arm64_is_a_client_error_leaving_nothing(images: Images) -> None:
    """A schematic asking for dual-boot on arm64 is the client's mistake: a 4xx, and no debris."""
    dest = "failed-dual-boot"
    with pytest.raises(FactoryError) as err:
        images.h.build("metal-arm64.raw", "v1.12.4", DUALBOOT, dest=dest)
    assert 400 <= err.value.status < 500
    text = str(err.value)
    assert "dual-boot" in text and "arm64" in text
    out = images.h.root / dest
    assert not out.exists() or not any(out.rglob("*"))
    assert not images.h.scratch.exists() or not any(images.h.scratch.iterdir())
