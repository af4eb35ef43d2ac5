"""The web UI: the factory.talos.dev wizard, server-rendered (``routes.py``, ``templates/``,
``static/``, ``translations/``), registered by :func:`register`."""

from __future__ import annotations

from flask import Flask

from api.ui import i18n
from api.ui.routes import bp


def register(app: Flask) -> None:
    i18n.init_babel(app)
    app.register_blueprint(bp)
