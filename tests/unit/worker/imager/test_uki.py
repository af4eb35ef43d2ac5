"""UKI assembly: real systemd stubs and kernels, read back with pefile and binutils.

Upstream: ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/uki`` (ported in ``worker/imager/uki.py``).

Two real stubs come from the release fixture: trixie's systemd 257 (v1.12.4 payload: SectionAlignment
0x1000, a non-zero ImageBase, multi-profile aware) and bookworm's 252 (v1.7.6 payload: 0x200
alignment and a COFF symbol table). The e2e tests boot the results under OVMF, directly and through
systemd-boot for the reset profile, and look at the splash on the screen.
"""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pefile
import pytest

from devstack.release.payload import Payload, build_payload
from tests.support.qemu import BootResult, Disk, boot, esp_image
from worker.imager.splash import splash_bmp
from worker.imager.uki import (
    APPENDED_CHARACTERISTICS,
    Section,
    UKIError,
    UKIProfile,
    assemble_pe,
    build_uki,
    kernel_uname,
    measurement_sets,
    os_release,
    stub_supports_profiles,
    stub_systemd_version,
    uki_sections,
)

CMDLINE = "console=ttyS0 talos.platform=metal foo=bar"
RESET = UKIProfile("reset", "Reset system disk", CMDLINE + " talos.experimental.wipe=system")
EPOCH = 1_700_000_000
BOOT_TIMEOUT = 240
OS_RELEASE = (
    'NAME="Talos"\nID=talos\nVERSION_ID=v1.12.4\nPRETTY_NAME="Talos (v1.12.4)"\n'
    'HOME_URL="https://www.talos.dev/"\nBUG_REPORT_URL="https://github.com/siderolabs/talos/issues"\n'
    'VENDOR_NAME="Sidero Labs"\nVENDOR_URL="https://www.siderolabs.com/"\n'
)
APPENDED = [".osrel", ".cmdline", ".uname", ".splash", ".linux", ".initrd"]
MODES: dict[str, tuple[list[UKIProfile] | None, list[str]]] = {
    "pre-1.10": (None, APPENDED),
    "reset-profile": ([RESET], [*APPENDED, ".profile", ".profile", ".cmdline"]),
    "uki-main-only": ([], [*APPENDED, ".profile"]),
}


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Payload:
    return build_payload("v1.12.4", tmp_path_factory.mktemp("payload"))


@pytest.fixture(scope="module")
def legacy_payload(tmp_path_factory: pytest.TempPathFactory) -> Payload:
    return build_payload("v1.7.6", tmp_path_factory.mktemp("legacy"))


@pytest.fixture(params=["systemd-257", "systemd-252"])
def any_payload(request: pytest.FixtureRequest) -> Payload:
    name = "payload" if request.param == "systemd-257" else "legacy_payload"
    result: Payload = request.getfixturevalue(name)
    return result


def build(
    payload: Payload,
    out: Path,
    profiles: Sequence[UKIProfile] | None,
    *,
    kernel: Path | None = None,
    epoch: int = EPOCH,
    cmdline: str = CMDLINE,
) -> Path:
    build_uki(
        stub=payload.systemd_stub,
        kernel=kernel or payload.vmlinuz,
        initrd=payload.initramfs,
        cmdline=cmdline,
        version="v1.12.4",
        profiles=profiles,
        epoch=epoch,
        out=out,
    )
    return out


def names(pe: pefile.PE) -> list[str]:
    return [s.Name.rstrip(b"\0").decode() for s in pe.sections]


def contents(path: Path, pe: pefile.PE) -> list[tuple[str, bytes]]:
    """(name, VirtualSize bytes) of every section, read by file offset (not pefile's adjusted view)."""
    data = path.read_bytes()
    return [
        (s.Name.rstrip(b"\0").decode(), data[s.PointerToRawData : s.PointerToRawData + s.Misc_VirtualSize])
        for s in pe.sections
    ]


def objdump_sections(path: Path) -> list[tuple[str, int, int, int]]:
    """(name, size, VMA - ImageBase, file offset) as binutils sees them."""
    out = subprocess.run(
        ["objdump", "-h", "-p", str(path)], capture_output=True, text=True, check=True
    ).stdout
    base = int(re.search(r"^ImageBase\s+([0-9a-f]+)", out, re.M).group(1), 16)  # type: ignore[union-attr]
    rows = re.findall(r"^\s*\d+\s+(\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s", out, re.M)
    return [(n, int(size, 16), int(vma, 16) - base, int(off, 16)) for n, size, vma, off in rows]


def dump_section(path: Path, name: str, tmp: Path) -> bytes:
    """A section's bytes as objcopy extracts them (independent of our reader)."""
    dest = tmp / f"dump{name}"
    subprocess.run(
        ["objcopy", f"--dump-section={name}={dest}", str(path), str(tmp / "scratch.efi")], check=True
    )
    return dest.read_bytes()


def align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


# --------------------------------------------------------------------------------------------------
# structure


@pytest.mark.parametrize("mode", MODES)
def test_section_order(mode: str, payload: Payload, tmp_path: Path) -> None:
    profiles, appended = MODES[mode]
    out = build(payload, tmp_path / "uki.efi", profiles)
    stub = names(pefile.PE(str(payload.systemd_stub), fast_load=True))
    pe = pefile.PE(str(out), fast_load=True)
    assert ".sbat" in stub
    assert names(pe) == stub + appended
    assert [row[0] for row in objdump_sections(out)] == stub + appended
    by_name = contents(out, pe)[len(stub) :]
    if profiles is not None:
        profile_sections = by_name[len(APPENDED) :]
        assert profile_sections[0] == (".profile", b"ID=main")
        if profiles:
            assert profile_sections[1:] == [
                (".profile", b"ID=reset\nTITLE=Reset system disk"),
                (".cmdline", RESET.cmdline.encode()),
            ]


def test_layout(any_payload: Payload, tmp_path: Path) -> None:
    """Headers, alignment and sizes per §5.4, checked against the stub with pefile and objdump."""
    out = build(any_payload, tmp_path / "uki.efi", [RESET])
    data = out.read_bytes()
    stub_data = any_payload.systemd_stub.read_bytes()
    stub = pefile.PE(data=stub_data, fast_load=True)
    pe = pefile.PE(data=data, fast_load=True)
    opt, sopt = pe.OPTIONAL_HEADER, stub.OPTIONAL_HEADER
    sa, fa = opt.SectionAlignment, opt.FileAlignment
    assert (sa, fa) == (sopt.SectionAlignment, sopt.FileAlignment)

    # DOS header: the stub's 0x40 bytes with e_lfanew = 0x80, zeros, then the PE signature.
    assert data[:0x3C] == stub_data[:0x3C]
    assert struct.unpack_from("<I", data, 0x3C)[0] == 0x80
    assert data[0x40:0x80] == bytes(0x40) and data[0x80:0x84] == b"PE\0\0"

    fh = pe.FILE_HEADER
    assert fh.NumberOfSections == len(pe.sections) == len(stub.sections) + 9
    assert (fh.Machine, fh.Characteristics) == (stub.FILE_HEADER.Machine, stub.FILE_HEADER.Characteristics)
    assert (fh.TimeDateStamp, fh.PointerToSymbolTable, fh.NumberOfSymbols) == (EPOCH, 0, 0)
    assert (opt.Magic, opt.MajorLinkerVersion, opt.MinorLinkerVersion, opt.CheckSum) == (0x20B, 0, 0, 0)
    for field in ("AddressOfEntryPoint", "BaseOfCode", "ImageBase", "Subsystem", "DllCharacteristics"):
        assert getattr(opt, field) == getattr(sopt, field), field
    assert [(d.VirtualAddress, d.Size) for d in opt.DATA_DIRECTORY] == [
        (d.VirtualAddress, d.Size) for d in sopt.DATA_DIRECTORY
    ]

    n = len(pe.sections)
    assert opt.SizeOfHeaders == align(0x80 + 4 + 20 + fh.SizeOfOptionalHeader + 40 * n, fa)
    assert opt.SizeOfCode == sum(s.SizeOfRawData for s in pe.sections if not s.Characteristics & 0x40)
    assert opt.SizeOfInitializedData == sum(s.SizeOfRawData for s in pe.sections if s.Characteristics & 0x40)
    last = pe.sections[-1]
    assert opt.SizeOfImage == align(last.VirtualAddress + last.Misc_VirtualSize, sa)

    # Stub sections: same headers and bytes, only moved in the file.
    for new, old in zip(pe.sections, stub.sections, strict=False):
        assert (
            new.Name,
            new.VirtualAddress,
            new.Misc_VirtualSize,
            new.SizeOfRawData,
            new.Characteristics,
        ) == (
            old.Name,
            old.VirtualAddress,
            old.Misc_VirtualSize,
            old.SizeOfRawData,
            old.Characteristics,
        )
        assert (
            data[new.PointerToRawData : new.PointerToRawData + new.SizeOfRawData]
            == stub_data[old.PointerToRawData : old.PointerToRawData + old.SizeOfRawData]
        )
        assert (new.PointerToRelocations, new.NumberOfRelocations, new.NumberOfLinenumbers) == (0, 0, 0)

    # Appended sections: aligned VAs one after another, exact VirtualSize, padded raw data.
    added = pe.sections[len(stub.sections) :]
    prev = stub.sections[-1]
    va = align(prev.VirtualAddress + prev.Misc_VirtualSize, sa)
    for s in added:
        assert s.VirtualAddress == va and va % sa == 0
        assert s.SizeOfRawData == align(s.Misc_VirtualSize, fa)
        assert s.Characteristics == APPENDED_CHARACTERISTICS
        va = align(va + s.Misc_VirtualSize, sa)
        pad = data[s.PointerToRawData + s.Misc_VirtualSize : s.PointerToRawData + s.SizeOfRawData]
        assert pad == bytes(len(pad))

    # Raw data back to back from SizeOfHeaders to the end of the file.
    pointer = opt.SizeOfHeaders
    for s in pe.sections:
        assert s.PointerToRawData == pointer and pointer % fa == 0
        pointer += s.SizeOfRawData
    assert pointer == len(data)

    # binutils agrees on every section's size, address and offset.
    assert objdump_sections(out) == [
        (s.Name.rstrip(b"\0").decode(), s.Misc_VirtualSize, s.VirtualAddress, s.PointerToRawData)
        for s in pe.sections
    ]


def test_section_contents(payload: Payload, tmp_path: Path) -> None:
    out = build(payload, tmp_path / "uki.efi", [RESET])
    pe = pefile.PE(str(out), fast_load=True)
    sections = contents(out, pe)
    first = {name: body for name, body in reversed(sections)}  # first occurrence of each name
    stub = pefile.PE(str(payload.systemd_stub), fast_load=True)
    (sbat,) = [s for s in stub.sections if s.Name.rstrip(b"\0") == b".sbat"]
    stub_bytes = payload.systemd_stub.read_bytes()
    assert first[".sbat"] == stub_bytes[sbat.PointerToRawData : sbat.PointerToRawData + sbat.Misc_VirtualSize]
    assert first[".sbat"].startswith(b"sbat,1,")
    assert first[".cmdline"] == CMDLINE.encode()
    assert first[".osrel"] == OS_RELEASE.encode()
    assert first[".uname"] == payload.kernel_version.encode()
    assert first[".splash"] == splash_bmp()
    assert first[".linux"] == payload.vmlinuz.read_bytes()
    assert first[".initrd"] == payload.initramfs.read_bytes()
    # binutils reads the same bytes
    for name in (".cmdline", ".osrel", ".uname", ".linux", ".initrd"):
        assert dump_section(out, name, tmp_path) == first[name], name


def test_no_uname_for_non_bzimage_kernel(payload: Payload, tmp_path: Path) -> None:
    """An arm64 ``Image`` has no setup header: no ``.uname``, everything else unchanged."""
    image = bytearray(4096)
    image[0x38:0x3C] = b"ARM\x64"
    kernel = tmp_path / "Image"
    kernel.write_bytes(bytes(image))
    assert kernel_uname(kernel) is None and kernel_uname(bytes(image)) is None
    out = build(payload, tmp_path / "uki.efi", [], kernel=kernel)
    pe = pefile.PE(str(out), fast_load=True)
    assert ".uname" not in names(pe)
    assert names(pe)[-6:] == [".osrel", ".cmdline", ".splash", ".linux", ".initrd", ".profile"]
    assert dict(contents(out, pe))[".linux"] == bytes(image)


def test_reproducible_and_epoch_only_changes_the_timestamp(payload: Payload, tmp_path: Path) -> None:
    a = build(payload, tmp_path / "a.efi", [RESET]).read_bytes()
    b = build(payload, tmp_path / "b.efi", [RESET]).read_bytes()
    assert a == b
    c = build(payload, tmp_path / "c.efi", [RESET], epoch=EPOCH + 86400).read_bytes()
    assert len(c) == len(a)
    assert {i for i in range(len(a)) if a[i] != c[i]} <= set(range(0x88, 0x8C))  # COFF TimeDateStamp
    assert struct.unpack_from("<I", c, 0x88)[0] == EPOCH + 86400
    assert not list(tmp_path.glob(".*.tmp"))


# --------------------------------------------------------------------------------------------------
# inputs and helpers


def test_os_release_matches_talos() -> None:
    assert os_release("v1.12.4") == OS_RELEASE.encode()
    text = os_release("v1.0.0", "Talos New").decode()
    assert text.startswith(
        'NAME="Talos New"\nID=talos_new\nVERSION_ID=v1.0.0\nPRETTY_NAME="Talos New (v1.0.0)"\n'
    )
    assert text.endswith('VENDOR_URL="https://www.siderolabs.com/"\n') and not text.endswith("\n\n")


def bzimage(version_text: bytes, *, setup_sects: int = 4, pointer: int = 0x100, size: int = 8192) -> bytes:
    image = bytearray(size)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x20E, pointer)
    image[pointer + 0x200 : pointer + 0x200 + len(version_text)] = version_text
    return bytes(image)


def test_kernel_uname_rules(payload: Payload, tmp_path: Path) -> None:
    assert kernel_uname(payload.vmlinuz) == payload.kernel_version
    assert kernel_uname(bzimage(b"6.12.57-talos (@buildkit) #1 SMP\0")) == "6.12.57-talos"
    assert kernel_uname(bzimage(b"6.18.45-talos\0")) == "6.18.45-talos"
    assert kernel_uname(bzimage(b"6.1\0", pointer=0)) is None  # no version pointer
    assert kernel_uname(bzimage(b"6.1\0", setup_sects=0, pointer=0x100)) is None  # beyond the setup code
    assert kernel_uname(bzimage(b"x" * 300)) is None  # no NUL in 256 bytes
    assert kernel_uname(bzimage(b"6.1\0", size=0x300 + 100)) is None  # fewer than 256 bytes left
    assert kernel_uname(bzimage(b" rest\0")) is None  # empty after the cut
    path = tmp_path / "bz"
    path.write_bytes(bzimage(b"6.6.1-x y\0"))
    assert kernel_uname(path) == "6.6.1-x"
    assert kernel_uname(b"short") is None


def test_profile_payloads_and_reserved_main(payload: Payload, tmp_path: Path) -> None:
    assert UKIProfile("main").payload() == b"ID=main"
    assert RESET.payload() == b"ID=reset\nTITLE=Reset system disk"
    with pytest.raises(UKIError, match="reserved"):
        build(payload, tmp_path / "uki.efi", [UKIProfile("main", "again")])
    # a profile without its own command line gets no .cmdline section (upstream)
    out = build(payload, tmp_path / "uki.efi", [UKIProfile("quiet", "Quiet")])
    assert names(pefile.PE(str(out), fast_load=True))[-3:] == [".initrd", ".profile", ".profile"]


def test_measurement_sets_and_signed_order(payload: Payload) -> None:
    """Where the Secure Boot step will put .pcrsig, and what each signature covers (§5.3, §5.5)."""

    def sections_for(profiles: list[UKIProfile] | None, uname: str | None = None) -> list[Section]:
        return uki_sections(
            stub=payload.systemd_stub,
            kernel=payload.vmlinuz,
            initrd=payload.initramfs,
            cmdline=CMDLINE,
            version="v1.12.4",
            profiles=profiles,
            uname=uname,
            pcrpkey=b"PEM",
        )

    sections = sections_for([RESET])
    sets = measurement_sets(sections)
    for at, _ in reversed(sets):
        sections.insert(at, Section(".pcrsig", b"{}", measure=False))
    assert [s.name for s in sections] == [
        ".sbat",
        ".osrel",
        ".cmdline",
        ".uname",
        ".splash",
        ".pcrpkey",
        ".linux",
        ".initrd",
        ".profile",
        ".pcrsig",
        ".profile",
        ".cmdline",
        ".pcrsig",
    ]
    (_, main), (_, reset) = sets
    base = [".sbat", ".osrel", ".cmdline", ".uname", ".splash", ".pcrpkey", ".linux", ".initrd", ".profile"]
    assert sorted(main) == sorted(reset) == sorted(base)
    assert main[".cmdline"].data == CMDLINE.encode() and main[".profile"].data == b"ID=main"
    assert reset[".cmdline"].data == RESET.cmdline.encode() and reset[".profile"].data == RESET.payload()
    assert main[".linux"].data == payload.vmlinuz and main[".sbat"].append is False
    stub = pefile.PE(str(payload.systemd_stub), fast_load=True)
    (sbat,) = [s for s in stub.sections if s.Name.rstrip(b"\0") == b".sbat"]
    assert sbat.Misc_VirtualSize < sbat.SizeOfRawData  # measured: VirtualSize bytes, not the padding
    assert main[".sbat"].data == sbat.get_data()[: sbat.Misc_VirtualSize]

    legacy = sections_for(None, uname="")
    ((at, measured),) = measurement_sets(legacy)
    assert at == len(legacy) and ".uname" not in measured and ".profile" not in measured
    assert sorted(measured) == sorted(s.name for s in legacy)
    assert [s.name for s in legacy][-3:] == [".pcrpkey", ".linux", ".initrd"]


def test_section_streams_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(bytes(range(256)) * 1000)
    section = Section(".initrd", path)
    assert section.size() == 256000
    assert b"".join(section.chunks(4096)) == path.read_bytes()
    assert list(Section(".osrel", b"abc").chunks()) == [b"abc"]


def test_stub_with_symbol_table_loses_it(legacy_payload: Payload, tmp_path: Path) -> None:
    """Debian's 252 stub carries COFF symbols; they are dropped (upstream would refuse the stub)."""
    stub = pefile.PE(str(legacy_payload.systemd_stub), fast_load=True)
    assert stub.FILE_HEADER.PointerToSymbolTable and stub.FILE_HEADER.NumberOfSymbols
    out = build(legacy_payload, tmp_path / "uki.efi", None)
    pe = pefile.PE(str(out), fast_load=True)
    assert (pe.FILE_HEADER.PointerToSymbolTable, pe.FILE_HEADER.NumberOfSymbols) == (0, 0)
    # nothing trails the last section (the symbol table is not carried over)
    size = pe.OPTIONAL_HEADER.SizeOfHeaders + sum(s.SizeOfRawData for s in pe.sections)
    assert out.stat().st_size == size


def patched_stub(payload: Payload, tmp_path: Path, offset_of: str, value: bytes) -> Path:
    data = bytearray(payload.systemd_stub.read_bytes())
    pe = pefile.PE(data=bytes(data), fast_load=True)
    offsets = {
        "magic": pe.OPTIONAL_HEADER.get_file_offset(),
        "section name": pe.sections[-1].get_file_offset(),
    }
    at = offsets[offset_of]
    data[at : at + len(value)] = value
    path = tmp_path / "stub.efi"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("magic", struct.pack("<H", 0x10B), "not PE32\\+"),
        ("section name", b"/4\0\0\0\0\0\0", "long name"),
    ],
    ids=["pe32", "long-section-name"],
)
def test_rejects_unusable_stubs(
    payload: Payload, tmp_path: Path, field: str, value: bytes, message: str
) -> None:
    stub = patched_stub(payload, tmp_path, field, value)
    out = tmp_path / "uki.efi"
    with pytest.raises(UKIError, match=message):
        assemble_pe(stub, [Section(".osrel", b"x")], out, EPOCH)
    assert not out.exists()
    not_pe = tmp_path / "not-pe"
    not_pe.write_bytes(b"MZ" + bytes(200))
    with pytest.raises(UKIError, match="not a PE file"):
        assemble_pe(not_pe, [], out, EPOCH)


def test_stub_without_sbat_fails(payload: Payload, tmp_path: Path) -> None:
    data = bytearray(payload.systemd_stub.read_bytes())
    pe = pefile.PE(data=bytes(data), fast_load=True)
    (sbat,) = [s for s in pe.sections if s.Name.rstrip(b"\0") == b".sbat"]
    at = sbat.get_file_offset()
    data[at : at + 8] = b".nosbat\0"
    stub = tmp_path / "stub.efi"
    stub.write_bytes(bytes(data))
    with pytest.raises(UKIError, match=r"no \.sbat"):
        uki_sections(
            stub=stub,
            kernel=payload.vmlinuz,
            initrd=payload.initramfs,
            cmdline="",
            version="v1",
            profiles=None,
        )


# --------------------------------------------------------------------------------------------------
# which stubs boot multi-profile UKIs (systemd >= 257)


def test_real_stubs_say_whether_they_boot_profiles(
    payload: Payload, legacy_payload: Payload, tmp_path: Path
) -> None:
    """Debian's stubs: trixie's 257 (both arches) does, bookworm's 252 does not; bookworm's arm64 stub
    has only two PE sections (its ``.sdmagic`` text lives in ``.data``), so the whole file is read."""
    assert (stub_systemd_version(payload.systemd_stub), stub_supports_profiles(payload.systemd_stub)) == (
        257,
        True,
    )
    old = legacy_payload.systemd_stub
    assert (stub_systemd_version(old), stub_supports_profiles(old)) == (252, False)
    arm = {v: build_payload(v, tmp_path / v, arch="arm64").systemd_stub for v in ("v1.12.4", "v1.7.6")}
    assert len(pefile.PE(str(arm["v1.7.6"]), fast_load=True).sections) == 2
    assert [(stub_systemd_version(p), stub_supports_profiles(p)) for p in arm.values()] == [
        (257, True),
        (252, False),
    ]


@pytest.mark.parametrize(
    ("content", "version", "supported"),
    [
        (b"#### LoaderInfo: systemd-stub 257.7-1.fc42 ####", 257, True),
        (b"#### LoaderInfo: systemd-stub v258-rc1-12-gabcdef0 ####", 258, True),
        # the version string wins over the section name (a 256 stub that merely mentions ".profile")
        (b"#### LoaderInfo: systemd-stub 256.11 #### .profile\0", 256, False),
        # no .sdmagic text: the .sbat line (systemd,<version>), before and after the boot/stub split
        (
            b"sbat,1,SBAT Version,sbat,1,x\nsystemd,1,The systemd Developers,systemd,252,https://systemd.io/\n",
            252,
            False,
        ),
        (b"sbat,1,x\nsystemd-stub,1,The systemd Developers,systemd,257,https://systemd.io/\n", 257, True),
        # no version at all: only a stub that knows the section name counts
        (b"MZ stub .profile\0 .cmdline\0", None, True),
        (b"MZ stub .cmdline\0 .linux\0", None, False),
    ],
)
def test_stub_version_markers(content: bytes, version: int | None, supported: bool, tmp_path: Path) -> None:
    stub = tmp_path / "stub.efi"
    stub.write_bytes(bytes(64) + content + bytes(64))
    assert stub_systemd_version(stub) == version
    assert stub_supports_profiles(stub) is supported


# --------------------------------------------------------------------------------------------------
# splash


def test_splash_is_a_bmp_systemd_stub_accepts() -> None:
    """The checks of systemd's ``bmp_parse_header`` (252 and current) plus both pixel decoders."""
    bmp = splash_bmp()
    assert bmp is splash_bmp()  # cached
    assert len(bmp) == 14 + 124 + 400 * 400 * 4
    sig, size, _, _, offset = struct.unpack_from("<2sIHHI", bmp, 0)
    dib_size, w, h, planes, depth, compression, image_size = struct.unpack_from("<IiiHHII", bmp, 14)
    masks = struct.unpack_from("<4I", bmp, 14 + 40)
    assert (sig, size, offset) == (b"BM", len(bmp), 138)
    assert dib_size == 124 and dib_size >= 56  # 252 requires the 56-byte header with masks
    assert (w, h, planes, depth, compression, image_size) == (400, 400, 1, 32, 3, 640000)
    assert size - offset >= h * w * 4
    assert masks == (0xFF000000, 0x00FF0000, 0x0000FF00, 0x000000FF)

    def pixel(x: int, y: int) -> int:  # y from the top; rows are stored bottom-up
        (value,) = struct.unpack_from("<I", bmp, offset + ((h - 1 - y) * w + x) * 4)
        return int(value)

    def by_masks(v: int) -> list[int]:  # systemd >= 254: channel = (v & mask) >> ctz(mask)
        return [(v & m) >> ((m & -m).bit_length() - 1) for m in masks]

    def legacy(v: int) -> list[int]:  # systemd 252: RGBA packed in the word, alpha in the low byte
        return [(v >> 24) & 0xFF, (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF]

    for x, y, rgb in [
        (200, 200, (0xE8, 0xEC, 0xF0)),
        (337, 200, (0x2E, 0xB8, 0xA6)),
        (5, 5, (0x14, 0x17, 0x1C)),
    ]:
        assert by_masks(pixel(x, y)) == legacy(pixel(x, y)) == [*rgb, 0xFF]


# --------------------------------------------------------------------------------------------------
# boot proofs (QEMU, TCG, OVMF)

#: Colours the stub draws at the centre of the screen: the diamond, the ring, the background.
SPLASH_PROBES = [
    ((0, 0), (0xE8, 0xEC, 0xF0)),
    ((137, 0), (0x2E, 0xB8, 0xA6)),
    ((190, 190), (0x14, 0x17, 0x1C)),
]


def splash_seen(ppm: bytes) -> bool:
    """Whether a QEMU screendump (binary PPM) shows the splash mark centred on the screen."""
    _magic, dims, _maxval, pixels = ppm.split(b"\n", 3)
    width, height = map(int, dims.split())
    cx, cy = width // 2, height // 2
    for (dx, dy), rgb in SPLASH_PROBES:
        at = ((cy + dy) * width + cx + dx) * 3
        if any(abs(a - b) > 2 for a, b in zip(pixels[at : at + 3], rgb, strict=True)):
            return False
    return True


def boot_watching_screen(disk: Path, tmp: Path) -> tuple[BootResult, bool]:
    """Boot ``disk`` under OVMF taking screendumps over a monitor socket; True once the splash showed."""
    sock = tmp / "monitor.sock"
    seen = threading.Event()
    done = threading.Event()

    def watch() -> None:
        shot = tmp / "screen.ppm"
        while not done.is_set() and not seen.is_set():
            time.sleep(0.3)
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(str(sock))
                    s.recv(4096)  # banner
                    s.sendall(f"screendump {shot}\n".encode())
                    s.recv(4096)
                    time.sleep(0.2)
                if shot.is_file() and splash_seen(shot.read_bytes()):
                    seen.set()
            except (OSError, ValueError, IndexError):
                continue

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = boot(
            firmware="uefi",
            disks=[Disk(disk)],
            timeout=BOOT_TIMEOUT,
            extra_args=["-monitor", f"unix:{sock},server,nowait"],
        )
    finally:
        done.set()
        watcher.join(10)
    return result, seen.is_set()


def assert_booted(result: BootResult, cmdline: str, payload: Payload) -> None:
    assert result.report is not None and not result.timed_out, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.report["boot"] == "uefi" and result.report["secureboot"] is False
    assert result.report["cmdline"] == cmdline, result.describe()
    assert result.report["kernel"] == payload.kernel_version


needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed")


@pytest.mark.e2e
@needs_qemu
def test_main_profile_uki_boots_with_splash(payload: Payload, tmp_path: Path) -> None:
    """The kind-uki shape (main profile only) booted straight from the firmware by systemd-stub 257."""
    uki = build(payload, tmp_path / "uki.efi", [])
    disk = esp_image(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": uki})
    result, splash = boot_watching_screen(disk, tmp_path)
    assert_booted(result, CMDLINE, payload)
    assert result.report is not None and result.report["version"] == "v1.12.4"
    assert splash, "the splash never appeared at the centre of the screen"


@pytest.mark.e2e
@needs_qemu
def test_reset_profile_boots_through_systemd_boot(payload: Payload, tmp_path: Path) -> None:
    """systemd-boot lists UKI profiles as ``<file>@<ID>``; picking the reset one gives its .cmdline."""
    uki = build(payload, tmp_path / "uki.efi", [RESET])
    disk = esp_image(
        tmp_path / "esp.img",
        {
            "EFI/BOOT/BOOTX64.EFI": payload.systemd_boot,
            "EFI/Linux/talos.efi": uki,
            "loader/loader.conf": b"default talos.efi@reset\ntimeout 0\n",
        },
    )
    result = boot(firmware="uefi", disks=[Disk(disk)], timeout=BOOT_TIMEOUT)
    assert_booted(result, RESET.cmdline, payload)


@pytest.mark.e2e
@needs_qemu
def test_pre_profile_uki_boots_on_systemd_252(legacy_payload: Payload, tmp_path: Path) -> None:
    """No .profile, 0x200 section alignment, symbols dropped: still a valid image for the old stub."""
    uki = build(legacy_payload, tmp_path / "uki.efi", None)
    disk = esp_image(tmp_path / "esp.img", {"EFI/BOOT/BOOTX64.EFI": uki})
    result, splash = boot_watching_screen(disk, tmp_path)
    assert_booted(result, CMDLINE, legacy_payload)
    assert splash, "the splash never appeared at the centre of the screen (252 decodes pixels as RGBA)"
