"""META encodings: the cmdline environment value and the Talos ADV.

``siderolabs/talos@v1.14.0-rc.1:pkg/machinery/meta/meta.go`` (``Values.Encode``) and
``siderolabs/go-adv:adv/talos/talos.go``, as ported in ``worker/imager/meta.py``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import struct

import pytest

from common.errors import InvalidInputError
from worker.imager.meta import (
    ADV_DATA_LENGTH,
    ADV_LENGTH,
    META_PARTITION_SIZE,
    ADVError,
    decode_environment,
    encode_environment,
    meta_partition,
    parse_adv,
    talos_adv,
)

# --- environment encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "version", "expected"),
    [
        ([(0xA, '{"externalIPs":["1.2.3.4"]}')], "v1.11.0", "MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="),
        ([(10, "foo"), (255, "bar"), (0, "")], "v1.5.0", base64.b64encode(b"0xa=foo;0xff=bar;0x0=").decode()),
        ([(1, "a" * 300)], "v1.6.2", base64.b64encode(b"0x1=" + b"a" * 300).decode()),  # too old to compress
        (
            [(1, "a" * 252)],
            "v1.12.0",
            base64.b64encode(b"0x1=" + b"a" * 252).decode(),
        ),  # exactly 256: no gzip
        ([], "v1.12.0", ""),
    ],
)
def test_encode_environment_uncompressed_is_byte_identical(
    meta: list[tuple[int, str]], version: str, expected: str
) -> None:
    assert encode_environment(meta, version) == expected


@pytest.mark.parametrize("version", ["v1.6.3", "v1.6.3-alpha.0", "v1.12.0", "unparseable-counts-as-latest"])
def test_encode_environment_compresses_over_256_bytes(version: str) -> None:
    meta = [(1, "a" * 253), (0xB, "é")]  # 257 bytes raw
    encoded = encode_environment(meta, version)
    raw = base64.b64decode(encoded)
    assert raw[:4] == b"\x1f\x8b\x08\x00"
    assert raw[4:10] == b"\x00\x00\x00\x00\x02\xff"  # mtime 0, best compression, OS unknown (as Go)
    assert gzip.decompress(raw) == "0x1={};0xb=é".format("a" * 253).encode()
    assert decode_environment(encoded) == meta


def test_decode_round_trip_uncompressed() -> None:
    meta = [(0xA, "a: b\nc: d\n"), (6, "x=y")]
    assert decode_environment(encode_environment(meta, "v1.5.0")) == meta


def test_bad_keys_refused() -> None:
    with pytest.raises(InvalidInputError):
        encode_environment([(256, "x")], "v1.12.0")
    with pytest.raises(InvalidInputError):
        talos_adv([(-1, "x")])


# --- ADV ------------------------------------------------------------------------------------------


def test_adv_layout_byte_for_byte() -> None:
    block = talos_adv([(0xA, "net"), (0x6, "up")])
    assert len(block) == ADV_LENGTH
    expected = bytearray(ADV_LENGTH)
    expected[0:4] = b"\x5a\x4b\x3c\x2d"
    # ascending tag order: 0x06 first
    rec = struct.pack(">II", 6, 2) + b"up" + struct.pack(">II", 10, 3) + b"net"
    expected[4 : 4 + len(rec)] = rec
    expected[-4:] = b"\xa5\xb4\xc3\xd2"
    expected[-36:-4] = hashlib.sha256(expected).digest()
    assert block == bytes(expected)


def test_empty_adv_is_valid() -> None:
    block = talos_adv([])
    assert parse_adv(block) == {}
    assert block[4:-36] == bytes(ADV_LENGTH - 40)


def test_round_trip_and_later_duplicates_overwrite() -> None:
    values = [(0xA, "first"), (0x11, "dual-boot"), (0xA, "second"), (0, "zero-tag")]
    block = talos_adv(values)
    # tag 0 is the reader's end marker: written last it hides nothing (and is itself unreadable)
    assert parse_adv(block) == {0xA: "second", 0x11: "dual-boot"}
    assert block.count(b"first") == 0
    assert b"zero-tag" in block


def test_utf8_values_stored_as_bytes() -> None:
    block = talos_adv([(0xC, "héllo")])
    assert struct.unpack_from(">II", block, 4) == (0xC, 6)
    assert parse_adv(block) == {0xC: "héllo"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.__setitem__(0, 0), "unexpected magic"),
        (lambda b: b.__setitem__(ADV_LENGTH - 1, 0), "unexpected magic"),
        (lambda b: b.__setitem__(20, 0x41), "checksum mismatch"),
        (lambda b: b.__setitem__(ADV_LENGTH - 20, b[ADV_LENGTH - 20] ^ 1), "checksum mismatch"),
    ],
)
def test_parse_adv_validates(mutate: object, message: str) -> None:
    block = bytearray(talos_adv([(0xA, "value")]))
    mutate(block)  # type: ignore[operator]
    with pytest.raises(ADVError, match=message):
        parse_adv(bytes(block))


def test_parse_adv_rejects_overlong_record() -> None:
    block = bytearray(talos_adv([]))
    struct.pack_into(">II", block, 4, 0xA, ADV_LENGTH)
    block[-36:-4] = bytes(32)
    block[-36:-4] = hashlib.sha256(block).digest()
    with pytest.raises(ADVError, match="beyond the end"):
        parse_adv(bytes(block))
    with pytest.raises(ADVError, match="expecting 262144"):
        parse_adv(bytes(block[:-1]))


def test_capacity_follows_talos_set_tag_accounting() -> None:
    # Single value: 20 + len(value) <= DataLength (the new record's header is not counted upstream).
    biggest = ADV_DATA_LENGTH - 20
    block = talos_adv([(0xA, "x" * biggest)])
    assert parse_adv(block) == {0xA: "x" * biggest}
    with pytest.raises(InvalidInputError, match="capacity"):
        talos_adv([(0xA, "x" * (biggest + 1))])
    # Two values: the first now costs len + 8.
    assert talos_adv([(0xA, "x" * 100), (0xB, "y" * (biggest - 108))])
    with pytest.raises(InvalidInputError, match=r"failed to set meta tag 0xb"):
        talos_adv([(0xA, "x" * 100), (0xB, "y" * (biggest - 107))])
    # Replacing a value only counts the difference.
    assert parse_adv(talos_adv([(0xA, "x" * biggest), (0xA, "short")])) == {0xA: "short"}


def test_meta_partition_layout() -> None:
    image = meta_partition([(0xA, "net")])
    assert len(image) == META_PARTITION_SIZE
    block = talos_adv([(0xA, "net")])
    assert image[:ADV_LENGTH] == block
    assert image[ADV_LENGTH : 2 * ADV_LENGTH] == block
    assert image[2 * ADV_LENGTH :] == bytes(META_PARTITION_SIZE - 2 * ADV_LENGTH)  # legacy syslinux area zero
    assert parse_adv(image[ADV_LENGTH : 2 * ADV_LENGTH]) == {0xA: "net"}


def test_meta_partition_size() -> None:
    assert len(meta_partition([], size=2 * ADV_LENGTH + 1024)) == 2 * ADV_LENGTH + 1024
    with pytest.raises(ValueError, match="too small"):
        meta_partition([], size=2 * ADV_LENGTH)
