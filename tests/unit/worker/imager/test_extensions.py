"""Extension loading, compatibility ranges, per-extension compression (real tar2sqfs), helpers."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import pytest
import semver
import yaml

from common.errors import InvalidInputError
from common.talos.quirks import Quirks
from worker.imager import extensions as ext_mod
from worker.imager.extensions import (
    Extension,
    ExtensionError,
    ExtensionSource,
    Metadata,
    compress,
    embedded_config_extension,
    extensions_yaml,
    load,
    load_all,
    make_squashfs,
    parse_manifest,
    parse_range,
    stream_from_tool,
    stream_to_tool,
)
from worker.imager.tools import ToolError

EPOCH = 1559424892
LABEL = "system_u:object_r:hello_t:s0"


def manifest(name: str = "hello", constraint: str = ">= v1.0.0", **extra: object) -> bytes:
    meta: dict[str, object] = {
        "name": name,
        "version": "1.0.0",
        "author": "tests",
        "description": "a test extension",
        "compatibility": {"talos": {"version": constraint}},
    }
    meta.update(extra)
    return yaml.safe_dump({"version": "v1alpha1", "metadata": meta}).encode()


def make_extension(root: Path, files: Mapping[str, bytes], *, data: bytes | None = None) -> Path:
    """An extension tree: manifest.yaml + rootfs/ with ``files`` (paths relative to rootfs)."""
    (root / "rootfs").mkdir(parents=True)
    (root / "manifest.yaml").write_bytes(data if data is not None else manifest(root.name))
    for rel, content in files.items():
        path = root / "rootfs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def tree_digest(root: Path) -> str:
    """Everything about a tree an accidental write would change: names, types, modes, mtimes, bytes."""
    h = hashlib.sha256()
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        h.update(f"{path.relative_to(root)}|{st.st_mode:o}|{st.st_mtime_ns}|{st.st_nlink}\n".encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def sqfs_entries(image: Path) -> dict[str, tarfile.TarInfo]:
    """Members of a squashfs via ``sqfs2tar`` (the only listing that carries xattrs, as PAX records)."""
    data = subprocess.run(["sqfs2tar", str(image)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: m for m in archive}


def sqfs_read(image: Path, path: str) -> bytes:
    return subprocess.run(["rdsquashfs", "-c", path, str(image)], capture_output=True, check=True).stdout


def sqfs_xattrs(image: Path, path: str) -> str:
    return subprocess.run(
        ["rdsquashfs", "-x", path, str(image)], capture_output=True, check=True
    ).stdout.decode()


def loaded(tmp_path: Path, files: Mapping[str, bytes], directory: str = "0", **kw: object) -> Extension:
    root = make_extension(tmp_path / f"ext{directory}", files)
    return load(ExtensionSource(root=root, name=f"test/ext{directory}", **kw), directory)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# version ranges (blang/semver v4 semantics; cases from its range_test.go plus upstream's trim)


def _v(text: str) -> semver.Version:
    return semver.Version.parse(text)


@pytest.mark.parametrize(
    ("constraint", "cases"),
    [
        (">1.2.3", {"1.2.2": False, "1.2.3": False, "1.2.4": True}),
        (">=1.2.3", {"1.2.3": True, "1.2.4": True, "1.2.2": False}),
        ("<1.2.3", {"1.2.2": True, "1.2.3": False, "1.2.4": False}),
        ("<=1.2.3", {"1.2.2": True, "1.2.3": True, "1.2.4": False}),
        ("1.2.3", {"1.2.2": False, "1.2.3": True, "1.2.4": False}),
        ("=1.2.3", {"1.2.2": False, "1.2.3": True}),
        ("==1.2.3", {"1.2.3": True, "1.2.4": False}),
        ("!=1.2.3", {"1.2.2": True, "1.2.3": False, "1.2.4": True}),
        ("!1.2.3", {"1.2.3": False, "1.2.4": True}),
        (">1.2.2 <1.2.4", {"1.2.2": False, "1.2.3": True, "1.2.4": False}),
        (">1.2.2 <1.2.5 !=1.2.4", {"1.2.3": True, "1.2.4": False, "1.2.5": False}),
        (">1.2.2 || <1.2.4", {"1.2.2": True, "1.2.3": True, "1.2.4": True}),
        ("<1.2.2 || >1.2.4", {"1.2.2": False, "1.2.3": False, "1.2.4": False}),
        (">1.x", {"1.9.0": False, "2.0.0": True}),
        (">1.2.x", {"1.2.6": False, "1.3.0": True}),
        ("1.x || >=2.0.x <2.2.x", {"0.9.2": False, "1.2.2": True, "2.1.8": True, "2.2.0": False}),
        (">1.2.2 <1.2.4 || >=2.0.0 <3.0.0", {"1.2.3": True, "2.9.9": True, "3.0.0": False}),
        ("  >=   1.2.3   <=  1.2.3   ", {"1.2.3": True, "1.2.4": False}),
        # blang's quirk: != with a wildcard ANDs "<1.2.0" and ">=1.3.0", which nothing satisfies
        ("!=1.2.x", {"1.1.9": False, "1.2.5": False, "1.3.0": False}),
        ("<=1.x", {"1.99.0": True, "2.0.0": False}),
        # blang's quirk: "1.x.x" counts as a patch wildcard, so <=1.x.x means <1.1.0
        ("<=1.x.x", {"1.0.9": True, "1.1.0": False}),
        # pre-releases of the bound sort before it
        (">= 1.10.0-alpha.0", {"1.10.0": True, "1.9.9": False}),
        ("< 1.10.0-beta.1", {"1.10.0": False, "1.9.0": True}),
    ],
)
def test_parse_range(constraint: str, cases: dict[str, bool]) -> None:
    matches = parse_range(constraint)
    assert {v: matches(_v(v)) for v in cases} == cases


@pytest.mark.parametrize(
    "constraint",
    [">>1.2.3", "1.0", "string", "", "   ", "fo.ob.ar.x", "|| 1.0.0", "1.0.0 ||", "~1.2.3", "1.2.3\n"],
)
def test_parse_range_errors(constraint: str) -> None:
    with pytest.raises(ext_mod.RangeError):
        parse_range(constraint)


def test_single_character_parts_are_dropped_like_blang() -> None:
    assert ext_mod._split_and_trim("1.2.3 1.2.3") == ["1.2.3", "1.2.3"]
    assert ext_mod._split_and_trim("1.2.3 || >=1.2.3 <1.2.3") == ["1.2.3", "||", ">=1.2.3", "<1.2.3"]
    assert ext_mod._split_and_trim(">=1.0.0 x") == [">=1.0.0"]


@pytest.mark.parametrize(
    ("raw", "trimmed"),
    [(">= v1.10.0", ">= 1.10.0"), ("vv1.2.3", "v1.2.3"), (">=v1.0.0 <v2.0.0", ">=1.0.0 <2.0.0"), ("v", "v")],
)
def test_trim_v(raw: str, trimmed: str) -> None:
    assert ext_mod._trim_v(raw) == trimmed


# --------------------------------------------------------------------------------------------------
# compatibility


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
        ext_mod.check_compatibility(ext, version)
    else:
        with pytest.raises(ExtensionError) as err:
            ext_mod.check_compatibility(ext, version)
        assert err.value.status == 400
        assert str(err.value) == (
            f'extension "siderolabs/hello-world" is not compatible with Talos version {version}: '
            f"version constraint {constraint} can't be satisfied"
        )


def test_bad_constraint_is_an_input_error(tmp_path: Path) -> None:
    root = make_extension(tmp_path / "e", {}, data=manifest("x", ">= banana"))
    ext = load(ExtensionSource(root=root, name="vendor/x"), "0")
    with pytest.raises(ExtensionError, match=r'extension "vendor/x": error parsing Talos version constraint'):
        ext_mod.check_compatibility(ext, "v1.12.0")


# --------------------------------------------------------------------------------------------------
# loading


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


def test_manifest_scalars_are_taken_as_written() -> None:
    """go-yaml fills string fields with the scalar's text: 1.10 stays "1.10", null is empty."""
    version, md = parse_manifest(
        b"version: v1alpha1\nunknown: [1, 2]\nmetadata:\n  name: 1.10\n  version: 010\n  author: true\n"
        b"  description: ~\n  compatibility:\n    talos:\n      version: 'null'\n"
    )
    assert version == "v1alpha1"
    assert (md.name, md.version, md.author, md.description, md.compatibility) == (
        "1.10",
        "010",
        "true",
        "",
        "null",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "invalid manifest: EOF"),
        (b"version: v1alpha1\nmetadata: [1]\n", "cannot unmarshal"),
        (b"version: {a: 1}\n", "cannot unmarshal !!map into string"),
        (b"version: v1alpha1\nversion: v1alpha1\n", "already defined"),
        (b"version: [\n", "invalid manifest"),
        (b"\xff\xfe", "invalid manifest"),
    ],
)
def test_manifest_errors(data: bytes, message: str) -> None:
    with pytest.raises(ExtensionError, match=message):
        parse_manifest(data)


def test_only_the_first_document_counts() -> None:
    version, md = parse_manifest(b"version: v1alpha1\nmetadata: {name: a}\n---\nversion: other\n")
    assert (version, md.name) == ("v1alpha1", "a")


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


# --------------------------------------------------------------------------------------------------
# compress


@pytest.mark.parametrize(
    ("version", "firmware", "comp"),
    [
        ("v1.12.4", "usr/lib/firmware", "zstd"),
        ("v1.9.0", "lib/firmware", "zstd"),
        ("v1.7.6", "lib/firmware", "xz"),
    ],
)
def test_compress_splits_microcode_firmware_and_squashfs(
    tmp_path: Path, version: str, firmware: str, comp: str
) -> None:
    files = {
        "usr/local/bin/tool": b"#!/bin/sh\n",
        f"{firmware}/vendor/nic.bin": b"\x01firmware",
        f"{firmware}/intel-ucode/06-8f-08": b"I2",
        f"{firmware}/intel-ucode/.hidden": b"I0",  # Go's glob matches dot files
        f"{firmware}/intel-ucode/06-55-04": b"I1",
        f"{firmware}/amd-ucode/microcode_amd_fam19h.bin": b"A2",
        f"{firmware}/amd-ucode/microcode_amd.bin": b"A1",
        f"{firmware}/amd-ucode/README": b"not microcode",
    }
    ext = loaded(tmp_path, files)
    before = tree_digest(ext.source.root)
    staging = tmp_path / "staging"
    staging.mkdir()
    assert compress(ext, staging, Quirks(version), EPOCH) == "0.sqsh"
    assert tree_digest(ext.source.root) == before  # nothing moved or deleted in the source

    micro = staging / "kernel/x86/microcode"
    assert (micro / "GenuineIntel.bin").read_bytes() == b"I0I1I2"  # glob order: sorted names
    assert (micro / "AuthenticAMD.bin").read_bytes() == b"A1A2"
    assert (staging / firmware / "vendor/nic.bin").read_bytes() == b"\x01firmware"
    assert (staging / firmware / "amd-ucode/README").read_bytes() == b"not microcode"
    assert sorted(os.listdir(staging / firmware / "intel-ucode")) == []  # emptied, as upstream leaves it

    entries = sqfs_entries(staging / "0.sqsh")
    assert "usr/local/bin/tool" in entries
    assert not [n for n in entries if n.startswith(firmware)]  # firmware and microcode are not in it
    assert all(m.mtime == EPOCH and m.uid == 0 and m.gid == 0 for m in entries.values())
    info = subprocess.run(
        ["unsquashfs", "-s", str(staging / "0.sqsh")], capture_output=True, text=True
    ).stdout
    assert f"Compression {comp}" in info
    # mksquashfs' defaults, which upstream's images have (tar2sqfs flags "always-use-fragments" anyway)
    assert "Block size 131072" in info and "Filesystem is exportable via NFS" in info
    if comp == "zstd":
        assert "compression-level 18" in info


def test_compress_appends_microcode_across_extensions(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    quirks = Quirks("v1.12.0")
    for i, blob in enumerate((b"first", b"second")):
        ext = loaded(tmp_path, {"usr/lib/firmware/amd-ucode/microcode_amd.bin": blob}, directory=str(i))
        compress(ext, staging, quirks, EPOCH)
    assert (staging / "kernel/x86/microcode/AuthenticAMD.bin").read_bytes() == b"firstsecond"
    assert not (staging / "kernel/x86/microcode/GenuineIntel.bin").exists()


def test_squashfs_keeps_labels_modes_links(tmp_path: Path) -> None:
    files = {"usr/local/etc/secret": b"s3cr3t", "usr/local/bin/run": b"#!", "usr/local/share/a": b"A"}
    root = make_extension(tmp_path / "e", files)
    rootfs = root / "rootfs"
    (rootfs / "usr/local/bin/run").chmod(0o4755)
    (rootfs / "usr/local/share/b").symlink_to("a")
    os.link(rootfs / "usr/local/share/a", rootfs / "usr/local/share/hard")
    labels = {"rootfs": "system_u:object_r:root_t:s0", "rootfs/usr/local/etc/secret": LABEL}
    source = ExtensionSource(root=root, labels=labels, name="e", modes={"rootfs/usr/local/etc/secret": 0o400})
    staging = tmp_path / "staging"
    staging.mkdir()
    compress(load(source, "3"), staging, Quirks("v1.12.0"), EPOCH)

    image = staging / "3.sqsh"
    entries = sqfs_entries(image)
    secret = entries["usr/local/etc/secret"]
    assert secret.pax_headers.get("SCHILY.xattr.security.selinux") == LABEL
    assert secret.mode == 0o400
    assert "SCHILY.xattr.security.selinux" not in entries["usr/local/bin/run"].pax_headers
    assert entries["usr/local/bin/run"].mode == 0o4755
    assert entries["usr/local/share/b"].issym() and entries["usr/local/share/b"].linkname == "a"
    assert entries["usr/local/share/hard"].islnk() or entries["usr/local/share/a"].islnk()
    assert sqfs_xattrs(image, "/") == "security.selinux=system_u:object_r:root_t:s0\n"
    assert sqfs_xattrs(image, "/usr/local/etc/secret") == f"security.selinux={LABEL}\n"
    assert sqfs_read(image, "/usr/local/etc/secret") == b"s3cr3t"


def test_firmware_symlinks_are_dereferenced_inside_the_image(tmp_path: Path) -> None:
    ext = loaded(tmp_path, {"usr/lib/firmware/real/fw.bin": b"REAL", "etc/elsewhere": b"ELSEWHERE"})
    fw = ext.rootfs / "usr/lib/firmware"
    (fw / "alias.bin").symlink_to("real/fw.bin")
    (fw / "absolute.bin").symlink_to("/etc/elsewhere")  # absolute: resolved inside the image
    (fw / "dirlink").symlink_to("real")
    staging = tmp_path / "staging"
    staging.mkdir()
    compress(ext, staging, Quirks("v1.12.0"), EPOCH)
    out = staging / "usr/lib/firmware"
    assert (out / "alias.bin").read_bytes() == b"REAL" and not (out / "alias.bin").is_symlink()
    assert (out / "absolute.bin").read_bytes() == b"ELSEWHERE"
    assert (out / "dirlink/fw.bin").read_bytes() == b"REAL"


def test_firmware_behind_a_symlinked_parent_is_moved_too(tmp_path: Path) -> None:
    """``usr/lib -> ../lib``: upstream's move deletes ``lib/firmware`` through the link."""
    ext = loaded(tmp_path, {"lib/firmware/a.bin": b"A", "lib/keep": b"K"})
    (ext.rootfs / "usr").mkdir()
    (ext.rootfs / "usr/lib").symlink_to("../lib")
    staging = tmp_path / "staging"
    staging.mkdir()
    compress(ext, staging, Quirks("v1.12.0"), EPOCH)
    assert (staging / "usr/lib/firmware/a.bin").read_bytes() == b"A"
    assert set(sqfs_entries(staging / "0.sqsh")) == {"lib", "lib/keep", "usr", "usr/lib"}


def test_symlinked_firmware_directory(tmp_path: Path) -> None:
    """``usr/lib/firmware -> /opt/fw``: the link goes, the directory it points to is emptied."""
    ext = loaded(tmp_path, {"opt/fw/sub/b.bin": b"B", "opt/fw/c.bin": b"C"})
    (ext.rootfs / "usr/lib").mkdir(parents=True)
    (ext.rootfs / "usr/lib/firmware").symlink_to("/opt/fw")
    staging = tmp_path / "staging"
    staging.mkdir()
    compress(ext, staging, Quirks("v1.12.0"), EPOCH)
    assert (staging / "usr/lib/firmware/sub/b.bin").read_bytes() == b"B"
    assert (staging / "usr/lib/firmware/c.bin").read_bytes() == b"C"
    assert set(sqfs_entries(staging / "0.sqsh")) == {"opt", "opt/fw", "usr", "usr/lib"}


def test_long_and_unusual_names_survive(tmp_path: Path) -> None:
    deep = "usr/local/" + "/".join(["a-rather-long-directory-name"] * 6) + "/file with spaces & ünïcode"
    ext = loaded(tmp_path, {deep: b"deep"})
    staging = tmp_path / "staging"
    staging.mkdir()
    compress(ext, staging, Quirks("v1.12.0"), EPOCH)
    assert sqfs_read(staging / "0.sqsh", "/" + deep) == b"deep"


def test_huge_manifests_are_refused(tmp_path: Path) -> None:
    root = make_extension(tmp_path / "e", {}, data=manifest() + b"#" * ext_mod.MAX_MANIFEST_SIZE)
    with pytest.raises(ExtensionError, match="larger than"):
        load(ExtensionSource(root=root, name="big"), "0")


def test_firmware_symlinks_cannot_reach_the_host(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("worker's secret")
    ext = loaded(tmp_path, {"usr/lib/firmware/x": b""})
    (ext.rootfs / "usr/lib/firmware/leak").symlink_to(host_file)  # absolute host path
    (ext.rootfs / "usr/lib/firmware/up").symlink_to("../../../../../../../../" + str(host_file))
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ExtensionError, match="leak"):
        compress(ext, staging, Quirks("v1.12.0"), EPOCH)
    assert not any(p.is_file() and p.read_bytes() == b"worker's secret" for p in staging.rglob("*"))


def test_firmware_symlink_loops_are_refused(tmp_path: Path) -> None:
    ext = loaded(tmp_path, {"usr/lib/firmware/a/x": b""})
    (ext.rootfs / "usr/lib/firmware/a/loop").symlink_to("..")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ExtensionError, match="loop"):
        compress(ext, staging, Quirks("v1.12.0"), EPOCH)


def test_squashfs_is_reproducible(tmp_path: Path) -> None:
    root = make_extension(
        tmp_path / "e", {f"usr/local/d{i % 3}/f{i}": os.urandom(70_000 * i) for i in range(8)}
    )
    make_squashfs(root / "rootfs", tmp_path / "a.sqsh", quirks=Quirks("v1.12.0"), epoch=EPOCH)
    for path in (root / "rootfs").rglob("*"):
        os.utime(path, (1, 1))  # on-disk times do not leak in
    make_squashfs(root / "rootfs", tmp_path / "b.sqsh", quirks=Quirks("v1.12.0"), epoch=EPOCH)
    assert (tmp_path / "a.sqsh").read_bytes() == (tmp_path / "b.sqsh").read_bytes()


# --------------------------------------------------------------------------------------------------
# extensions.yaml, embedded config


def test_extensions_yaml_is_go_yaml() -> None:
    layers = [
        ("0.sqsh", Metadata("hello", "1.0", "me", "d", ">= v1.10.0", "line1\nline2\n")),
        ("modules.dep.sqsh", Metadata("modules.dep", "6.1.0", "Talos Machinery", "Combined")),
    ]
    assert extensions_yaml(layers).decode() == (
        "layers:\n"
        "    - image: 0.sqsh\n"
        "      metadata:\n"
        "        name: hello\n"
        '        version: "1.0"\n'
        "        author: me\n"
        "        description: d\n"
        "        compatibility:\n"
        "            talos:\n"
        "                version: '>= v1.10.0'\n"
        "        extraInfo: |\n"
        "            line1\n"
        "            line2\n"
        "    - image: modules.dep.sqsh\n"
        "      metadata:\n"
        "        name: modules.dep\n"
        "        version: 6.1.0\n"
        "        author: Talos Machinery\n"
        "        description: Combined\n"
        "        compatibility:\n"
        "            talos:\n"
        '                version: ""\n'
    )


def test_embedded_config_extension(tmp_path: Path) -> None:
    config = b"version: v1alpha1\nmachine:\n  type: worker\n"
    data = embedded_config_extension(config)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert [(m.name, m.type, m.mode) for m in members] == [
            ("manifest.yaml", tarfile.REGTYPE, 0o644),
            ("rootfs", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/etc", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/etc/talos", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/etc/talos/config.yaml", tarfile.REGTYPE, 0o400),
        ]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
        config_member = members[-1]
        assert (
            config_member.pax_headers["SCHILY.xattr.security.selinux"]
            == "system_u:object_r:system_state_t:s0"
        )
        stored = archive.extractfile(config_member)
        assert stored is not None and stored.read() == config
        manifest_file = archive.extractfile(members[0])
        assert manifest_file is not None
        assert manifest_file.read().decode() == (
            "version: v1alpha1\n"
            "metadata:\n"
            "    name: embedded-config\n"
            f"    version: {hashlib.sha256(config).hexdigest()}\n"
            "    author: Imager\n"
            "    description: Virtual extension which embeds the machine configuration.\n"
            "    compatibility:\n"
            "        talos:\n"
            "            version: '>= 1.0.0'\n"
        )


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


# --------------------------------------------------------------------------------------------------
# streaming through tools


def test_stream_to_tool_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as f:

        def produce(pipe: IO[bytes]) -> None:
            for _ in range(64):
                pipe.write(b"x" * 65536)

        stream_to_tool(["cat"], produce, stdout=f)
    assert out.stat().st_size == 64 * 65536


def test_stream_to_tool_reports_the_producer_error() -> None:
    def produce(pipe: object) -> None:
        raise ExtensionError("producer broke")

    with pytest.raises(ExtensionError, match="producer broke"):
        stream_to_tool(["cat"], produce, stdout=open(os.devnull, "wb"))  # noqa: SIM115


def test_stream_to_tool_reports_the_tool_error() -> None:
    def produce(pipe: object) -> None:
        for _ in range(1000):
            pipe.write(b"y" * 65536)  # type: ignore[attr-defined]

    with pytest.raises(ToolError, match="false failed"):
        stream_to_tool(["false"], produce)


def test_stream_to_tool_notices_an_early_exit() -> None:
    def produce(pipe: object) -> None:
        for _ in range(1000):
            pipe.write(b"y" * 65536)  # type: ignore[attr-defined]

    with pytest.raises(ToolError, match="stopped reading"):
        stream_to_tool(["true"], produce)


def test_stream_from_tool(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"z" * 300_000)
    with open(src, "rb") as f, stream_from_tool(["cat"], stdin=f) as stream:
        assert stream.read(10) == b"z" * 10  # the rest is drained, cat exits cleanly
    with (
        open(src, "rb") as f,
        pytest.raises(ToolError, match="exit code"),
        stream_from_tool(["sh", "-c", "cat; exit 3"], stdin=f) as stream,
    ):
        stream.read()
