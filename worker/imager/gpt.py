"""GPT layout planning and writing for Talos disk images.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:cmd/installer/pkg/install`` and ``internal/pkg/partition``.

The Talos installer partitions image files with go-blockdevice v2 (``partitioning/gpt``) in "image
mode": deterministic GUIDs derived from labels, 1 MiB alignment, 128 entries. We reproduce that
allocation exactly so our images have the same partition boundaries (and therefore the same bytes) as
upstream ones, and write the tables with plain seeks into a sparse file: no loop devices, no sgdisk.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

__all__ = [
    "BIOS_BOOT",
    "EFI_SYSTEM",
    "LEGACY_BIOS_BOOTABLE",
    "LINUX_FILESYSTEM",
    "GptLayout",
    "Partition",
    "PartitionSpec",
    "guid_from_label",
    "plan_layout",
    "write_gpt",
]

EFI_SYSTEM = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
BIOS_BOOT = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
LINUX_FILESYSTEM = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
#: GPT attribute bit 2, set by Talos on the BIOS partition.
LEGACY_BIOS_BOOTABLE = 1 << 2

DISK_GUID_LABEL = "talos-image-disk"
NUM_ENTRIES = 128
ENTRY_SIZE = 128
HEADER_SIZE = 92
ALIGNMENT = 1024 * 1024  # bytes; go-blockdevice uses max(io size, 1 MiB), a file's io size is its sector
SECTOR_SIZES = (512, 4096)
_NAME_BYTES = 72  # 36 UTF-16 code units
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
_ENTRY = struct.Struct("<16s16sQQQ72s")


def guid_from_label(label: str) -> uuid.UUID:
    """Talos ``makefs.GUIDFromLabel``: ``uuid.NewHash(sha256, uuid.Nil, label, 8)``, a version-8 UUID."""
    raw = bytearray(hashlib.sha256(bytes(16) + label.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))  # Go's uuid.UUID is the big-endian "string form" byte order


@dataclass(frozen=True)
class PartitionSpec:
    label: str
    type_guid: uuid.UUID
    size: int  # bytes; 0 = the rest of the free space (end aligned down to 1 MiB)
    attributes: int = 0


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based
    label: str
    type_guid: uuid.UUID
    guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int
    sector_size: int

    @property
    def start(self) -> int:
        """Byte offset in the disk."""
        return self.first_lba * self.sector_size

    @property
    def length(self) -> int:
        """Size in bytes."""
        return (self.last_lba - self.first_lba + 1) * self.sector_size


@dataclass(frozen=True)
class GptLayout:
    sector_size: int
    total_sectors: int
    disk_guid: uuid.UUID
    partitions: tuple[Partition, ...]
    first_usable: int
    last_usable: int
    entries_lba: int
    backup_entries_lba: int

    @property
    def last_lba(self) -> int:
        """LBA of the backup header (the disk's last sector)."""
        return self.total_sectors - 1

    @property
    def disk_size(self) -> int:
        return self.total_sectors * self.sector_size

    def partition(self, label: str) -> Partition:
        for part in self.partitions:
            if part.label == label:
                return part
        raise KeyError(label)


def _align_up(lba: int, alignment: int) -> int:
    return -(-lba // alignment) * alignment


def plan_layout(
    disk_size: int, specs: Sequence[PartitionSpec], *, sector_size: int = 512, skip_lbas: int = 0
) -> GptLayout:
    """Allocate ``specs`` in order like go-blockdevice's ``New`` + ``AllocatePartition`` on an empty disk.

    ``skip_lbas`` is an overlay's ``partitionOptions.offset``: LBAs left free between the primary header
    and the primary entries (e.g. for an SoC bootloader).
    """
    if sector_size not in SECTOR_SIZES:
        raise ValueError(f"sector size must be one of {SECTOR_SIZES}, not {sector_size}")
    if disk_size <= 0 or disk_size % sector_size:
        raise ValueError(f"disk size {disk_size} is not a positive multiple of the {sector_size}-byte sector")
    if skip_lbas < 0:
        raise ValueError(f"skip_lbas must be >= 0, not {skip_lbas}")
    if len(specs) > NUM_ENTRIES:
        raise ValueError(f"at most {NUM_ENTRIES} partitions fit in the GPT, got {len(specs)}")
    total = disk_size // sector_size
    last_lba = total - 1
    entry_lbas = -(-NUM_ENTRIES * ENTRY_SIZE // sector_size)
    alignment = ALIGNMENT // sector_size
    entries_lba = 2 + skip_lbas
    backup_entries_lba = last_lba - entry_lbas
    first_usable = _align_up(entries_lba + entry_lbas, alignment)
    last_usable = backup_entries_lba - 1
    if last_lba < 33 or last_usable < first_usable:
        raise ValueError(
            f"disk of {disk_size} bytes is too small for a GPT (first usable LBA {first_usable})"
        )
    # the free range after the last partition ends just below a 1 MiB boundary (go-blockdevice
    # allocatableRanges), which also bounds fixed-size partitions
    high = last_usable // alignment * alignment - 1
    parts: list[Partition] = []
    next_free = first_usable
    for number, spec in enumerate(specs, 1):
        if len(spec.label.encode("utf-16-le")) > _NAME_BYTES:
            raise ValueError(f"partition label {spec.label!r} is longer than 36 UTF-16 code units")
        if any(p.label == spec.label for p in parts):
            raise ValueError(f"duplicate partition label {spec.label!r} (its GUID is derived from the label)")
        if not 0 <= spec.attributes < 1 << 64:
            raise ValueError(f"partition {spec.label!r}: attributes {spec.attributes:#x} are not a u64")
        low = _align_up(next_free, alignment)
        available = (high - low + 1) * sector_size if high > low else 0
        size = spec.size or available
        if size < sector_size or size % sector_size:
            raise ValueError(
                f"partition {spec.label!r}: size {size} must be a positive multiple of {sector_size} bytes"
                + (" (no free space left)" if not spec.size else "")
            )
        if size > available:
            raise ValueError(
                f"partition {spec.label!r} ({size} bytes) does not fit: {available} bytes free"
                f" from LBA {low} on a {disk_size}-byte disk"
            )
        last = low + size // sector_size - 1
        part = Partition(
            number=number,
            label=spec.label,
            type_guid=spec.type_guid,
            guid=guid_from_label(spec.label),
            first_lba=low,
            last_lba=last,
            attributes=spec.attributes,
            sector_size=sector_size,
        )
        parts.append(part)
        next_free = last + 1
    return GptLayout(
        sector_size=sector_size,
        total_sectors=total,
        disk_guid=guid_from_label(DISK_GUID_LABEL),
        partitions=tuple(parts),
        first_usable=first_usable,
        last_usable=last_usable,
        entries_lba=entries_lba,
        backup_entries_lba=backup_entries_lba,
    )


def _header(layout: GptLayout, my_lba: int, alternate_lba: int, entries_lba: int, entries_crc: int) -> bytes:
    fields = [
        b"EFI PART",
        0x00010000,
        HEADER_SIZE,
        0,  # header CRC32, computed with this field zero
        0,
        my_lba,
        alternate_lba,
        layout.first_usable,
        layout.last_usable,
        layout.disk_guid.bytes_le,
        entries_lba,
        NUM_ENTRIES,
        ENTRY_SIZE,
        entries_crc,
    ]
    fields[3] = zlib.crc32(_HEADER.pack(*fields))
    return _HEADER.pack(*fields).ljust(layout.sector_size, b"\0")


def write_gpt(f: BinaryIO, layout: GptLayout) -> None:
    """Write protective MBR, both headers and both entry arrays into ``f`` (a disk file opened "r+b").

    Only those regions are written so the file stays sparse; MBR bytes 0-445 (boot code) are kept.
    The file must already have the layout's size, as the backup header belongs in its last sector.
    """
    size = f.seek(0, 2)
    if size != layout.disk_size:
        raise ValueError(f"disk file is {size} bytes, the layout is for {layout.disk_size}")
    entries = bytearray(NUM_ENTRIES * ENTRY_SIZE)
    for i, p in enumerate(layout.partitions):
        name = p.label.encode("utf-16-le")
        args = (p.type_guid.bytes_le, p.guid.bytes_le, p.first_lba, p.last_lba, p.attributes, name)
        _ENTRY.pack_into(entries, i * ENTRY_SIZE, *args)
    crc = zlib.crc32(entries)
    ss, last = layout.sector_size, layout.last_lba
    # protective MBR partition table: one 0xEE entry covering the disk, three empty ones, 55 AA
    pmbr = struct.pack("<B3sB3sII", 0x00, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, min(last, 0xFFFFFFFF))
    writes = [
        (446, pmbr.ljust(64, b"\0") + b"\x55\xaa"),
        (ss, _header(layout, 1, last, layout.entries_lba, crc)),
        (layout.entries_lba * ss, bytes(entries)),
        (layout.backup_entries_lba * ss, bytes(entries)),
        (last * ss, _header(layout, last, 1, layout.backup_entries_lba, crc)),
    ]
    for offset, data in writes:
        f.seek(offset)
        f.write(data)
