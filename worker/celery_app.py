"""Celery app built from the same Config as the API (thin; the wiring is in worker.app)."""

import os

from common.config import load_config
from worker.app import create_celery

app = create_celery(load_config([s for s in [os.environ.get("IMAGE_FACTORY_CONFIG", "")] if s]))
