"""Per-extension compression with the real tar2sqfs: microcode, firmware, labels, modes, links."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from common.talos.quirks import Quirks
from tests.unit.worker.imager.extensions.helpers import (
    EPOCH,
    LABEL,
    loaded,
    make_extension,
    sqfs_entries,
    sqfs_read,
    sqfs_xattrs,
    tree_digest,
)
from worker.imager.extensions.loading import ExtensionSource, load
from worker.imager.extensions.manifest import ExtensionError
from worker.imager.extensions.squashfs import compress, make_squashfs


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
