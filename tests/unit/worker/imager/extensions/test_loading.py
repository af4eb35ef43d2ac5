"""Extension loading, layout checks, load order and Talos compatibility."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidInputError
from common.talos.quirks import Quirks
from tests.unit.worker.imager.extensions.helpers import (
    EPOCH,
    make_extension,
    manifest,
    sqfs_entries,
)
from worker.imager.extensions.config import embedded_config_extension
from worker.imager.extensions.loading import ExtensionSource, check_compatibility, load, load_all
from worker.imager.extensions.manifest import MAX_MANIFEST_SIZE, ExtensionError, Metadata
from worker.imager.extensions.squashfs import compress


@pytest.mark.parametrize(
    ("version", "constraint", "ok"),
    [
        ("v1.10.0", ">= v1.10.0", True),
        ("v1.10.0-beta.1", ">= v1.10.0", True),  # the core version is compared
        ("v1.9.5", ">= v1.10.0", False),
        ("v1.12.4", "", True),
        ("v1.12.4", ">= 1.12.0 < 1.13.0", True),
        ("v1.13.0", ">= 1.12.0 < 1.13.0", False),
        ("v1.7.6", "< v1.8.0 || >= v1.10.0", True),
        ("latest", ">= v1.14.0", True),  # unparsable: checked as upstream's own version (1.14.0)
        ("latest", ">= v1.15.0", False),
    ],
)
def test_check_compatibility(tmp_path: Path, version: str, constraint: str, ok: bool) -> None:
    root = make_extension(tmp_path / "e", {}, data=manifest("hello-world", constraint))
    ext = load(ExtensionSource(root=root, name="siderolabs/hello-world"), "0")
    if ok:
        check_compatibility(ext, version)
    else:
        with pytest.raises(ExtensionError) as err:
            check_compatibility(ext, version)
        assert err.value.status == 400
        assert str(err.value) == (
            f'extension "siderolabs/hello-world" is not compatible with Talos version {version}: '
            f"version constraint {constraint} can't be satisfied"
        )


def test_bad_constraint_is_an_input_error(tmp_path: Path) -> None:
    root = make_extension(tmp_path / "e", {}, data=manifest("x", ">= banana"))
    ext = load(ExtensionSource(root=root, name="vendor/x"), "0")
    with pytest.raises(ExtensionError, match=r'extension "vendor/x": error parsing Talos version constraint'):
        check_compatibility(ext, "v1.12.0")


def test_load_reads_the_manifest(tmp_path: Path) -> None:
    root = make_extension(tmp_path / "e", {}, data=manifest("gvisor", extraInfo="more"))
    ext = load(ExtensionSource(root=root, name="siderolabs/gvisor"), "7")
    assert ext.directory == "7" and ext.rootfs == root / "rootfs"
    assert ext.metadata == Metadata(
        name="gvisor",
        version="1.0.0",
        author="tests",
        description="a test extension",
        compatibility=">= v1.0.0",
        extra_info="more",
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: (r / "README").write_text("x"), 'extension "vendor/ext": unexpected file "README"'),
        (lambda r: (r / "manifest.yaml").unlink(), "extension manifest is missing"),
        (lambda r: (r / "rootfs").rmdir(), "extension rootfs is missing"),
        (
            lambda r: (r / "manifest.yaml").write_text("version: v1alpha2\n"),
            'unsupported manifest version: "v1alpha2"',
        ),
        (lambda r: (r / "manifest.yaml").write_text("metadata: {}\n"), 'unsupported manifest version: ""'),
    ],
)
def test_load_errors(tmp_path: Path, setup: object, message: str) -> None:
    root = make_extension(tmp_path / "e", {})
    setup(root)  # type: ignore[operator]
    with pytest.raises(ExtensionError, match=message) as err:
        load(ExtensionSource(root=root, name="vendor/ext"), "0")
    assert isinstance(err.value, InvalidInputError)


def test_load_all_orders_directories_as_strings(tmp_path: Path) -> None:
    sources = [
        ExtensionSource(root=make_extension(tmp_path / f"e{i}", {}, data=manifest(f"ext{i}")), name=f"e{i}")
        for i in range(12)
    ]
    order = [(e.directory, e.metadata.name) for e in load_all(sources, "v1.12.0")]
    assert order == [(d, f"ext{d}") for d in ["0", "1", "10", "11", "2", "3", "4", "5", "6", "7", "8", "9"]]


def test_load_all_loads_everything_before_checking_compatibility(tmp_path: Path) -> None:
    """Upstream lists (loads) all extensions first, so a broken layout wins over an incompatible one."""
    old = make_extension(tmp_path / "old", {}, data=manifest("old", "< v1.0.0"))
    broken = make_extension(tmp_path / "broken", {})
    (broken / "extra").mkdir()
    sources = [ExtensionSource(root=old, name="old"), ExtensionSource(root=broken, name="broken")]
    with pytest.raises(ExtensionError, match='"broken": unexpected file "extra"'):
        load_all(sources, "v1.12.0")


def test_huge_manifests_are_refused(tmp_path: Path) -> None:
    root = make_extension(tmp_path / "e", {}, data=manifest() + b"#" * MAX_MANIFEST_SIZE)
    with pytest.raises(ExtensionError, match="larger than"):
        load(ExtensionSource(root=root, name="big"), "0")


def test_from_tarball_records_labels_and_exact_modes(tmp_path: Path) -> None:
    tar = tmp_path / "ec.tar"
    tar.write_bytes(embedded_config_extension(b"cfg"))
    source = ExtensionSource.from_tarball(tar, tmp_path / "ec", "embedded-config")
    key = "rootfs/usr/local/etc/talos/config.yaml"
    assert source.labels == {key: "system_u:object_r:system_state_t:s0"}
    assert (source.root / key).read_bytes() == b"cfg"
    assert source.modes.get(key, (source.root / key).stat().st_mode & 0o7777) == 0o400
    ext = load(source, "0")
    assert ext.metadata.name == "embedded-config" and ext.metadata.compatibility == ">= 1.0.0"
    staging = tmp_path / "staging"
    staging.mkdir()
    compress(ext, staging, Quirks("v1.12.0"), EPOCH)
    member = sqfs_entries(staging / "0.sqsh")["usr/local/etc/talos/config.yaml"]
    assert member.mode == 0o400
    assert member.pax_headers["SCHILY.xattr.security.selinux"] == "system_u:object_r:system_state_t:s0"
