"""The last good list of the release's tags, shared by every process through Redis.

``ArtifactsManager.talos_versions`` keeps serving its last good list when the source registry
fails, but a process that never listed (a replica started, scaled out or never asked before the
outage) has none: every asset request, cached ones included, would answer 503 ``failed to list
Talos versions`` while the bytes sit in the cache. Each successful listing is written here, and a
process without a list of its own reads it back (stale, logged, shown by ``/readyz?verbose``).
Redis being down as well only means there is nothing to fall back to.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import redis

from common.outages import OUTAGE_ERRORS

log = logging.getLogger(__name__)

KEY = "if:talos:tags"


class TagMemory(Protocol):
    def load(self) -> list[str] | None: ...

    def save(self, tags: list[str]) -> None: ...


class NoTagMemory:
    """Remembers nothing (a process without Redis, e.g. ``image-factory mirror``)."""

    def load(self) -> list[str] | None:
        return None

    def save(self, tags: list[str]) -> None:
        pass


class RedisTagMemory:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def load(self) -> list[str] | None:
        try:
            raw = self.redis.get(KEY)
        except OUTAGE_ERRORS as exc:
            log.warning("cannot read the shared Talos tag list", extra={"error": str(exc)})
            return None
        if not isinstance(raw, bytes | str):
            return None
        tags = json.loads(raw)
        return [str(tag) for tag in tags] if isinstance(tags, list) else None

    def save(self, tags: list[str]) -> None:
        try:
            self.redis.set(KEY, json.dumps(tags, separators=(",", ":")))
        except OUTAGE_ERRORS as exc:
            log.warning("cannot share the Talos tag list", extra={"error": str(exc)})
