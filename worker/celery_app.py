"""Celery app built from the same Config as the API (thin; the wiring is in worker.app).

For ``celery -A worker.celery_app``: configuration comes from ``IMAGE_FACTORY_CONFIG``.
"""

from common.config import load_config_from_environment
from worker.app import create_celery

app = create_celery(load_config_from_environment())
