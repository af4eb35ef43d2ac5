"""Unified Kernel Images (``vmlinuz.efi``): the systemd stub plus kernel, initrd and metadata sections.

A port of ``siderolabs/talos@v1.14.0-rc.1:internal/pkg/uki``. The work is split so Secure Boot can
plug in later: :func:`uki_sections` gives the ordered :class:`Section` list (what goes where, what is
measured into PCR 11), :func:`measurement_sets` says which sections each ``.pcrsig`` covers and where
it goes, and :func:`assemble_pe` writes any such list into the stub natively (no objcopy). Section
data is streamed from disk, so 100+ MB kernels and initrds are never held in memory.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pefile

from common.errors import FactoryError
from worker.imager.signing import PCRSigner, PESigner
from worker.imager.splash import splash_bmp

__all__ = [
    "Section",
    "UKIError",
    "UKIProfile",
    "assemble_pe",
    "build_uki",
    "kernel_uname",
    "measurement_sets",
    "os_release",
    "stub_supports_profiles",
    "stub_systemd_version",
    "uki_sections",
]

#: Characteristics of every appended section: IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ.
APPENDED_CHARACTERISTICS = 0x40000040
_CNT_INITIALIZED_DATA = 0x00000040
_PE32_PLUS = 0x20B
_DOS_HEADER = 0x40
_PE_OFFSET = 0x80  # e_lfanew of the output: the DOS header plus 0x40 zero bytes
_FILE_HEADER_SIZE = 20
_SECTION_HEADER_SIZE = 40
_SECURITY_DIRECTORY = 4
_CHUNK = 4 << 20

_OS_RELEASE = """\
NAME="{name}"
ID={id}
VERSION_ID={version}
PRETTY_NAME="{name} ({version})"
HOME_URL="https://www.talos.dev/"
BUG_REPORT_URL="https://github.com/siderolabs/talos/issues"
VENDOR_NAME="Sidero Labs"
VENDOR_URL="https://www.siderolabs.com/"
"""


class UKIError(FactoryError):
    """The stub or a section cannot make a valid UKI; a server-side problem (500)."""

    status = 500


@dataclass(frozen=True)
class UKIProfile:
    """An extra boot profile of a multi-profile UKI (Talos >= 1.10), e.g. the reset entry."""

    id: str
    title: str = ""
    cmdline: str = ""  # full command line of this profile; empty = inherit the main .cmdline

    def payload(self) -> bytes:
        """The ``.profile`` text: ``ID=…`` and ``TITLE=…`` only when set, no trailing newline."""
        text = f"ID={self.id}"
        if self.title:
            text += f"\nTITLE={self.title}"
        return text.encode()


#: The implicit first profile upstream always writes (no title, no own .cmdline).
MAIN_PROFILE = UKIProfile(id="main")


@dataclass(frozen=True)
class Section:
    """One UKI section: its name, where its bytes come from, and whether PCR 11 measures it.

    ``append=False`` marks a section the stub already has (``.sbat``); ``data`` is then a copy of its
    content (VirtualSize bytes) for measuring only and :func:`assemble_pe` leaves the stub's copy alone.
    """

    name: str
    data: bytes | Path
    measure: bool = True
    append: bool = True

    def size(self) -> int:
        return len(self.data) if isinstance(self.data, bytes) else self.data.stat().st_size

    def chunks(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The content in pieces, so large files can be hashed without loading them whole."""
        if isinstance(self.data, bytes):
            yield self.data
            return
        with self.data.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk


def os_release(version: str, name: str = "Talos") -> bytes:
    """The ``.osrel`` text, as Talos ``version.OSReleaseFor`` renders it (ends with one newline)."""
    os_id = name.replace(" ", "_").lower()
    return _OS_RELEASE.format(name=name, id=os_id, version=version).encode()


def kernel_uname(kernel: bytes | Path) -> str | None:
    """The release string of an x86 bzImage (``6.12.57-talos``), or None (arm64 Image, no version).

    Same checks as upstream ``DiscoverKernelVersion``: ``HdrS`` at 0x202, a non-zero
    ``kernel_version`` pointer within the setup sectors, 256 readable bytes holding a NUL, and the
    text cut at its first space. An empty result also means "no .uname".
    """
    if isinstance(kernel, Path):
        with kernel.open("rb") as fh:

            def read_at(offset: int, length: int) -> bytes:
                fh.seek(offset)
                return fh.read(length)

            return _uname(fh.read(1024), read_at)
    return _uname(kernel[:1024], lambda offset, length: kernel[offset : offset + length])


def _uname(header: bytes, read_at: Callable[[int, int], bytes]) -> str | None:
    header = header.ljust(1024, b"\0")
    if header[0x202:0x206] != b"HdrS":
        return None
    setup_sects = header[0x1F1]
    (offset,) = struct.unpack_from("<H", header, 0x20E)
    if offset == 0 or offset > setup_sects * 0x200:
        return None
    raw = read_at((offset + 0x200) & 0xFFFF, 256)  # upstream adds in uint16
    end = raw.find(b"\0")
    if len(raw) < 256 or end < 0:
        return None
    release = raw[:end].split(b" ", 1)[0]
    return release.decode("utf-8", errors="surrogateescape") or None


def stub_sbat(stub: Path) -> bytes:
    """The stub's own ``.sbat`` content (VirtualSize bytes); upstream fails the build without one."""
    data = stub.read_bytes()
    pe = _parse_stub(data, stub)
    for section in pe.sections:
        if section.Name.rstrip(b"\0") == b".sbat":
            start = section.PointerToRawData
            raw = data[start : start + min(section.SizeOfRawData, section.Misc_VirtualSize)]
            return bytes(raw)
    raise UKIError(f"systemd stub {stub.name} has no .sbat section")


#: The first systemd whose stub understands ``.profile`` sections (multi-profile UKIs, systemd v257).
PROFILES_SINCE = 257
#: ``src/boot/stub.c``: ``DECLARE_NOALLOC_SECTION(".sdmagic", "#### LoaderInfo: systemd-stub " GIT_VERSION
#: " ####")``. GIT_VERSION starts with the release number whoever built it: ``257.13-1~deb13u1``
#: (Debian), ``257.7-1.fc42``, ``v257-rc1-12-gabcdef0`` (git). Older stubs (252 on arm64) keep the
#: string in ``.data``, so the whole file is searched.
_SDMAGIC = re.compile(rb"#### LoaderInfo: systemd-stub v?(\d+)")
#: ``src/boot/sbat.h``: ``systemd-stub,1,The systemd Developers,systemd,<PROJECT_VERSION>,…`` (``systemd,1,…``
#: before the boot/stub split); only distribution builds carry ``.sbat``.
_SBAT = re.compile(rb"^systemd(?:-stub)?,\d+,[^,\n]*,systemd,v?(\d+)", re.MULTILINE)
#: The section name a stub must compare against to find profiles (absent from every stub before 257).
_PROFILE_NAME = b".profile\0"


def stub_systemd_version(stub: Path) -> int | None:
    """The systemd release a systemd-stub was built from (its ``.sdmagic`` text, else its ``.sbat``)."""
    data = stub.read_bytes()
    for pattern in (_SDMAGIC, _SBAT):
        found = pattern.search(data)
        if found:
            return int(found.group(1))
    return None


def stub_supports_profiles(stub: Path) -> bool:
    """Whether the stub boots multi-profile UKIs: systemd >= 257 by its own version string; a stub that
    names no version counts only if it knows the ``.profile`` section name.

    A stub without profile support ignores ``.profile`` and takes the *last* ``.cmdline`` it finds, so
    a profile with its own command line (Talos' wipe/reset profiles) would become the default boot.
    """
    version = stub_systemd_version(stub)
    if version is not None:
        return version >= PROFILES_SINCE
    return _PROFILE_NAME in stub.read_bytes()


def uki_sections(
    *,
    stub: Path,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    version: str,
    profiles: Sequence[UKIProfile] | None,
    name: str = "Talos",
    uname: str | None = None,
    pcrpkey: bytes | None = None,
) -> list[Section]:
    """The UKI's sections in upstream's order (``uki.go``, ``generate.go``), ``.pcrsig`` not yet included.

    ``uname=None`` reads the release from the kernel (x86 only); a string overrides it, ``""``
    leaves ``.uname`` out. ``pcrpkey`` (PEM public key) is for signed builds. ``profiles=None``
    writes no ``.profile`` (Talos < 1.10); a sequence writes ``main`` first, then each extra
    profile with its own ``.cmdline`` when it has one.
    """
    if uname is None:
        uname = kernel_uname(kernel) or ""
    sections = [
        Section(".sbat", stub_sbat(stub), append=False),
        Section(".osrel", os_release(version, name)),
        Section(".cmdline", cmdline.encode()),
    ]
    if uname:
        sections.append(Section(".uname", uname.encode("utf-8", errors="surrogateescape")))
    sections.append(Section(".splash", splash_bmp()))
    if pcrpkey is not None:
        sections.append(Section(".pcrpkey", pcrpkey))
    sections += [Section(".linux", kernel), Section(".initrd", initrd)]
    if profiles is not None:
        if any(p.id == MAIN_PROFILE.id for p in profiles):
            raise UKIError("UKI profile ID 'main' is reserved")
        for profile in (MAIN_PROFILE, *profiles):
            sections.append(Section(".profile", profile.payload()))
            if profile.cmdline:
                sections.append(Section(".cmdline", profile.cmdline.encode()))
    return sections


def measurement_sets(sections: Sequence[Section]) -> list[tuple[int, dict[str, Section]]]:
    """Where each ``.pcrsig`` goes and what it signs, as upstream's ``generatePCRSig`` decides.

    Returns ``(insert_at, sections_by_name)`` pairs, ``insert_at`` indexing ``sections`` *before*
    any insertion (insert from the last pair backwards). Without ``.profile`` sections there is one
    set of all measured sections, signed at the end. With profiles: the measured sections before
    the first ``.profile`` plus that profile's own, later names overriding earlier ones, each
    signature right after its profile's sections.
    """
    measured = [(i, s) for i, s in enumerate(sections) if s.measure]
    starts = [k for k, (_, s) in enumerate(measured) if s.name == ".profile"]
    if not starts:
        return [(len(sections), {s.name: s for _, s in measured})]
    base = measured[: starts[0]]
    result = []
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(measured)
        own = measured[start:end]
        insert_at = own[-1][0] + 1
        result.append((insert_at, {s.name: s for _, s in (*base, *own)}))
    return result


def build_uki(
    *,
    stub: Path,
    kernel: Path,
    initrd: Path,
    cmdline: str,
    version: str,
    profiles: Sequence[UKIProfile] | None,
    epoch: int,
    out: Path,
    uname: str | None = None,
    signers: tuple[PESigner, PCRSigner] | None = None,
) -> None:
    """Write the UKI to ``out``; ``epoch`` becomes the COFF TimeDateStamp.

    With ``signers`` (the PE and the PCR signer) it is the Secure Boot UKI of upstream's
    ``Builder.BuildSigned`` (``uki.go``): the sections gain ``.pcrpkey`` (the PCR public key, PEM)
    before ``.linux`` and one ``.pcrsig`` per measurement set (:func:`measurement_sets`: the policy
    for Talos' phase and banks over exactly the sections systemd-stub will measure), then the
    assembled PE is Authenticode-signed. Upstream signs the kernel too, but its ``generateKernel``
    shadows the signed path and so embeds the unsigned kernel; this embeds the unsigned kernel as
    well (the stub never verifies ``.linux``: the UKI's own signature covers it).
    """
    pcrpkey = None
    if signers is not None:
        # imported here: worker.secureboot.pcr imports the imager's signing seam, this module's neighbour
        from worker.secureboot.pcr import pcr_signer_callback, pcrpkey_pem, sign_pcr_policy

        pcrpkey = pcrpkey_pem(signers[1].public_key)
    sections = uki_sections(
        stub=stub,
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        version=version,
        profiles=profiles,
        uname=uname,
        pcrpkey=pcrpkey,
    )
    if signers is not None:
        pcr = signers[1]
        sign = pcr_signer_callback(pcr)
        for at, measured in reversed(measurement_sets(sections)):
            policy = sign_pcr_policy(measured, pcr.public_key, sign)
            sections.insert(at, Section(".pcrsig", policy, measure=False))
    assemble_pe(stub, sections, out, epoch)
    if signers is not None:
        signers[0].sign_pe(out)


# --------------------------------------------------------------------------------------------------
# PE assembly (upstream ``assemble.go`` and ``internal/pe/native.go``)


@dataclass(frozen=True)
class _Header:
    name: bytes
    virtual_size: int
    virtual_address: int
    raw_size: int
    characteristics: int
    source: Section | tuple[int, int]  # appended section, or (offset, length) in the stub


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _parse_stub(data: bytes, path: Path) -> pefile.PE:
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except pefile.PEFormatError as exc:
        raise UKIError(f"systemd stub {path.name} is not a PE file: {exc}") from exc
    if pe.OPTIONAL_HEADER.Magic != _PE32_PLUS:
        raise UKIError(f"systemd stub {path.name} is not PE32+ (magic {pe.OPTIONAL_HEADER.Magic:#x})")
    if not pe.sections:
        raise UKIError(f"systemd stub {path.name} has no sections")
    return pe


def assemble_pe(stub: Path, sections: Sequence[Section], out: Path, timestamp: int) -> None:
    """Copy the stub and append every ``append`` section, like upstream ``AssembleNative``.

    The DOS stub program is dropped (``e_lfanew`` = 0x80), stub sections are repacked back to back
    after the headers, new sections follow at the next SectionAlignment boundary. A COFF symbol
    table (Debian's stub has one; the firmware never reads it) is not carried over, see
    :func:`_stub_headers`. Written via a temporary file, so ``out`` is complete or absent.
    """
    data = stub.read_bytes()
    pe = _parse_stub(data, stub)
    opt = pe.OPTIONAL_HEADER
    section_alignment, file_alignment = opt.SectionAlignment, opt.FileAlignment
    if section_alignment <= 0 or file_alignment <= 0:
        raise UKIError(f"systemd stub {stub.name} has a zero section or file alignment")

    headers = [_stub_section(s, len(data), stub) for s in pe.sections]
    last = pe.sections[-1]
    va = _align(last.VirtualAddress + last.Misc_VirtualSize, section_alignment)
    for section in sections:
        if not section.append:
            continue
        name = section.name.encode()
        if len(name) > 8:
            raise UKIError(f"section name {section.name!r} is longer than 8 bytes")
        size = section.size()
        headers.append(
            _Header(name, size, va, _align(size, file_alignment), APPENDED_CHARACTERISTICS, section)
        )
        va = _align(va + size, section_alignment)
    if va > 0xFFFFFFFF:
        raise UKIError("UKI sections exceed the 4 GiB PE image limit")

    opt_size = pe.FILE_HEADER.SizeOfOptionalHeader
    # Upstream leaves out the 4-byte signature; its sum is always 4 mod 8, so with any FileAlignment
    # that is a multiple of 8 both round to the same SizeOfHeaders.
    headers_end = _PE_OFFSET + 4 + _FILE_HEADER_SIZE + opt_size + _SECTION_HEADER_SIZE * len(headers)
    size_of_headers = _align(headers_end, file_alignment)
    lowest_va = min(h.virtual_address for h in headers)
    if size_of_headers > lowest_va:
        raise UKIError(f"{len(headers)} section headers do not fit below the first section at {lowest_va:#x}")

    image = bytearray(size_of_headers)
    image[:_DOS_HEADER] = data[:_DOS_HEADER]
    struct.pack_into("<I", image, 0x3C, _PE_OFFSET)
    image[_PE_OFFSET : _PE_OFFSET + 4] = b"PE\0\0"
    file_header, optional_header = _stub_headers(pe, data, headers, size_of_headers, timestamp)
    at = _PE_OFFSET + 4
    image[at : at + _FILE_HEADER_SIZE] = file_header
    at += _FILE_HEADER_SIZE
    image[at : at + opt_size] = optional_header
    at += opt_size
    pointer = size_of_headers
    for h in headers:
        struct.pack_into(
            "<8sIIIIIIHHI",
            image,
            at,
            h.name,
            h.virtual_size,
            h.virtual_address,
            h.raw_size,
            pointer,
            0,  # relocations and line numbers are dropped
            0,
            0,
            0,
            h.characteristics,
        )
        at += _SECTION_HEADER_SIZE
        pointer += h.raw_size

    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(image)
            for h in headers:
                _write_section(fh, h, data)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stub_section(section: pefile.SectionStructure, stub_size: int, stub: Path) -> _Header:
    name = bytes(section.Name).rstrip(b"\0")
    if name.startswith(b"/"):
        # a long name living in the COFF string table, which the output does not carry
        raise UKIError(f"systemd stub {stub.name} has a section with a long name ({name!r})")
    start, length = section.PointerToRawData, section.SizeOfRawData
    if length and start + length > stub_size:
        raise UKIError(f"systemd stub {stub.name} is truncated (section {name!r})")
    return _Header(
        name,
        section.Misc_VirtualSize,
        section.VirtualAddress,
        length,
        section.Characteristics,
        (start, length),
    )


def _stub_headers(
    pe: pefile.PE, data: bytes, headers: Sequence[_Header], size_of_headers: int, timestamp: int
) -> tuple[bytearray, bytearray]:
    """The stub's COFF and optional headers with the fields upstream rewrites.

    Deviation from upstream, which rejects stubs with COFF symbols: the symbol table lies outside
    every section and nothing at boot reads it, so its pointer and count are zeroed instead (the
    Debian stub the dev stack ships has 362 symbols). The Security directory is cleared too: the
    stub's signature (if any) is not copied and would not match anyway.
    """
    fh_off = pe.FILE_HEADER.get_file_offset()
    file_header = bytearray(data[fh_off : fh_off + _FILE_HEADER_SIZE])
    struct.pack_into("<H", file_header, 2, len(headers))  # NumberOfSections
    struct.pack_into("<III", file_header, 4, timestamp & 0xFFFFFFFF, 0, 0)  # stamp, no symbols

    opt = pe.OPTIONAL_HEADER
    opt_off = opt.get_file_offset()
    optional = bytearray(data[opt_off : opt_off + pe.FILE_HEADER.SizeOfOptionalHeader])
    code = sum(h.raw_size for h in headers if not h.characteristics & _CNT_INITIALIZED_DATA)
    initialized = sum(h.raw_size for h in headers if h.characteristics & _CNT_INITIALIZED_DATA)
    last = headers[-1]
    base = opt.ImageBase
    size_of_image = _align(base + last.virtual_address + last.virtual_size, opt.SectionAlignment) - base
    optional[2:4] = b"\0\0"  # linker version
    struct.pack_into("<II", optional, 4, code & 0xFFFFFFFF, initialized & 0xFFFFFFFF)
    struct.pack_into("<III", optional, 56, size_of_image & 0xFFFFFFFF, size_of_headers, 0)  # + CheckSum
    security = 112 + 8 * _SECURITY_DIRECTORY
    if opt.NumberOfRvaAndSizes > _SECURITY_DIRECTORY and len(optional) >= security + 8:
        optional[security : security + 8] = bytes(8)
    return file_header, optional


def _write_section(fh: BinaryIO, header: _Header, stub: bytes) -> None:
    start = fh.tell()
    if isinstance(header.source, tuple):
        offset, length = header.source
        fh.write(stub[offset : offset + length])
    elif isinstance(header.source.data, bytes):
        fh.write(header.source.data)
    else:
        with header.source.data.open("rb") as src:
            shutil.copyfileobj(src, fh, _CHUNK)
    written = fh.tell() - start
    if written > header.raw_size or (not isinstance(header.source, tuple) and written != header.virtual_size):
        raise UKIError(f"section {header.name.decode()} changed size while the UKI was written")
    fh.write(bytes(header.raw_size - written))
