"""The long-lived objects a process needs, built once from the configuration.

API processes and workers build the same container from the same Config, so a backend is chosen
by configuration in exactly one place: the registry clients, the asset cache and its signing key,
the build state and the Celery client that publishes builds.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from common.artifacts.manager import ArtifactsManager
from common.artifacts.shared_tags import RedisTagMemory
from common.artifacts.store import ArtifactStore
from common.builds.publisher import BuildPublisher
from common.builds.state import BuildState
from common.cache import build_cache
from common.cache.base import AssetCache
from common.cache.signing import CacheSigner, FileCacheSigner
from common.config import Config
from common.cosign.source import verifier_from_config
from common.metrics import NULL_METRICS, Metrics, metrics_for
from common.readiness import Check, dependency_checks
from common.registry.client import RegistryClient
from common.schematic.lru import SchematicLRU
from common.schematic.service import SchematicService
from common.schematic.storage import SchematicStorage


@dataclass
class Services:
    config: Config
    redis: redis.Redis
    schematics: SchematicService
    artifacts: ArtifactsManager
    cache_signer: CacheSigner
    publisher: BuildPublisher
    cache: AssetCache
    builds: BuildState
    # the dependencies /readyz?verbose reports (they never make the process unready: common.readiness)
    readiness: dict[str, Check] = field(default_factory=dict)
    metrics: Metrics = NULL_METRICS  # metrics.addr set: the process's Prometheus backend


def storage_dir(config: Config) -> Path:
    return Path(config.artifacts.storageDir or os.path.join(tempfile.gettempdir(), "image-factory-artifacts"))


def scratch_dir(config: Config) -> Path:
    return Path(config.build.scratchDir or os.path.join(tempfile.gettempdir(), "image-factory-builds"))


def build_artifacts(
    config: Config, metrics: Metrics = NULL_METRICS, client: redis.Redis | None = None
) -> ArtifactsManager:
    """``client``: share the last good Talos tag list through Redis (``common.artifacts.shared_tags``)."""
    store = ArtifactStore(storage_dir(config), config.artifacts.storageMaxSize)
    verifier = verifier_from_config(config.containerSignature, metrics)
    shared = RedisTagMemory(client) if client is not None else None
    return ArtifactsManager(config, store, verifier, shared=shared)


def build_services(config: Config) -> Services:
    metrics = metrics_for(config)
    client = redis_client(config)
    schematics = SchematicService(
        SchematicStorage(RegistryClient(config.artifacts.schematic)),
        SchematicLRU(config.cache.schematic.capacity, config.cache.schematic.negativeTTL.total_seconds()),
        client,
        metrics,
    )
    signer = FileCacheSigner.from_path(config.cache.signingKeyPath)
    artifacts = build_artifacts(config, metrics, client)
    return Services(
        config=config,
        redis=client,
        schematics=schematics,
        artifacts=artifacts,
        cache_signer=signer,
        publisher=BuildPublisher(config),
        cache=build_cache(config, signer, metrics),
        builds=build_state(config, client),
        readiness=dependency_checks(config, client, artifacts.versions_note),
        metrics=metrics,
    )


#: Seconds a thread waits for a free connection of a full pool before the request answers 503.
REDIS_POOL_WAIT = 5.0


def redis_client(config: Config) -> redis.Redis:
    """A client whose pool blocks (for :data:`REDIS_POOL_WAIT` at most) when every connection is
    taken, instead of raising ``MaxConnectionsError`` as redis-py's default pool does past 100.

    Sized for every thread of an API process at once plus its own threads (the build listener,
    background prebuilds); connections are only opened when needed. A pool still exhausted after
    the wait raises ``redis.ConnectionError``: 503 with ``Retry-After`` (``common.outages``).
    """
    pool = redis.BlockingConnectionPool.from_url(
        config.redis.url,
        max_connections=max(100, config.http.threads + 16),
        timeout=REDIS_POOL_WAIT,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)


def build_state(config: Config, client: redis.Redis) -> BuildState:
    return BuildState(
        client,
        max_queue=config.build.maxQueueLength,
        timeout=config.build.timeout.total_seconds(),
        failure_ttl=config.build.failureTTL.total_seconds(),
    )
