"""The Talos META ADV block: format, verification, limits, and agreement with the QEMU test helper."""

from __future__ import annotations

import hashlib
import struct

import pytest

from tests.support import qemu
from worker.imager import adv
from worker.imager.adv import ADV_SIZE, DATA_CAPACITY, META_PARTITION_SIZE

VALUES: list[tuple[int, bytes | str]] = [
    (0x0A, "network:\n  interfaces: []\n"),
    (0x11, "dual-boot"),
    (0x0C, b"\x00\x01\xffbinary"),
    (0x0D, ""),
]


def test_round_trip() -> None:
    block = adv.talos_adv(VALUES)
    assert len(block) == ADV_SIZE
    assert adv.read_talos_adv(block) == {
        0x0A: b"network:\n  interfaces: []\n",
        0x11: b"dual-boot",
        0x0C: b"\x00\x01\xffbinary",
        0x0D: b"",
    }
    assert adv.read_talos_adv(adv.talos_adv([])) == {}


def test_layout_and_checksum() -> None:
    block = adv.talos_adv([(0x0A, "abc"), (0x0B, b"xy")])
    assert block[:4] == bytes.fromhex("5a4b3c2d")
    assert block[4:25] == b"\0\0\0\x0a\0\0\0\x03abc" + b"\0\0\0\x0b\0\0\0\x02xy"
    assert block[25 : ADV_SIZE - 36] == bytes(ADV_SIZE - 36 - 25)
    assert block[-4:] == bytes.fromhex("a5b4c3d2")
    # SHA-256 over the whole block, magic2 included, with the checksum field zeroed (go-adv Marshal)
    zeroed = block[: ADV_SIZE - 36] + bytes(32) + block[-4:]
    assert block[ADV_SIZE - 36 : ADV_SIZE - 4] == hashlib.sha256(zeroed).digest()


@pytest.mark.parametrize("offset", [0, 5, 12, 100, ADV_SIZE - 37, ADV_SIZE - 36, ADV_SIZE - 5, ADV_SIZE - 1])
def test_corruption_is_detected(offset: int) -> None:
    block = bytearray(adv.talos_adv([(0x0A, "abc")]))
    block[offset] ^= 0x01
    with pytest.raises(ValueError):
        adv.read_talos_adv(bytes(block))


def test_read_rejects_wrong_length_and_bad_records() -> None:
    with pytest.raises(ValueError, match="262144"):
        adv.read_talos_adv(bytes(ADV_SIZE - 1))
    with pytest.raises(ValueError, match="magic"):
        adv.read_talos_adv(bytes(ADV_SIZE))
    # a record whose size runs past the data area, with a valid checksum
    block = bytearray(adv.talos_adv([]))
    struct.pack_into(">II", block, 4, 0x0A, DATA_CAPACITY)
    block[ADV_SIZE - 36 : ADV_SIZE - 4] = hashlib.sha256(
        block[: ADV_SIZE - 36] + bytes(32) + block[-4:]
    ).digest()
    with pytest.raises(ValueError, match="record"):
        adv.read_talos_adv(bytes(block))


def test_meta_partition_holds_two_identical_copies() -> None:
    part = adv.meta_partition(VALUES)
    assert len(part) == META_PARTITION_SIZE == 1024 * 1024
    first, second = part[:ADV_SIZE], part[ADV_SIZE : 2 * ADV_SIZE]
    assert first == second == adv.talos_adv(VALUES)
    assert part[2 * ADV_SIZE :] == bytes(META_PARTITION_SIZE - 2 * ADV_SIZE)  # incl. the syslinux ADV tail


def test_matches_the_independent_test_helper() -> None:
    """tests/support/qemu.talos_adv was written separately from the same spec; same order, same bytes."""
    values = dict(VALUES)
    assert adv.talos_adv(VALUES) == qemu.talos_adv(values)
    assert adv.talos_adv(values) == qemu.talos_adv(values)  # a mapping is accepted too
    big: dict[int, bytes | str] = {0x0A: "x" * 100_000, 0x0B: bytes(range(256)) * 300}
    assert adv.talos_adv(big.items()) == qemu.talos_adv(big)


def test_size_limit() -> None:
    one_record_max = [(0x0A, b"a" * (DATA_CAPACITY - 8))]
    assert adv.read_talos_adv(adv.talos_adv(one_record_max)) == {0x0A: b"a" * (DATA_CAPACITY - 8)}
    with pytest.raises(ValueError, match=f"{DATA_CAPACITY + 1} bytes.*at most {DATA_CAPACITY}"):
        adv.talos_adv([(0x0A, b"a" * (DATA_CAPACITY - 7))])
    two_records = [(0x0A, b"a" * 1000), (0x0B, b"b" * (DATA_CAPACITY - 16 - 1000))]
    assert len(adv.read_talos_adv(adv.talos_adv(two_records))) == 2
    with pytest.raises(ValueError, match="META values need"):
        adv.talos_adv([*two_records, (0x0C, b"")])


def test_duplicate_tags_keep_first_position_and_last_value() -> None:
    block = adv.talos_adv([(0x0A, "first"), (0x0B, "b"), (0x0A, "last")])
    assert block == adv.talos_adv([(0x0A, "last"), (0x0B, "b")])
    assert adv.read_talos_adv(block) == {0x0A: b"last", 0x0B: b"b"}
    # the overwritten value no longer counts against the size limit
    adv.talos_adv([(0x0A, b"a" * DATA_CAPACITY), (0x0A, b"small")])


@pytest.mark.parametrize("tag", [0, 256, -1, True])
def test_bad_tags(tag: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.255"):
        adv.talos_adv([(tag, "x")])
