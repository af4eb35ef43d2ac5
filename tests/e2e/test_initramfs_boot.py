"""The factory's initramfs with extensions boots (QEMU, TCG) and Talos' consumer side sees everything.

``worker.imager.initramfs.build_initramfs`` assembles the fixture payload's vanilla initramfs with a
labelled-file extension, an out-of-tree module (loaded through the regenerated modules.dep), firmware,
CPU microcode, the schematic extension and (≥1.12) the embedded config; the fixture's init mounts the
layers as Talos does and reports what it found.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from devstack.release.payload import Payload, build_payload, kernel_module
from tests.support.qemu import BootResult, boot
from worker.imager import schematic_extension
from worker.imager.extensions.config import embedded_config_extension
from worker.imager.extensions.loading import ExtensionSource
from worker.imager.initramfs import build_initramfs

pytestmark = pytest.mark.e2e

ZSTD_VERSION = "v1.12.4"  # zstd, usr-merged, embedded config
XZ_VERSION = "v1.7.6"  # xz, /lib/…
APPEND = "console=ttyS0 panic=-1 talos.platform=metal"
TIMEOUT = 240  # TCG on a busy CI machine; a boot takes about 10 s
EPOCH = 1559424892
SCHEMATIC_ID = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
CONFIG = b"version: v1alpha1\nmachine:\n  type: worker\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _extension(root: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    metadata = {
        "name": name,
        "version": version,
        "author": "Image Factory tests",
        "description": f"{name} for the boot test",
        "compatibility": {"talos": {"version": ">= v1.5.0"}},
    }
    (root / "rootfs").mkdir(parents=True)
    (root / "manifest.yaml").write_text(yaml.safe_dump({"version": "v1alpha1", "metadata": metadata}))
    for rel, data in files.items():
        (root / "rootfs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "rootfs" / rel).write_bytes(data)
    return root


def _ok(result: BootResult) -> dict[str, object]:
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    assert result.returncode == 0, result.describe()
    assert result.report["errors"] == [], result.describe()
    return result.report


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Payload]:
    out = tmp_path_factory.mktemp("payloads")
    return {v: build_payload(v, out / v) for v in (ZSTD_VERSION, XZ_VERSION)}


@pytest.mark.parametrize("version", [ZSTD_VERSION, XZ_VERSION])
def test_extensions_boot(payloads: dict[str, Payload], tmp_path: Path, version: str) -> None:
    payload = payloads[version]
    kver = payload.kernel_version
    lib = "usr/lib" if payload.flavour.usr_merged else "lib"
    dummy = kernel_module("dummy")
    nic = b"\x00firmware blob\xff" * 64
    hello_files = {"usr/local/share/hello/hello.txt": b"hello from an extension\n"}
    module_files = {f"{lib}/modules/{kver}/extras/dummy.ko": dummy}
    firmware_files = {
        f"{lib}/firmware/test-firmware/nic.bin": nic,
        f"{lib}/firmware/amd-ucode/microcode_amd_fam17h.bin": b"amd 17h " * 16,
        f"{lib}/firmware/amd-ucode/microcode_amd_fam19h.bin": b"amd 19h " * 16,
        f"{lib}/firmware/intel-ucode/06-8f-08": b"intel " * 16,
        "usr/local/share/test-firmware/README": b"firmware goes to the initramfs\n",
    }
    src = tmp_path / "src"
    sources = [
        ExtensionSource(
            root=_extension(src / "hello", "hello", "1.0.0", hello_files),
            labels={"rootfs/usr/local/share/hello/hello.txt": "system_u:object_r:hello_t:s0"},
            name="siderolabs/hello",
        ),
        ExtensionSource(
            root=_extension(src / "dummy", "dummy-module", f"{kver}-v1", module_files),
            name="siderolabs/dummy-module",
        ),
        ExtensionSource(
            root=_extension(src / "fw", "test-firmware", "20250101", firmware_files),
            name="siderolabs/test-firmware",
        ),
    ]
    schematic_tar = tmp_path / "schematic.tar"
    schematic_tar.write_bytes(schematic_extension.tarball(SCHEMATIC_ID, None, "https://factory.test"))
    sources.append(ExtensionSource.from_tarball(schematic_tar, tmp_path / "v/schematic", "schematic"))
    if version == ZSTD_VERSION:
        config_tar = tmp_path / "embedded.tar"
        config_tar.write_bytes(embedded_config_extension(CONFIG))
        sources.append(ExtensionSource.from_tarball(config_tar, tmp_path / "v/embedded", "embedded-config"))

    initramfs = tmp_path / "initramfs.xz"
    layers = build_initramfs(
        base=payload.initramfs,
        extensions=sources,
        version=version,
        arch="amd64",
        workdir=tmp_path / "work",
        out=initramfs,
        epoch=EPOCH,
    )
    report = _ok(boot(kernel=payload.vmlinuz, initrd=initramfs, append=APPEND, timeout=TIMEOUT))

    assert report["version"] == version and report["kernel"] == kver
    expected = [
        ("0.sqsh", "hello", "1.0.0", {k: _sha(v) for k, v in hello_files.items()}),
        ("1.sqsh", "dummy-module", f"{kver}-v1", {k: _sha(v) for k, v in module_files.items()}),
        (
            "2.sqsh",
            "test-firmware",
            "20250101",
            {"usr/local/share/test-firmware/README": _sha(b"firmware goes to the initramfs\n")},
        ),
        ("3.sqsh", "schematic", SCHEMATIC_ID, {f"usr/local/share/schematic/{SCHEMATIC_ID}": _sha(b"")}),
    ]
    if version == ZSTD_VERSION:
        expected.append(
            ("4.sqsh", "embedded-config", _sha(CONFIG), {"usr/local/etc/talos/config.yaml": _sha(CONFIG)})
        )
    extensions = report["extensions"]
    assert isinstance(extensions, list)
    assert [(e["image"], e["name"], e["version"], e["files"]) for e in extensions[:-1]] == expected
    modules_dep = extensions[-1]
    assert (modules_dep["image"], modules_dep["name"], modules_dep["version"]) == (
        "modules.dep.sqsh",
        "modules.dep",
        kver,
    )
    assert f"{lib}/modules/{kver}/modules.dep" in modules_dep["files"]
    assert all(f.startswith(f"{lib}/modules/{kver}/modules.") for f in modules_dep["files"])
    assert [(layer["image"], layer["metadata"]["name"]) for layer in layers] == [
        (e["image"], e["name"]) for e in extensions
    ]

    assert report["modules"] == [{"name": "dummy", "loaded": True}]  # found through the new modules.dep
    assert report["firmware"] == {f"{lib}/firmware/test-firmware/nic.bin": _sha(nic)}
    assert report["microcode"] == [
        "kernel/x86/microcode/AuthenticAMD.bin",
        "kernel/x86/microcode/GenuineIntel.bin",
    ]
