"""Disk format conversion with the real qemu-img: qcow2, fixed VHD and OVA read back with
``qemu-img info``/``compare``, byte-identical repeats, sparse 8 GiB disks stay cheap.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/out.go`` and ``pkg/imager/ova/ova.go``.
"""

from __future__ import annotations

import hashlib
import struct
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from common.profile.model import DiskFormat, ImageOptions
from common.talos.quirks import Quirks
from worker.imager import tools
from worker.imager.formats import CONVERTERS, convert, ovf_xml, qemu_img_info

EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC
MIB = 1 << 20
SMALL = 64 * MIB
BIG = 8192 * MIB

OVF_NS = "{http://schemas.dmtf.org/ovf/envelope/1}"

QCOW2 = ImageOptions(disk_size=SMALL, disk_format=DiskFormat.QCOW2, disk_format_options="cluster_size=8k")
VHD = ImageOptions(
    disk_size=SMALL, disk_format=DiskFormat.VPC, disk_format_options="subformat=fixed,force_size"
)
DYNAMIC_VHD = ImageOptions(disk_size=SMALL, disk_format=DiskFormat.VPC)  # no options: qemu's default
OVA = ImageOptions(disk_size=SMALL, disk_format=DiskFormat.OVA)


def make_raw(path: Path, size: int = SMALL) -> Path:
    """A sparse disk with a little data at a few offsets (start, middle, a random block, the end)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in (
            (0, b"\xeb\x63\x90" + b"boot" * 100),
            (MIB + 123, b"hello world" * 1000),
            (size // 2, hashlib.sha256(b"x").digest() * 4096),
            (size - 4096, b"\xff" * 4096),
        ):
            f.seek(offset)
            f.write(data)
    return path


def same_content(a: Path, a_fmt: str, b: Path, b_fmt: str) -> bool:
    try:
        tools.run(["qemu-img", "compare", "-f", a_fmt, "-F", b_fmt, a, b])
    except tools.ToolError:
        return False
    return True


def do_convert(
    tmp: Path, opts: ImageOptions, name: str = "p-amd64", quirks: Quirks | None = None
) -> tuple[Path, Path]:
    """Converts a fresh raw, keeping a reference copy of it for comparisons."""
    raw = make_raw(tmp / f"{name}.raw", opts.disk_size)
    ref = tmp / "reference.img"
    if not ref.exists():
        tools.run(["cp", "--sparse=always", raw, ref])
    out = convert(raw, opts, platform="p", arch="amd64", workdir=tmp / "work", epoch=EPOCH, quirks=quirks)
    assert not raw.exists()
    return out, ref


def test_raw_and_unknown_are_returned_unchanged(tmp_path: Path) -> None:
    raw = make_raw(tmp_path / "metal-amd64.raw")
    for fmt in (DiskFormat.RAW, DiskFormat.UNKNOWN):
        opts = ImageOptions(disk_size=SMALL, disk_format=fmt)
        assert convert(raw, opts, platform="metal", arch="amd64", workdir=tmp_path, epoch=EPOCH) == raw
        assert raw.exists()


def test_qcow2(tmp_path: Path) -> None:
    out, ref = do_convert(tmp_path, QCOW2, "alibabacloud-amd64")
    assert out == tmp_path / "alibabacloud-amd64.qcow2"
    info = qemu_img_info(out)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == SMALL
    assert info["cluster-size"] == 8192
    assert same_content(ref, "raw", out, "qcow2")


def test_fixed_vhd(tmp_path: Path) -> None:
    out, ref = do_convert(tmp_path, VHD, "azure-amd64-secureboot")
    assert out == tmp_path / "azure-amd64-secureboot.vhd"
    assert qemu_img_info(out)["format"] == "raw"  # qemu cannot probe fixed VHDs (no footer at 0)...
    info = qemu_img_info(out, "vpc")  # ...but opens them as such
    assert info["format"] == "vpc"
    assert info["virtual-size"] == SMALL  # force_size: exactly the raw size, no CHS rounding
    assert same_content(ref, "raw", out, "vpc")
    st = out.stat()
    assert st.st_size == SMALL + 512  # fixed: the data, then the footer
    assert st.st_blocks * 512 < 4 * MIB  # holes stay holes

    footer = out.read_bytes()[-512:]
    assert footer[:8] == b"conectix"
    assert struct.unpack_from(">I", footer, 24)[0] == EPOCH - 946684800
    assert struct.unpack_from(">I", footer, 60)[0] == 2  # fixed disk
    checksum = struct.unpack_from(">I", footer, 64)[0]
    assert checksum == ~(sum(footer[:64]) + sum(footer[68:])) & 0xFFFFFFFF
    unique_id = footer[68:84]
    assert unique_id[6] >> 4 == 8 and unique_id[8] >> 6 == 2


def test_dynamic_vhd_without_options_pins_both_footer_copies(tmp_path: Path) -> None:
    """Upstream passes ``-o ""`` (qemu-img refuses it); an empty option string means qemu's defaults."""
    out, ref = do_convert(tmp_path, DYNAMIC_VHD, "aws-amd64")
    assert qemu_img_info(out)["format"] == "vpc"
    assert same_content(ref, "raw", out, "vpc")
    data = out.read_bytes()
    assert data[:512] == data[-512:]
    assert struct.unpack_from(">I", data, 24)[0] == EPOCH - 946684800
    assert struct.unpack_from(">I", data, 60)[0] == 3  # dynamic disk


def read_ova(path: Path) -> tuple[list[tarfile.TarInfo], dict[str, bytes]]:
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    return members, contents


def test_ova(tmp_path: Path) -> None:
    out, ref = do_convert(tmp_path, OVA, "vmware-amd64")
    assert out == tmp_path / "vmware-amd64.ova"
    members, contents = read_ova(out)
    assert [m.name for m in members] == ["disk.ovf", "disk.mf", "disk.vmdk"]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (EPOCH, 0, 0, "root", "root", 0o644)
        assert m.isreg()
    assert out.read_bytes()[257:265] == b"ustar  \0"  # GNU tar's own header format
    assert out.stat().st_size % 10240 == 0  # padded to whole records, like GNU tar

    ovf, mf, vmdk = contents["disk.ovf"], contents["disk.mf"], contents["disk.vmdk"]
    assert ovf.decode() == ovf_xml("disk.vmdk", len(vmdk), SMALL)
    root = ET.fromstring(ovf)
    file = root.find(f"{OVF_NS}References/{OVF_NS}File")
    disk = root.find(f"{OVF_NS}DiskSection/{OVF_NS}Disk")
    assert file is not None and disk is not None
    assert file.get(f"{OVF_NS}href") == "disk.vmdk"
    assert file.get(f"{OVF_NS}size") == str(len(vmdk))
    assert disk.get(f"{OVF_NS}capacity") == str(SMALL // MIB)
    assert disk.get(f"{OVF_NS}capacityAllocationUnits") == "byte * 2^20"
    assert b'vmw:key="disk.EnableUUID"' in ovf and b"<vssd:VirtualSystemType>vmx-15<" in ovf

    sha = hashlib.sha256
    assert (
        mf
        == f"SHA256(disk.vmdk)= {sha(vmdk).hexdigest()}\nSHA256(disk.ovf)= {sha(ovf).hexdigest()}\n".encode()
    )

    extracted = tmp_path / "extracted.vmdk"
    extracted.write_bytes(vmdk)
    info = qemu_img_info(extracted)
    assert info["format"] == "vmdk"
    assert info["virtual-size"] == SMALL
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    assert b'RW 131072 SPARSE "disk.vmdk"' in vmdk[:4096]
    assert b'ddb.adapterType = "lsilogic"' in vmdk[:4096]
    assert same_content(ref, "raw", extracted, "vmdk")
    assert not (tmp_path / "work/ova/disk.vmdk").exists()  # scratch copy is gone


def test_ova_for_old_talos_versions(tmp_path: Path) -> None:
    """1.5.0 named members after the platform and put bytes where MiB belong; vmx-13 until 1.7.1."""
    out, _ = do_convert(tmp_path, OVA, "vmware-arm64", quirks=Quirks("v1.5.0"))
    members, contents = read_ova(out)
    assert [m.name for m in members] == ["p-amd64.ovf", "p-amd64.mf", "p-amd64.vmdk"]
    ovf = contents["p-amd64.ovf"]
    assert f'ovf:capacity="{SMALL}"'.encode() in ovf and b'ovf:href="p-amd64.vmdk"' in ovf
    assert b"vmx-13" in ovf and b"EnableUUID" not in ovf
    assert contents["p-amd64.mf"].startswith(b"SHA256(p-amd64.vmdk)= ")

    eleven = ovf_xml("disk.vmdk", 1, SMALL, Quirks("v1.11.6"))
    assert "vmx-15" in eleven and "EnableUUID" not in eleven
    assert 'ovf:capacity="64"' in eleven


@pytest.mark.parametrize("opts", [QCOW2, VHD, DYNAMIC_VHD, OVA], ids=["qcow2", "vhd", "dynamic-vhd", "ova"])
def test_converting_twice_gives_identical_bytes(tmp_path: Path, opts: ImageOptions) -> None:
    outputs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        out, _ = do_convert(tmp_path / run, opts)
        outputs.append(out.read_bytes())
        if run == "a" and opts.disk_format is DiskFormat.VPC:
            time.sleep(1.1)  # a different "now" for the footer's timestamp
    assert outputs[0] == outputs[1]


def test_different_content_gets_different_ids(tmp_path: Path) -> None:
    """The pinned VHD unique id and VMDK CID follow the disk content, not just the epoch."""
    ids: dict[str, list[bytes]] = {"vhd": [], "ova": []}
    for run, extra in (("a", b"one"), ("b", b"two")):
        for opts in (VHD, OVA):
            d = tmp_path / run / opts.disk_format.value
            d.mkdir(parents=True)
            raw = make_raw(d / "x.raw")
            with open(raw, "r+b") as f:
                f.seek(10 * MIB)
                f.write(extra)
            out = convert(raw, opts, platform="p", arch="amd64", workdir=d / "work", epoch=EPOCH)
            if opts is VHD:
                ids["vhd"].append(out.read_bytes()[-512:][68:84])
            else:
                vmdk = read_ova(out)[1]["disk.vmdk"]
                ids["ova"].append(vmdk[512:1024].split(b"\n")[2])
    assert ids["vhd"][0] != ids["vhd"][1]
    assert ids["ova"][0] != ids["ova"][1] and ids["ova"][0].startswith(b"CID=")


@pytest.mark.parametrize(
    "opts",
    [
        ImageOptions(disk_size=SMALL, disk_format=DiskFormat.QCOW2, disk_format_options="cluster_size=3k"),
        ImageOptions(disk_size=SMALL, disk_format=DiskFormat.VPC, disk_format_options="subformat=bogus"),
    ],
    ids=["qcow2", "vhd"],
)
def test_failing_qemu_img_raises_and_leaves_no_output(tmp_path: Path, opts: ImageOptions) -> None:
    raw = make_raw(tmp_path / "x-amd64.raw")
    with pytest.raises(tools.ToolError, match="qemu-img failed"):
        convert(raw, opts, platform="x", arch="amd64", workdir=tmp_path / "work", epoch=EPOCH)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-amd64.raw"]


def test_failing_ova_leaves_no_output(tmp_path: Path) -> None:
    missing = tmp_path / "gone-amd64.raw"
    with pytest.raises(tools.ToolError):
        convert(missing, OVA, platform="gone", arch="amd64", workdir=tmp_path / "work", epoch=EPOCH)
    assert not (tmp_path / "gone-amd64.ova").exists()
    assert list((tmp_path / "work/ova").iterdir()) == []


@pytest.mark.parametrize("opts", [QCOW2, VHD, OVA], ids=["qcow2", "vhd", "ova"])
def test_sparse_8gib_disk_converts_fast_and_stays_sparse(tmp_path: Path, opts: ImageOptions) -> None:
    big = ImageOptions(
        disk_size=BIG, disk_format=opts.disk_format, disk_format_options=opts.disk_format_options
    )
    raw = make_raw(tmp_path / "big-amd64.raw", BIG)
    started = time.monotonic()
    with tools.recording() as record:
        out = convert(raw, big, platform="big", arch="amd64", workdir=tmp_path / "work", epoch=EPOCH)
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"{opts.disk_format}: {elapsed:.1f}s"
    assert [r.name for r in record.runs] == ["qemu-img"]
    assert out.stat().st_blocks * 512 < 16 * MIB
    if opts.disk_format is DiskFormat.VPC:
        assert out.stat().st_size == BIG + 512
        assert qemu_img_info(out, "vpc")["virtual-size"] == BIG
    print(f"{opts.disk_format.value}: {elapsed:.2f}s, {out.stat().st_size} bytes")


def test_every_disk_format_has_one_converter_entry() -> None:
    assert set(CONVERTERS) == set(DiskFormat)
    assert CONVERTERS[DiskFormat.RAW] is None
    assert CONVERTERS[DiskFormat.UNKNOWN] is None
