"""The release fixture's boot payload really boots (QEMU, TCG) and reports what Talos would see.

The extension/firmware/microcode/META inputs are made by hand here, following upstream's
``siderolabs/talos@v1.14.0-rc.1:internal/pkg/extensions`` and ``pkg/imager/extensions`` and the Talos ADV
of ``siderolabs/go-adv:adv/talos/talos.go``, so the fixture's consumer side is proven before the
factory's imager exists.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.release.payload import (
    CpioEntry,
    Payload,
    build_payload,
    compress,
    decompress,
    kernel_module,
    make_squashfs,
    newc_archive,
    read_newc,
)
from tests.support.qemu import BootResult, Disk, boot, esp_image, meta_disk

pytestmark = pytest.mark.e2e

XZ_VERSION = "v1.7.6"
ZSTD_VERSION = "v1.10.3"  # zstd, usr-merged
APPEND = "console=ttyS0 panic=-1 talos.platform=metal foo=bar"
TIMEOUT = 240  # TCG on a busy 2-core CI machine; a normal boot takes 10-15 s


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Payload]:
    out = tmp_path_factory.mktemp("payloads")
    return {v: build_payload(v, out / v) for v in (XZ_VERSION, ZSTD_VERSION)}


def _ok(result: BootResult) -> dict[str, object]:
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    assert result.returncode == 0, result.describe()  # the guest powered itself off
    assert result.report["errors"] == [], result.describe()
    return result.report


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("version", [XZ_VERSION, ZSTD_VERSION])
def test_vanilla_payload_boots_under_bios(version: str, payloads: dict[str, Payload], tmp_path: Path) -> None:
    payload = payloads[version]
    # A GPT disk without META must still give meta == {}.
    disk = meta_disk(tmp_path / "blank.raw", None)
    result = boot(
        kernel=payload.vmlinuz,
        initrd=payload.initramfs,
        append=APPEND,
        disks=[Disk(disk)],
        timeout=TIMEOUT,
    )
    report = _ok(result)
    assert report["cmdline"] == APPEND
    assert report["boot"] == "bios" and report["secureboot"] is None
    assert report["version"] == version
    assert report["kernel"] == payload.kernel_version
    assert report["extensions"] == [] and report["modules"] == []
    assert report["meta"] == {} and report["firmware"] == {} and report["microcode"] == []


def test_vanilla_payload_boots_under_uefi(payloads: dict[str, Payload]) -> None:
    payload = payloads[XZ_VERSION]
    result = boot(
        kernel=payload.vmlinuz, initrd=payload.initramfs, append=APPEND, firmware="uefi", timeout=TIMEOUT
    )
    report = _ok(result)
    assert report["boot"] == "uefi"
    assert report["secureboot"] is False
    # OVMF's direct kernel boot (QEMU -kernel) adds the initrd= its EFI loader used.
    assert report["cmdline"] in (APPEND, f"{APPEND} initrd=initrd")
    assert report["version"] == XZ_VERSION


def test_init_reports_errors_and_powers_off(payloads: dict[str, Payload], tmp_path: Path) -> None:
    """A broken rootfs must end the boot at once with a reason, not hang until the timeout."""
    payload = payloads[ZSTD_VERSION]
    entries, _ = read_newc(decompress(payload.initramfs.read_bytes()))
    init = next(e for e in entries if e.name == "init")
    broken = tmp_path / "broken.xz"
    archive = newc_archive([init, CpioEntry.file("rootfs.sqsh", b"not a squashfs" * 512)])
    broken.write_bytes(compress(archive, payload.flavour.compression))
    result = boot(kernel=payload.vmlinuz, initrd=broken, append=APPEND, timeout=TIMEOUT)
    assert result.report is None and not result.timed_out, result.describe()
    assert result.error is not None and "rootfs.sqsh" in result.error, result.describe()
    assert result.returncode == 0, result.describe()


# --------------------------------------------------------------------------------------------------
# extensions, firmware, microcode and META, assembled as the imager does


EXTENSIONS_YAML = """\
layers:
    - image: 0.sqsh
      metadata:
        name: hello
        version: 1.0.0
        author: Image Factory tests
        description: A file under /usr/local
        compatibility:
            talos:
                version: '>= v1.10.0'
        extraInfo: |
            name: not-the-name
            version: not-the-version
    - image: 1.sqsh
      metadata:
        name: dummy-module
        version: {kver}-v1
        author: Image Factory tests
        description: The dummy network driver as an out-of-tree module
        compatibility:
            talos:
                version: '>= v1.10.0'
    - image: modules.dep.sqsh
      metadata:
        name: modules.dep
        version: {kver}
        author: Talos Machinery
        description: Combined modules.dep for all extensions
        compatibility:
            talos:
                version: ""
"""


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _modules_dep_layer(vanilla: Path, extension_roots: list[Path], kver: str, work: Path) -> Path:
    """depmod over the base modules plus every extension's, keep modules.*.

    As ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/extensions/kernel_modules.go``.
    """
    entries, _ = read_newc(decompress(vanilla.read_bytes()))
    (work / "rootfs.sqsh").write_bytes(next(e.data for e in entries if e.name == "rootfs.sqsh"))
    base = work / "base"
    unsquash = ["unsquashfs", "-no-xattrs", "-d", str(base), "-f", "-n", str(work / "rootfs.sqsh")]
    subprocess.run([*unsquash, "usr/lib/modules"], check=True, capture_output=True)
    for root in extension_roots:
        src = root / "usr/lib/modules" / kver
        if src.is_dir():
            shutil.copytree(src, base / "usr/lib/modules" / kver, dirs_exist_ok=True)
    (work / "depmod.conf").write_text("search extras built-in\n")
    subprocess.run(
        ["depmod", "--all", "--basedir", str(base / "usr"), "--config", str(work / "depmod.conf"), kver],
        check=True,
        capture_output=True,
    )
    layer = work / "modules.dep"
    (layer / "usr/lib/modules" / kver).mkdir(parents=True)
    for path in sorted((base / "usr/lib/modules" / kver).glob("modules.*")):
        if path.is_file():
            shutil.move(path, layer / "usr/lib/modules" / kver / path.name)
    return layer


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def test_extensions_firmware_microcode_and_meta(payloads: dict[str, Payload], tmp_path: Path) -> None:
    payload = payloads[ZSTD_VERSION]
    kver = payload.kernel_version
    flavour = payload.flavour
    assert flavour.usr_merged and flavour.compression == "zstd"

    hello = _tree(tmp_path / "ext0", {"usr/local/share/hello/hello.txt": b"hello from an extension\n"})
    dummy = _tree(tmp_path / "ext1", {f"usr/lib/modules/{kver}/extras/dummy.ko": kernel_module("dummy")})
    depmod_work = tmp_path / "depmod"
    depmod_work.mkdir()
    modules_dep = _modules_dep_layer(payload.initramfs, [hello, dummy], kver, depmod_work)
    assert (modules_dep / f"usr/lib/modules/{kver}/modules.dep").read_text().count("extras/dummy.ko:") == 1

    work = tmp_path / "work"
    work.mkdir()
    for name, root in (("0", hello), ("1", dummy), ("modules.dep", modules_dep)):
        make_squashfs(root, work / f"{name}.sqsh", flavour.compression)
    firmware = b"\x00firmware blob\xff" * 64
    microcode = b"not really AMD microcode" * 8
    yaml_text = EXTENSIONS_YAML.format(kver=kver)

    # Sorted walk, directories before their children; kernel/ goes to the uncompressed early archive.
    extension_cpio = newc_archive(
        [
            CpioEntry.file("0.sqsh", (work / "0.sqsh").read_bytes()),
            CpioEntry.file("1.sqsh", (work / "1.sqsh").read_bytes()),
            CpioEntry.file("extensions.yaml", yaml_text.encode()),
            CpioEntry.file("modules.dep.sqsh", (work / "modules.dep.sqsh").read_bytes()),
            CpioEntry.directory("usr"),
            CpioEntry.directory("usr/lib"),
            CpioEntry.directory("usr/lib/firmware"),
            CpioEntry.directory("usr/lib/firmware/test"),
            CpioEntry.file("usr/lib/firmware/test/fw.bin", firmware),
        ]
    )
    early_cpio = newc_archive(
        [
            CpioEntry.directory("kernel"),
            CpioEntry.directory("kernel/x86"),
            CpioEntry.directory("kernel/x86/microcode"),
            CpioEntry.file("kernel/x86/microcode/AuthenticAMD.bin", microcode),
        ]
    )
    initramfs = tmp_path / "initramfs.xz"
    initramfs.write_bytes(
        early_cpio + payload.initramfs.read_bytes() + compress(extension_cpio, flavour.compression)
    )

    meta = {10: '{"externalIPs":["1.2.3.4"]}', 12: "hello world", 13: 'multi: "line"\n\tyaml: [1, 2]\n'}
    disks = [
        Disk(meta_disk(tmp_path / "meta.raw", meta), interface="nvme"),
        Disk(meta_disk(tmp_path / "other.raw", None), interface="sata"),
    ]
    append = "console=tty0 panic=-1 talos.platform=metal"  # no serial console: the report must still arrive
    result = boot(kernel=payload.vmlinuz, initrd=initramfs, append=append, disks=disks, timeout=TIMEOUT)
    report = _ok(result)

    assert report["cmdline"] == append and report["boot"] == "bios" and report["version"] == ZSTD_VERSION
    assert report["extensions"] == [
        {"image": "0.sqsh", "name": "hello", "version": "1.0.0", "files": _hashes(hello)},
        {"image": "1.sqsh", "name": "dummy-module", "version": f"{kver}-v1", "files": _hashes(dummy)},
        {"image": "modules.dep.sqsh", "name": "modules.dep", "version": kver, "files": _hashes(modules_dep)},
    ]
    assert report["modules"] == [{"name": "dummy", "loaded": True}]
    assert report["firmware"] == {"usr/lib/firmware/test/fw.bin": _sha(firmware)}
    assert report["microcode"] == ["kernel/x86/microcode/AuthenticAMD.bin"]
    assert report["meta"] == {str(k): v for k, v in meta.items()}


# --------------------------------------------------------------------------------------------------
# multi-profile UKI under the ≥ 1.10 payload's systemd-stub (trixie, ≥ 257)


def test_multi_profile_uki_boots_main_profile_with_trixie_stub(tmp_path: Path) -> None:
    """A ≥ 1.10 payload's stub (systemd ≥ 257) boots profile 0 of a two-profile UKI.

    The UKI is the imager's own (worker.imager.uki, Talos' layout): base sections with cmdline A, then
    ``.profile`` main (no own ``.cmdline``) and ``.profile`` reset with cmdline B. systemd < 257 knows no
    profiles and would take the last ``.cmdline`` (B); OVMF starts it as the removable-media default
    ``EFI/BOOT/BOOTX64.EFI`` without arguments, so the stub must pick profile 0 itself.
    """
    from worker.imager.uki import UKIProfile, build_uki

    version = "v1.12.4"
    payload = build_payload(version, tmp_path / "payload")
    main = "console=ttyS0 panic=-1 talos.platform=metal uki.profile=main"
    reset = "console=ttyS0 panic=-1 talos.platform=metal uki.profile=reset talos.experimental.wipe=system"
    uki = tmp_path / "vmlinuz.efi"
    build_uki(
        stub=payload.systemd_stub,
        kernel=payload.vmlinuz,
        initrd=payload.initramfs,
        cmdline=main,
        version=version,
        profiles=[UKIProfile(id="reset", title="Reset system disk", cmdline=reset)],
        epoch=1559424892,
        out=uki,
    )
    disk = esp_image(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": uki})
    result = boot(firmware="uefi", disks=[Disk(disk)], timeout=TIMEOUT)
    report = _ok(result)
    assert report["cmdline"] == main, result.describe()
    assert report["boot"] == "uefi" and report["secureboot"] is False
    assert report["version"] == version
