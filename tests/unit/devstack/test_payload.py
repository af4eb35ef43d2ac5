"""The release fixture's boot payload: flavours, the newc writer, determinism, and the report script's
parsers (run on the host with the very busybox the payload ships, so no boot is needed for them).
The arm64 payload cannot boot here, so its shape is checked structurally (PE/ELF headers, squashfs
listing, depmod)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pefile
import pytest

from devstack import debian
from devstack.release import payload as payload_module
from devstack.release.payload import (
    ARM64_IMAGE_MAGIC,
    SOURCE_DATE_EPOCH,
    CpioEntry,
    PayloadError,
    PayloadFlavour,
    build_payload,
    compress,
    decompress,
    kernel_module,
    kernel_version,
    newc_archive,
    normalise_kernel,
    read_newc,
    systemd_boot_suite,
)
from tests.support.qemu import meta_disk, talos_adv

REPORT_SH = Path(__file__).resolve().parents[3] / "devstack/release/init/report.sh"


@pytest.mark.parametrize(
    ("version", "compression", "usr_merged"),
    [
        ("v1.5.0", "xz", False),
        ("v1.7.6", "xz", False),
        ("v1.8.0-alpha.1", "zstd", False),
        ("v1.9.0", "zstd", False),
        ("v1.10.0-beta.1", "zstd", True),
        ("1.10.3", "zstd", True),
        ("v1.12.0-beta.1", "zstd", True),
    ],
)
def test_flavour_for_version(version: str, compression: str, usr_merged: bool) -> None:
    flavour = PayloadFlavour.for_version(version)
    assert (flavour.compression, flavour.usr_merged) == (compression, usr_merged)
    prefix = "usr/lib" if usr_merged else "lib"
    assert (flavour.modules_dir, flavour.firmware_dir) == (f"{prefix}/modules", f"{prefix}/firmware")


def test_flavour_rejects_non_versions() -> None:
    with pytest.raises(PayloadError):
        PayloadFlavour.for_version("latest")


def test_newc_round_trip_and_padding() -> None:
    entries = [
        CpioEntry.directory("usr"),
        CpioEntry.file("usr/a.txt", b"hello"),
        CpioEntry.symlink("usr/b", "a.txt"),
        CpioEntry.file("odd", b"x" * 513, 0o755),
    ]
    data = newc_archive(entries)
    assert len(data) % 512 == 0
    back, end = read_newc(data + b"tail")
    assert end == len(data)
    assert [(e.name, e.mode, e.data) for e in back] == [(e.name, e.mode, e.data) for e in entries]
    assert int(data[6 + 8 * 5 : 6 + 8 * 6], 16) == SOURCE_DATE_EPOCH  # mtime of the first member


def test_compress_round_trip() -> None:
    for comp, magic in (("xz", b"\xfd7zX"), ("zstd", b"\x28\xb5\x2f\xfd")):
        packed = compress(b"payload" * 1000, comp)  # type: ignore[arg-type]
        assert packed[:4] == magic
        assert decompress(packed) == b"payload" * 1000


def test_kernel_module_is_a_real_module() -> None:
    ko = kernel_module("dummy")
    assert ko[:4] == b"\x7fELF"
    assert f"vermagic={kernel_version()} ".encode() in ko


def _listing(sqsh: Path) -> list[str]:
    cmd = ["unsquashfs", "-lls", "-d", "", str(sqsh)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()


@pytest.mark.parametrize("version", ["v1.7.6", "v1.10.3"])
def test_payload_shape(version: str, tmp_path: Path) -> None:
    payload = build_payload(version, tmp_path / "out")
    kver = payload.kernel_version
    assert payload.vmlinuz.read_bytes() == (debian.kernel_tree()[0] / f"boot/vmlinuz-{kver}").read_bytes()
    assert payload.systemd_stub.read_bytes()[:2] == b"MZ"
    assert payload.systemd_boot.read_bytes()[:2] == b"MZ"
    raw = payload.initramfs.read_bytes()
    assert raw[:4] == (b"\xfd7zX" if payload.flavour.compression == "xz" else b"\x28\xb5\x2f\xfd")
    entries, _ = read_newc(decompress(raw))
    assert [(e.name, stat.S_IMODE(e.mode)) for e in entries] == [("init", 0o755), ("rootfs.sqsh", 0o644)]
    assert entries[0].data[:4] == b"\x7fELF"

    sqsh = tmp_path / "rootfs.sqsh"
    sqsh.write_bytes(entries[1].data)
    listing = "\n".join(_listing(sqsh))
    assert " root/root " in listing and "1000/" not in listing
    mods = f"{payload.flavour.modules_dir}/{kver}"
    assert f"/{mods}/modules.dep\n" in listing + "\n"
    assert f"/{mods}/kernel/drivers/block/virtio_blk.ko" in listing
    if payload.flavour.usr_merged:
        assert "/lib -> usr/lib" in listing and "/bin -> usr/bin" in listing
    else:
        assert "/lib -> " not in listing
    out = subprocess.run(
        ["unsquashfs", "-cat", str(sqsh), "etc/os-release"], capture_output=True, text=True, check=True
    ).stdout
    assert f"VERSION_ID={version}\n" in out and 'NAME="Talos"' in out


def test_build_is_deterministic(tmp_path: Path) -> None:
    """Two uncached builds (different dirs, different times) give the same bytes."""
    a = build_payload("v1.10.3", tmp_path / "a", cache=False)
    b = build_payload("v1.10.3", tmp_path / "b", cache=False)
    for name in ("vmlinuz", "initramfs.xz", "systemd-stub.efi", "systemd-boot.efi"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    cached = build_payload("v1.10.3", tmp_path / "c")
    assert cached.initramfs.read_bytes() == a.initramfs.read_bytes() == b.initramfs.read_bytes()


def _sdmagic(efi: Path) -> str:
    """The ``.sdmagic`` section systemd puts into its EFI binaries: ``#### LoaderInfo: <what> <ver> ####``.

    bookworm's aarch64 binaries (252) have only ``.text`` and ``.data`` (made with ``objcopy -O binary``),
    so there the marker is found in the file's bytes.
    """
    pe = pefile.PE(str(efi), fast_load=True)
    try:
        section = next((s for s in pe.sections if s.Name.rstrip(b"\0") == b".sdmagic"), None)
        if section is None:
            match = re.search(rb"#### LoaderInfo: [^#\0]+ ####", efi.read_bytes())
            assert match, f"no LoaderInfo marker in {efi}"
            return match.group(0).decode()
        return section.get_data()[: section.Misc_VirtualSize].rstrip(b"\0").decode()
    finally:
        pe.close()


def _systemd_major(efi: Path, what: str) -> int:
    magic = _sdmagic(efi)
    match = re.fullmatch(rf"#### LoaderInfo: {what} (\d+)\.[^ ]+ ####", magic)
    assert match, magic
    return int(match.group(1))


@pytest.mark.parametrize(
    ("version", "suite"),
    [
        ("v1.5.0", None),
        ("v1.9.6", None),
        ("v1.10.0-alpha.1", "trixie"),
        ("v1.10.3", "trixie"),
        ("v1.12.4", "trixie"),
    ],
)
def test_systemd_boot_suite(version: str, suite: str | None) -> None:
    assert systemd_boot_suite(version) == suite


@pytest.mark.parametrize(("version", "major"), [("v1.9.6", 252), ("v1.12.4", 257)])
def test_payload_systemd_matches_uki_profiles(version: str, major: int, tmp_path: Path) -> None:
    """Multi-profile UKIs (≥ 1.10) need systemd ≥ 257's stub; older versions keep bookworm's 252."""
    payload = build_payload(version, tmp_path)
    stub = _systemd_major(payload.systemd_stub, "systemd-stub")
    boot = _systemd_major(payload.systemd_boot, "systemd-boot")
    if major == 252:
        assert stub == boot == 252
    else:
        assert stub >= 257 and boot >= 257
    # And the payload's copy is the package's file, byte for byte.
    efi = debian.systemd_boot_tree(systemd_boot_suite(version)) / "usr/lib/systemd/boot/efi"
    assert payload.systemd_stub.read_bytes() == (efi / "linuxx64.efi.stub").read_bytes()
    assert payload.systemd_boot.read_bytes() == (efi / "systemd-bootx64.efi").read_bytes()


def test_cache_key_follows_the_stub_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached ≥ 1.10 payload built with another stub (e.g. before this switch) must not be reused."""
    flavour = PayloadFlavour.for_version("v1.10.3")
    with_trixie = payload_module._inputs_key("v1.10.3", flavour)
    monkeypatch.setattr(payload_module, "systemd_boot_suite", lambda version: None)
    assert payload_module._inputs_key("v1.10.3", flavour) != with_trixie


# --------------------------------------------------------------------------------------------------
# the arm64 payload (inspected, never booted)

EM_AARCH64 = 0xB7
PE_ARM64 = 0xAA64


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a little-endian ELF64 file"
    return int.from_bytes(data[18:20], "little")


def _pe_machine(path: Path) -> int:
    pe = pefile.PE(str(path), fast_load=True)
    try:
        return int(pe.FILE_HEADER.Machine)
    finally:
        pe.close()


def test_arm64_kernel_module_is_a_real_arm64_module() -> None:
    ko = kernel_module("dummy", arch="arm64")
    assert _elf_machine(ko) == EM_AARCH64
    kver = kernel_version("arm64")
    assert kver.endswith("-arm64") and f"vermagic={kver} ".encode() in ko
    assert _elf_machine(kernel_module("dummy")) == 0x3E  # the default is still amd64's (EM_X86_64)
    with pytest.raises(PayloadError, match="riscv64"):
        kernel_module("dummy", arch="riscv64")


def test_normalise_kernel_unpacks_gzip_and_checks_the_image_header() -> None:
    image = b"MZ" + b"\0" * 0x36 + ARM64_IMAGE_MAGIC + b"PE\0\0" + b"\x01" * 64
    assert normalise_kernel(image) is image
    assert normalise_kernel(gzip.compress(image, mtime=0)) == image
    with pytest.raises(PayloadError, match="not an EFI-stub Image"):
        normalise_kernel(gzip.compress(b"\x7fELF" + b"\0" * 100))
    with pytest.raises(PayloadError, match="not an EFI-stub Image"):
        normalise_kernel(b"MZ" + b"\0" * 100)  # an x86 bzImage also starts with MZ


def _unsquash(data: bytes, tmp_path: Path) -> Path:
    sqsh = tmp_path / "rootfs.sqsh"
    sqsh.write_bytes(data)
    root = tmp_path / "root"
    subprocess.run(
        ["unsquashfs", "-no-progress", "-d", str(root), str(sqsh)], capture_output=True, check=True
    )
    return root


@pytest.mark.parametrize(("version", "systemd"), [("v1.7.6", 252), ("v1.9.5", 252), ("v1.10.3", 257)])
def test_arm64_payload_shape(version: str, systemd: int, tmp_path: Path) -> None:
    payload = build_payload(version, tmp_path / "out", arch="arm64")
    kver = payload.kernel_version
    assert (payload.arch, payload.version) == ("arm64", version)
    assert kver == kernel_version("arm64") and kver.endswith("-arm64")
    assert [
        p.name for p in (payload.vmlinuz, payload.initramfs, payload.systemd_stub, payload.systemd_boot)
    ] == [
        "vmlinuz",
        "initramfs.xz",
        "systemd-stub.efi",
        "systemd-boot.efi",
    ]

    # the kernel: an uncompressed arm64 Image with its EFI stub (a PE/COFF AArch64 image)
    image = payload.vmlinuz.read_bytes()
    assert image[:2] == b"MZ" and image[0x38:0x3C] == ARM64_IMAGE_MAGIC == b"ARM\x64"
    assert _pe_machine(payload.vmlinuz) == PE_ARM64

    # systemd-stub/-boot: AArch64 PE, 252 (bookworm) before 1.10 and >= 257 (trixie) from 1.10
    for path, what in ((payload.systemd_stub, "systemd-stub"), (payload.systemd_boot, "systemd-boot")):
        assert _pe_machine(path) == PE_ARM64, path.name
        major = _systemd_major(path, what)
        assert major == 252 if systemd == 252 else major >= 257
    efi = debian.systemd_boot_tree(systemd_boot_suite(version), "arm64") / "usr/lib/systemd/boot/efi"
    assert payload.systemd_stub.read_bytes() == (efi / "linuxaa64.efi.stub").read_bytes()
    assert payload.systemd_boot.read_bytes() == (efi / "systemd-bootaa64.efi").read_bytes()

    # the initramfs: Talos' compression for the version, exactly init + rootfs.sqsh
    raw = payload.initramfs.read_bytes()
    assert raw[:4] == (b"\xfd7zX" if payload.flavour.compression == "xz" else b"\x28\xb5\x2f\xfd")
    assert payload.flavour == PayloadFlavour.for_version(version)
    entries, _ = read_newc(decompress(raw))
    assert [(e.name, stat.S_IMODE(e.mode)) for e in entries] == [("init", 0o755), ("rootfs.sqsh", 0o644)]
    # init: the C program cross-compiled for arm64, not busybox
    assert _elf_machine(entries[0].data) == EM_AARCH64
    assert b"IMAGE-FACTORY-BOOT-ERROR" in entries[0].data
    assert (
        entries[0].data != (debian.arch_package_tree("busybox-static", "arm64") / "bin/busybox").read_bytes()
    )

    # the rootfs: arm64 busybox, the flavour's modules dir with real arm64 modules, os-release
    listing = "\n".join(_listing_of(entries[1].data, tmp_path))
    assert " root/root " in listing and "1000/" not in listing
    root = _unsquash(entries[1].data, tmp_path)
    mods = root / payload.flavour.modules_dir / kver
    assert f" /{payload.flavour.modules_dir}/{kver}/modules.dep\n" in listing + "\n"
    if not payload.flavour.usr_merged:
        assert not (root / "usr/lib/modules").exists()
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo", "modules.dep"):
        assert (mods / name).is_file(), name
    virtio_blk = mods / "kernel/drivers/block/virtio_blk.ko"
    assert _elf_machine(virtio_blk.read_bytes()) == EM_AARCH64
    assert "kernel/drivers/block/virtio_blk.ko:" in (mods / "modules.dep").read_text()
    shell = root / ("usr/bin/busybox" if payload.flavour.usr_merged else "bin/busybox")
    assert _elf_machine(shell.read_bytes()) == EM_AARCH64
    if payload.flavour.usr_merged:
        assert (root / "lib").readlink() == Path("usr/lib") and (root / "bin").readlink() == Path("usr/bin")
    os_release = (root / "etc/os-release").read_text()
    assert f"VERSION_ID={version}\n" in os_release and 'NAME="Talos"' in os_release

    # depmod over it (as the imager does once extensions add modules) succeeds and sees the new one
    extras = mods / "extras"
    extras.mkdir()
    (extras / "dummy.ko").write_bytes(kernel_module("dummy", arch="arm64"))
    (mods / "modules.dep").unlink()
    conf = tmp_path / "depmod.conf"
    conf.write_text("search extras built-in\n")
    base = root / "usr" if payload.flavour.usr_merged else root
    subprocess.run(["depmod", "--all", "--basedir", str(base), "--config", str(conf), kver], check=True)
    dep = (mods / "modules.dep").read_text()
    assert "extras/dummy.ko:" in dep and "kernel/fs/squashfs/squashfs.ko:" in dep


def _listing_of(data: bytes, tmp_path: Path) -> list[str]:
    sqsh = tmp_path / "listing.sqsh"
    sqsh.write_bytes(data)
    return _listing(sqsh)


def test_arm64_build_is_deterministic_and_cached_apart(tmp_path: Path) -> None:
    """Two uncached arm64 builds give the same bytes; the cache keeps them apart from amd64's."""
    a = build_payload("v1.12.4", tmp_path / "a", cache=False, arch="arm64")
    b = build_payload("v1.12.4", tmp_path / "b", cache=False, arch="arm64")
    for name in ("vmlinuz", "initramfs.xz", "systemd-stub.efi", "systemd-boot.efi"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    cached = build_payload("v1.12.4", tmp_path / "c", arch="arm64")
    assert cached.initramfs.read_bytes() == a.initramfs.read_bytes() == b.initramfs.read_bytes()
    amd64 = build_payload("v1.12.4", tmp_path / "d")
    assert amd64.arch == "amd64" and amd64.vmlinuz.read_bytes() != cached.vmlinuz.read_bytes()
    assert amd64.initramfs.read_bytes() != cached.initramfs.read_bytes()


def test_arm64_cache_key_follows_the_arm64_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another arm64 kernel changes the arm64 payload's key but not amd64's."""
    flavour = PayloadFlavour.for_version("v1.10.3")
    amd64 = payload_module._inputs_key("v1.10.3", flavour)
    arm64 = payload_module._inputs_key("v1.10.3", flavour, "arm64")
    assert amd64 != arm64
    real = debian.kernel_package("arm64")
    other = dataclasses.replace(real, version=real.version + "+1", sha256="0" * 64)
    monkeypatch.setattr(debian, "kernel_package", lambda arch: other)
    assert payload_module._inputs_key("v1.10.3", flavour, "arm64") != arm64
    assert payload_module._inputs_key("v1.10.3", flavour) == amd64
    monkeypatch.setattr(payload_module, "systemd_boot_suite", lambda version: None)
    assert payload_module._inputs_key("v1.10.3", flavour, "arm64") not in (arm64, amd64)


# --------------------------------------------------------------------------------------------------
# report.sh functions, sourced into the payload's busybox sh on the host


def _sh(script: str, tmp_path: Path, stdin: bytes = b"") -> str:
    busybox = debian.package_tree("busybox-static") / "bin/busybox"
    env = {"IMAGE_FACTORY_REPORT_LIB": "1", "IMAGE_FACTORY_TMP": str(tmp_path), "PATH": os.environ["PATH"]}
    proc = subprocess.run(
        [str(busybox), "sh", "-c", f'. "$1"; {script}', "sh", str(REPORT_SH)],
        input=stdin,
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


YAML_GO = """\
layers:
    - image: 0.sqsh
      metadata:
        name: hello
        version: 1.0.0
        author: Someone
        description: A "quoted" thing
        compatibility:
            talos:
                version: '>= v1.0.0'
        extraInfo: |
            name: not-this-one
            version: nor-this
            - image: bogus.sqsh
    - image: modules.dep.sqsh
      metadata:
        name: modules.dep
        version: 6.1.0-56-amd64
        author: Talos Machinery
        description: Combined modules.dep for all extensions
        compatibility:
            talos:
                version: ""
"""

YAML_COMPACT = """\
# written by something else
layers:
- metadata:
    version: "2.0"
    name: 'o''brien'
    compatibility: {talos: {version: ">= 1.0.0"}}
  image: "1.sqsh"
other: ignored
"""


def test_parse_layers(tmp_path: Path) -> None:
    for i, (text, want) in enumerate(
        [
            (YAML_GO, "0.sqsh\thello\t1.0.0\nmodules.dep.sqsh\tmodules.dep\t6.1.0-56-amd64\n"),
            (YAML_COMPACT, "1.sqsh\to'brien\t2.0\n"),
            ("layers: []\n", ""),
        ]
    ):
        path = tmp_path / f"ext{i}.yaml"
        path.write_text(text)
        assert _sh(f'parse_layers "{path}"', tmp_path) == want


@pytest.mark.parametrize(
    "value",
    ["plain", 'quo"te', "back\\slash", "new\nline\r\n", "tab\tand\x01ctl\x7f", "ünïcødé ✓", "", "a: [1]\n"],
)
def test_json_escaping(value: str, tmp_path: Path) -> None:
    out = _sh('json "$(cat; echo x)"', tmp_path, stdin=value.encode())  # the x keeps trailing newlines
    assert json.loads(out) == value + "x"


def test_json_hashes(tmp_path: Path) -> None:
    lines = f'{"a" * 64}  ./usr/x y.txt\n{"b" * 64}  ./q"uote\n'.encode()
    want = {"usr/x y.txt": "a" * 64, 'q"uote': "b" * 64}
    assert json.loads(_sh('json_hashes "./"', tmp_path, stdin=lines)) == want
    assert json.loads(_sh('json_hashes "./"', tmp_path)) == {}


def test_meta_from_gpt_disk(tmp_path: Path) -> None:
    values = {10: '{"externalIPs":["1.2.3.4"]}', 12: "hello world", 0xF: "multi\nline: 'yaml'\n"}
    disk = meta_disk(tmp_path / "disk.raw", values)
    out = _sh(
        f'start=$(find_meta "{disk}"); echo "$start"; '
        f'dd if="{disk}" of="$T/meta.bin" bs=512 skip=$((start / 512)) count=1024 2>/dev/null; '
        'parse_adv "$T/meta.bin" 0 && echo "{$META_JSON}"',
        tmp_path,
    )
    start, meta = out.splitlines(keepends=False)[0], "\n".join(out.splitlines()[1:])
    assert int(start) == (2048 + 4 * 2048) * 512
    assert json.loads(meta) == {str(k): v for k, v in values.items()}


def test_meta_falls_back_to_second_copy_and_rejects_garbage(tmp_path: Path) -> None:
    good = talos_adv({11: "code"})
    broken = bytearray(good)
    broken[20] ^= 0xFF  # checksum mismatch
    blob = tmp_path / "meta.bin"
    blob.write_bytes(bytes(broken) + good)
    script = 'if parse_adv "$1" 0; then echo first; '
    script += 'elif parse_adv "$1" 262144; then echo "second {$META_JSON}"; fi'
    out = _sh(f'set -- "{blob}"; {script}', tmp_path)
    assert out.startswith("second ") and json.loads(out.removeprefix("second ")) == {"11": "code"}
    blob.write_bytes(b"\0" * 524288)
    assert _sh(f'set -- "{blob}"; {script}', tmp_path) == ""
    assert _sh(f'find_meta "{blob}"', tmp_path) == ""
