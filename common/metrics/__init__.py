"""Metrics: one small interface for recording events, two backends chosen by configuration.

Code in ``common/``, ``api/`` and ``worker/`` records through :class:`Metrics` with a definition from
:mod:`common.metrics.definitions` (the one table of names, help texts and labels) and never imports
prometheus_client itself::

    services.metrics.inc(ASSETS_BUILT, talos_version="1.12.4", output_kind="iso", arch="amd64")

:func:`metrics_for` picks the backend: :class:`NullMetrics` when ``metrics.addr`` is empty (metrics
disabled: recording costs a method call), else the Prometheus backend
(:mod:`common.metrics.prometheus`). How the values of many processes reach one ``/metrics``
listener is in :mod:`common.metrics.multiprocess` and :mod:`common.metrics.exposition`.
"""

from __future__ import annotations

from typing import Any, Protocol

from common.config import Config
from common.metrics.definitions import DEFINITIONS, Kind, Metric

__all__ = ["DEFINITIONS", "NULL_METRICS", "Kind", "Metric", "Metrics", "NullMetrics", "metrics_for"]


class Metrics(Protocol):
    """Where events are recorded. ``labels`` must name exactly the definition's labels.

    Recording never raises for the backend's own trouble (a full disk under the multiprocess
    directory is logged, not passed to the request); a definition used with the wrong labels is a
    programming error and raises ``ValueError``.
    """

    def inc(self, metric: Metric, amount: float = 1.0, /, **labels: str) -> None:
        """Adds ``amount`` to a counter (never negative) or a gauge (either sign)."""
        ...

    def observe(self, metric: Metric, value: float, /, **labels: str) -> None:
        """One observation of a histogram."""
        ...

    def set(self, metric: Metric, value: float, /, **labels: str) -> None:
        """Sets a gauge."""
        ...

    def buffer_writes(self, interval: float) -> None:
        """Lets events be written up to ``interval`` seconds late, in exchange for cheap recording on a
        hot path (the API's requests): see :mod:`common.metrics.prometheus`."""
        ...

    @property
    def collector_registry(self) -> Any:
        """The prometheus_client registry of a single-process backend (what tests render), or None
        when metrics are disabled."""
        ...


class NullMetrics:
    """Metrics disabled: every event is dropped."""

    def inc(self, metric: Metric, amount: float = 1.0, /, **labels: str) -> None:
        pass

    def observe(self, metric: Metric, value: float, /, **labels: str) -> None:
        pass

    def set(self, metric: Metric, value: float, /, **labels: str) -> None:
        pass

    def buffer_writes(self, interval: float) -> None:
        pass

    @property
    def collector_registry(self) -> Any:
        return None


NULL_METRICS = NullMetrics()


def metrics_for(config: Config) -> Metrics:
    """The backend ``config`` asks for: none without ``metrics.addr``, else Prometheus.

    Under ``image-factory api|worker`` the Prometheus backend is the process's one multiprocess
    backend (values in files the ``/metrics`` listener reads); elsewhere (tests, the thin
    ``api.wsgi``/``worker.celery_app`` entry points) a fresh single-process one.
    """
    if not config.metrics.addr:
        return NULL_METRICS
    from common.metrics.prometheus import process_backend

    return process_backend()
