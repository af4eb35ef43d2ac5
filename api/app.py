"""The Flask application factory: one app per process, built from one Config."""

from __future__ import annotations

from flask import Flask

from api import ui
from api.cached_redirects import CachedRedirects
from api.cors import CORSMiddleware
from api.errors import register_error_handlers
from api.metrics import http_metrics, route_pattern
from api.middleware import FactoryFlask, install
from api.routes import (
    builds,
    health,
    image,
    keys,
    meta,
    openapi,
    pxe,
    registry,
    schematics,
    secureboot,
    talosctl,
)
from common.builds.waiter import Waiter
from common.config import Config
from common.delivery.installers import InstallerImages
from common.delivery.service import Delivery
from common.services import Services, build_services


def create_app(config: Config, services: Services | None = None) -> Flask:
    app = FactoryFlask("image-factory")
    app.config["MAX_CONTENT_LENGTH"] = config.http.maxRequestBodySize
    svc = services or build_services(config)
    app.extensions["factory"] = svc
    waiters = config.http.maxWaiters or max(1, config.http.threads - 8)
    delivery = Delivery(svc, Waiter(svc.redis, svc.builds, waiters))
    app.extensions["delivery"] = delivery
    app.extensions["installers"] = InstallerImages(delivery)
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(schematics.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(talosctl.bp)
    app.register_blueprint(image.bp)
    app.register_blueprint(builds.bp)
    app.register_blueprint(pxe.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(secureboot.bp)
    app.register_blueprint(registry.bp)
    app.register_blueprint(openapi.bp)
    ui.register(app)  # the web UI: GET /, /ui/..., /llms.txt
    metrics = http_metrics(svc.metrics)
    # remembered cached assets' redirects without Flask (inside the middleware: logged and counted)
    image_rule = next(app.url_map.iter_rules("image.image")).rule
    app.wsgi_app = CachedRedirects(app.wsgi_app, delivery, route_pattern(image_rule), metrics)  # type: ignore[method-assign]
    install(app, metrics)  # request id, access line, HTTP metrics (if metrics.addr)
    app.wsgi_app = CORSMiddleware(app.wsgi_app, config.http.allowedOrigins)  # type: ignore[method-assign]
    return app
