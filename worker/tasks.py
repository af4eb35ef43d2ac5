"""Celery tasks: ``build`` (task id = profile hash) and ``ping``, which proves the wiring end to end."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from common.builds.plan import BuildRequest
from common.builds.queue import BUILD_TASK
from common.logging import request_id_var
from common.metrics.definitions import BUILDS_FINISHED
from worker.app import FactoryTask
from worker.pipeline import Retry, WorkerStoppingError, run_build

log = logging.getLogger(__name__)


@shared_task(base=FactoryTask, bind=True, name="image_factory.ping")
def ping(self: FactoryTask, payload: str) -> dict[str, str]:
    """Echo with the request id the worker saw, so tests can prove the hand-over."""
    log.info("ping", extra={"payload": payload})
    return {"payload": payload, "request_id": request_id_var.get()}


@shared_task(
    base=FactoryTask,
    bind=True,
    name=BUILD_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # run_build counts attempts in the build record, across redeliveries too
)
def build_asset(self: FactoryTask, request: dict[str, Any]) -> dict[str, str]:
    key = str(self.request.id)
    try:
        outcome = run_build(
            self.services,
            key,
            BuildRequest.from_json(request),
            retries=self.factory_config.build.retries,
            signers=self.signers,
        )
    except Retry as retry:
        handed_back = isinstance(retry.cause, WorkerStoppingError)
        self.services.metrics.inc(BUILDS_FINISHED, outcome="handed_back" if handed_back else "retry")
        raise self.retry(countdown=retry.countdown, exc=retry.cause) from retry.cause
    self.services.metrics.inc(BUILDS_FINISHED, outcome=outcome.status)
    return {"status": outcome.status, "detail": outcome.detail}
