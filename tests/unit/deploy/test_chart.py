"""The Helm chart rendered, linted and schema-checked by Helm itself, for the default and a production-like
values file, and its README's values table regenerated from values.yaml.

Helm is the Helm v4 Go SDK through helm-python-sdk (ctypes over ``libhelm_c.so``): its render enforces
``values.schema.json`` as ``helm install`` does. Every rendered object is checked against the Kubernetes
API's OpenAPI schemas with kubernetes-validate (strict: unknown fields fail) for the oldest and a recent
Kubernetes the chart targets; custom resources (KEDA, Prometheus Operator, Gateway API) have no schema
there and are listed explicitly. One render takes about 0.1 s; the module about 5 s.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.config import load_config
from devstack import chart_docs
from tests.paths import REPO_ROOT

helm = pytest.importorskip("helm_python")  # a test dependency (pyproject's ``test`` extra)

CHART = REPO_ROOT / "deploy" / "helm" / "image-factory"
PRODUCTION = CHART / "ci" / "production-values.yaml"
#: The oldest Kubernetes with every field the chart can emit (hostUsers: 1.25) and a recent one.
KUBE_VERSIONS = ("1.25.0", "1.35.0")
#: Objects of CRDs: no schema in kubernetes-validate, checked by the tests below instead.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule", "HTTPRoute"}
NAME = "factory"
FULL = f"{NAME}-image-factory"

Docs = list[dict[str, Any]]


@pytest.fixture(scope="module")
def signing_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem.decode()


@pytest.fixture(scope="module")
def render(signing_key: str) -> Callable[..., Docs]:
    chart = helm.Chart.load(str(CHART))

    def _render(values: dict[str, Any] | None = None, *, key: bool = True) -> Docs:
        merged: dict[str, Any] = {"cacheSigningKey": {"key": signing_key}} if key else {}
        merged.update(copy.deepcopy(values or {}))
        rendered: dict[str, str] = chart.render(merged, name=NAME, namespace="images", is_install=True)
        return [
            doc
            for path, text in sorted(rendered.items())
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    return _render


def _production() -> dict[str, Any]:
    data = yaml.safe_load(PRODUCTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _one(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"{kind}/{name}: {len(found)} found among {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )
    return found[0]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(deployment).get("env", [])}


# --------------------------------------------------------------------------------------------------
# Helm lint and the Kubernetes API schemas


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", [None, PRODUCTION], ids=["defaults", "production"])
def test_lint_strict_is_clean(signing_key: str, values_file: Path | None, kube_version: str) -> None:
    values = _production() if values_file else {"cacheSigningKey": {"key": signing_key}}
    result = helm.lint(str(CHART), values, strict=True, kube_version=f"v{kube_version}")
    assert result["errors"] == []
    # Only Helm's informational "icon is recommended" (severity 1) may remain.
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", [None, PRODUCTION], ids=["defaults", "production"])
def test_every_rendered_object_is_valid_kubernetes(
    render: Callable[..., Docs], values_file: Path | None, kube_version: str
) -> None:
    docs = render(_production() if values_file else None)
    checked = set()
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, kube_version, strict=True)
        checked.add(doc["kind"])
    expected = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget"}
    if values_file:
        expected |= {"NetworkPolicy", "Ingress"}
    else:
        expected |= {"Secret"}
    assert expected <= checked, sorted(expected - checked)


def test_kubernetes_validate_is_strict() -> None:
    # Guards the test above: an unknown field and a wrong type are refused.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {**pod, "spec": {"containers": [], "replicas": 2}}, KUBE_VERSIONS[0], strict=True
        )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"replicas": "3"},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[1], strict=True)


# --------------------------------------------------------------------------------------------------
# values.schema.json


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 3}, "additional properties 'replicaCont' not allowed"),
        ({"worker": {"autoscalling": {"enabled": True}}}, "additional properties 'autoscalling' not allowed"),
        ({"redis": {"password": "hunter2"}}, "/redis/password"),
        ({"replicaCount": "three"}, "/replicaCount"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        (
            {"worker": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
            "targetCPUUtilizationPercentage",
        ),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(
    render: Callable[..., Docs], values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmError, match="values don't meet the specifications of the schema") as caught:
        render(values)
    assert message in str(caught.value)


def test_schema_leaves_free_form_sections_open(render: Callable[..., Docs]) -> None:
    docs = render(
        {"podAnnotations": {"any/thing": "x"}, "strategy": {"type": "Recreate"}, "global": {"a": 1}}
    )
    api = _one(docs, "Deployment", f"{FULL}-api")
    assert api["spec"]["template"]["metadata"]["annotations"]["any/thing"] == "x"


# --------------------------------------------------------------------------------------------------
# Upstream's top-level values drive the API Deployment


def test_top_level_replicas_strategy_and_probes_apply_to_the_api(render: Callable[..., Docs]) -> None:
    probe = {"httpGet": {"path": "/healthz"}, "periodSeconds": 3}
    docs = render(
        {
            "replicaCount": 5,
            "strategy": {"type": "Recreate"},
            "livenessProbe": probe,
            "readinessProbe": {"tcpSocket": {"port": "http"}},
        }
    )
    api = _one(docs, "Deployment", f"{FULL}-api")
    assert api["spec"]["replicas"] == 5
    assert api["spec"]["strategy"] == {"type": "Recreate"}
    container = _container(api)
    # Helm merges overrides into the defaults; another kind of probe replaces the default httpGet.
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
        "periodSeconds": 3,
        "initialDelaySeconds": 5,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }
    assert container["readinessProbe"] == {
        "tcpSocket": {"port": "http"},
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "timeoutSeconds": 10,
        "failureThreshold": 3,
    }
    worker = _one(docs, "Deployment", f"{FULL}-worker")
    assert worker["spec"]["replicas"] == 1 and worker["spec"]["strategy"]["type"] == "RollingUpdate"


def test_null_probes_mean_no_probes(render: Callable[..., Docs]) -> None:
    api = _one(render({"livenessProbe": None, "readinessProbe": None}), "Deployment", f"{FULL}-api")
    assert "livenessProbe" not in _container(api) and "readinessProbe" not in _container(api)


# --------------------------------------------------------------------------------------------------
# Scaling: worker autoscaling, disruption budgets, network policies, scratch space


def test_defaults_have_fixed_worker_replicas_and_budgets(render: Callable[..., Docs]) -> None:
    docs = render()
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject", "NetworkPolicy"}
    for component in ("api", "worker"):
        pdb = _one(docs, "PodDisruptionBudget", f"{FULL}-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        deployment = _one(docs, "Deployment", f"{FULL}-{component}")
        assert (
            pdb["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
    worker = _one(docs, "Deployment", f"{FULL}-worker")
    tmp = next(v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"sizeLimit": "20Gi"}


def test_hpa_on_cpu_when_keda_is_off(render: Callable[..., Docs]) -> None:
    docs = render({"worker": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 7}}})
    hpa = _one(docs, "HorizontalPodAutoscaler", f"{FULL}-worker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{FULL}-worker",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80},
    }
    assert "replicas" not in _one(docs, "Deployment", f"{FULL}-worker")["spec"]  # left to the HPA
    assert not [d for d in docs if d["kind"] == "ScaledObject"]


def test_keda_scales_on_the_bundled_redis_queue(render: Callable[..., Docs]) -> None:
    docs = render({"worker": {"autoscaling": {"enabled": True, "minReplicas": 0, "keda": {"enabled": True}}}})
    scaled = _one(docs, "ScaledObject", f"{FULL}-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {"name": f"{FULL}-worker"}
    assert scaled["spec"]["minReplicaCount"] == 0
    (trigger,) = scaled["spec"]["triggers"]
    # Celery's queue "default" (worker/app.py) is a Redis list in the database of the factory's URL.
    assert trigger == {
        "type": "redis",
        "metadata": {
            "address": f"{FULL}-redis.images.svc:6379",
            "listName": "default",
            "listLength": "2",
            "databaseIndex": "0",
            "enableTLS": "false",
        },
    }
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "TriggerAuthentication")]


def test_production_values(render: Callable[..., Docs]) -> None:
    docs = render(_production(), key=False)
    assert not [d for d in docs if d["kind"] == "Secret"]  # the signing key is an existing Secret
    scaled = _one(docs, "ScaledObject", f"{FULL}-worker")
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert (metadata["address"], metadata["databaseIndex"], metadata["enableTLS"]) == (
        "redis.platform.svc:6380",
        "2",
        "true",
    )
    auth = _one(docs, "TriggerAuthentication", f"{FULL}-worker-redis")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "password", "name": "image-factory-redis", "key": "password"}
    ]
    assert scaled["spec"]["triggers"][0]["authenticationRef"] == {"name": f"{FULL}-worker-redis"}
    assert _one(docs, "PodDisruptionBudget", f"{FULL}-api")["spec"] == {
        "minAvailable": 2,
        "selector": {
            "matchLabels": _one(docs, "Deployment", f"{FULL}-api")["spec"]["selector"]["matchLabels"]
        },
    }
    api = _one(docs, "Deployment", f"{FULL}-api")
    assert api["spec"]["replicas"] == 3 and api["spec"]["template"]["spec"]["hostUsers"] is False
    for deployment in (api, _one(docs, "Deployment", f"{FULL}-worker")):
        env = _env(deployment)
        assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "image-factory-redis", "key": "password"}}
        assert (
            env["IF_REDIS_URL"]
            == "rediss://:$(REDIS_PASSWORD)@redis.platform.svc:6380/2?ssl_cert_reqs=required"
        )
        # Kubernetes expands $(VAR) only from variables defined earlier in the list.
        names = list(env)
        assert names.index("REDIS_PASSWORD") < names.index("IF_REDIS_URL")
    worker = _one(docs, "Deployment", f"{FULL}-worker")
    # Grace period follows config.build.shutdownGracePeriod (10m) plus the 30 s margin.
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 630
    tmp = next(v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"] == {"sizeLimit": "40Gi"}
    configmap = _one(docs, "ConfigMap", FULL)
    assert "redis" not in yaml.safe_load(configmap["data"]["config.yaml"])  # the URL is in the env only
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {f"{FULL}-api", f"{FULL}-worker"}  # no bundled Redis to protect
    api_rules = policies[f"{FULL}-api"]["ingress"]
    assert api_rules[0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert api_rules[0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert policies[f"{FULL}-worker"]["ingress"] == [
        {
            "ports": [{"port": 2122, "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        }
    ]


def test_network_policy_protects_the_bundled_redis(render: Callable[..., Docs]) -> None:
    docs = render({"networkPolicy": {"enabled": True}})
    redis = _one(docs, "NetworkPolicy", f"{FULL}-redis")["spec"]
    assert redis["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    sources = [
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in redis["ingress"][0]["from"]
    ]
    assert sources == ["api", "worker"]
    api = _one(docs, "NetworkPolicy", f"{FULL}-api")["spec"]
    # Anyone may reach the API and (config.metrics.addr defaults to :2122) the metrics port.
    assert api["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}]},
        {"ports": [{"port": 2122, "protocol": "TCP"}]},
    ]


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"enabled": False, "existingSecret": "redis-url"}, "keda needs the Redis address"),
        (
            {"enabled": False, "url": "redis://:pw@redis:6379/0"},
            "keda needs the Redis password in redis.password.existingSecret",
        ),
    ],
)
def test_keda_without_a_readable_redis_fails_clearly(
    render: Callable[..., Docs], redis: dict[str, Any], message: str
) -> None:
    values = {"redis": redis, "worker": {"autoscaling": {"enabled": True, "keda": {"enabled": True}}}}
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("redis", "expected"),
    [
        ({"url": "redis://cache:6379/1"}, "redis://cache:6379/1"),
        (
            {"url": "redis://:pw@cache:6379/1", "tls": {"enabled": True}},
            "rediss://:pw@cache:6379/1?ssl_cert_reqs=required",
        ),
        ({"url": "rediss://cache/0?ssl_cert_reqs=optional"}, "rediss://cache/0?ssl_cert_reqs=optional"),
    ],
)
def test_external_redis_url_in_the_config(
    render: Callable[..., Docs], redis: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    docs = render({"redis": {"enabled": False, **redis}})
    assert not [d for d in docs if d["metadata"]["name"] == f"{FULL}-redis"]
    path = tmp_path / "config.yaml"
    path.write_text(_one(docs, "ConfigMap", FULL)["data"]["config.yaml"], encoding="utf-8")
    assert load_config([str(path)], environ={}).redis.url == expected


def test_password_secret_and_url_credentials_exclude_each_other(render: Callable[..., Docs]) -> None:
    redis = {"enabled": False, "url": "redis://:pw@cache:6379/0", "password": {"existingSecret": "s"}}
    with pytest.raises(helm.HelmError, match="must not carry credentials"):
        render({"redis": redis})


# --------------------------------------------------------------------------------------------------
# The README's values table


def test_readme_values_table_is_generated_from_values_yaml() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    table = chart_docs.render_table((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert chart_docs.update_readme(readme, table) == readme, "stale: run python -m devstack.chart_docs"
    assert chart_docs.main(["--check"]) == 0


def test_values_table_follows_the_comments() -> None:
    text = (
        "# -- Number of pods\n"
        "replicaCount: 2\n"
        "plain: {}\n"
        "# -- A section\n"
        "# over two lines\n"
        "section:\n"
        "  inner: 1  # undescribed, under a described parent: not listed\n"
        "  # -- Described child\n"
        "  child: [a]\n"
        "  # - commented example\n"
        "open:\n"
        "  leaf: x\n"
    )
    assert chart_docs.render_table(text).splitlines()[2:] == [
        "| replicaCount | int | `2` | Number of pods |",
        "| plain | object | `{}` |  |",
        '| section | object | `{"inner":1,"child":["a"]}` | A section over two lines |',
        '| section.child | list | `["a"]` | Described child |',
        '| open.leaf | string | `"x"` |  |',
    ]
    every_key = chart_docs.parse_descriptions((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert every_key["worker.autoscaling.keda.queueLength"].startswith("Queued builds per worker pod")


# --------------------------------------------------------------------------------------------------
# Seed 000, upstream's chart README (tests/fixtures/helm-chart-readme.md): its examples still work

UPSTREAM_README = REPO_ROOT / "tests" / "fixtures" / "helm-chart-readme.md"
#: The README's one YAML block that is not chart values: a Talos machine configuration patch.
NOT_VALUES = {"cluster", "machine"}


def _upstream_examples() -> list[dict[str, Any]]:
    text = UPSTREAM_README.read_text(encoding="utf-8")
    blocks = [yaml.safe_load(block.split("```", 1)[0]) for block in text.split("```yaml\n")[1:]]
    return [block for block in blocks if not set(block) <= NOT_VALUES]


def _is_subset(part: Any, whole: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and _is_subset(v, whole[k]) for k, v in part.items()
        )
    return bool(part == whole)


def _pods(docs: Docs) -> list[dict[str, Any]]:
    return [_one(docs, "Deployment", f"{FULL}-{c}")["spec"]["template"]["spec"] for c in ("api", "worker")]


def _check_example(example: dict[str, Any], docs: Docs) -> set[str]:
    """Assert what the upstream README says ``example`` does; the top-level keys checked."""
    checked: set[str] = set()
    if "config" in example:
        config = yaml.safe_load(_one(docs, "ConfigMap", FULL)["data"]["config.yaml"])
        assert _is_subset(example["config"], config), (example["config"], config)
        checked.add("config")
    if "cacheSigningKey" in example:
        wanted = example["cacheSigningKey"]
        secret_name = wanted.get("existingSecret") or f"{FULL}-cache-signing-key"
        if "key" in wanted:
            stored = _one(docs, "Secret", secret_name)["stringData"]["cache-signing.key"]
            assert stored.strip() == wanted["key"].strip()
        for pod in _pods(docs):
            volume = next(v for v in pod["volumes"] if v["name"] == "cache-signing-key")
            assert volume["secret"]["secretName"] == secret_name
            assert volume["secret"]["items"] == [{"key": "cache-signing.key", "path": "cache-signing.key"}]
        checked.add("cacheSigningKey")
    for role, ingress in example.get("ingress", {}).items():
        obj = _one(docs, "Ingress", f"{FULL}-{role}")
        assert obj["spec"]["ingressClassName"] == ingress["className"]
        assert obj["spec"]["rules"][0]["host"] == ingress["host"]
        assert obj["spec"]["tls"] == ingress["tls"]
        assert ingress["annotations"].items() <= obj["metadata"]["annotations"].items()
        checked.add("ingress")
    for role, route in example.get("gatewayApi", {}).items():
        obj = _one(docs, "HTTPRoute", f"{FULL}-{role}")
        assert obj["spec"]["hostnames"] == route["hostnames"]
        assert obj["spec"]["parentRefs"] == route["parentRefs"]
        checked.add("gatewayApi")
    if "hostUsers" in example:
        assert all(pod["hostUsers"] is example["hostUsers"] for pod in _pods(docs))
        checked.add("hostUsers")
    if "securityContext" in example:
        for pod in _pods(docs):
            assert pod["containers"][0]["securityContext"] == example["securityContext"]
        checked.add("securityContext")
    if "service" in example:
        monitor = example["service"]["metrics"]["serviceMonitor"]
        obj = _one(docs, "ServiceMonitor", FULL)
        assert obj["metadata"]["namespace"] == monitor["namespace"]
        assert monitor["selector"].items() <= obj["metadata"]["labels"].items()  # what Prometheus selects by
        assert {e["interval"] for e in obj["spec"]["endpoints"]} == {monitor["interval"]}
        checked.add("service")
    if "extraVolumes" in example:
        for pod in _pods(docs):
            assert example["extraVolumes"][0] in pod["volumes"]
            assert example["extraVolumeMounts"][0] in pod["containers"][0]["volumeMounts"]
        checked |= {"extraVolumes", "extraVolumeMounts"}
    return checked


def test_upstream_readme_examples_render_as_documented(render: Callable[..., Docs]) -> None:
    examples = _upstream_examples()
    assert len(examples) == 17  # every YAML block of the README but the Talos machine patch
    for example in examples:
        docs = render(example, key="key" not in example.get("cacheSigningKey", {}))
        # The objects the examples change (the others are validated by the tests above).
        for doc in (d for d in docs if d["kind"] in ("Deployment", "Ingress")):
            kubernetes_validate.validate(doc, KUBE_VERSIONS[1], strict=True)
        assert _check_example(example, docs) == set(example), example


def test_upstream_top_level_defaults_drive_the_api(render: Callable[..., Docs]) -> None:
    # Upstream's values table: replicaCount 1, strategy Recreate, empty probes.
    rows = {}
    for line in UPSTREAM_README.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in {"replicaCount", "strategy", "livenessProbe", "readinessProbe"}:
            rows[cells[0]] = yaml.safe_load(cells[2].strip("`"))
    assert rows == {
        "replicaCount": 1,
        "strategy": {"type": "Recreate"},
        "livenessProbe": {},
        "readinessProbe": {},
    }
    api = _one(
        render({"replicaCount": rows["replicaCount"], "strategy": rows["strategy"]}),
        "Deployment",
        f"{FULL}-api",
    )
    assert api["spec"]["replicas"] == 1
    assert api["spec"]["strategy"] == {"type": "Recreate"}  # no rollingUpdate left over from our default
    kubernetes_validate.validate(api, KUBE_VERSIONS[0], strict=True)
