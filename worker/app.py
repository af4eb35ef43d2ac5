"""The Celery application factory, and the request-id hand-over from API to worker."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task, current_app
from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_ready,
    worker_shutting_down,
)

from common.builds.queue import broker_settings
from common.builds.waiter import Waiter
from common.config import Config
from common.delivery.installers import InstallerImages
from common.delivery.service import Delivery
from common.logging import request_id_var
from common.services import Services, build_services, scratch_dir
from worker.imager.scratch import sweep
from worker.imager.signing import NO_SIGNERS, Signers
from worker.secureboot.base import SignerError
from worker.secureboot.config import signers_from_config
from worker.shutdown import BUILDS

log = logging.getLogger(__name__)


def create_celery(config: Config) -> Celery:
    timeout = config.build.timeout.total_seconds()
    app = Celery("image-factory", set_as_current=True)
    app.conf.update(
        **broker_settings(config),
        result_backend=config.redis.url,
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_default_queue="default",
        task_time_limit=int(timeout),
        task_soft_time_limit=max(1, int(timeout) - 30),
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
    )
    app.conf["factory_config"] = config
    app.autodiscover_tasks(["worker"], related_name="tasks", force=True)
    return app


class FactoryTask(Task):
    """Base for our tasks: the shared Config, and the process's Services built on first use (in the
    pool process, after the fork, so no connection is shared between processes)."""

    _services: Services | None = None
    _signers: Signers | None = None

    @property
    def factory_config(self) -> Config:
        config: Config = self.app.conf["factory_config"]
        return config

    @property
    def services(self) -> Services:
        if FactoryTask._services is None:
            FactoryTask._services = build_services(self.factory_config)
        return FactoryTask._services

    @property
    def signers(self) -> Signers:
        """The Secure Boot signers, opened once per process. ``image-factory worker`` already checked at
        start-up that they open; if they stop opening (a key file removed since), the build gets no
        signers and fails in its UKI stage with a recorded error, never an unsigned asset."""
        if FactoryTask._signers is None:
            try:
                FactoryTask._signers = signers_from_config(self.factory_config.secureBoot)
            except SignerError as exc:
                log.error("cannot open the Secure Boot signers", extra={"error": str(exc)})
                return NO_SIGNERS
        return FactoryTask._signers


@before_task_publish.connect
def _attach_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    rid = request_id_var.get()
    if rid and headers is not None:
        headers["request_id"] = rid


@task_prerun.connect
def _restore_request_id(task: Task | None = None, **_: Any) -> None:
    rid = getattr(task.request, "request_id", None) if task is not None else None
    if rid:
        task.request.request_id_token = request_id_var.set(rid)  # type: ignore[union-attr]


@task_postrun.connect
def _forget_request_id(task: Task | None = None, **_: Any) -> None:
    token = getattr(task.request, "request_id_token", None) if task is not None else None
    if token is not None:
        request_id_var.reset(token)


@worker_init.connect
def _sweep_abandoned_builds(sender: Any = None, **_: Any) -> None:
    """Builds of a killed worker could not clean up after themselves; reclaim their folders."""
    config = getattr(getattr(sender, "app", None), "conf", {}).get("factory_config")
    if isinstance(config, Config):
        sweep(scratch_dir(config))


@worker_shutting_down.connect
def _start_grace_period(**_: Any) -> None:
    """SIGTERM (warm shutdown): the pool processes' builds have ``build.shutdownGracePeriod`` to
    finish, or are handed back (``worker.shutdown``). In the main process's signal handler."""
    config = current_app.conf.get("factory_config")
    if isinstance(config, Config):
        BUILDS.begin(config.build.shutdownGracePeriod.total_seconds())
        log.info(
            "worker stopping: running builds get the grace period, then are handed back",
            extra={"grace_seconds": config.build.shutdownGracePeriod.total_seconds()},
        )


@worker_ready.connect
def _prebuild_installers(sender: Any = None, **_: Any) -> None:
    """Every ``build.prebuildSchematics`` at every ``build.prebuildInstallers`` version: queued
    (single flight, so every worker may do it) once a worker is ready, on a thread so the worker
    starts consuming at once."""
    config = getattr(getattr(sender, "app", None), "conf", {}).get("factory_config")
    if not isinstance(config, Config) or not (
        config.build.prebuildSchematics and config.build.prebuildInstallers
    ):
        return
    threading.Thread(target=_prebuild, args=(config,), name="prebuild", daemon=True).start()


def _prebuild(config: Config) -> None:
    services = build_services(config)
    images = InstallerImages(Delivery(services, Waiter(services.redis, services.builds, 1)))
    for schematic_id in config.build.prebuildSchematics:
        try:
            queued = images.prebuild(schematic_id)
            log.info("installers built ahead", extra={"schematic": schematic_id, "builds": queued})
        except Exception:
            log.exception("cannot build installers ahead", extra={"schematic": schematic_id})
