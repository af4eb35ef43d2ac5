"""Publishing build tasks: the API's side of the Celery contract in ``common.builds.queue``.

The API never imports the worker's code; it sends the task by name with three plain strings, and
the task id is the profile hash, so a message means the same build wherever it is delivered.
"""

from __future__ import annotations

import logging

from celery import Celery

from common.builds.plan import BuildRequest
from common.builds.queue import BUILD_QUEUE, BUILD_TASK, broker_settings
from common.config import Config
from common.logging import request_id_var

log = logging.getLogger(__name__)


class BuildPublisher:
    """A Celery client that only publishes (it connects to the broker on first use)."""

    def __init__(self, config: Config) -> None:
        self.app = Celery("image-factory-api", set_as_current=False)
        self.app.conf.update(broker_settings(config))

    def publish(self, key: str, request: BuildRequest) -> None:
        rid = request_id_var.get()
        self.app.send_task(
            BUILD_TASK,
            args=[request.to_json()],
            task_id=key,
            queue=BUILD_QUEUE,
            headers={"request_id": rid} if rid else None,
        )
        log.info("build queued", extra={"key": key, "path": request.path, "version": request.version})
