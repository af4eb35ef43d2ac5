"""Talos META encodings: the ``INSTALLER_META_BASE64`` environment value and the on-disk ADV.

Upstream sources (``siderolabs/talos@v1.14.0-rc.1``): ``pkg/machinery/meta/meta.go`` (``Values.Encode``),
``internal/pkg/meta/internal/adv/talos/talos.go`` (moved to ``github.com/siderolabs/go-adv`` in 1.14,
unchanged) and ``cmd/installer/pkg/install/install.go`` (image mode: ``SetTag`` per value, then
``Flush``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import struct
import zlib
from collections.abc import Sequence

from common.errors import InvalidInputError
from common.talos.quirks import Quirks

__all__ = [
    "ADV_DATA_LENGTH",
    "ADV_LENGTH",
    "ADV_MAGIC1",
    "ADV_MAGIC2",
    "META_ENV_VAR",
    "META_PARTITION_SIZE",
    "ADVError",
    "decode_environment",
    "encode_environment",
    "meta_partition",
    "parse_adv",
    "talos_adv",
]

META_ENV_VAR = "INSTALLER_META_BASE64"

ADV_LENGTH = 256 * 1024
ADV_DATA_LENGTH = ADV_LENGTH - 40
ADV_MAGIC1 = 0x5A4B3C2D
ADV_MAGIC2 = 0xA5B4C3D2
META_PARTITION_SIZE = 1024 * 1024
_LEGACY_ADV_SIZE = 2 * 512  # syslinux ADV at the partition's end; never written by the imager

_GZIP_THRESHOLD = 256


class ADVError(ValueError):
    """A block that Talos' ADV reader would reject."""


def _check_key(key: int) -> int:
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= 255:
        raise InvalidInputError(f"META key must be an integer 0-255, got {key!r}")
    return key


def _go_gzip(data: bytes) -> bytes:
    """gzip framing as Go's writer emits it (no name, mtime 0, XFL 2 = best, OS 255 = unknown)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + body + trailer


def encode_environment(meta: Sequence[tuple[int, str]], version: str) -> str:
    """Encode META values the way the imager puts them on the kernel command line.

    ``0x<hex key>=<value>`` joined by ``;``; gzip-compressed when longer than 256 bytes and the
    target Talos (>= 1.6.3) can decode it; then standard padded base64. Go's ``compress/gzip``
    (BestCompression) and Python's zlib produce different deflate streams, so compressed output
    is not byte-identical to upstream; what matters is the decoded value, which Talos recovers
    (``meta.DecodeValues`` sniffs the gzip magic). Uncompressed output is byte-identical.
    """
    raw = ";".join(f"0x{_check_key(k):x}={v}" for k, v in meta).encode()
    if len(raw) > _GZIP_THRESHOLD and Quirks(version).supports_compressed_meta():
        raw = _go_gzip(raw)
    return base64.b64encode(raw).decode("ascii")


def decode_environment(encoded: str) -> list[tuple[int, str]]:
    """Decode like Talos' ``meta.DecodeValues`` (for verification and tests)."""
    data = base64.b64decode(encoded, validate=True)
    if not data:
        return []
    if len(data) >= 10 and data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    result: list[tuple[int, str]] = []
    for part in data.decode().split(";"):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"invalid value {part!r}")
        try:
            k = int(key, 0)
        except ValueError:
            raise ValueError(f"invalid key {key!r}") from None
        if not 0 <= k <= 255:
            raise ValueError(f"invalid key {key!r}")
        result.append((k, value))
    return result


def _collect(values: Sequence[tuple[int, str]]) -> dict[int, bytes]:
    """Replay Talos' ``ADV.SetTag`` per value, including its (slightly odd) capacity accounting.

    Upstream counts ``20 + sum(len(v) + 8)`` over the stored tags, plus the new value's length
    minus the replaced one's (the new record's 8-byte header is not counted), and refuses when
    that exceeds ``ADV_DATA_LENGTH``; the installer then fails with "failed to set meta tag".
    """
    tags: dict[int, bytes] = {}
    for key, value in values:
        k = _check_key(key)
        data = value.encode()
        size = 20 + sum(len(v) + 8 for v in tags.values()) + len(data) - len(tags.get(k, b""))
        if size > ADV_DATA_LENGTH:
            raise InvalidInputError(
                f"failed to set meta tag 0x{k:x}: META capacity exceeded "
                f"({size} > {ADV_DATA_LENGTH} bytes by Talos' accounting)"
            )
        tags[k] = data
    return tags


def talos_adv(values: Sequence[tuple[int, str]]) -> bytes:
    """One 256 KiB Talos ADV block holding ``values`` (later duplicate keys win).

    Records are written in ascending tag order: upstream iterates a Go map (random order), so
    any order is one upstream could produce; ascending makes our output deterministic. Tag 0 is
    the reader's end marker, so a (pointless) tag 0 goes last, hiding nothing else.
    """
    tags = _collect(values)
    buf = bytearray(ADV_LENGTH)
    struct.pack_into(">I", buf, 0, ADV_MAGIC1)
    struct.pack_into(">I", buf, ADV_LENGTH - 4, ADV_MAGIC2)
    offset = 4
    end = ADV_LENGTH - 36
    for tag in sorted(tags, key=lambda t: (t == 0, t)):
        value = tags[tag]
        if offset + 8 + len(value) > end:  # Marshal's overflow check; unreachable after _collect
            raise InvalidInputError(f"adv: overflow {offset + 8 + len(value) - end} bytes")
        struct.pack_into(">II", buf, offset, tag, len(value))
        buf[offset + 8 : offset + 8 + len(value)] = value
        offset += 8 + len(value)
    buf[ADV_LENGTH - 36 : ADV_LENGTH - 4] = hashlib.sha256(buf).digest()
    return bytes(buf)


def meta_partition(values: Sequence[tuple[int, str]], size: int = META_PARTITION_SIZE) -> bytes:
    """The META partition image: the ADV twice from offset 0, the rest (legacy syslinux area) zero.

    This is what Talos' ``Meta.Flush`` writes on a zeroed file. Upstream skips META entirely when
    there are no values (the partition stays zero); callers should do the same.
    """
    if size < 2 * ADV_LENGTH + _LEGACY_ADV_SIZE:
        raise ValueError(f"META partition of {size} bytes is too small")
    block = talos_adv(values)
    return block + block + bytes(size - 2 * ADV_LENGTH)


def parse_adv(block: bytes) -> dict[int, str]:
    """Read one ADV block like Talos' ``ADV.Unmarshal``: check both magics and the checksum."""
    if len(block) != ADV_LENGTH:
        raise ADVError(f"adv: block is {len(block)} bytes, expecting {ADV_LENGTH}")
    (magic1,) = struct.unpack_from(">I", block, 0)
    if magic1 != ADV_MAGIC1:
        raise ADVError(f"adv: unexpected magic {magic1:x}, expecting {ADV_MAGIC1:x}")
    (magic2,) = struct.unpack_from(">I", block, ADV_LENGTH - 4)
    if magic2 != ADV_MAGIC2:
        raise ADVError(f"adv: unexpected magic {magic2:x}, expecting {ADV_MAGIC2:x}")
    checksum = block[ADV_LENGTH - 36 : ADV_LENGTH - 4]
    actual = hashlib.sha256(block[: ADV_LENGTH - 36] + bytes(32) + block[ADV_LENGTH - 4 :]).digest()
    if checksum != actual:
        raise ADVError(f"adv: checksum mismatch: {checksum.hex()}, expecting {actual.hex()}")
    result: dict[int, str] = {}
    data = memoryview(block)[4 : ADV_LENGTH - 36]
    while len(data) >= 8:
        tag, size = struct.unpack_from(">II", data, 0)
        if tag == 0:
            break
        if len(data) < size + 8:
            raise ADVError(f"adv: value goes beyond the end of the buffer: tag {tag}, size {size}")
        # Go truncates the uint32 tag to uint8 (Tag(tag)).
        result[tag & 0xFF] = bytes(data[8 : 8 + size]).decode("utf-8", errors="surrogateescape")
        data = data[8 + size :]
    return result
