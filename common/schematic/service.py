"""Create and look up schematics consistently across any number of API replicas.

Lookup order: this process's LRU → Redis (every create is published there before it is answered,
so all replicas see it at once) → this process's short-lived "absent" memory → the registry.
Redis is an accelerator, never the source of truth: when it is down we fall back to the registry,
and creates still succeed (the registry write is idempotent, content-addressed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import redis

from common.errors import FactoryError, NotFoundError
from common.metrics import NULL_METRICS, Metrics
from common.metrics.definitions import (
    SCHEMATIC_CACHE_SIZE,
    SCHEMATIC_CREATE,
    SCHEMATIC_DUPLICATE_CREATE,
    SCHEMATIC_GET,
)
from common.schematic import canonicalize
from common.schematic.lru import SchematicLRU
from common.schematic.storage import SchematicStorage, hashes_to, is_valid_id

log = logging.getLogger(__name__)

REDIS_PREFIX = "if:schematic:"
LOCK_PREFIX = "if:lock:schematic:"
#: Redis copies are a cache; the registry keeps the schematic forever.
REDIS_TTL_SECONDS = 7 * 24 * 3600


class CorruptSchematicError(FactoryError):
    """Stored bytes no longer hash to their ID: refused, never served."""

    status = 500


@dataclass(frozen=True)
class Created:
    id: str
    canonical: bytes
    existed: bool


class SchematicService:
    def __init__(
        self,
        storage: SchematicStorage,
        lru: SchematicLRU,
        redis_client: redis.Redis | None,
        metrics: Metrics = NULL_METRICS,
    ) -> None:
        self.storage = storage
        self.lru = lru
        self.redis = redis_client
        self.metrics = metrics
        # Keys name the repository too: factories sharing a Redis but not a registry must not
        # see each other's schematics as stored.
        scope = storage.client.repo.reference
        self._key = f"{REDIS_PREFIX}{scope}:"
        self._lock_key = f"{LOCK_PREFIX}{scope}:"

    def create(self, body: bytes) -> Created:
        schematic_id, canonical = canonicalize(body)
        if self.lru.get(schematic_id) is not None:
            self.metrics.inc(SCHEMATIC_DUPLICATE_CREATE)
            return Created(schematic_id, canonical, existed=True)
        # Redis is not trusted to say "stored" here: the registry is the source of truth, and one
        # HEAD per new-to-this-process schematic is cheap next to losing one.
        with self._lock(schematic_id):
            existed = self.storage.exists(schematic_id)
            if not existed:
                self.storage.put(schematic_id, canonical)
                log.info("schematic created", extra={"schematic": schematic_id})
        self.metrics.inc(SCHEMATIC_DUPLICATE_CREATE if existed else SCHEMATIC_CREATE)
        self._remember(schematic_id, canonical)
        return Created(schematic_id, canonical, existed=existed)

    def get(self, schematic_id: str) -> bytes:
        """The canonical bytes; NotFoundError("schematic not found") when there is no such schematic."""
        if not is_valid_id(schematic_id):
            raise NotFoundError("schematic not found")
        cached = self.lru.get(schematic_id)
        if cached is not None:
            self.metrics.inc(SCHEMATIC_GET)
            return cached
        shared = self._from_redis(schematic_id)
        if shared is not None:
            self._put_local(schematic_id, shared)
            self.metrics.inc(SCHEMATIC_GET)
            return shared
        if self.lru.known_absent(schematic_id):
            raise NotFoundError("schematic not found")
        stored = self.storage.get(schematic_id)
        if stored is None:
            self.lru.put_absent(schematic_id)
            self.metrics.set(SCHEMATIC_CACHE_SIZE, len(self.lru))
            raise NotFoundError("schematic not found")
        if not hashes_to(stored, schematic_id):
            log.error("stored schematic does not match its ID", extra={"schematic": schematic_id})
            raise CorruptSchematicError(f"stored schematic {schematic_id} is corrupt")
        self._remember(schematic_id, stored)
        self.metrics.inc(SCHEMATIC_GET)
        return stored

    def _put_local(self, schematic_id: str, canonical: bytes) -> None:
        self.lru.put(schematic_id, canonical)
        self.metrics.set(SCHEMATIC_CACHE_SIZE, len(self.lru))

    def _remember(self, schematic_id: str, canonical: bytes) -> None:
        self._put_local(schematic_id, canonical)
        if self.redis is None:
            return
        try:
            self.redis.set(self._key + schematic_id, canonical, ex=REDIS_TTL_SECONDS)
        except redis.RedisError as exc:
            log.warning("cannot publish schematic to redis", extra={"error": str(exc)})

    def _from_redis(self, schematic_id: str) -> bytes | None:
        if self.redis is None:
            return None
        try:
            data = self.redis.get(self._key + schematic_id)
        except redis.RedisError as exc:
            log.warning("redis unavailable for schematic lookup", extra={"error": str(exc)})
            return None
        if not isinstance(data, bytes):
            return None
        if not hashes_to(data, schematic_id):
            log.error("redis copy of schematic does not match its ID", extra={"schematic": schematic_id})
            return None
        return data

    @contextmanager
    def _lock(self, schematic_id: str) -> Iterator[None]:
        """Single writer across replicas; without Redis, the idempotent write is still safe."""
        lock = None
        if self.redis is not None:
            try:
                candidate = self.redis.lock(self._lock_key + schematic_id, timeout=30, blocking_timeout=30)
                if candidate.acquire():
                    lock = candidate
            except redis.RedisError as exc:
                log.warning("redis unavailable for schematic lock", extra={"error": str(exc)})
        try:
            yield
        finally:
            if lock is not None:
                with suppress(redis.RedisError):  # it expires by itself
                    lock.release()
