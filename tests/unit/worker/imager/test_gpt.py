"""GPT planning and writing, checked by real tools.

Allocation as ``siderolabs/go-blockdevice:partitioning/gpt`` (v2); partitions and label GUIDs as
``siderolabs/talos@v1.14.0-rc.1:cmd/installer/pkg/install`` in image mode (see ``worker/imager/gpt.py``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import uuid
import zlib
from pathlib import Path

import pytest

from devstack.services import ServiceError, ensure_system_packages
from worker.imager import gpt
from worker.imager.gpt import (
    BIOS_BOOT,
    EFI_SYSTEM,
    LEGACY_BIOS_BOOTABLE,
    LINUX_FILESYSTEM,
    GptLayout,
    PartitionSpec,
    plan_layout,
)

MiB = 1024 * 1024

DUAL_BOOT = [
    PartitionSpec("EFI", EFI_SYSTEM, 2101 * MiB),
    PartitionSpec("BIOS", BIOS_BOOT, 1 * MiB, LEGACY_BIOS_BOOTABLE),
    PartitionSpec("BOOT", LINUX_FILESYSTEM, 2000 * MiB),
    PartitionSpec("META", LINUX_FILESYSTEM, 1 * MiB),
]
SD_BOOT = [PartitionSpec("EFI", EFI_SYSTEM, 2101 * MiB), PartitionSpec("META", LINUX_FILESYSTEM, 1 * MiB)]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("talos-image-disk", "d92d45b3-cde9-8760-be9f-a2a71fac8d11"),
        ("EFI", "bca5174b-0118-8a6a-af0b-2c6e1585acae"),
        ("BIOS", "a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3"),
        ("BOOT", "24c73076-4092-85dd-9d98-686a2dbf6d81"),
        ("META", "cf04f137-101e-8ec6-9627-fa3f51cdabb8"),
        ("STATE", "f7f88648-df7c-8acb-b4d2-6f124659d923"),
        ("EPHEMERAL", "c5e02400-0e5e-80bc-99ec-53b3e45ad6c4"),
        ("IMAGECACHE", "3b5449bc-c21f-8009-8b51-18945967f8df"),
    ],
)
def test_guid_from_label(label: str, expected: str) -> None:
    guid = gpt.guid_from_label(label)
    assert str(guid) == expected
    assert guid.version == 8
    assert guid.variant == uuid.RFC_4122


def _bounds(layout: GptLayout) -> list[tuple[str, int, int]]:
    return [(p.label, p.first_lba, p.last_lba) for p in layout.partitions]


def test_dual_boot_worked_example() -> None:
    layout = plan_layout(4247 * MiB, DUAL_BOOT)
    assert layout.total_sectors == 8_697_856
    assert _bounds(layout) == [
        ("EFI", 2048, 4304895),
        ("BIOS", 4304896, 4306943),
        ("BOOT", 4306944, 8402943),
        ("META", 8402944, 8404991),
    ]
    assert (layout.entries_lba, layout.first_usable) == (2, 2048)
    assert (layout.last_usable, layout.backup_entries_lba, layout.last_lba) == (8697822, 8697823, 8697855)
    assert str(layout.disk_guid) == "d92d45b3-cde9-8760-be9f-a2a71fac8d11"
    bios = layout.partition("BIOS")
    assert (bios.number, bios.attributes, bios.type_guid) == (2, 0x4, BIOS_BOOT)
    assert bios.guid == gpt.guid_from_label("BIOS")
    meta = layout.partition("META")
    assert (meta.start, meta.length) == (8402944 * 512, MiB)


def test_sd_boot_4096_worked_example() -> None:
    layout = plan_layout(2246 * MiB, SD_BOOT, sector_size=4096)
    assert _bounds(layout) == [("EFI", 256, 538111), ("META", 538112, 538367)]
    # 128 x 128-byte entries take 4 LBAs of 4096 bytes
    assert (layout.entries_lba, layout.first_usable) == (2, 256)
    assert (layout.last_lba, layout.backup_entries_lba, layout.last_usable) == (574975, 574971, 574970)
    assert layout.partition("META").start == 538112 * 4096


def test_skip_lbas_moves_entries_and_partitions() -> None:
    small = plan_layout(64 * MiB, SD_BOOT[1:], skip_lbas=64)
    assert (small.entries_lba, small.first_usable, small.partitions[0].first_lba) == (66, 2048, 2048)
    big = plan_layout(64 * MiB, SD_BOOT[1:], skip_lbas=2048)
    assert (big.entries_lba, big.first_usable, big.partitions[0].first_lba) == (2050, 4096, 4096)
    b4k = plan_layout(64 * MiB, SD_BOOT[1:], sector_size=4096, skip_lbas=252)
    assert (b4k.entries_lba, b4k.first_usable, b4k.partitions[0].first_lba) == (254, 512, 512)


def test_size_zero_takes_the_rest_aligned_down() -> None:
    layout = plan_layout(4247 * MiB, [*DUAL_BOOT, PartitionSpec("STATE", LINUX_FILESYSTEM, 0)])
    state = layout.partition("STATE")
    # last usable is 8697822; the free range ends below the last 1 MiB boundary under it
    assert (state.first_lba, state.last_lba) == (8404992, 8695807)
    assert (state.last_lba + 1) % 2048 == 0
    l4k = plan_layout(
        2246 * MiB + 100 * 4096, [*SD_BOOT, PartitionSpec("STATE", LINUX_FILESYSTEM, 0)], sector_size=4096
    )
    assert (l4k.partition("STATE").first_lba, l4k.partition("STATE").last_lba) == (538368, 574975)


def test_fit_boundary() -> None:
    # 10 MiB: usable 2048..20446, allocatable up to LBA 18431 -> exactly 8 MiB
    assert (
        plan_layout(10 * MiB, [PartitionSpec("A", LINUX_FILESYSTEM, 8 * MiB)]).partitions[0].last_lba == 18431
    )
    with pytest.raises(ValueError, match=r"'A' \(9437184 bytes\) does not fit: 8388608 bytes free"):
        plan_layout(10 * MiB, [PartitionSpec("A", LINUX_FILESYSTEM, 9 * MiB)])
    with pytest.raises(ValueError, match="no free space left"):
        plan_layout(
            10 * MiB, [PartitionSpec("A", LINUX_FILESYSTEM, 8 * MiB), PartitionSpec("B", LINUX_FILESYSTEM, 0)]
        )
    with pytest.raises(ValueError, match="does not fit"):
        plan_layout(4246 * MiB, [*DUAL_BOOT, PartitionSpec("STATE", LINUX_FILESYSTEM, 290 * MiB)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"disk_size": 10 * MiB + 1}, "multiple of the 512-byte sector"),
        ({"disk_size": 10 * MiB + 512, "sector_size": 4096}, "multiple of the 4096-byte sector"),
        ({"sector_size": 1024}, "sector size must be one of"),
        ({"disk_size": 0}, "positive multiple"),
        ({"disk_size": 16 * 1024}, "too small"),
        ({"specs": [PartitionSpec("X" * 37, LINUX_FILESYSTEM, MiB)]}, "36 UTF-16"),
        ({"specs": [PartitionSpec("A", LINUX_FILESYSTEM, MiB + 100)]}, "multiple of 512 bytes"),
        ({"specs": [PartitionSpec("A", LINUX_FILESYSTEM, -MiB)]}, "multiple of 512 bytes"),
        ({"specs": [PartitionSpec("A", LINUX_FILESYSTEM, MiB)] * 2}, "duplicate partition label"),
        ({"skip_lbas": -1}, "skip_lbas"),
        ({"specs": [PartitionSpec("A", LINUX_FILESYSTEM, MiB, 1 << 64)]}, "not a u64"),
    ],
)
def test_invalid_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"disk_size": 10 * MiB, "specs": [], **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_layout(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# write_gpt, checked structurally and with real tools


@pytest.fixture(scope="module")
def tools() -> None:
    try:
        ensure_system_packages({"sgdisk": "gdisk", "sfdisk": "fdisk", "fdisk": "fdisk"})
    except ServiceError as exc:
        pytest.skip(str(exc))


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}{proc.stderr}"
    assert not proc.stderr.strip(), proc.stderr
    return proc.stdout


def _write(path: Path, layout: GptLayout, boot_code: bytes = b"") -> Path:
    with path.open("wb") as fh:
        fh.truncate(layout.disk_size)
        fh.write(boot_code)
    with path.open("r+b") as fh:
        gpt.write_gpt(fh, layout)
    return path


def _header(data: bytes, sector_size: int) -> tuple[int | bytes, ...]:
    fields = struct.unpack_from("<8sIIIIQQQQ16sQIII", data)
    check = bytearray(data[:92])
    check[16:20] = bytes(4)
    assert fields[3] == zlib.crc32(check)
    assert data[92:] == bytes(sector_size - 92)
    return fields


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(size)


def _check_structure(path: Path, layout: GptLayout) -> None:
    ss = layout.sector_size
    entries = _read(path, layout.entries_lba * ss, 128 * 128)
    assert _read(path, layout.backup_entries_lba * ss, 128 * 128) == entries
    primary = _header(_read(path, ss, ss), ss)
    backup = _header(_read(path, layout.last_lba * ss, ss), ss)
    common = (b"EFI PART", 0x00010000, 92)
    assert primary[:3] == backup[:3] == common
    assert primary[5:9] == (1, layout.last_lba, layout.first_usable, layout.last_usable)
    assert backup[5:9] == (layout.last_lba, 1, layout.first_usable, layout.last_usable)
    assert primary[9] == backup[9] == layout.disk_guid.bytes_le
    assert (primary[10], backup[10]) == (layout.entries_lba, layout.backup_entries_lba)
    assert primary[11:] == backup[11:] == (128, 128, zlib.crc32(entries))
    for p in layout.partitions:
        type_le, guid_le, first, last, attrs, name = struct.unpack_from(
            "<16s16sQQQ72s", entries, (p.number - 1) * 128
        )
        assert (uuid.UUID(bytes_le=type_le), uuid.UUID(bytes_le=guid_le)) == (p.type_guid, p.guid)
        assert (first, last, attrs) == (p.first_lba, p.last_lba, p.attributes)
        assert name.decode("utf-16-le").rstrip("\0") == p.label
    assert entries[len(layout.partitions) * 128 :] == bytes(128 * (128 - len(layout.partitions)))
    pmbr = _read(path, 446, 66)
    expected = bytes.fromhex("00 000200 ee ffffff 01000000") + struct.pack(
        "<I", min(layout.last_lba, 0xFFFFFFFF)
    )
    assert pmbr == expected + bytes(48) + b"\x55\xaa"


def test_write_dual_boot_checked_by_sgdisk_and_sfdisk(tools: None, tmp_path: Path) -> None:
    layout = plan_layout(4247 * MiB, [*DUAL_BOOT, PartitionSpec("STATE", LINUX_FILESYSTEM, 0)])
    boot_code = bytes((i * 7 + 3) % 256 for i in range(446))
    disk = _write(tmp_path / "disk.raw", layout, boot_code)
    assert _read(disk, 0, 446) == boot_code
    assert disk.stat().st_size == 4247 * MiB
    assert os.stat(disk).st_blocks * 512 < 4 * MiB  # still sparse
    _check_structure(disk, layout)

    verify = _run("sgdisk", "-v", str(disk))
    assert "No problems found" in verify
    listing = _run("sgdisk", "-p", str(disk))
    assert "Disk identifier (GUID): D92D45B3-CDE9-8760-BE9F-A2A71FAC8D11" in listing
    assert "First usable sector is 2048, last usable sector is 8697822" in listing
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+.*?\s(\w+)$", listing, re.M)
    assert rows == [(str(p.number), str(p.first_lba), str(p.last_lba), p.label) for p in layout.partitions]
    for p in layout.partitions:
        info = _run("sgdisk", "-i", str(p.number), str(disk))
        assert f"Partition GUID code: {str(p.type_guid).upper()}" in info
        assert f"Partition unique GUID: {str(p.guid).upper()}" in info
        assert f"First sector: {p.first_lba} " in info
        assert f"Last sector: {p.last_lba} " in info
        assert f"Attribute flags: {p.attributes:016X}" in info
        assert f"Partition name: '{p.label}'" in info
    assert "Attribute flags: 0000000000000004" in _run("sgdisk", "-i", "2", str(disk))

    assert "No errors detected" in _run("sfdisk", "--verify", str(disk))
    table = json.loads(_run("sfdisk", "--json", str(disk)))["partitiontable"]
    assert (table["label"], table["id"], table["sectorsize"]) == (
        "gpt",
        "D92D45B3-CDE9-8760-BE9F-A2A71FAC8D11",
        512,
    )
    assert (table["firstlba"], table["lastlba"]) == (2048, 8697822)
    got = [
        (e["name"], e["start"], e["size"], e["type"], e["uuid"], e.get("attrs")) for e in table["partitions"]
    ]
    assert got == [
        (
            p.label,
            p.first_lba,
            p.last_lba - p.first_lba + 1,
            str(p.type_guid).upper(),
            str(p.guid).upper(),
            "LegacyBIOSBootable" if p.attributes else None,
        )
        for p in layout.partitions
    ]


def test_write_4096_sectors(tools: None, tmp_path: Path) -> None:
    layout = plan_layout(2246 * MiB, SD_BOOT, sector_size=4096)
    disk = _write(tmp_path / "disk.raw", layout, b"\xeb\x63\x90")
    assert _read(disk, 0, 3) == b"\xeb\x63\x90"
    _check_structure(disk, layout)
    listing = _run("fdisk", "-b", "4096", "-l", "-o", "Device,Start,End,Type-UUID,UUID,Name,Attrs", str(disk))
    assert "Sector size (logical/physical): 4096 bytes" in listing
    assert "Disk identifier: D92D45B3-CDE9-8760-BE9F-A2A71FAC8D11" in listing
    rows = re.findall(r"^\S+?(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\w+)", listing, re.M)
    assert rows == [
        (
            str(p.number),
            str(p.first_lba),
            str(p.last_lba),
            str(p.type_guid).upper(),
            str(p.guid).upper(),
            p.label,
        )
        for p in layout.partitions
    ]


def test_write_with_skip_lbas(tools: None, tmp_path: Path) -> None:
    layout = plan_layout(
        64 * MiB, [*SD_BOOT[1:], PartitionSpec("STATE", LINUX_FILESYSTEM, 0)], skip_lbas=2048
    )
    disk = _write(tmp_path / "disk.raw", layout)
    _check_structure(disk, layout)
    assert "No problems found" in _run("sgdisk", "-v", str(disk))
    assert "Main partition table begins at sector 2050 and ends at sector 2081" in _run(
        "sgdisk", "-p", str(disk)
    )


def test_write_rejects_a_file_of_the_wrong_size(tmp_path: Path) -> None:
    layout = plan_layout(10 * MiB, SD_BOOT[1:])
    path = tmp_path / "disk.raw"
    with path.open("wb") as fh:
        fh.truncate(11 * MiB)
    with path.open("r+b") as fh, pytest.raises(ValueError, match="11534336 bytes"):
        gpt.write_gpt(fh, layout)
