"""``(schematic, version, path)`` → :class:`BuildPlan`, with upstream's checks, order and texts.

The API resolves a request to learn its key (the profile hash) and to answer bad input before
anything is queued; the worker resolves the same request again from the task's JSON arguments,
so only three strings cross the queue and both sides agree on the key by construction.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any, Protocol

from common.errors import FactoryError, NotFoundError
from common.profile.enhance import BuildPlan, Catalogs, enhance
from common.profile.model import SecureBootAssets
from common.profile.path import parse_path
from common.schematic import parse_schematic
from common.talos import version as v

#: Upstream's download Content-Type map (internal/mime, v1.1+); Python's built-in table for the rest.
CONTENT_TYPES = {
    ".efi": "application/efi",
    ".iso": "application/x-iso9660-image",
    ".xz": "application/x-xz",
    ".gz": "application/gzip",
    ".qcow2": "application/x-qemu-disk",
}

#: Python's own extension table, never the host's ``/etc/mime.types``: the global ``mimetypes``
#: table changes once anything in the process calls ``mimetypes.init()`` (Debian's maps ``.zst``
#: to ``application/zstd``), and an asset's Content-Type must not depend on the host or on import
#: order. A ``MimeTypes`` instance starts from the built-in defaults only.
_BUILTIN_TYPES: dict[str, str] = mimetypes.MimeTypes().types_map[True]


class Schematics(Protocol):
    def get(self, schematic_id: str) -> bytes: ...


class Artifacts(Catalogs, Protocol):
    def require(self, version: v.Version) -> str: ...


@dataclass(frozen=True)
class BuildRequest:
    """What a task carries: plain strings, re-resolved by the worker."""

    schematic_id: str
    version: str  # the tag, always with ``v``
    path: str

    def to_json(self) -> dict[str, str]:
        return {"schematic": self.schematic_id, "version": self.version, "path": self.path}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuildRequest:
        return cls(str(data["schematic"]), str(data["version"]), str(data["path"]))


def _prefixed(exc: FactoryError, prefix: str) -> FactoryError:
    """The same error class (so the same status) with upstream's ``fmt.Errorf`` prefix."""
    wrapped = type(exc).__new__(type(exc))
    FactoryError.__init__(wrapped, prefix + exc.message)
    wrapped.status = exc.status
    return wrapped


def plan_request(
    schematics: Schematics,
    artifacts: Artifacts,
    schematic_id: str,
    version: str,
    path: str,
    *,
    secureboot: SecureBootAssets | None = None,
) -> tuple[BuildRequest, BuildPlan]:
    """Raises the FactoryError upstream's ``handleImage`` would answer, in upstream's order.

    ``secureboot`` is the configured signing material (:func:`common.profile.secureboot.secureboot_assets`),
    ``None`` when Secure Boot is disabled (``-secureboot`` paths then answer 400, as upstream).
    One deliberate difference: a malformed version is a 400 (upstream answers 500).
    """
    try:
        canonical = schematics.get(schematic_id)
    except NotFoundError:
        raise NotFoundError(f'schematic ID "{schematic_id}" not found') from None
    parsed = v.version_from_path(version)
    tag = v.tag(parsed)
    try:
        profile = parse_path(path)
    except FactoryError as exc:
        raise _prefixed(exc, "error parsing profile from path: ") from exc
    try:
        plan = enhance(
            profile,
            parse_schematic(canonical),
            schematic_id=schematic_id,
            schematic_yaml=canonical,
            version=tag,
            catalogs=artifacts,
            secureboot=secureboot,
        )
    except FactoryError as exc:
        raise _prefixed(exc, "error enhancing profile from schematic: ") from exc
    # Upstream finds this when the build fetches the kernel; we answer before queueing anything.
    try:
        artifacts.require(parsed)
    except NotFoundError as exc:
        raise _prefixed(exc, "failed to get kernel: ") from exc
    return BuildRequest(schematic_id, tag, path), plan


def asset_labels(plan: BuildPlan) -> dict[str, str]:
    """Upstream's asset metric labels: ``talos_version`` without the ``v``, ``output_kind``, ``arch``."""
    profile = plan.profile
    return {
        "talos_version": profile.version.removeprefix("v"),
        "output_kind": profile.output.kind.value,
        "arch": profile.arch,
    }


def content_type(path: str) -> str:
    """By the request path's extension, as upstream (not by ``?filename=``)."""
    dot = path.rfind(".")
    ext = path[dot:].lower() if dot > path.rfind("/") and dot >= 0 else ""
    if not ext:
        return "application/octet-stream"
    return CONTENT_TYPES.get(ext) or _BUILTIN_TYPES.get(ext) or "application/octet-stream"


def safe_filename(requested: str | None, default: str) -> str:
    """``?filename=`` reduced to a plain file name: no path, quotes, backslashes or control characters
    (upstream writes it into Content-Disposition unchecked, which lets a link inject headers)."""
    if not requested:
        return default
    name = requested.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '"\r\n;')
    name = name.strip().lstrip(".")
    return name[:255] or default
