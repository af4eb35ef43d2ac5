"""The initramfs with extensions, built from the fixture's real Talos-shaped payload and taken apart again.

Mirrors upstream's integration checks on the layout: early microcode archive, the vanilla initramfs
untouched, the compressed extension archive (names, order, extensions.yaml, squashfs contents,
modules.dep, firmware), per-version compression, ordering quirks, errors and reproducibility.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from devstack.release.payload import Payload, build_payload, kernel_module
from tests.support.initramfs import MAGIC, decompose, members, sqfs_tar
from tests.unit.worker.imager.extensions.helpers import LABEL, make_extension, manifest, tree_digest
from worker.imager import schematic_extension
from worker.imager.extensions.config import embedded_config_extension
from worker.imager.extensions.loading import ExtensionSource
from worker.imager.extensions.manifest import ExtensionError
from worker.imager.initramfs import build_initramfs, extract_member
from worker.imager.tools import ToolError

ZSTD = "v1.12.4"  # zstd, usr-merged
XZ = "v1.7.6"  # xz, /lib/…
EPOCH = 1559424892
SCHEMATIC_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Payload]:
    out = tmp_path_factory.mktemp("payloads")
    return {v: build_payload(v, out / v) for v in (ZSTD, XZ)}


@pytest.fixture(scope="module")
def dummy_ko() -> bytes:
    return kernel_module("dummy")


def sqfs_info(image: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"info-{os.urandom(4).hex()}.sqsh"
    path.write_bytes(image)
    return subprocess.run(["unsquashfs", "-s", str(path)], capture_output=True, text=True, check=True).stdout


def fixture_extensions(
    tmp_path: Path, payload: Payload, dummy_ko: bytes, *, microcode: bool = True
) -> list[ExtensionSource]:
    """hello (labelled file), dummy module, firmware (+ microcode), schematic, embedded config (≥1.12)."""
    lib = "usr/lib" if payload.flavour.usr_merged else "lib"
    kver = payload.kernel_version
    src = tmp_path / "sources"
    hello = make_extension(src / "hello", {"usr/local/share/hello/hello.txt": b"hello\n"})
    dummy = make_extension(src / "dummy-module", {f"{lib}/modules/{kver}/extras/dummy.ko": dummy_ko})
    fw_files = {
        f"{lib}/firmware/test-firmware/nic.bin": b"\x00nic\xff" * 100,
        "usr/local/share/fw-readme": b"r",
    }
    if microcode:
        fw_files |= {
            f"{lib}/firmware/amd-ucode/microcode_amd_fam19h.bin": b"AMD-19",
            f"{lib}/firmware/amd-ucode/microcode_amd_fam17h.bin": b"AMD-17",
            f"{lib}/firmware/intel-ucode/06-8f-08": b"INTEL",
        }
    firmware = make_extension(src / "test-firmware", fw_files)
    sources = [
        ExtensionSource(
            root=hello, labels={"rootfs/usr/local/share/hello/hello.txt": LABEL}, name="siderolabs/hello"
        ),
        ExtensionSource(root=dummy, labels={}, name="siderolabs/dummy-module"),
        ExtensionSource(root=firmware, labels={}, name="siderolabs/test-firmware"),
    ]
    tar = tmp_path / "schematic.tar"
    tar.write_bytes(schematic_extension.tarball(SCHEMATIC_ID, b"customization: {}\n", "https://factory.test"))
    sources.append(ExtensionSource.from_tarball(tar, tmp_path / "virtual/schematic", "schematic"))
    if payload.version == ZSTD:
        tar = tmp_path / "embedded.tar"
        tar.write_bytes(embedded_config_extension(b"machine: {}\n"))
        sources.append(ExtensionSource.from_tarball(tar, tmp_path / "virtual/embedded", "embedded-config"))
    return sources


def build(payload: Payload, sources: list[ExtensionSource], tmp_path: Path, name: str = "out") -> Path:
    out = tmp_path / f"{name}.img"
    build_initramfs(
        base=payload.initramfs,
        extensions=sources,
        version=payload.version,
        arch="amd64",
        workdir=tmp_path / f"work-{name}",
        out=out,
        epoch=EPOCH,
    )
    return out


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ZSTD, XZ])
def test_layout(payloads: Mapping[str, Payload], dummy_ko: bytes, tmp_path: Path, version: str) -> None:
    payload = payloads[version]
    lib = "usr/lib" if payload.flavour.usr_merged else "lib"
    kver = payload.kernel_version
    sources = fixture_extensions(tmp_path, payload, dummy_ko)
    digests = {s.name: tree_digest(s.root) for s in sources}
    out = tmp_path / "initramfs.xz"
    layers = build_initramfs(
        base=payload.initramfs,
        extensions=sources,
        version=version,
        arch="amd64",
        workdir=tmp_path / "work",
        out=out,
        epoch=EPOCH,
    )
    assert {s.name: tree_digest(s.root) for s in sources} == digests  # inputs are only read
    parts = decompose(out, payload.initramfs)

    # 1. the uncompressed early archive: microcode only, concatenated in glob order
    assert [(m.name, m.mode, m.mtime, m.uid) for m, _ in parts.early] == [
        ("kernel", 0o40755, EPOCH, 0),
        ("kernel/x86", 0o40755, EPOCH, 0),
        ("kernel/x86/microcode", 0o40755, EPOCH, 0),
        ("kernel/x86/microcode/AuthenticAMD.bin", 0o100644, EPOCH, 0),
        ("kernel/x86/microcode/GenuineIntel.bin", 0o100644, EPOCH, 0),
    ]
    assert [d for _, d in parts.early][3:] == [b"AMD-17AMD-19", b"INTEL"]
    assert parts.base_offset % 4 == 0

    # 2. the appended archive: compressed like the version's Talos, sorted walk of the work dir
    assert parts.compressed_magic == MAGIC[payload.flavour.compression]
    images = [f"{i}.sqsh" for i in range(len(sources))]
    fw = f"{lib}/firmware"
    expected = [*images, "extensions.yaml"]
    if lib == "lib":
        expected += ["lib", fw, f"{fw}/amd-ucode", f"{fw}/intel-ucode", f"{fw}/test-firmware"]
        expected += [f"{fw}/test-firmware/nic.bin", "modules.dep.sqsh"]
    else:
        expected += ["modules.dep.sqsh", "usr", "usr/lib", fw, f"{fw}/amd-ucode", f"{fw}/intel-ucode"]
        expected += [f"{fw}/test-firmware", f"{fw}/test-firmware/nic.bin"]
    assert parts.order == expected
    assert all(m.mtime == EPOCH and m.uid == 0 and m.gid == 0 for m, _ in parts.members.values())
    assert parts.members[f"{fw}/test-firmware/nic.bin"][1] == b"\x00nic\xff" * 100

    # 3. extensions.yaml: processing order, manifests' metadata, modules.dep last
    text = parts.members["extensions.yaml"][1]
    assert yaml.safe_load(text) == {"layers": layers}
    assert [(layer["image"], layer["metadata"]["name"]) for layer in layers] == [
        ("0.sqsh", "hello"),
        ("1.sqsh", "dummy-module"),
        ("2.sqsh", "test-firmware"),
        ("3.sqsh", "schematic"),
        *([("4.sqsh", "embedded-config")] if version == ZSTD else []),
        ("modules.dep.sqsh", "modules.dep"),
    ]
    assert layers[-1]["metadata"] == {
        "name": "modules.dep",
        "version": kver,
        "author": "Talos Machinery",
        "description": "Combined modules.dep for all extensions",
        "compatibility": {"talos": {"version": ""}},
    }
    assert layers[3]["metadata"]["version"] == SCHEMATIC_ID
    assert layers[3]["metadata"]["extraInfo"] == "customization: {}\n"

    # 4. squashfs images: compression, contents, labels, firmware/microcode left out
    comp = "zstd" if version == ZSTD else "xz"
    for image in [*images, "modules.dep.sqsh"]:
        assert f"Compression {comp}" in sqfs_info(parts.members[image][1], tmp_path)
    hello = sqfs_tar(parts.members["0.sqsh"][1], tmp_path)
    member, content = hello["usr/local/share/hello/hello.txt"]
    assert content == b"hello\n" and member.pax_headers["SCHILY.xattr.security.selinux"] == LABEL
    dummy = sqfs_tar(parts.members["1.sqsh"][1], tmp_path)
    assert dummy[f"{lib}/modules/{kver}/extras/dummy.ko"][1] == dummy_ko  # modules stay in their image
    firmware = sqfs_tar(parts.members["2.sqsh"][1], tmp_path)
    # the firmware directory is gone, its parent stays (empty), as after upstream's move
    assert set(firmware) == {"usr", "usr/local", "usr/local/share", "usr/local/share/fw-readme", lib}
    schematic = sqfs_tar(parts.members["3.sqsh"][1], tmp_path)
    assert f"usr/local/share/schematic/{SCHEMATIC_ID}" in schematic
    if version == ZSTD:
        embedded = sqfs_tar(parts.members["4.sqsh"][1], tmp_path)
        config, data = embedded["usr/local/etc/talos/config.yaml"]
        assert data == b"machine: {}\n" and config.mode == 0o400
        assert config.pax_headers["SCHILY.xattr.security.selinux"] == "system_u:object_r:system_state_t:s0"

    # 5. modules.dep: depmod over base + extension modules, only modules.* kept
    deps = sqfs_tar(parts.members["modules.dep.sqsh"][1], tmp_path)
    prefix = f"{lib}/modules/{kver}/"
    files = sorted(n[len(prefix) :] for n, (m, _) in deps.items() if m.isfile())
    assert files and all(f.startswith("modules.") and "/" not in f for f in files)
    assert {"modules.dep", "modules.dep.bin", "modules.alias", "modules.symbols"} <= set(files)
    modules_dep = deps[prefix + "modules.dep"][1].decode()
    assert [line for line in modules_dep.splitlines() if line.startswith("extras/dummy.ko:")]
    assert "kernel/drivers/block/loop.ko" in modules_dep  # the base modules are still there


def test_firmware_only_extension_has_no_early_archive(
    payloads: Mapping[str, Payload], dummy_ko: bytes, tmp_path: Path
) -> None:
    payload = payloads[ZSTD]
    sources = fixture_extensions(tmp_path, payload, dummy_ko, microcode=False)
    out = build(payload, sources, tmp_path)
    assert out.read_bytes().startswith(payload.initramfs.read_bytes())
    parts = decompose(out, payload.initramfs)
    assert parts.early == [] and parts.base_offset == 0
    assert "usr/lib/firmware/test-firmware/nic.bin" in parts.members


def test_no_module_extension_means_no_modules_dep(payloads: Mapping[str, Payload], tmp_path: Path) -> None:
    payload = payloads[XZ]
    root = make_extension(tmp_path / "hello", {"usr/local/share/x": b"x"})
    layers = build_initramfs(
        base=payload.initramfs,
        extensions=[ExtensionSource(root=root, name="hello")],
        version=XZ,
        arch="amd64",
        workdir=tmp_path / "w",
        out=tmp_path / "out",
        epoch=EPOCH,
    )
    assert [layer["image"] for layer in layers] == ["0.sqsh"]
    parts = decompose(tmp_path / "out", payload.initramfs)
    assert parts.order == ["0.sqsh", "extensions.yaml"]
    assert parts.compressed_magic == MAGIC["xz"]


def test_without_extensions_the_base_is_used_untouched(
    payloads: Mapping[str, Payload], tmp_path: Path
) -> None:
    payload = payloads[ZSTD]
    assert (
        build_initramfs(
            base=payload.initramfs,
            extensions=[],
            version=ZSTD,
            arch="amd64",
            workdir=tmp_path / "w",
            out=tmp_path / "out",
            epoch=EPOCH,
        )
        == []
    )
    assert (tmp_path / "out").read_bytes() == payload.initramfs.read_bytes()


def test_eleven_and_more_extensions_sort_as_strings(payloads: Mapping[str, Payload], tmp_path: Path) -> None:
    payload = payloads[ZSTD]
    sources = []
    for i in range(12):
        root = make_extension(
            tmp_path / f"e{i}", {f"usr/local/share/e{i}": str(i).encode()}, data=manifest(f"e{i}")
        )
        sources.append(ExtensionSource(root=root, name=f"vendor/e{i}"))
    out = tmp_path / "out"
    layers = build_initramfs(
        base=payload.initramfs,
        extensions=sources,
        version=ZSTD,
        arch="amd64",
        workdir=tmp_path / "w",
        out=out,
        epoch=EPOCH,
    )
    order = ["0", "1", "10", "11", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert [(layer["image"], layer["metadata"]["name"]) for layer in layers] == [
        (f"{d}.sqsh", f"e{d}") for d in order
    ]
    parts = decompose(out, payload.initramfs)
    assert parts.order == [*(f"{d}.sqsh" for d in order), "extensions.yaml"]
    for d in order:  # each image holds its own extension
        assert sqfs_tar(parts.members[f"{d}.sqsh"][1], tmp_path)[f"usr/local/share/e{d}"][1] == d.encode()


@pytest.mark.parametrize("version", [ZSTD, XZ])
def test_reproducible(payloads: Mapping[str, Payload], dummy_ko: bytes, tmp_path: Path, version: str) -> None:
    payload = payloads[version]
    sources = fixture_extensions(tmp_path, payload, dummy_ko)
    first = build(payload, sources, tmp_path, "first")
    for source in sources:  # new on-disk times must not change a byte
        for path in source.root.rglob("*"):
            os.utime(path, (12345, 12345), follow_symlinks=False)
    second = build(payload, sources, tmp_path, "second")
    assert first.read_bytes() == second.read_bytes()


def test_incompatible_extension(payloads: Mapping[str, Payload], tmp_path: Path) -> None:
    payload = payloads[XZ]
    ok = make_extension(tmp_path / "ok", {"usr/local/a": b""})
    new = make_extension(tmp_path / "new", {"usr/local/b": b""}, data=manifest("hello-world", ">= v1.10.0"))
    sources = [ExtensionSource(root=ok, name="ok"), ExtensionSource(root=new, name="siderolabs/hello-world")]
    with pytest.raises(ExtensionError) as err:
        build(payload, sources, tmp_path)
    assert str(err.value) == (
        'extension "siderolabs/hello-world" is not compatible with Talos version v1.7.6: '
        "version constraint >= v1.10.0 can't be satisfied"
    )
    assert err.value.status == 400
    assert not (tmp_path / "out.img").exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: (r / "layer.tar").write_bytes(b""),
            'extension "vendor/broken": unexpected file "layer.tar"',
        ),
        (
            lambda r: (r / "manifest.yaml").write_text("version: v1alpha0\nmetadata: {name: x}\n"),
            'extension "vendor/broken": unsupported manifest version: "v1alpha0"',
        ),
        (
            lambda r: (r / "manifest.yaml").write_text("version: [\n"),
            'extension "vendor/broken": invalid manifest',
        ),
    ],
)
def test_bad_extension_images(
    payloads: Mapping[str, Payload], tmp_path: Path, mutate: object, message: str
) -> None:
    root = make_extension(tmp_path / "broken", {"usr/local/a": b""})
    mutate(root)  # type: ignore[operator]
    with pytest.raises(ExtensionError, match=message):
        build(payloads[ZSTD], [ExtensionSource(root=root, name="vendor/broken")], tmp_path)


def test_modules_for_another_kernel(payloads: Mapping[str, Payload], dummy_ko: bytes, tmp_path: Path) -> None:
    payload = payloads[ZSTD]
    root = make_extension(tmp_path / "m", {"usr/lib/modules/9.9.9-other/extras/dummy.ko": dummy_ko})
    with pytest.raises(ExtensionError, match=f"has no kernel modules for kernel {payload.kernel_version}"):
        build(payload, [ExtensionSource(root=root, name="vendor/mods")], tmp_path)


@pytest.mark.parametrize("version", [ZSTD, XZ])
def test_extract_member(payloads: Mapping[str, Payload], tmp_path: Path, version: str) -> None:
    payload = payloads[version]
    extract_member(payload.initramfs, "rootfs.sqsh", tmp_path / "rootfs.sqsh")
    tool = "zstd" if payload.flavour.compression == "zstd" else "xz"
    raw = subprocess.run([tool, "-d", "-c", str(payload.initramfs)], capture_output=True, check=True).stdout
    entries, _ = members(io.BytesIO(raw))
    assert [m.name for m, _ in entries] == ["init", "rootfs.sqsh"]
    assert (tmp_path / "rootfs.sqsh").read_bytes() == entries[1][1]
    with pytest.raises(ToolError, match="no missing"):
        extract_member(payload.initramfs, "missing", tmp_path / "x")
