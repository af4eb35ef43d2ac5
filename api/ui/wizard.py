"""The wizard's state and step machine (upstream ``internal/frontend/http/ui.go``, brief §11).

All state travels as query parameters with upstream's names (``target``, ``version`` without ``v``,
``platform``, ``board``, ``arch``, ``secureboot=true``, ``extensions`` repeated with ``-`` meaning
"none", ``cmdline``, ``overlay-options``, ``bootloader``), so ``GET /?…`` deep-links any step and back,
forward and reload just work. Unlike upstream, reaching the last step creates nothing: the
customization form POSTs (:mod:`api.ui.routes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import groupby
from typing import Protocol

import yaml
from werkzeug.datastructures import MultiDict

from common.artifacts.catalog import ExtensionRef, OverlayRef
from common.errors import InvalidInputError
from common.profile.platforms import ARCHES, CloudPlatform, cloud_platform, cloud_platforms
from common.talos.quirks import Quirks
from common.talos.version import Version, parse_strict

TARGETS = ("metal", "cloud", "sbc")
BOOTLOADERS = ("auto", "sd-boot", "grub", "dual-boot")
NONE = "-"  # upstream's sentinel: "the extensions step was answered with none"
#: Overlays (SBC boards) start with Talos 1.7; Secure Boot with 1.5; the bootloader choice with 1.12.
SBC_MIN = Version(1, 7, 0)
SECUREBOOT_MIN = Version(1, 5, 0)
BOOTLOADER_MIN = Version(1, 12, 0, "alpha.2")
#: Upstream hides the metal agent from the extensions step (it is Omni's, not the user's to choose).
HIDDEN_EXTENSIONS = frozenset({"siderolabs/metal-agent"})


class Step(StrEnum):
    TARGET = "target"
    VERSION = "version"
    PLATFORM = "platform"
    BOARD = "board"
    ARCH = "arch"
    EXTENSIONS = "extensions"
    CUSTOMIZATION = "customization"


@dataclass(frozen=True)
class State:
    target: str = ""
    version: str = ""
    platform: str = ""
    board: str = ""
    arch: str = ""
    secureboot: bool = False
    extensions: tuple[str, ...] | None = None  # None: the extensions step is not answered yet
    cmdline: str = ""
    overlay_options: str = ""
    bootloader: str = "auto"
    search: str = ""
    searching: bool = False  # the extensions step's search button, not its "next"

    @classmethod
    def from_args(cls, args: MultiDict[str, str]) -> State:
        raw = args.getlist("extensions")
        extensions = tuple(sorted({e for e in raw if e and e != NONE})) if raw else None
        return cls(
            target=args.get("target", ""),
            version=args.get("version", "").removeprefix("v"),
            platform=args.get("platform", ""),
            board=args.get("board", ""),
            arch=args.get("arch", ""),
            secureboot=args.get("secureboot", "") == "true",
            extensions=extensions,
            cmdline=args.get("cmdline", ""),
            overlay_options=args.get("overlay-options", ""),
            bootloader=args.get("bootloader", "") or "auto",
            search=args.get("search", "").strip(),
            searching=bool(args.get("search-go", "")),
        )

    def params(self, *, drop: Iterable[str] = ()) -> list[tuple[str, str]]:
        """The state as query pairs (hidden fields, links), without the names in ``drop``."""
        pairs: list[tuple[str, str]] = []
        for name, value in (
            ("target", self.target),
            ("version", self.version),
            ("platform", self.platform),
            ("board", self.board),
            ("arch", self.arch),
            ("secureboot", "true" if self.secureboot else ""),
        ):
            if value:
                pairs.append((name, value))
        if self.extensions is not None:
            pairs.extend(("extensions", e) for e in (self.extensions or (NONE,)))
        for name, value in (
            ("cmdline", self.cmdline),
            ("overlay-options", self.overlay_options),
            ("bootloader", "" if self.bootloader == "auto" else self.bootloader),
        ):
            if value:
                pairs.append((name, value))
        dropped = set(drop)
        return [(k, v) for k, v in pairs if k not in dropped]


@dataclass(frozen=True)
class VersionGroup:
    label: str  # "1.12" or "1.13 (pre-release)"
    prerelease: bool
    versions: tuple[Version, ...]


@dataclass(frozen=True)
class Board:
    """A single-board computer: one overlay of the release's catalog."""

    name: str
    image: str

    @classmethod
    def of(cls, overlay: OverlayRef) -> Board:
        return cls(overlay.name, overlay.ref.repository)


@dataclass(frozen=True)
class Wizard:
    """One request's view of the wizard: the state checked against the release catalogs."""

    state: State
    step: Step
    versions: Sequence[Version] = ()
    version: Version | None = None
    platform: CloudPlatform | None = None
    board: Board | None = None
    boards: Sequence[Board] = ()
    platforms: Sequence[CloudPlatform] = ()
    extensions: Sequence[ExtensionRef] = ()
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.state.arch

    @property
    def newest_stable(self) -> Version | None:
        stable = [v for v in self.versions if not v.prerelease]
        return max(stable) if stable else (max(self.versions) if self.versions else None)

    def version_groups(self) -> list[VersionGroup]:
        """Newest first, grouped by ``M.m`` with pre-releases in groups of their own (upstream)."""
        ordered = sorted(self.versions, reverse=True)

        def key(v: Version) -> tuple[int, int, bool]:
            return (v.major, v.minor, bool(v.prerelease))

        return [VersionGroup(f"{k[0]}.{k[1]}", k[2], tuple(group)) for k, group in groupby(ordered, key=key)]

    @property
    def arches(self) -> tuple[str, ...]:
        if self.state.target == "sbc":
            return ("arm64",)
        if self.platform is not None:
            return self.platform.arches
        return ARCHES

    def secureboot_offered(self) -> bool:
        """Upstream: version ≥ 1.5.0 and (metal or a platform with Secure Boot); never for boards."""
        if self.version is None or self.version < SECUREBOOT_MIN or self.state.target == "sbc":
            return False
        return self.state.target == "metal" or (self.platform is not None and self.platform.secureboot)

    def bootloader_offered(self) -> bool:
        return self.version is not None and self.version >= BOOTLOADER_MIN

    def bootloaders(self) -> tuple[str, ...]:
        """``grub`` cannot boot a Secure Boot image, so it is not offered with it (upstream)."""
        return tuple(b for b in BOOTLOADERS if not (b == "grub" and self.state.secureboot))

    def overlay_options_offered(self) -> bool:
        return self.state.target == "sbc"

    def matching_extensions(self) -> list[ExtensionRef]:
        """Upstream's filter: case-insensitive substring of the tagged ref or the description; the
        already selected ones always stay listed."""
        needle = self.state.search.lower()
        chosen = set(self.state.extensions or ())
        return [
            e
            for e in self.extensions
            if e.name in chosen
            or not needle
            or needle in str(e.ref).lower()
            or needle in e.description.lower()
        ]

    def step_params(self, step: Step) -> list[tuple[str, str]]:
        """The query that opens ``step`` with everything chosen before it (the step list's links)."""
        later = {
            Step.TARGET: ["target", "version", "platform", "board", "arch", "secureboot", "extensions"],
            Step.VERSION: ["version", "platform", "board", "arch", "secureboot", "extensions"],
            Step.PLATFORM: ["platform", "arch", "secureboot", "extensions"],
            Step.BOARD: ["board", "extensions"],
            Step.ARCH: ["arch", "secureboot", "extensions"],
            Step.EXTENSIONS: ["extensions"],
            Step.CUSTOMIZATION: [],
        }[step]
        return self.state.params(drop=later)

    def steps(self) -> list[Step]:
        """The steps this path through the wizard has, in order."""
        found = [Step.TARGET, Step.VERSION]
        if self.state.target == "cloud":
            found.append(Step.PLATFORM)
        if self.state.target == "sbc":
            found.append(Step.BOARD)
        elif self.platform is None or len(self.platform.arches) > 1 or self.platform.secureboot:
            found.append(Step.ARCH)
        found += [Step.EXTENSIONS, Step.CUSTOMIZATION]
        return found


class Catalog(Protocol):
    """What the wizard reads from the release (``common.artifacts.manager.ArtifactsManager``)."""

    def talos_versions(self) -> list[Version]: ...
    def official_extensions(self, version: Version) -> list[ExtensionRef]: ...
    def official_overlays(self, version: Version) -> list[OverlayRef]: ...


def resolve(state: State, catalog: Catalog) -> Wizard:
    """Which step ``state`` is at: the first one whose answer is missing or not offered."""
    if state.target not in TARGETS:
        return Wizard(replace(state, target=""), Step.TARGET)
    versions = [v for v in catalog.talos_versions() if state.target != "sbc" or v >= SBC_MIN]
    version = _offered_version(state.version, versions)
    if version is None:
        return Wizard(state, Step.VERSION, versions=versions)
    wizard = Wizard(state, Step.VERSION, versions=versions, version=version)
    if state.target == "cloud":
        platforms = [p for p in cloud_platforms() if p.offered_for(version)]
        platform = cloud_platform(state.platform)
        if platform is None or platform not in platforms:
            return replace(wizard, step=Step.PLATFORM, platforms=platforms)
        wizard = replace(wizard, platform=platform, platforms=platforms)
        if len(platform.arches) == 1 and not platform.secureboot:
            wizard = replace(wizard, state=replace(wizard.state, arch=platform.arches[0]))
    if state.target == "sbc":
        boards = [Board.of(o) for o in catalog.official_overlays(version)]
        board = next((b for b in boards if b.name == state.board), None)
        if board is None:
            return replace(wizard, step=Step.BOARD, boards=boards)
        wizard = replace(wizard, board=board, boards=boards, state=replace(wizard.state, arch="arm64"))
    if wizard.state.arch not in wizard.arches:
        return replace(wizard, step=Step.ARCH, state=replace(wizard.state, arch="", secureboot=False))
    if wizard.state.secureboot and not wizard.secureboot_offered():
        wizard = replace(wizard, state=replace(wizard.state, secureboot=False))
    extensions = [e for e in catalog.official_extensions(version) if e.name not in HIDDEN_EXTENSIONS]
    wizard = replace(wizard, extensions=extensions)
    names = {e.name for e in extensions}
    chosen = wizard.state.extensions
    if chosen is not None and not set(chosen) <= names:
        unknown = ", ".join(sorted(set(chosen) - names))
        return replace(wizard, step=Step.EXTENSIONS, errors={"extensions": unknown})
    if chosen is None or wizard.state.searching:
        return replace(wizard, step=Step.EXTENSIONS)
    return replace(wizard, step=Step.CUSTOMIZATION)


def _offered_version(text: str, versions: Sequence[Version]) -> Version | None:
    if not text:
        return None
    try:
        parsed = parse_strict(text)
    except InvalidInputError:
        return None
    return parsed if parsed in versions else None


def quirks(version: Version) -> Quirks:
    return Quirks(f"v{version}")


def schematic_document(wizard: Wizard) -> bytes:
    """The schematic the finished wizard describes, as upstream's final step builds it: kernel
    arguments split on spaces, extensions sorted, the board's overlay with the options' YAML, the
    bootloader unless ``auto``. The schematic service canonicalizes it (and so gives upstream's ID)."""
    if wizard.step is not Step.CUSTOMIZATION:
        raise InvalidInputError(f"the wizard is not finished: the {wizard.step.value} step is missing")
    state = wizard.state
    customization: dict[str, object] = {}
    args = state.cmdline.split()
    if args:
        customization["extraKernelArgs"] = args
    if state.extensions:
        customization["systemExtensions"] = {"officialExtensions": sorted(state.extensions)}
    if wizard.bootloader_offered() and state.bootloader != "auto":
        if state.bootloader not in wizard.bootloaders():
            raise InvalidInputError(f"bootloader {state.bootloader!r} is not offered here")
        customization["bootloader"] = state.bootloader
    document: dict[str, object] = {}
    if wizard.board is not None:
        overlay: dict[str, object] = {"image": wizard.board.image, "name": wizard.board.name}
        options = _overlay_options(state.overlay_options)
        if options:
            overlay["options"] = options
        document["overlay"] = overlay
    if customization:
        document["customization"] = customization
    if not document:
        document["customization"] = {}  # the vanilla schematic (an empty body is refused)
    return yaml.safe_dump(document, sort_keys=False).encode()


def _overlay_options(text: str) -> dict[str, object]:
    if not text.strip():
        return {}
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"overlay options are not valid YAML: {exc}") from exc
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise InvalidInputError("overlay options must be a YAML mapping (key: value)")
    return parsed
