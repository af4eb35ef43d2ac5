"""The contract between API and workers: the build task's name, its queue, and the broker settings
both sides must agree on. The API publishes by name and never imports the worker's code."""

from __future__ import annotations

from typing import Any

from common.config import Config

BUILD_TASK = "image_factory.build"
BUILD_QUEUE = "builds"


def broker_settings(config: Config) -> dict[str, Any]:
    """Celery settings for publishing to, and consuming from, the build queue."""
    return {
        "broker_url": config.redis.url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "task_routes": {BUILD_TASK: {"queue": BUILD_QUEUE}},
        # Builds are long: a message stays unacked while it runs, so Redis must not hand it to
        # another worker before the longest build could have finished. Killed builds are found
        # sooner, by their heartbeat (common.builds.state), and queued again by their waiters.
        "broker_transport_options": {"visibility_timeout": int(config.build.timeout.total_seconds()) + 600},
    }
