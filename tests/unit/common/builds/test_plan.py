"""Request → plan helpers that the API applies before anything is queued."""

from __future__ import annotations

import pytest

from common.builds.plan import BuildRequest, content_type, safe_filename


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metal-amd64.iso", "application/x-iso9660-image"),
        ("metal-amd64.raw.xz", "application/x-xz"),
        ("metal-amd64.raw.gz", "application/gzip"),
        ("metal-amd64.qcow2", "application/x-qemu-disk"),
        ("metal-amd64-uki.efi", "application/efi"),
        ("installer-amd64.tar", "application/x-tar"),
        ("metal-amd64.raw.zst", "application/octet-stream"),
        ("kernel-amd64", "application/octet-stream"),
        ("cmdline-metal-amd64", "application/octet-stream"),
        ("METAL-AMD64.ISO", "application/x-iso9660-image"),
    ],
)
def test_content_type_follows_upstreams_map(path: str, expected: str) -> None:
    assert content_type(path) == expected


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, "metal-amd64.iso"),
        ("", "metal-amd64.iso"),
        ("talos.iso", "talos.iso"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ('a"b.iso', "ab.iso"),
        ("x.iso\r\nSet-Cookie: a=b", "x.isoSet-Cookie: a=b"),
        ("a;filename=evil.iso", "afilename=evil.iso"),
        ("..", "metal-amd64.iso"),
        ("dir/", "metal-amd64.iso"),
        ("\x00\x07", "metal-amd64.iso"),
        ("ü.iso", "ü.iso"),
        ("x" * 300, "x" * 255),
    ],
)
def test_filename_override_is_a_plain_name(requested: str | None, expected: str) -> None:
    name = safe_filename(requested, "metal-amd64.iso")
    assert name == expected
    assert not any(c in name for c in '"/\\\r\n;')


def test_build_request_round_trips_through_json() -> None:
    req = BuildRequest("a" * 64, "v1.12.4", "metal-amd64.iso")
    assert BuildRequest.from_json(req.to_json()) == req
