"""Keys upstream knows but this factory does not implement: accepted with a warning, otherwise ignored.

A configuration written for another upstream version or edition must still start this factory, so
each such key is named in one warning saying it has no effect. A key no version of upstream knows is
still an error (``sources.py``), with the nearest known key as a suggestion.

Where the table's entries come from (siderolabs/image-factory; "since" is the first release tag whose
``cmd/image-factory/cmd/options.go`` has the key; HEAD is 26b95ca, 2026-08-21, after v1.5.0):

- ``cache.gsa.*``: keyless Sigstore signing of cache entries and installers with a Google service
  account, v1.1.0 (``tsaURL`` v1.5.0).
- ``authentication.*``, enterprise edition only: ``enabled`` and ``htpasswdPath`` v1.2.0; ``provider``,
  ``auth0.*``, ``downloadTokenKeyPath`` and ``downloadTokenTTL.*`` v1.5.0; ``auth0.maxNodeAppsPerOrg``
  at HEAD only (in options.go, not yet in upstream's docs/configuration.md).
- ``enterprise.*``, enterprise edition only: ``scanner.{databaseURL,cache.*}`` and ``vex.*`` v1.3.0,
  ``spdx.cache.*`` v1.3.2, ``extraExtensions.manifest.*`` v1.4.0,
  ``scanner.{databaseUpdateAt,databaseRootDir}`` v1.5.0. (``enterprise.vex.cacheTTL`` existed between
  two commits before v1.3.0 and was never released, so it is not here.)
- ``registry.{jobs,debug}``: registry client tuning, v1.4.0.
- ``audit.*``: audit log of authenticated requests, v1.4.0 (``file.{maxAge,maxSizeMB,maxBackups}`` are
  in options.go and upstream's documented defaults, but not in its list of keys).
- ``cache.oci.enabled``: never a key of upstream's; the Helm chart README (``deploy/helm/image-factory/
  README.md``, v1.0.2 to HEAD, "OCI Cache Configuration"; our seed ``helm-chart-readme.md``) shows it,
  and upstream ignores unknown keys silently, so charts carry it.

Upstream's only other key outside ours, ``metrics.namespace``, is ``koanf:"-"`` (not configurable).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from common.config.schema import key_index

_ENTERPRISE = "enterprise edition"
_REPOSITORY = ("registry", "namespace", "repository", "insecure")


def _group(since: str, prefix: str, *names: str) -> dict[str, str]:
    return {f"{prefix}.{name}": since for name in names}


#: Every accepted-but-ignored leaf key (canonical upstream spelling) → where upstream has it.
IGNORED_KEYS: Mapping[str, str] = MappingProxyType(
    {
        **_group("upstream v1.1.0", "cache.gsa", "serviceAccountEmail", "keyFile", "fulcioURL", "rekorURL"),
        "cache.gsa.tsaURL": "upstream v1.5.0",
        "cache.oci.enabled": "upstream's Helm chart README only; upstream never read it",
        **_group(f"upstream v1.2.0, {_ENTERPRISE}", "authentication", "enabled", "htpasswdPath"),
        **_group(f"upstream v1.5.0, {_ENTERPRISE}", "authentication", "provider", "downloadTokenKeyPath"),
        **_group(
            f"upstream v1.5.0, {_ENTERPRISE}",
            "authentication.auth0",
            "domain",
            "audience",
            "machineScope",
            "clientID",
            "clientSecret",
            "sessionKey",
        ),
        "authentication.auth0.maxNodeAppsPerOrg": f"upstream after v1.5.0, {_ENTERPRISE}",
        **_group(
            f"upstream v1.5.0, {_ENTERPRISE}", "authentication.downloadTokenTTL", "max", "min", "default"
        ),
        **_group(f"upstream v1.3.0, {_ENTERPRISE}", "enterprise.scanner", "databaseURL"),
        **_group(
            f"upstream v1.5.0, {_ENTERPRISE}", "enterprise.scanner", "databaseUpdateAt", "databaseRootDir"
        ),
        **_group(f"upstream v1.3.0, {_ENTERPRISE}", "enterprise.scanner.cache", "ttl", "capacity"),
        **_group(f"upstream v1.3.0, {_ENTERPRISE}", "enterprise.vex.data", *_REPOSITORY),
        **_group(f"upstream v1.3.0, {_ENTERPRISE}", "enterprise.vex.cache", "ttl", "capacity"),
        **_group(f"upstream v1.3.2, {_ENTERPRISE}", "enterprise.spdx.cache", *_REPOSITORY),
        **_group(f"upstream v1.4.0, {_ENTERPRISE}", "enterprise.extraExtensions.manifest", *_REPOSITORY),
        **_group("upstream v1.4.0", "registry", "jobs", "debug"),
        **_group("upstream v1.4.0", "audit", "mode"),
        **_group("upstream v1.4.0", "audit.file", "path", "maxAge", "maxSizeMB", "maxBackups"),
    }
)


@dataclass(frozen=True)
class IgnoredKey:
    """A key or section of the table; ``since`` is empty for sections."""

    path: str
    since: str

    @property
    def is_section(self) -> bool:
        return not self.since


@functools.cache
def _index() -> dict[str, IgnoredKey]:
    """Leaves and the sections above them that are not ours, by lower-cased path (koanf is case-blind)."""
    ours = key_index()
    index: dict[str, IgnoredKey] = {}
    for path, since in IGNORED_KEYS.items():
        parts = path.split(".")
        for depth in range(1, len(parts)):
            section = ".".join(parts[:depth])
            if section.lower() not in ours:
                index.setdefault(section.lower(), IgnoredKey(section, ""))
        index[path.lower()] = IgnoredKey(path, since)
    return index


def lookup(path: str) -> IgnoredKey | None:
    """The table entry for a dotted path in any letter case, or None."""
    return _index().get(path.lower())


def suggest(path: str) -> str | None:
    """The known key (ours or upstream's) spelled most like ``path``, for "did you mean"."""
    known = {k: v.path for k, v in key_index().items()} | {k: v.path for k, v in _index().items()}
    close = difflib.get_close_matches(path.lower(), known, n=1, cutoff=0.75)
    return known[close[0]] if close else None
