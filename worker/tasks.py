"""Celery tasks. Builds arrive with the build pipeline; ``ping`` proves the wiring end to end."""

from __future__ import annotations

import logging

from celery import shared_task

from common.logging import request_id_var
from worker.app import FactoryTask

log = logging.getLogger(__name__)


@shared_task(base=FactoryTask, bind=True, name="image_factory.ping")
def ping(self: FactoryTask, payload: str) -> dict[str, str]:
    """Echo with the request id the worker saw, so tests can prove the hand-over."""
    log.info("ping", extra={"payload": payload})
    return {"payload": payload, "request_id": request_id_var.get()}
