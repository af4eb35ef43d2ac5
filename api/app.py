"""The Flask application factory: one app per process, built from one Config."""

from __future__ import annotations

from flask import Flask

from api.cors import CORSMiddleware
from api.errors import register_error_handlers
from api.middleware import register_middleware
from api.routes import health, meta, schematics, talosctl
from common.config import Config
from common.services import Services, build_services


def create_app(config: Config, services: Services | None = None) -> Flask:
    app = Flask("image-factory")
    app.config["MAX_CONTENT_LENGTH"] = config.http.maxRequestBodySize
    app.extensions["factory"] = services or build_services(config)
    register_middleware(app)
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(schematics.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(talosctl.bp)
    app.wsgi_app = CORSMiddleware(app.wsgi_app, config.http.allowedOrigins)  # type: ignore[method-assign]
    return app
