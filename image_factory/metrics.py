"""What ``image-factory api|worker`` run around the service for metrics and worker liveness.

With ``metrics.addr`` set (upstream's default ``:2122``), in this order:

1. a fresh multiprocess directory (:mod:`common.metrics.multiprocess`) before anything imports
   prometheus_client, so every process of the pod (gunicorn workers, Celery pool processes, forked
   later) records into it;
2. the ``/metrics`` listener on ``metrics.addr``, a daemon thread of this process, which is the
   gunicorn master or the Celery main process (:mod:`common.metrics.exposition` says why there);
   an API's also reports the cluster's queue, build slots and live workers, read from Redis;
3. on the way out the listener stops and the directory is removed.

Worker processes record their heartbeat in Redis whether metrics are enabled or not (the API's
``image_factory_workers_live`` counts them), and their pool processes' live gauges are dropped
when Celery shuts them down. gunicorn's workers are handled by its ``child_exit`` hook
(``api.server``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import redis

from common.config import Config
from common.metrics.multiprocess import multiprocess_directory, process_exited


def _redis(config: Config) -> redis.Redis:
    """A client of its own: nothing of the service's connection pools is touched from these threads."""
    return redis.Redis.from_url(config.redis.url, socket_timeout=2.0, socket_connect_timeout=1.0)


@contextlib.contextmanager
def process_metrics(config: Config, role: str) -> Iterator[None]:
    """Metrics (and, for ``role == "worker"``, the heartbeat) for the duration of the command.

    Raises OSError when ``metrics.addr`` cannot be bound.
    """
    owner = os.getpid()
    stack = contextlib.ExitStack()
    try:
        if config.metrics.addr:
            path = stack.enter_context(multiprocess_directory())
            from common.builds.workers import cluster_snapshot
            from common.metrics.exposition import MetricsServer

            snapshots = []
            if role == "api":
                client = stack.enter_context(_redis(config))
                snapshots.append(cluster_snapshot(client, config.build.maxConcurrency))
            server = MetricsServer(config.metrics.addr, path, snapshots).start()
            stack.callback(server.stop)
        if role == "worker":
            from celery.signals import worker_process_shutdown

            from common.builds.workers import WorkerHeartbeat
            from common.metrics import metrics_for

            worker_process_shutdown.connect(_pool_process_exited)
            heartbeat_client = stack.enter_context(_redis(config))
            stack.enter_context(WorkerHeartbeat(heartbeat_client, metrics=metrics_for(config)))
        yield
    finally:
        if os.getpid() == owner:
            stack.close()
        else:
            # A forked process leaving through these frames (gunicorn's workers end with sys.exit
            # inside the master's serve()): the listener thread, the heartbeat and the directory
            # are the parent's; stopping them here would hang (no listener thread in this process)
            # or break the parent.
            stack.pop_all()


def _pool_process_exited(pid: int | None = None, **_: Any) -> None:
    """Celery's ``worker_process_shutdown``, in the pool process that is exiting."""
    if pid:
        process_exited(pid)
