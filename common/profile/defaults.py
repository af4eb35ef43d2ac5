"""Talos's built-in profiles (``talos:pkg/imager/profile/default.go``, v1.14.0-rc.1) as data.

The factory only borrows ``diskSize`` and ``diskFormatOptions`` from these when parsing a disk-image path
(the path itself decides kind, compression and disk format); the imager CLI uses them whole.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from common.profile.model import (
    DiskFormat,
    ImageOptions,
    ISOOptions,
    OutFormat,
    Output,
    OutputKind,
    Profile,
    SDBootEnrollKeys,
)

MIB = 1024 * 1024
GIB = 1024 * MIB

#: Smallest disk Talos can install into; used by metal-like platforms.
MIN_RAW_DISK_SIZE = 1246 * MIB
#: Default for every other platform (and for platforms without a default profile).
DEFAULT_RAW_DISK_SIZE = 8192 * MIB


@dataclass(frozen=True)
class _Row:
    platform: str
    kind: OutputKind
    out_format: OutFormat
    secureboot: bool = False
    disk_size: int = 0
    disk_format: DiskFormat = DiskFormat.UNKNOWN
    disk_format_options: str = ""
    disk_sector_size: int = 0
    iso_options: bool = False


_I = OutputKind.IMAGE
_Z = OutFormat.ZSTD
_RAWD = DiskFormat.RAW
_QCOW = "cluster_size=8k"
_VHD = "subformat=fixed,force_size"

_ROWS: dict[str, _Row] = {
    "iso": _Row("metal", OutputKind.ISO, OutFormat.RAW),
    "secureboot-iso": _Row("metal", OutputKind.ISO, OutFormat.RAW, secureboot=True, iso_options=True),
    "metal": _Row("metal", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "metal-4k": _Row("metal", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD, disk_sector_size=4096),
    "metal-uki": _Row("metal", OutputKind.UKI, OutFormat.RAW),
    "secureboot-metal-uki": _Row("metal", OutputKind.UKI, OutFormat.RAW, secureboot=True),
    "secureboot-metal": _Row(
        "metal", _I, _Z, secureboot=True, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD
    ),
    "installer": _Row("metal", OutputKind.INSTALLER, OutFormat.RAW),
    "secureboot-installer": _Row("metal", OutputKind.INSTALLER, OutFormat.RAW, secureboot=True),
    "akamai": _Row("akamai", _I, OutFormat.GZ, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "alibabacloud": _Row(
        "alibabacloud",
        _I,
        OutFormat.RAW,
        disk_size=MIN_RAW_DISK_SIZE,
        disk_format=DiskFormat.QCOW2,
        disk_format_options=_QCOW,
    ),
    "aws": _Row("aws", _I, _Z, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD),
    "azure": _Row(
        "azure", _I, _Z, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=DiskFormat.VPC, disk_format_options=_VHD
    ),
    "secureboot-azure": _Row(
        "azure",
        _I,
        _Z,
        secureboot=True,
        disk_size=DEFAULT_RAW_DISK_SIZE,
        disk_format=DiskFormat.VPC,
        disk_format_options=_VHD,
    ),
    "cloudstack": _Row("cloudstack", _I, _Z, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD),
    "secureboot-cloudstack": _Row(
        "cloudstack", _I, _Z, secureboot=True, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD
    ),
    "digital-ocean": _Row(
        "digital-ocean", _I, OutFormat.GZ, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD
    ),
    "exoscale": _Row(
        "exoscale", _I, _Z, disk_size=10 * 1024 * MIB, disk_format=DiskFormat.QCOW2, disk_format_options=_QCOW
    ),
    "gcp": _Row("gcp", _I, OutFormat.TAR, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD),
    "hcloud": _Row("hcloud", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "nocloud": _Row("nocloud", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "secureboot-nocloud": _Row(
        "nocloud", _I, _Z, secureboot=True, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD
    ),
    "opennebula": _Row("opennebula", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "secureboot-opennebula": _Row(
        "opennebula", _I, _Z, secureboot=True, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD
    ),
    "openstack": _Row("openstack", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "secureboot-openstack": _Row(
        "openstack", _I, _Z, secureboot=True, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD
    ),
    "oracle": _Row(
        "oracle",
        _I,
        _Z,
        disk_size=DEFAULT_RAW_DISK_SIZE,
        disk_format=DiskFormat.QCOW2,
        disk_format_options=_QCOW,
    ),
    "scaleway": _Row("scaleway", _I, _Z, disk_size=MIN_RAW_DISK_SIZE, disk_format=_RAWD),
    "upcloud": _Row("upcloud", _I, _Z, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD),
    "vmware": _Row("vmware", _I, OutFormat.RAW, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=DiskFormat.OVA),
    "secureboot-vmware": _Row(
        "vmware",
        _I,
        OutFormat.RAW,
        secureboot=True,
        disk_size=DEFAULT_RAW_DISK_SIZE,
        disk_format=DiskFormat.OVA,
    ),
    "vultr": _Row("vultr", _I, _Z, disk_size=DEFAULT_RAW_DISK_SIZE, disk_format=_RAWD),
}


def _build(row: _Row) -> Profile:
    output = Output(kind=row.kind, out_format=row.out_format)
    if row.kind is OutputKind.IMAGE:
        output.image_options = ImageOptions(
            disk_size=row.disk_size,
            disk_format=row.disk_format,
            disk_format_options=row.disk_format_options,
            disk_sector_size=row.disk_sector_size,
        )
    if row.iso_options:
        output.iso_options = ISOOptions(sd_boot_enroll_keys=SDBootEnrollKeys.IF_SAFE)
    return Profile(platform=row.platform, secureboot=row.secureboot, output=output)


_PROFILES: dict[str, Profile] = {name: _build(row) for name, row in _ROWS.items()}

#: Names of the built-in profiles, in upstream's source order.
DEFAULT_PROFILE_NAMES: tuple[str, ...] = tuple(_ROWS)


def default_profile(name: str) -> Profile | None:
    """A fresh copy of the named built-in profile (callers mutate profiles), or None."""
    prof = _PROFILES.get(name)
    return copy.deepcopy(prof) if prof is not None else None


def default_image_options(name: str) -> ImageOptions | None:
    """The named profile's image options (a copy), or None if it has none or does not exist.

    Upstream dereferences these unconditionally when a path's platform names a profile (``iso``,
    ``installer``) that has none, which panics; callers should treat ``None`` as "no defaults".
    """
    prof = _PROFILES.get(name)
    if prof is None or prof.output.image_options is None:
        return None
    return copy.deepcopy(prof.output.image_options)
