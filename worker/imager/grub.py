"""Where a build's GRUB comes from: the release's imager image where it has one, this factory's otherwise.

Upstream's factory never takes GRUB from the imager image: it links the imager library into its own
binary and runs ``grub-mkrescue``/``grub-install`` from its own container, whose ``/usr/lib/grub``
holds ``i386-pc``, ``x86_64-efi`` and ``arm64-efi`` (talos-imager.md §0). This factory prefers the
release's ``usr/lib/grub/<platform>`` (the GRUB the release was made with, as every real Talos imager
image carries it), and takes each platform the release lacks from the host's ``/usr/lib/grub``: Debian's
``grub-pc-bin`` (``i386-pc``), ``grub-efi-amd64-bin`` (``x86_64-efi``) and, if installed,
``grub-efi-arm64-bin`` (``arm64-efi``). A platform neither has is reported by name when a build needs
it (:class:`GrubUnavailableError`, 501), never as a bare 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worker.imager.tools import ToolError

__all__ = [
    "FACTORY_GRUB",
    "GRUB_PLATFORMS",
    "GrubSelection",
    "GrubUnavailableError",
    "grub_platform_dir",
    "select_grub",
]

GRUB_PLATFORMS = ("i386-pc", "x86_64-efi", "arm64-efi")
#: The factory's own GRUB module directories (read at call time, so tests can point it elsewhere).
FACTORY_GRUB = Path("/usr/lib/grub")
#: The Debian package that puts each platform under :data:`FACTORY_GRUB`.
DEBIAN_PACKAGES = {
    "i386-pc": "grub-pc-bin",
    "x86_64-efi": "grub-efi-amd64-bin",
    "arm64-efi": "grub-efi-arm64-bin",
}
RELEASE = "imager image"
FACTORY = "factory"


class GrubUnavailableError(ToolError):
    """A build needs a GRUB platform that neither the release nor this factory has: a 501 naming it."""

    status = 501


def _usable(path: Path) -> bool:
    # grub-mkimage needs the platform's module list; a directory without it is not a GRUB platform
    return (path / "modinfo.sh").is_file()


@dataclass(frozen=True)
class GrubSelection:
    """The platform directories a build uses, and where each came from (:data:`RELEASE`/:data:`FACTORY`)."""

    dirs: Mapping[str, Path]
    origins: Mapping[str, str]
    factory: Path  # the factory's GRUB root that completed the release's

    @property
    def source(self) -> str:
        """``imager image``, ``factory``, ``imager image + factory`` (mixed) or ``none``."""
        kinds = sorted(set(self.origins.values()), key=(RELEASE, FACTORY).index)
        return " + ".join(kinds) if kinds else "none"

    @property
    def missing(self) -> list[str]:
        return [p for p in GRUB_PLATFORMS if p not in self.dirs]

    def describe(self) -> str:
        """One line for the build log: where GRUB comes from, and what is unavailable."""
        if self.source == RELEASE:
            text = "GRUB from the release's imager image (usr/lib/grub)"
        elif self.source == FACTORY:
            text = f"GRUB from this factory ({self.factory}): the release's imager image has no usr/lib/grub"
        elif self.origins:
            own = ", ".join(p for p, o in self.origins.items() if o == FACTORY)
            text = f"GRUB from the release's imager image, {own} from this factory ({self.factory})"
        else:
            text = "no GRUB: neither the release's imager image nor this factory has any"
        if self.missing:
            text += "; unavailable: " + ", ".join(self.missing)
        return text


def select_grub(release: Path, factory: Path | None = None) -> GrubSelection:
    """Each platform from ``release`` (the imager image's ``usr/lib/grub``) if it has it, else ``factory``."""
    factory = FACTORY_GRUB if factory is None else factory
    dirs: dict[str, Path] = {}
    origins: dict[str, str] = {}
    for platform in GRUB_PLATFORMS:
        for root, origin in ((release, RELEASE), (factory, FACTORY)):
            if _usable(root / platform):
                dirs[platform] = root / platform
                origins[platform] = origin
                break
    return GrubSelection(dirs, origins, factory)


def grub_platform_dir(grub_dirs: Mapping[str, Path], platform: str) -> Path:
    """The GRUB module directory for ``platform`` (``i386-pc``, ``x86_64-efi``, ``arm64-efi``)."""
    path = grub_dirs.get(platform)
    if path is None or not _usable(path):
        package = DEBIAN_PACKAGES.get(platform, "grub")
        raise GrubUnavailableError(
            f"GRUB {platform} is unavailable: the release's imager image has no usr/lib/grub/{platform} "
            f"and this factory has no {FACTORY_GRUB}/{platform} (Debian package {package})"
        )
    return path
