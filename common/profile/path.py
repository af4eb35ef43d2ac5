"""Asset file name → imager profile (upstream ``internal/profile/profile.go`` ``ParseFromPath``).

The checks run in upstream's order and the error texts are upstream's, because clients and the
integration tests compare them verbatim; platforms are deliberately not validated (upstream builds
``foo-amd64.iso`` with ``talos.platform=foo``).
"""

from __future__ import annotations

from common.errors import InvalidInputError
from common.profile.defaults import DEFAULT_RAW_DISK_SIZE, default_image_options
from common.profile.model import DiskFormat, ImageOptions, OutFormat, Output, OutputKind, Profile

__all__ = ["go_quote", "installer_profile", "parse_path"]

_ARCHES = {"amd64": "amd64", "arm64": "arm64", "x86_64": "amd64", "i386": "amd64"}
_METAL = "metal"
_QCOW2_OPTIONS = "cluster_size=8k"

#: Tried in this order; the first suffix that matches wins (so ``.tar.gz`` before ``.gz``).
_COMPRESSIONS = (OutFormat.TAR, OutFormat.GZ, OutFormat.XZ, OutFormat.ZSTD)
_DISK_FORMATS = (DiskFormat.RAW, DiskFormat.QCOW2, DiskFormat.VPC, DiskFormat.OVA)

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote`` (``%q``), so error texts match upstream byte for byte.

    Lone surrogates from ``surrogateescape`` decoding stand for the invalid bytes Go would see and are
    written as ``\\xNN`` like Go does for invalid UTF-8.
    """
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif 0xD800 <= cp <= 0xDFFF:
            out.append("\\ufffd")  # Go cannot hold a lone surrogate; it would be a RuneError
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def _parse_arch(s: str, prof: Profile) -> None:
    arch = _ARCHES.get(s)
    if arch is None:
        raise InvalidInputError(f"invalid architecture: {go_quote(s)}")
    prof.arch = arch


def _parse_platform_arch(s: str, prof: Profile) -> None:
    """``<platform>-<arch>[-secureboot]``; only ``digital-ocean`` may contain a dash."""
    if s.endswith("-secureboot"):
        s = s.removesuffix("-secureboot")
        prof.secureboot = True
    platform, sep, rest = s.partition("-")
    if not sep:
        raise InvalidInputError(f"invalid platform-arch: {go_quote(s)}")
    if platform == "digital" and rest.startswith("ocean-"):
        platform = "digital-ocean"
        rest = rest.removeprefix("ocean-")
    prof.platform = platform
    _parse_arch(rest, prof)


def _raw(kind: OutputKind) -> Profile:
    return Profile(output=Output(kind=kind, out_format=OutFormat.RAW))


def parse_path(path: str) -> Profile:
    """Profile for an ``/image/<schematic>/<version>/<path>`` asset; raises InvalidInputError (400)."""
    if path.startswith("kernel-"):
        prof = _raw(OutputKind.KERNEL)
        prof.platform = _METAL  # irrelevant for a kernel
        _parse_arch(path.removeprefix("kernel-"), prof)
        return prof

    if path.startswith("cmdline-"):
        prof = _raw(OutputKind.CMDLINE)
        _parse_platform_arch(path.removeprefix("cmdline-"), prof)
        return prof

    if path.startswith("initramfs-") and path.endswith(".xz"):
        prof = _raw(OutputKind.INITRAMFS)
        prof.platform = _METAL
        _parse_arch(path.removeprefix("initramfs-").removesuffix(".xz"), prof)
        return prof

    if path.endswith(".iso"):
        prof = _raw(OutputKind.ISO)
        _parse_platform_arch(path.removesuffix(".iso"), prof)
        return prof

    if path.endswith("-uki.efi"):
        prof = _raw(OutputKind.UKI)
        _parse_platform_arch(path.removesuffix("-uki.efi"), prof)
        return prof

    if path.startswith("installer-") and path.endswith(".tar"):
        prof = _raw(OutputKind.INSTALLER)
        prof.platform = _METAL
        rest = path.removeprefix("installer-").removesuffix(".tar")
        if rest.endswith("-secureboot"):
            rest = rest.removesuffix("-secureboot")
            prof.secureboot = True
        _parse_arch(rest, prof)
        return prof

    platform, sep, rest = path.partition("-installer-")
    if sep and rest.endswith(".tar"):
        prof = _raw(OutputKind.INSTALLER)
        _parse_platform_arch(platform + "-" + rest.removesuffix(".tar"), prof)
        return prof

    return _parse_disk_image(path)


def _parse_disk_image(path: str) -> Profile:
    """Anything else is ``<platform>-<arch>[-secureboot].<disk>[<compression>]``, parsed from the end."""
    options = ImageOptions(disk_size=DEFAULT_RAW_DISK_SIZE)
    prof = Profile(output=Output(kind=OutputKind.IMAGE, image_options=options, out_format=OutFormat.RAW))

    for out_format in _COMPRESSIONS:
        if path.endswith(out_format.value):
            path = path.removesuffix(out_format.value)
            prof.output.out_format = out_format
            break

    for disk_format in _DISK_FORMATS:
        suffix = "." + disk_format.value
        if path.endswith(suffix):
            path = path.removesuffix(suffix)
            options.disk_format = disk_format
            if disk_format is DiskFormat.QCOW2:
                options.disk_format_options = _QCOW2_OPTIONS
            break

    if options.disk_format is DiskFormat.UNKNOWN:
        raise InvalidInputError(f"invalid profile path: {go_quote(path)}")

    _parse_platform_arch(path, prof)

    defaults = default_image_options(prof.platform)
    if defaults is not None:
        if defaults.disk_size:
            options.disk_size = defaults.disk_size
        if defaults.disk_format_options:
            options.disk_format_options = defaults.disk_format_options
    return prof


def installer_profile(platform_image_name: str, arch: str) -> Profile:
    """Profile for one arch of a registry installer image.

    Names: ``installer[-secureboot]`` (platform metal) or ``<platform>-installer[-secureboot]``.

    Unknown image names raise InvalidInputError with upstream's registry text ``invalid image: <name>``.
    """
    if arch not in ("amd64", "arm64"):
        raise ValueError(f"unsupported installer architecture {arch!r}")

    secureboot = False
    if platform_image_name == "installer":
        platform = ""
    elif platform_image_name == "installer-secureboot":
        platform, secureboot = "", True
    elif platform_image_name.endswith("-installer-secureboot"):
        platform, secureboot = platform_image_name.removesuffix("-installer-secureboot"), True
    elif platform_image_name.endswith("-installer"):
        platform = platform_image_name.removesuffix("-installer")
    else:
        raise InvalidInputError(f"invalid image: {platform_image_name}")

    prof = _raw(OutputKind.INSTALLER)
    prof.arch = arch
    prof.platform = platform or _METAL
    if secureboot:
        prof.secureboot = True
    return prof
