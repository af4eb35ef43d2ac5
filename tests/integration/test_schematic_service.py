"""The schematic service against a real registry, with Redis present or gone."""

from __future__ import annotations

import pytest
import redis

from common.config.options import RepositoryOptions
from common.errors import NotFoundError
from common.registry.client import RegistryClient
from common.schematic.lru import SchematicLRU
from common.schematic.service import SchematicService
from common.schematic.storage import SchematicStorage
from devstack.services import RedisServer, RegistryServer, free_port

pytestmark = pytest.mark.integration


def service(registry: RegistryServer, client: redis.Redis | None) -> SchematicService:
    repo = RepositoryOptions(registry=registry.host, namespace="svc", repository="schematics", insecure=True)
    return SchematicService(SchematicStorage(RegistryClient(repo)), SchematicLRU(100, 30), client)


def test_works_without_redis(registry: RegistryServer) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    svc = service(registry, dead)
    created = svc.create(b"customization: {extraKernelArgs: [no-redis]}")
    assert not created.existed
    assert service(registry, dead).get(created.id) == created.canonical  # a fresh process finds it
    assert svc.create(b"customization:\n  extraKernelArgs:\n    - no-redis\n").existed


def test_create_is_published_to_redis_for_other_replicas(
    registry: RegistryServer, redis_server: RedisServer
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    first, second = service(registry, client), service(registry, client)
    absent = "0" * 64
    with pytest.raises(NotFoundError):
        second.get(absent)
    created = first.create(b"customization: {extraKernelArgs: [published]}")
    assert client.get(f"if:schematic:{registry.host}/svc/schematics:{created.id}") == created.canonical
    assert second.get(created.id) == created.canonical


def test_factories_sharing_redis_but_not_a_registry_stay_apart(
    registry: RegistryServer, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    with RegistryServer(tmp_path_factory.mktemp("other-registry")) as other:
        first = service(registry, client)
        second = service(other, client)
        created = first.create(b"customization: {extraKernelArgs: [scoped]}")
        with pytest.raises(NotFoundError):
            second.get(created.id)
        assert not second.create(b"customization: {extraKernelArgs: [scoped]}").existed
        assert service(other, None).get(created.id) == created.canonical
