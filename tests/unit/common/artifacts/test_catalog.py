import pytest

from common.artifacts.catalog import (
    CatalogError,
    parse_extensions,
    parse_overlays,
    parse_tagged,
    parse_talosctl,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def test_extensions_keep_catalog_order_and_descriptions_by_whole_line() -> None:
    digests = (
        f"ghcr.io/siderolabs/gvisor:20231214.0-v1.7.0@{D1}\n"
        "# a comment without an at sign is ignored\n"
        f"  ghcr.io/siderolabs/amd-ucode:20240115@{D2}  \n"
    ).encode()
    descriptions = (
        f'"ghcr.io/siderolabs/amd-ucode:20240115@{D2}":\n'
        "    author: Sidero Labs\n"
        "    description: AMD microcode\n"
        # keyed by the tagged ref alone: not the whole line, so it does not apply
        '"ghcr.io/siderolabs/gvisor:20231214.0-v1.7.0":\n'
        "    author: nobody\n"
    ).encode()
    extensions = parse_extensions(digests, descriptions, "mirror.example.com:5000")
    assert [e.name for e in extensions] == ["siderolabs/gvisor", "siderolabs/amd-ucode"]
    assert str(extensions[0].ref) == "mirror.example.com:5000/siderolabs/gvisor:20231214.0-v1.7.0"
    assert (extensions[0].author, extensions[0].description) == ("", "")
    assert (extensions[1].author, extensions[1].description) == ("Sidero Labs", "AMD microcode")
    assert extensions[1].digest == D2


def test_extensions_catalog_errors() -> None:
    with pytest.raises(CatalogError, match="failed to find image-digests file"):
        parse_extensions(None, None, "ghcr.io")
    with pytest.raises(CatalogError, match="failed to parse tagged reference"):
        parse_extensions(f"ghcr.io/Bad Name:1@{D1}\n".encode(), None, "ghcr.io")
    with pytest.raises(CatalogError, match="invalid digest"):
        parse_extensions(b"ghcr.io/siderolabs/x:1@sha256:abc\n", None, "ghcr.io")
    with pytest.raises(CatalogError, match=r"descriptions\.yaml"):
        parse_extensions(f"ghcr.io/siderolabs/x:1@{D1}\n".encode(), b"{unclosed", "ghcr.io")


def test_tagged_references_like_go_containerregistry() -> None:
    assert str(parse_tagged("ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0")) == (
        "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0"
    )
    assert str(parse_tagged("127.0.0.1:5000/a/b")) == "127.0.0.1:5000/a/b:latest"
    assert str(parse_tagged("busybox:1.36")) == "index.docker.io/library/busybox:1.36"
    assert parse_tagged("localhost/x/y:z").registry == "localhost"


def test_overlays() -> None:
    text = (
        "overlays:\n"
        f"  - name: rpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0\n    digest: {D1}\n"
        f"  - name: rock64\n    image: ghcr.io/siderolabs/sbc-rockchip:v0.1.0\n    digest: {D2}\n"
    ).encode()
    overlays = parse_overlays(text)
    assert [(o.name, o.ref.repository, str(o.ref), o.digest) for o in overlays] == [
        ("rpi_generic", "siderolabs/sbc-raspberrypi", "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0", D1),
        ("rock64", "siderolabs/sbc-rockchip", "ghcr.io/siderolabs/sbc-rockchip:v0.1.0", D2),
    ]
    with pytest.raises(CatalogError, match=r"failed to find overlays\.yaml file"):
        parse_overlays(None)


def test_talosctl_tuples() -> None:
    tuples = parse_talosctl(["talosctl-linux-amd64", "talosctl-windows-arm64.exe", "README"])
    assert [t.filename for t in tuples] == ["talosctl-linux-amd64", "talosctl-windows-arm64.exe"]
    assert tuples[1].ext == ".exe"
    with pytest.raises(CatalogError, match="invalid talosctl file name talosctl-linux-arm-v7"):
        parse_talosctl(["talosctl-linux-arm-v7"])
    with pytest.raises(CatalogError, match="failed to find talosctl binaries"):
        parse_talosctl(["README"])
