"""The Helm chart's alert rules, rendered as a release would render them, under ``promtool``.

``promtool check rules`` validates the rendered group; ``promtool test rules`` runs the scenarios in
``tests/fixtures/prometheus-rules-test.yaml`` (queue backing up, build failures, cache errors, no
live worker, metrics down, ...). Every metric an alert reads must be one the factory exports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.metrics import DEFINITIONS
from devstack.services import ensure_system_packages
from tests.paths import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "image-factory"
RULES_TEST = REPO_ROOT / "tests" / "fixtures" / "prometheus-rules-test.yaml"
METRICS_ON = {
    "service": {"metrics": {"enabled": True, "serviceMonitor": {"enabled": True}, "rules": {"enabled": True}}}
}


def _render(values: dict[str, Any]) -> dict[str, str]:
    import helm_python as helm  # helm-python-sdk, a test dependency
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    chart = helm.Chart.load(str(CHART))
    rendered: dict[str, str] = chart.render(
        {"cacheSigningKey": {"key": key.decode()}, **values},
        name="factory",
        namespace="images",
        is_install=True,
    )
    return rendered


def _docs(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return [
        doc
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return _docs(_render(METRICS_ON))


@pytest.fixture(scope="module")
def groups(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = next(doc for doc in rendered if doc["kind"] == "PrometheusRule")
    found: list[dict[str, Any]] = rule["spec"]["groups"]
    return found


@pytest.fixture(scope="module")
def promtool() -> str:
    ensure_system_packages({"promtool": "prometheus"})
    found = shutil.which("promtool")
    assert found is not None
    return found


def test_rules_pass_promtool_unit_tests(groups: list[dict[str, Any]], promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(RULES_TEST, tmp_path / "test.yaml")
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_alert_has_a_scenario_and_reads_exported_metrics(groups: list[dict[str, Any]]) -> None:
    rules = groups[0]["rules"]
    alerts = {rule["alert"] for rule in rules}
    assert alerts == {
        "ImageFactoryMetricsDown",
        "ImageFactoryNoLiveWorkers",
        "ImageFactoryBuildQueueBackingUp",
        "ImageFactoryBuildQueueFull",
        "ImageFactoryBuildFailures",
        "ImageFactoryCacheErrors",
        "ImageFactorySourceVerificationFailures",
    }
    scenarios = yaml.safe_load(RULES_TEST.read_text())
    tested = {case["alertname"] for test in scenarios["tests"] for case in test["alert_rule_test"]}
    assert tested == alerts
    exported = {m.name for m in DEFINITIONS} | {"up"}
    for rule in rules:
        names = set(re.findall(r"\b(image_factory_\w+|up)\{", rule["expr"]))
        assert names and names <= exported, (rule["alert"], names - exported)


def test_worker_pods_are_scraped_too(rendered: list[dict[str, Any]]) -> None:
    services = {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] == "Service"}
    api, worker = services["factory-image-factory-metrics"], services["factory-image-factory-worker-metrics"]
    assert api["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert worker["spec"]["selector"]["app.kubernetes.io/component"] == "worker"
    monitor = next(doc for doc in rendered if doc["kind"] == "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    for service in (api, worker):
        assert wanted.items() <= service["metadata"]["labels"].items()
    deployment = next(
        d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-worker")
    )
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": 2122, "protocol": "TCP"} in ports


def test_rules_spec_replaces_the_default_alerts() -> None:
    own = [{"alert": "Mine", "expr": "vector(1)"}]
    values = {"service": {"metrics": {"enabled": True, "rules": {"enabled": True, "spec": own}}}}
    rule = next(doc for doc in _docs(_render(values)) if doc["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"][0]["rules"] == own


def test_metrics_disabled_in_the_config_drops_the_worker_port() -> None:
    values = {"config": {"metrics": {"addr": ""}}}
    docs = _docs(_render(values))
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-worker")
    )
    assert "ports" not in deployment["spec"]["template"]["spec"]["containers"][0]
