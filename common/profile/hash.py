"""The asset cache key: a hash of the enhanced profile, computed the way upstream does.

Upstream (``internal/profile/hash.go``) hashes go-yaml's encoding of the profile after dropping
machine-local details (paths reduced to base names, ``forceInsecure``, the prebuilt ``*.auth``
paths), then appends one "errata" string per fixed bug so affected assets are rebuilt. We add our
own salt after upstream's: our builds are not byte-identical to the Go imager's, so a cache shared
with a Go factory must never serve one for the other; bumping :data:`OUR_ERRATA` invalidates every
asset we built before (e.g. after an imager fix).
"""

from __future__ import annotations

import copy
import hashlib
import posixpath
from collections.abc import Iterator
from typing import Any

from common.profile.model import ContainerAsset, FileAsset, OutputKind, Profile
from common.schematic.emit import Struct, marshal_value

__all__ = ["OUR_ERRATA", "clean", "errata", "profile_hash", "profile_yaml"]

#: Appended after upstream's errata; add a line (never edit one) to force rebuilds of our assets.
OUR_ERRATA: tuple[str, ...] = ("image-factory (python) imager v1",)


def _clean_container(asset: ContainerAsset) -> None:
    asset.force_insecure = False
    if asset.oci_path:
        asset.oci_path = posixpath.basename(asset.oci_path)
    if asset.tarball_path:
        asset.tarball_path = posixpath.basename(asset.tarball_path)
    if asset.image_ref:
        asset.image_ref = asset.image_ref.rsplit("/", 1)[-1]


def _clean_file(asset: FileAsset) -> None:
    if asset.path:
        asset.path = posixpath.basename(asset.path)


def clean(profile: Profile) -> Profile:
    """A copy without what differs between machines (upstream ``Clean``).

    Upstream leaves the overlay's image paths alone, and those hold a random temporary directory, so
    its overlay builds get a new key in every process and are never served from cache. We reduce them
    to base names like every other asset path, which fixes that.
    """
    p = copy.deepcopy(profile)
    _clean_container(p.input.base_installer)
    for ext in p.input.system_extensions:
        _clean_container(ext)
    _clean_container(p.input.overlay_installer)
    if p.overlay is not None:
        _clean_container(p.overlay.image)
    if p.input.secure_boot is not None:
        p.input.secure_boot.platform_key_path = ""
        p.input.secure_boot.key_exchange_key_path = ""
        p.input.secure_boot.signature_key_path = ""
    for asset in (p.input.kernel, p.input.initramfs, p.input.sd_boot, p.input.sd_stub):
        _clean_file(asset)
    return p


def _as_go(value: Any, *, map_here: bool = False) -> Any:
    """The profile document with structs as :class:`Struct` (field order kept), maps left to sort."""
    if isinstance(value, dict):
        if map_here:
            return value
        return Struct(tuple((k, _as_go(v, map_here=(k == "options"))) for k, v in value.items()))
    if isinstance(value, list):
        return [_as_go(v) for v in value]
    return value


def profile_yaml(profile: Profile) -> bytes:
    """go-yaml v4's encoding of ``profile`` (4-space indent), as hashed."""
    return marshal_value(_as_go(profile.to_yaml_dict()))


def errata(p: Profile) -> Iterator[str]:
    """Upstream's errata strings, in upstream's order, then ours."""
    kind = p.output.kind
    if kind is OutputKind.INSTALLER:
        yield "installer fix #8107"
    if kind is OutputKind.INSTALLER and p.overlay is not None:
        yield "overlay installer layout fix"
    if kind is OutputKind.ISO and p.secureboot_enabled:
        yield "secureboot iso gen fix #9565"
    if p.platform == "vmware":
        yield "vmware build fix #164"
    if kind is OutputKind.INSTALLER:
        yield "installer tarball fix #9772"
        yield "installer tarball fix #10278"
    if p.overlay is not None:
        yield "overlay profile fix #11093"
    if p.platform == "vmware" and p.arch == "arm64":
        yield "vmware arm64 kernel args fix #11735"
    if p.overlay is not None and kind in (OutputKind.UKI, OutputKind.INSTALLER):
        yield "overlay extra kernel args fix #376"
    yield from OUR_ERRATA


def profile_hash(profile: Profile, *, ours: bool = True) -> str:
    """Hex sha256 of the cleaned profile's YAML and the errata; ``ours=False`` gives upstream's key."""
    p = clean(profile)
    hasher = hashlib.sha256(profile_yaml(p))
    for line in errata(p):
        if ours or line not in OUR_ERRATA:
            hasher.update(line.encode())
    return hasher.hexdigest()
