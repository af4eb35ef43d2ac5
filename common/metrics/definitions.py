"""Every metric the factory exports: name, type, help text and labels, in one table.

Names, types, labels and help texts marked ``upstream`` are upstream's (``internal/asset``,
``internal/schematic``, ``internal/profile``, ``go-http-metrics``), so dashboards built for
factory.talos.dev keep working. The others are ours: a distributed factory has a queue, a cluster of
build slots, waiting clients and workers that come and go, which upstream's single process has not.

Two origins of values:

* events: code records them through :class:`common.metrics.Metrics` (``inc``, ``observe``, ``set``);
  in several processes at once, summed (counters, histograms) or combined by ``gauge_mode``;
* ``collected`` gauges: read from Redis when Prometheus scrapes an API process (the cluster's queue,
  slots and live workers), so every replica reports the same cluster-wide value; alert on ``max``.

``http_request_duration_seconds``, ``http_request_total`` and ``http_request_exceptions_total`` keep
the names, labels, help texts and buckets prometheus-flask-exporter gave them (the API recorded them
through it before ``api/metrics.py`` took over, to make recording cheaper); they are not prefixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: How the values of several processes (gunicorn or Celery pool processes) combine: ``livesum``
    #: adds those of the processes alive now, ``livemax`` takes the largest (prometheus_client's modes).
    gauge_mode: str = "livesum"
    upstream: bool = False
    collected: bool = False  # a gauge read at scrape time, not recorded by events

    def __post_init__(self) -> None:
        if self.kind is Kind.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")
        if self.kind is Kind.HISTOGRAM and not self.buckets:
            raise ValueError(f"histogram {self.name} needs buckets")
        if self.collected and self.kind is not Kind.GAUGE:
            raise ValueError(f"collected metric {self.name} must be a gauge")


ASSET = ("talos_version", "output_kind", "arch")
_LATENCY = (1.0, 10.0, 60.0, 180.0, 600.0)  # upstream's

# --- upstream: assets (API: deliveries and cache misses; worker: builds) ---------------------------

ASSETS_DELIVERED_CACHED = Metric(
    "image_factory_assets_delivered_cached_total",
    Kind.COUNTER,
    "Number of assets retrieved from cache.",
    ASSET,
    upstream=True,
)
ASSETS_CACHED_BYTES = Metric(
    "image_factory_assets_cached_bytes_total",
    Kind.COUNTER,
    "Number of bytes delivered with cached assets.",
    ASSET,
    upstream=True,
)
ASSETS_CACHED_ERRORS = Metric(
    "image_factory_assets_cached_errors_total",
    Kind.COUNTER,
    "Number of errors retrieving assets from cache.",
    ASSET,
    upstream=True,
)
ASSETS_BUILT = Metric(
    "image_factory_assets_built_total",
    Kind.COUNTER,
    "Number of assets built (missing in the cache).",
    ASSET,
    upstream=True,
)
ASSETS_BUILT_BYTES = Metric(
    "image_factory_assets_built_bytes_total",
    Kind.COUNTER,
    "Number of bytes delivered with assets built (missing in the cache).",
    ASSET,
    upstream=True,
)
ASSETS_CONCURRENCY_LATENCY = Metric(
    "image_factory_assets_concurrency_latency_seconds",
    Kind.HISTOGRAM,
    "Latency of asset build related to the concurrency limit (waiting for available workers).",
    buckets=_LATENCY,
    upstream=True,
)
ASSETS_BUILD_LATENCY = Metric(
    "image_factory_assets_build_latency_seconds",
    Kind.HISTOGRAM,
    "Latency of asset build for the build itself (excluding waiting for available workers).",
    buckets=_LATENCY,
    upstream=True,
)

# --- upstream: schematics and profiles ---------------------------------------------------------------

SCHEMATIC_GET = Metric(
    "image_factory_schematic_get_total",
    Kind.COUNTER,
    "Number of times schematics were retrieved.",
    upstream=True,
)
SCHEMATIC_CREATE = Metric(
    "image_factory_schematic_create_total",
    Kind.COUNTER,
    "Number of new schematics created.",
    upstream=True,
)
SCHEMATIC_DUPLICATE_CREATE = Metric(
    "image_factory_schematic_duplicate_create_total",
    Kind.COUNTER,
    "Number of new schematics which were created as duplicate.",
    upstream=True,
)
SCHEMATIC_CACHE_SIZE = Metric(
    "image_factory_schematic_cache_size",
    Kind.GAUGE,
    "Number of schematics in in-memory cache.",
    upstream=True,
)
EXTENSION_HITS = Metric(
    "image_factory_profile_system_extension_hits_total",
    Kind.COUNTER,
    "Number of times system extension was used in images build.",
    ("extension",),
    upstream=True,
)

# --- upstream: HTTP (go-http-metrics names; the duration histogram is the Flask exporter's) ----------

HTTP = ("method", "handler", "status")
HTTP_RESPONSE_SIZE = Metric(
    "http_response_size_bytes",
    Kind.HISTOGRAM,
    "The size of the HTTP responses.",
    HTTP,
    buckets=tuple(100.0 * 10**n for n in range(8)),
    upstream=True,
)
HTTP_INFLIGHT = Metric(
    "http_requests_inflight",
    Kind.GAUGE,
    "The number of inflight requests being handled at the same time.",
    ("handler",),
    upstream=True,
)

# --- prometheus-flask-exporter's names, labels and help texts (``FLASK_EXPORTER``) -----------------

#: Prometheus' (and so the exporter's) default latency buckets.
_HTTP_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
HTTP_DURATION = Metric(
    "http_request_duration_seconds",
    Kind.HISTOGRAM,
    "Flask HTTP request duration in seconds",
    HTTP,
    buckets=_HTTP_LATENCY,
)
HTTP_REQUESTS = Metric(
    "http_request_total",
    Kind.COUNTER,
    "Total number of HTTP requests",
    ("method", "status"),
)
HTTP_EXCEPTIONS = Metric(
    "http_request_exceptions_total",
    Kind.COUNTER,
    "Total number of HTTP requests which resulted in an exception",
    ("method", "status"),
)

# --- ours: the build queue, seen from the API -------------------------------------------------------

BUILD_ENQUEUE = Metric(
    "image_factory_build_enqueue_total",
    Kind.COUNTER,
    "Builds asked for on cache misses, by what the queue did: enqueued (a new build), joined (one "
    "was queued or running), failed (a remembered failure answered), full (refused: the queue is at "
    "build.maxQueueLength), requeued (a build whose worker died, queued again).",
    ("outcome",),
)
CLIENTS_WAITING = Metric(
    "image_factory_build_waiting_clients",
    Kind.GAUGE,
    "Requests waiting for builds to finish now.",
)
CLIENT_WAIT = Metric(
    "image_factory_build_wait_seconds",
    Kind.HISTOGRAM,
    "Time requests waited for builds (until they finished, failed or build.waitTimeout passed).",
    buckets=(0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0, 1800.0),
)

# --- ours: the asset cache ---------------------------------------------------------------------------

CACHE_HITS = Metric(
    "image_factory_asset_cache_hits_total",
    Kind.COUNTER,
    "Asset lookups answered from the cache (hit ratio: hits / (hits + misses)).",
)
CACHE_MISSES = Metric(
    "image_factory_asset_cache_misses_total",
    Kind.COUNTER,
    "Asset lookups that found nothing usable in the cache (the asset is built).",
)
CACHE_ERRORS = Metric(
    "image_factory_asset_cache_errors_total",
    Kind.COUNTER,
    "Asset cache operations that failed because a backend (registry, S3) did not answer or refused.",
    ("operation",),
)
S3_FALLBACKS = Metric(
    "image_factory_s3_fallbacks_total",
    Kind.COUNTER,
    "Cached assets served from the registry because their S3 object was missing, stale or unreadable.",
    ("reason",),
)

# --- ours: builds, seen from the workers -------------------------------------------------------------

BUILDS_FINISHED = Metric(
    "image_factory_builds_finished_total",
    Kind.COUNTER,
    "Build tasks finished, by outcome: built, cached (published before the task ran), elsewhere "
    "(another worker holds the build), failed, retry (a transient failure, tried again), handed_back "
    "(its worker was stopping; queued again).",
    ("outcome",),
)
BUILDS_FAILED = Metric(
    "image_factory_builds_failed_total",
    Kind.COUNTER,
    "Builds that failed for good, by reason: invalid (the request cannot be built), "
    "source_verification, unavailable (a backend stayed down through every retry), timeout, internal.",
    ("reason",),
)
BUILDS_RUNNING = Metric(
    "image_factory_builds_running",
    Kind.GAUGE,
    "Builds running the imager now (holding a cluster build slot).",
)
SOURCE_VERIFICATION_FAILURES = Metric(
    "image_factory_source_verification_failures_total",
    Kind.COUNTER,
    "Source images refused by signature verification: unsigned, or signed by no one trusted.",
    ("reason",),
)
WORKER_HEARTBEAT = Metric(
    "image_factory_worker_heartbeat_timestamp_seconds",
    Kind.GAUGE,
    "When this worker last recorded its heartbeat in Redis (Unix time).",
    gauge_mode="livemax",
)

# --- ours: the cluster, read from Redis when an API process is scraped -------------------------------

BUILD_QUEUE_LENGTH = Metric(
    "image_factory_build_queue_length",
    Kind.GAUGE,
    "Builds queued and not yet running, cluster-wide.",
    collected=True,
)
BUILD_QUEUE_OLDEST = Metric(
    "image_factory_build_queue_oldest_age_seconds",
    Kind.GAUGE,
    "How long the oldest queued build has been waiting (0 when the queue is empty).",
    collected=True,
)
BUILD_SLOTS_IN_USE = Metric(
    "image_factory_build_slots_in_use",
    Kind.GAUGE,
    "Cluster build slots held by running builds.",
    collected=True,
)
BUILD_SLOTS_LIMIT = Metric(
    "image_factory_build_slots_limit",
    Kind.GAUGE,
    "Cluster build slots (build.maxConcurrency).",
    collected=True,
)
WORKERS_LIVE = Metric(
    "image_factory_workers_live",
    Kind.GAUGE,
    "Workers whose heartbeat is recent, cluster-wide.",
    collected=True,
)
CLUSTER_STATE_UP = Metric(
    "image_factory_cluster_state_up",
    Kind.GAUGE,
    "Whether the cluster state (queue, slots, workers) could be read from Redis for this scrape (1 or 0).",
    collected=True,
)

DEFINITIONS: tuple[Metric, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Metric))
#: The names prometheus-flask-exporter chose, kept unprefixed for the dashboards and alerts that use them.
FLASK_EXPORTER = frozenset({HTTP_DURATION.name, HTTP_REQUESTS.name, HTTP_EXCEPTIONS.name})
