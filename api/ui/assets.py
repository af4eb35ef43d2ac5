"""The final page's assets: which apply to a (target, platform, arch, Secure Boot) choice, and how far
each is (cached, building, not built), read from the delivery use case (``common.delivery``) only.

The paths are the ones ``/image`` parses (``common.profile.path``), chosen as upstream's final page
chooses them (brief §11): the ISO, disk images in the platform's formats, the UKI, kernel, command
line and initramfs, and the PXE script for everything but boards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.builds.state import Status
from common.delivery.progress import Progress
from common.delivery.service import Delivery
from common.errors import FactoryError
from common.outages import OUTAGE_ERRORS
from common.profile.platforms import DISK, ISO, PXE, CloudPlatform
from common.talos.quirks import Quirks
from common.talos.version import Version

log = logging.getLogger(__name__)
#: What makes an asset's state unknowable for now (a dependency down), rather than the page fail.
_UNKNOWABLE: tuple[type[Exception], ...] = (FactoryError, *OUTAGE_ERRORS)


def N_(message: str) -> str:
    """Marks a message for extraction (``pybabel extract -k N_``); translated where it is shown."""
    return message


@dataclass(frozen=True)
class Asset:
    kind: str  # what it is, an English msgid the template translates
    path: str  # under /image/<schematic>/<version>/


@dataclass(frozen=True)
class AssetState:
    """``cached`` (download at once), ``building``/``queued`` (with progress), ``absent`` (build
    now), ``failed`` (the build's error; build again), ``unavailable`` (the factory refuses this
    asset, with upstream's reason) or ``unknown`` (a dependency is down: try later)."""

    asset: Asset
    state: str
    key: str = ""
    progress: Progress | None = None
    message: str = ""


def _disk_suffix(version: Version) -> str:
    return ".raw.zst" if Quirks(f"v{version}").supports_zstd() else ".raw.xz"


def applicable_assets(
    target: str, version: Version, arch: str, *, platform: CloudPlatform | None, secureboot: bool
) -> list[Asset]:
    sb = "-secureboot" if secureboot else ""
    if target == "sbc":
        return [
            Asset(N_("Disk image"), f"metal-{arch}{_disk_suffix(version)}"),
            Asset(N_("Kernel"), f"kernel-{arch}"),
            Asset(N_("Initramfs"), f"initramfs-{arch}.xz"),
        ]
    name = platform.name if platform is not None else "metal"
    found = []
    if platform is None or platform.boots_from(ISO):
        found.append(Asset(N_("ISO"), f"{name}-{arch}{sb}.iso"))
    if platform is None:
        found.append(Asset(N_("Disk image"), f"metal-{arch}{sb}{_disk_suffix(version)}"))
        if not secureboot:
            found.append(Asset(N_("Disk image (QCOW2)"), f"metal-{arch}.qcow2"))
    elif platform.boots_from(DISK):
        found.append(Asset(N_("Disk image"), platform.disk_image(arch, secureboot=secureboot)))
    found.append(Asset(N_("UKI"), f"{name}-{arch}{sb}-uki.efi"))
    if not secureboot:
        found += [
            Asset(N_("Kernel"), f"kernel-{arch}"),
            Asset(N_("Kernel command line"), f"cmdline-{name}-{arch}"),
            Asset(N_("Initramfs"), f"initramfs-{arch}.xz"),
        ]
    return found


def pxe_path(target: str, arch: str, *, platform: CloudPlatform | None, secureboot: bool) -> str | None:
    if target == "sbc" or (platform is not None and not platform.boots_from(PXE)):
        return None
    name = platform.name if platform is not None else "metal"
    return f"{name}-{arch}{'-secureboot' if secureboot else ''}"


def installer_image(
    host: str, schematic_id: str, version: Version, *, platform: str, secureboot: bool
) -> str:
    """The registry frontend's installer reference: ``<platform>-installer`` from Talos 1.10, the
    plain ``installer`` before (upstream's final page)."""
    sb = "-secureboot" if secureboot else ""
    name = (
        f"{platform}-installer{sb}"
        if Quirks(f"v{version}").supports_unified_installer()
        else f"installer{sb}"
    )
    return f"{host}/{name}/{schematic_id}:v{version}"


def state_of(delivery: Delivery, schematic_id: str, version: str, asset: Asset) -> AssetState:
    """One asset's state; a refusal or an outage is that asset's state, never the page's error."""
    try:
        located = delivery.locate(schematic_id, version, asset.path)
    except FactoryError as exc:
        if exc.status >= 500:
            return AssetState(asset, "unknown", message=exc.message)
        return AssetState(asset, "unavailable", message=exc.message)
    except OUTAGE_ERRORS as exc:
        return AssetState(asset, "unknown", message=type(exc).__name__)
    key = located.key
    try:
        if delivery.lookup(key) is not None:
            return AssetState(asset, "cached", key)
        record = delivery.services.builds.get(key)
    except _UNKNOWABLE as exc:
        log.warning("asset state unknown", extra={"key": key, "error": str(exc)})
        return AssetState(asset, "unknown", key, message=str(exc))
    if record is None:
        return AssetState(asset, "absent", key)
    progress = delivery.progress_of(record)
    if record.status is Status.FAILED:
        return AssetState(asset, "failed", key, progress, message=record.error)
    if record.status is Status.SUCCEEDED:
        # built, but the cache lookup above missed it (expired or evicted): it can be built again
        return AssetState(asset, "absent", key)
    return AssetState(asset, record.status.value, key, progress)


def start_build(delivery: Delivery, schematic_id: str, version: str, path: str) -> str:
    """Queues (or joins) the asset's build without waiting; the key to follow it by on ``/builds``."""
    located = delivery.locate(schematic_id, version, path)
    delivery.obtain(located, wait=False)
    return located.key
