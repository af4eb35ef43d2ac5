"""gunicorn's graceful timeout follows http.shutdownGracePeriod, with our draining worker class."""

from __future__ import annotations

import pytest

from api.server import FactoryServer, GracefulThreadWorker
from common.config import load_config


@pytest.mark.parametrize(("grace", "seconds"), [("45s", 45), ("1m30s", 90), ("1.2s", 2), ("0s", 0)])
def test_the_graceful_timeout_is_the_shutdown_grace_period(grace: str, seconds: int) -> None:
    config = load_config([], environ={"IF_HTTP_SHUTDOWNGRACEPERIOD": grace})
    server = FactoryServer(config, "info")
    assert server.cfg.graceful_timeout == seconds
    assert server.cfg.worker_class is GracefulThreadWorker


def test_the_default_grace_period_is_a_minute() -> None:
    assert FactoryServer(load_config([], environ={}), "info").cfg.graceful_timeout == 60
