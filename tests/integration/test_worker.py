"""A real Celery worker process (the console script) on the session's Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.config import load_config
from common.logging import request_id_var
from devstack.services import RedisServer, RegistryServer
from tests.support.factory import FactoryWorker, factory_config, worker_process
from worker.app import create_celery

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, registry: RegistryServer
) -> Iterator[FactoryWorker]:
    with worker_process(
        tmp_path_factory.mktemp("worker"), factory_config(redis_server.url, registry.host)
    ) as w:
        yield w


def test_task_round_trip_carries_the_request_id(
    worker: FactoryWorker, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = load_config([], environ={"IF_REDIS_URL": redis_server.url})
    app = create_celery(config)
    token = request_id_var.set("rid-from-the-api")
    try:
        result = app.send_task("image_factory.ping", args=["hello"])
    finally:
        request_id_var.reset(token)
    assert result.get(timeout=30) == {"payload": "hello", "request_id": "rid-from-the-api"}
    log = worker.log_path.read_text()
    assert any(
        '"request_id": "rid-from-the-api"' in line and '"msg": "ping"' in line for line in log.splitlines()
    )
