"""Talos versions: parsing as upstream's Go semver does, and choosing which imager tags to offer."""

from __future__ import annotations

from collections.abc import Iterable

import semver

from common.errors import InvalidInputError

Version = semver.Version
PRERELEASE_KINDS = frozenset({"alpha", "beta", "rc"})
_MAX_UINT64 = (1 << 64) - 1


def parse_strict(text: str) -> Version:
    """blang/semver ``Parse``: exactly MAJOR.MINOR.PATCH[-pre][+build], no leading ``v``."""
    try:
        return Version.parse(text)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"error parsing version: {exc}") from exc


def parse_tolerant(text: str) -> Version:
    """blang/semver ``ParseTolerant``: trims spaces and a leading ``v``, pads ``1.5`` to ``1.5.0``."""
    text = text.strip().removeprefix("v")
    parts = text.split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            trimmed = part.lstrip("0")
            if not trimmed or not trimmed[0].isdigit():
                trimmed = "0" + trimmed
            parts[i] = trimmed
    if len(parts) < 3:
        if any(c in parts[-1] for c in "+-"):
            raise InvalidInputError(
                f"error parsing version: short version {text!r} cannot carry pre-release or build"
            )
        parts += ["0"] * (3 - len(parts))
    return parse_strict(".".join(parts))


def release_core(text: str) -> Version | None:
    """What the quirks key on: ``ParseTolerant`` without pre-release and build (``1.10.0-alpha.1``
    counts as 1.10.0); None where Go returns an error (or a number overflows Go's uint64), which
    upstream's quirks read as "the latest Talos"."""
    try:
        parsed = parse_tolerant(text)
    except InvalidInputError:
        return None
    if any(n > _MAX_UINT64 for n in (parsed.major, parsed.minor, parsed.patch)):
        return None
    return core(parsed)


def version_from_path(text: str) -> Version:
    """A ``:version`` URL segment: ``v`` optional, then strict semver (upstream's meta routes)."""
    return parse_strict(text.removeprefix("v"))


def tag(version: Version) -> str:
    return f"v{version}"


def core(version: Version) -> Version:
    """The release a pre-release leads to: 1.10.0-beta.1 → 1.10.0 (for compatibility checks)."""
    return Version(version.major, version.minor, version.patch)


def select_versions(tags: Iterable[str], minimum: Version, broken: Iterable[Version]) -> list[Version]:
    """Which imager tags are offered, in semver order (upstream ``fetchTalosVersions``).

    At or above ``minimum``, not broken, and pre-releases only of the newest minor line and only
    in the form ``alpha|beta|rc.<number>``.
    """
    parsed: list[Version] = []
    for name in tags:
        try:
            parsed.append(parse_tolerant(name))
        except InvalidInputError:
            continue
    if not parsed:
        return []
    newest = max(parsed)
    broken_set = set(broken)
    selected = set()
    for version in parsed:
        if version < minimum or version in broken_set:
            continue
        if version.prerelease and not _offered_prerelease(version, newest):
            continue
        selected.add(version)
    return sorted(selected)


def _offered_prerelease(version: Version, newest: Version) -> bool:
    if (version.major, version.minor) != (newest.major, newest.minor):
        return False
    parts = str(version.prerelease).split(".")
    return len(parts) == 2 and parts[0] in PRERELEASE_KINDS and parts[1].isdigit()
