"""Disk image assembly on small inputs: layouts, GRUB wiring, protofiles, sparseness, reproducibility."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

import pefile
import pytest

from common.errors import InvalidInputError
from common.profile.model import Bootloader
from devstack.debian import grub_arm64_efi_dir, grub_dirs
from worker.imager.disk import DiskInputs, build_disk, copy_nonzero, grub_disk_cfg, protofile, xfs_options
from worker.imager.meta import ADV_LENGTH, META_PARTITION_SIZE, parse_adv

MIB = 1024 * 1024
EPOCH = 1_700_000_000


@pytest.fixture(scope="module")
def grub() -> dict[str, Path]:
    pc, efi = grub_dirs()
    return {"i386-pc": pc, "x86_64-efi": efi, "arm64-efi": grub_arm64_efi_dir()}


@pytest.fixture(scope="module")
def boot_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("assets")
    kernel, initramfs = root / "vmlinuz", root / "initramfs.xz"
    kernel.write_bytes(os.urandom(3 * MIB))
    initramfs.write_bytes(os.urandom(2 * MIB))
    return kernel, initramfs


def inputs(grub: dict[str, Path], files: tuple[Path, Path], **kw: object) -> DiskInputs:
    base: dict[str, object] = {
        "arch": "amd64",
        "version": "v1.9.5",
        "bootloader": Bootloader.GRUB,
        "disk_size": 1246 * MIB,
        "kernel": files[0],
        "initramfs": files[1],
        "cmdline": "talos.platform=metal console=ttyS0 a=$b",
        "grub_dirs": grub,
        "meta": [(0x0A, "net"), (0x0C, "user")],
    }
    base.update(kw)
    return DiskInputs(**base)  # type: ignore[arg-type]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def test_grub_cfg_is_upstreams_encoding() -> None:
    # the shape of Talos' grub_write_test.cfg, with the factory's "Talos" name and quoting applied
    text = grub_disk_cfg("console=ttyS0 a=$b", "v1.9.0")
    assert text.startswith('set default="A - Talos v1.9.0"\n\nset timeout=3\n\ninsmod all_video\n\n')
    assert "  linux /A/vmlinuz console=ttyS0 a=\\$b\n  initrd /A/initramfs.xz\n}\n" in text
    assert text.endswith("talos.experimental.wipe=system:EPHEMERAL,STATE\n  initrd /A/initramfs.xz\n}\n")
    assert 'menuentry "Reset Talos installation and return to maintenance mode" {' in text
    assert "Reset" not in grub_disk_cfg("x", "v1.3.0")  # the reset entry arrived in 1.4


def test_protofile_lists_files_before_directories_with_owner_zero(tmp_path: Path) -> None:
    (tmp_path / "grub").mkdir(mode=0o700)
    (tmp_path / "grub").chmod(0o700)
    (tmp_path / "grub" / "grub.cfg").write_text("x")
    (tmp_path / "grub" / "grub.cfg").chmod(0o600)
    (tmp_path / "A").mkdir()
    (tmp_path / "A").chmod(0o755)
    (tmp_path / "z").write_text("z")
    (tmp_path / "z").chmod(0o644)
    tmp_path.chmod(0o755)
    assert protofile(tmp_path).splitlines() == [
        "/",
        "0 0",
        "d--755 0 0",
        f" z ---644 0 0 {tmp_path / 'z'}",
        " A d--755 0 0",
        " $",
        " grub d--700 0 0",
        f"  grub.cfg ---600 0 0 {tmp_path / 'grub' / 'grub.cfg'}",
        " $",
        "$",
    ]
    (tmp_path / "a b").write_text("")
    with pytest.raises(ValueError, match="spaces"):
        protofile(tmp_path)


@pytest.mark.parametrize(
    ("version", "rmapbt", "nrext64"),
    [("v1.7.6", "0", "0"), ("v1.9.5", "1", "1"), ("v1.12.4", "1", "1"), ("v1.13.0", "1", "1")],
)
def test_xfs_features_follow_upstreams_lts_configs(version: str, rmapbt: str, nrext64: str) -> None:
    metadata, inode = xfs_options(version)[1], xfs_options(version)[3]
    assert f"rmapbt={rmapbt}" in metadata and "bigtime=1" in metadata and "reflink=1" in metadata
    assert f"nrext64={nrext64}" in inode and "sparse=1" in inode


def test_copy_nonzero_keeps_the_destination_sparse(tmp_path: Path) -> None:
    src = tmp_path / "part.img"
    with src.open("wb") as f:
        f.write(b"head")
        f.seek(10 * MIB)
        f.write(bytes(4 * MIB))  # zeros written as data, as mkfs writes its log
        f.write(b"tail")
    dst = tmp_path / "disk.raw"
    with dst.open("wb") as f:
        f.truncate(64 * MIB)
    with dst.open("r+b") as f:
        copy_nonzero(src, f.fileno(), 4 * MIB, src.stat().st_size)
    data = dst.read_bytes()
    assert data[4 * MIB : 4 * MIB + 4] == b"head"
    assert data[18 * MIB : 18 * MIB + 4] == b"tail"
    assert dst.stat().st_blocks * 512 <= 2 * MIB  # the 4 MiB of zeros were not written
    with pytest.raises(ValueError, match="partition"):
        copy_nonzero(src, 0, 0, 1)


def test_grub_layout_wires_bios_boot_and_writes_meta(
    grub: dict[str, Path], boot_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "disk.raw"
    (tmp_path / "w").mkdir()
    layout = build_disk(inputs(grub, boot_files), out, workdir=tmp_path / "w", epoch=EPOCH)
    assert [p.label for p in layout.partitions] == ["EFI", "BIOS", "BOOT", "META"]
    bios, meta = layout.partition("BIOS"), layout.partition("META")
    with out.open("rb") as f:
        mbr = f.read(512)
        f.seek(bios.start)
        core = f.read(bios.length)
        f.seek(meta.start)
        block = f.read(META_PARTITION_SIZE)
    # boot.img points at the BIOS partition, its jump NOPed, GPT's protective entry and 55AA intact
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == bios.first_lba
    assert mbr[0x66:0x68] == b"\x90\x90" and mbr[510:] == b"\x55\xaa" and mbr[450] == 0xEE
    assert struct.unpack_from("<Q", core, 0x1F4)[0] == bios.first_lba + 1
    assert parse_adv(block[:ADV_LENGTH]) == {0x0A: "net", 0x0C: "user"}
    assert block[:ADV_LENGTH] == block[ADV_LENGTH : 2 * ADV_LENGTH]
    info = subprocess.run(["sgdisk", "-v", str(out)], capture_output=True, text=True, check=True)
    assert "No problems found" in info.stdout
    assert out.stat().st_blocks * 512 < 64 * MIB  # sparse: a 1246 MiB disk costs its data
    assert not any((tmp_path / "w").glob("[A-Z]*.img")), "partition images are removed once copied"


def test_same_inputs_give_the_same_disk(
    grub: dict[str, Path], boot_files: tuple[Path, Path], tmp_path: Path
) -> None:
    digests = []
    for n in range(2):
        (tmp_path / f"w{n}").mkdir()
        out = tmp_path / f"disk{n}.raw"
        build_disk(inputs(grub, boot_files), out, workdir=tmp_path / f"w{n}", epoch=EPOCH)
        digests.append(sha256(out))
    assert digests[0] == digests[1]


def test_arm64_grub_has_an_aarch64_efi_loader_and_no_bios_code(
    grub: dict[str, Path], boot_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "disk.raw"
    (tmp_path / "w").mkdir()
    layout = build_disk(inputs(grub, boot_files, arch="arm64"), out, workdir=tmp_path / "w", epoch=EPOCH)
    assert out.read_bytes()[:446] == bytes(446)
    efi = layout.partition("EFI")
    loader = tmp_path / "BOOTAA64.efi"
    subprocess.run(
        ["mcopy", "-i", f"{out}@@{efi.start}", "::/EFI/boot/BOOTAA64.efi", str(loader)], check=True
    )
    assert pefile.PE(str(loader), fast_load=True).FILE_HEADER.Machine == 0xAA64
    assert b"(hd0,gpt3)/grub" in loader.read_bytes()


def test_dual_boot_on_arm64_is_refused(
    grub: dict[str, Path], boot_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "disk.raw"
    (tmp_path / "w").mkdir()
    kw = {"arch": "arm64", "version": "v1.12.4", "bootloader": Bootloader.DUAL_BOOT}
    with pytest.raises(InvalidInputError, match="dual-boot bootloader is not supported on arm64") as err:
        build_disk(inputs(grub, boot_files, **kw), out, workdir=tmp_path / "w", epoch=EPOCH)
    assert err.value.status == 400
    assert not out.exists()
