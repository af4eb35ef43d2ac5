"""The Helm chart's terminationGracePeriodSeconds follow the configured shutdown grace periods.

Rendered with helm-python-sdk (the Helm Go SDK over ctypes, a test dependency), as in test_deploy.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.config.options import BuildOptions, HTTPOptions
from tests.paths import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "image-factory"
API_MARGIN = 5  # gunicorn stops its processes
WORKER_MARGIN = 30  # tools stopped, scratch removed, tasks re-published, Celery's warm shutdown ends


@pytest.fixture(scope="module")
def chart() -> Any:
    import helm_python as helm

    return helm.Chart.load(str(CHART))


@pytest.fixture(scope="module")
def signing_key() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )


def grace_periods(chart: Any, signing_key: str, config: dict[str, Any] | None = None) -> dict[str, int]:
    """terminationGracePeriodSeconds of the api and worker Deployments, rendered with ``config``."""
    values: dict[str, Any] = {"cacheSigningKey": {"key": signing_key}}
    if config is not None:
        # The chart's own config (schematic registry, signing key path) plus the test's sections.
        defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["config"]
        values["config"] = {**defaults, **config}
    rendered: dict[str, str] = chart.render(values, name="factory", namespace="images", is_install=True)
    found = {}
    for text in rendered.values():
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "Deployment":
                component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
                if component in ("api", "worker"):
                    found[component] = doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    return found


def test_defaults_follow_the_option_defaults(chart: Any, signing_key: str) -> None:
    http = math.ceil(HTTPOptions().shutdownGracePeriod.total_seconds())
    build = math.ceil(BuildOptions().shutdownGracePeriod.total_seconds())
    found = grace_periods(chart, signing_key)
    assert found["api"] == http + API_MARGIN == 65
    assert found["worker"] == build + WORKER_MARGIN == 330


@pytest.mark.parametrize(
    ("http", "build", "api_seconds", "worker_seconds"),
    [
        ("90s", "20m0s", 90, 1200),
        ("1m30s", "1h0m0s", 90, 3600),
        ("2.5s", "1.5m", 3, 90),  # fractions are rounded up
        ("500ms", "0s", 1, 0),
        ("0", "45s", 0, 45),
    ],
)
def test_configured_grace_periods_plus_margins(
    chart: Any, signing_key: str, http: str, build: str, api_seconds: int, worker_seconds: int
) -> None:
    found = grace_periods(
        chart, signing_key, {"http": {"shutdownGracePeriod": http}, "build": {"shutdownGracePeriod": build}}
    )
    assert found["api"] == api_seconds + API_MARGIN
    assert found["worker"] == worker_seconds + WORKER_MARGIN


def test_one_section_set_leaves_the_other_default(chart: Any, signing_key: str) -> None:
    found = grace_periods(chart, signing_key, {"build": {"shutdownGracePeriod": "10m"}})
    assert found == {"api": 65, "worker": 630}
