"""The UKI boot splash (``.splash``): our own 400x400 32-bpp BMP, drawn in code.

Upstream embeds Sidero's logo; we must not ship that artwork, so this draws a simple mark (a ring
around a diamond on a dark background) in the same container format: BITMAPV5HEADER, BI_BITFIELDS
with an alpha mask, bottom-up rows. Every pixel is opaque; the stub alpha-blends over a black
(Apple: grey) screen.

Channel layout: systemd-stub up to ~253 ignores the masks and decodes each 32-bit pixel as RGBA
packed into a little-endian word (bytes A, B, G, R); later releases honour the masks. Declaring
exactly that layout in the masks (R=ff000000 G=00ff0000 B=0000ff00 A=000000ff) renders correctly
on both, which upstream's BGRA-ordered logo does not (Debian 252 shows it with swapped colours).
"""

from __future__ import annotations

import functools
import math
import struct

WIDTH = HEIGHT = 400
_FILE_HEADER = 14
_V5_HEADER = 124
_OFFSET = _FILE_HEADER + _V5_HEADER
_ROW = WIDTH * 4  # 32 bpp rows are already 4-byte aligned

_BI_BITFIELDS = 3
_LCS_SRGB = 0x73524742  # 'sRGB'
_LCS_GM_IMAGES = 4
_PIXELS_PER_METRE = 2835  # 72 dpi

_BACKGROUND = (0x14, 0x17, 0x1C)  # r, g, b
_RING = (0x2E, 0xB8, 0xA6)
_DIAMOND = (0xE8, 0xEC, 0xF0)
_RING_OUTER, _RING_INNER, _DIAMOND_RADIUS = 150.0, 124.0, 72.0


def _pixel(rgb: tuple[int, int, int]) -> bytes:
    r, g, b = rgb
    return bytes((0xFF, b, g, r))  # a little-endian word under the masks below


def _spans(dy: float) -> list[tuple[int, int, tuple[int, int, int]]]:
    """Horizontal runs [start, end) of the mark on the row ``dy`` pixels from the centre, drawn in order."""
    centre = WIDTH / 2
    spans: list[tuple[int, int, tuple[int, int, int]]] = []

    def run(half: float, colour: tuple[int, int, int]) -> None:
        start, end = round(centre - half), round(centre + half)
        if end > start:
            spans.append((max(start, 0), min(end, WIDTH), colour))

    if abs(dy) < _RING_OUTER:
        run(math.sqrt(_RING_OUTER**2 - dy * dy), _RING)
        if abs(dy) < _RING_INNER:
            run(math.sqrt(_RING_INNER**2 - dy * dy), _BACKGROUND)
    if abs(dy) < _DIAMOND_RADIUS:
        run(_DIAMOND_RADIUS - abs(dy), _DIAMOND)
    return spans


def _row(dy: float) -> bytes:
    row = bytearray(_pixel(_BACKGROUND) * WIDTH)
    for start, end, colour in _spans(dy):
        row[start * 4 : end * 4] = _pixel(colour) * (end - start)
    return bytes(row)


@functools.cache
def splash_bmp() -> bytes:
    """The splash image (640138 bytes, like upstream's); deterministic and cheap (a few ms)."""
    image_size = _ROW * HEIGHT
    file_header = struct.pack("<2sIHHI", b"BM", _OFFSET + image_size, 0, 0, _OFFSET)
    info = struct.pack(
        "<IiiHHIIiiII4I I36x3I4I",
        _V5_HEADER,
        WIDTH,
        HEIGHT,  # positive: bottom-up, the only orientation systemd-stub reads
        1,
        32,
        _BI_BITFIELDS,
        image_size,
        _PIXELS_PER_METRE,
        _PIXELS_PER_METRE,
        0,
        0,
        0xFF000000,  # red
        0x00FF0000,  # green
        0x0000FF00,  # blue
        0x000000FF,  # alpha
        _LCS_SRGB,
        0,
        0,
        0,  # gamma (ignored for sRGB)
        _LCS_GM_IMAGES,
        0,
        0,
        0,  # profile data/size, reserved
    )
    assert len(info) == _V5_HEADER
    # Row 0 in the file is the bottom row of the picture; the mark is symmetric but keep it honest.
    rows = [_row(HEIGHT / 2 - y - 0.5) for y in range(HEIGHT)]
    return file_header + info + b"".join(rows)
