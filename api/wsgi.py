"""WSGI entrypoint for running gunicorn directly: ``gunicorn 'api.wsgi:app'``.

Configuration comes from ``IMAGE_FACTORY_CONFIG`` (the same source list ``--config`` takes),
after the always-applied ``env=IF_``.
"""

import os

from api.app import create_app
from api.server import brand_gunicorn
from common.config import load_config_from_environment
from common.logging import configure_logging

brand_gunicorn()
configure_logging(os.environ.get("IMAGE_FACTORY_LOG_LEVEL", "info"))
app = create_app(load_config_from_environment())
