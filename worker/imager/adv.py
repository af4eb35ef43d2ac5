"""Talos META partition contents: the "Talos ADV" key/value block (talos-imager.md 8.2).

Schematic ``customization.meta`` values (and the imager's own tags such as 0x11 ``dual-boot``) are
written into the disk image's META partition, where Talos reads them on first boot. The format is
go-adv's ``adv/talos``: one 256 KiB block written twice, big-endian, SHA-256 protected.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

__all__ = [
    "ADV_SIZE",
    "DATA_CAPACITY",
    "META_PARTITION_SIZE",
    "meta_partition",
    "read_talos_adv",
    "talos_adv",
]

ADV_SIZE = 256 * 1024
META_PARTITION_SIZE = 1024 * 1024
MAGIC1 = 0x5A4B3C2D
MAGIC2 = 0xA5B4C3D2
_CHECKSUM = slice(ADV_SIZE - 36, ADV_SIZE - 4)
#: Room for records (8-byte tag/size header + value each) between magic1 and the checksum.
DATA_CAPACITY = ADV_SIZE - 40

MetaValues = Iterable[tuple[int, bytes | str]] | Mapping[int, bytes | str]


def _merge(values: MetaValues) -> dict[int, bytes]:
    pairs = values.items() if isinstance(values, Mapping) else values
    merged: dict[int, bytes] = {}
    for tag, value in pairs:
        if isinstance(tag, bool) or not isinstance(tag, int) or not 1 <= tag <= 255:
            raise ValueError(f"META tag must be an integer in 1..255 (0 ends the list), got {tag!r}")
        # a later duplicate replaces the value but keeps the tag's first position
        merged[tag] = value.encode() if isinstance(value, str) else bytes(value)
    return merged


def _checksum(block: bytes | bytearray) -> bytes:
    """SHA-256 of the whole block (magic2 included) with the checksum field zeroed."""
    zeroed = bytearray(block)
    zeroed[_CHECKSUM] = bytes(32)
    return hashlib.sha256(zeroed).digest()


def talos_adv(values: MetaValues) -> bytes:
    """One 256 KiB Talos ADV block holding ``values`` ((tag, value) pairs, or a tag -> value mapping).

    Upstream serializes a Go map, so its record order is random; we write tags in first-seen order on
    purpose, which makes images reproducible. Readers do not care about the order.
    """
    merged = _merge(values)
    needed = sum(8 + len(v) for v in merged.values())
    if needed > DATA_CAPACITY:
        raise ValueError(f"META values need {needed} bytes, but a Talos ADV holds at most {DATA_CAPACITY}")
    block = bytearray(ADV_SIZE)
    struct.pack_into(">I", block, 0, MAGIC1)
    off = 4
    for tag, value in merged.items():
        struct.pack_into(">II", block, off, tag, len(value))
        block[off + 8 : off + 8 + len(value)] = value
        off += 8 + len(value)
    struct.pack_into(">I", block, ADV_SIZE - 4, MAGIC2)
    block[_CHECKSUM] = _checksum(block)
    return bytes(block)


def meta_partition(values: MetaValues) -> bytes:
    """The 1 MiB META partition: the ADV at 0 and again at 256 KiB, the rest (incl. syslinux ADV) zero."""
    block = talos_adv(values)
    return block + block + bytes(META_PARTITION_SIZE - 2 * ADV_SIZE)


def read_talos_adv(block: bytes) -> dict[int, bytes]:
    """Parse one ADV copy, verifying length, both magics and the checksum (ValueError otherwise)."""
    if len(block) != ADV_SIZE:
        raise ValueError(f"Talos ADV must be {ADV_SIZE} bytes, got {len(block)}")
    (magic1,) = struct.unpack_from(">I", block, 0)
    (magic2,) = struct.unpack_from(">I", block, ADV_SIZE - 4)
    if magic1 != MAGIC1 or magic2 != MAGIC2:
        raise ValueError(f"bad Talos ADV magic {magic1:#x}/{magic2:#x}")
    if block[_CHECKSUM] != _checksum(block):
        raise ValueError("Talos ADV checksum mismatch")
    values: dict[int, bytes] = {}
    off, end = 4, ADV_SIZE - 36
    while end - off >= 8:
        tag, size = struct.unpack_from(">II", block, off)
        if tag == 0:
            break
        if tag > 255 or off + 8 + size > end:
            raise ValueError(f"bad Talos ADV record at offset {off}: tag {tag}, size {size}")
        values[tag] = bytes(block[off + 8 : off + 8 + size])
        off += 8 + size
    return values
