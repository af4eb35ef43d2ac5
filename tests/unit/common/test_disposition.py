"""``Content-Disposition`` for any file name ``safe_filename`` lets through (RFC 6266, RFC 8187)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from common.builds.plan import safe_filename
from common.disposition import content_disposition


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("metal-amd64.iso", 'attachment; filename="metal-amd64.iso"'),
        ("my disk.raw.xz", 'attachment; filename="my disk.raw.xz"'),
        ("ü.iso", "attachment; filename=\"_.iso\"; filename*=UTF-8''%C3%BC.iso"),
        ("100%.iso", "attachment; filename=\"100_.iso\"; filename*=UTF-8''100%25.iso"),
        ("日本.iso", "attachment; filename=\"__.iso\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.iso"),
        ("a'b.iso", 'attachment; filename="a\'b.iso"'),
    ],
)
def test_content_disposition(name: str, expected: str) -> None:
    assert content_disposition(name) == expected


@pytest.mark.parametrize(
    "requested",
    [
        '../../etc/passwd"\r\nX-Injected: 1',
        "x.iso\r\nSet-Cookie: a=b",
        "a\";filename*=UTF-8''evil.sh",
        "\u202eosi.exe",  # right-to-left override
        "a\u2028b.iso",  # line separator
        "😀" * 300,
        "%0d%0aX: 1.iso",
        "\\\\server\\share\\x.iso",
    ],
)
def test_hostile_names_give_one_ascii_parameter_pair(requested: str) -> None:
    name = safe_filename(requested, "metal-amd64.iso")
    header = content_disposition(name)
    assert header.isascii() and header.isprintable()
    assert "\r" not in header and "\n" not in header
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert not any(c in fallback for c in '"\\%;/')
    assert header.count('"') == 2
    after = header.split('"', 2)[2]  # what follows the quoted fallback
    if after:
        assert after.startswith("; filename*=UTF-8''")
        assert unquote(after.removeprefix("; filename*=UTF-8''")) == name
    assert len(header) < 4000
