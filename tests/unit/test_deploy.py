"""Structural checks of the deployment artefacts: Helm chart, docker-compose stack and Dockerfile.

No helm binary or Docker engine is needed. The chart is also rendered when the optional, test-only
``helm-python-sdk`` package (the Helm Go SDK over ctypes) happens to be installed, and the rendered
core objects are schema-checked when ``kubernetes-validate`` is installed too. Neither is a project
dependency.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import ConfigError, load_config, resolve_config
from tests.paths import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "image-factory"
TEMPLATES = CHART / "templates"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"

#: `.Values.a.b` (also `$.Values…` and `$ctx.Values…`): the dotted path after `.Values`.
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
#: `.component.x` inside helpers that receive `.Values.api` or `.Values.worker`.
COMPONENT_REF = re.compile(r"\.component\.([A-Za-z_][A-Za-z0-9_]*)")
#: Below these keys anything goes (passed through verbatim), so paths are not checked further.
FREE_FORM = {"config"}
#: A commented-out YAML key (`# key: value`, `#   key:`) or list item in values.yaml.
COMMENTED_KEY = re.compile(r"^(?P<indent>\s*)# (?P<rest>\s*(?:[A-Za-z][A-Za-z0-9]*:(?: |$)|- ).*)$")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    data = _load_yaml(CHART / "values.yaml")
    assert isinstance(data, dict)
    return data


def _template_texts() -> dict[str, str]:
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(TEMPLATES.iterdir()) if p.is_file()}
    assert texts, f"no templates under {TEMPLATES}"
    return texts


def _load(config: dict[str, Any], tmp_path: Path, name: str = "config.yaml") -> Any:
    """The config loaded as the factory would; our own chart carries no key without effect."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = resolve_config([str(path)], environ={})
    assert loaded.warnings == []
    return loaded.config


# --------------------------------------------------------------------------------------------------
# Helm chart


def test_chart_yaml() -> None:
    chart = _load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "image-factory"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "v0.1.0"


def test_expected_templates_exist() -> None:
    names = set(_template_texts())
    expected = {
        "_helpers.tpl",
        "configmap.yaml",
        "secret.yaml",
        "deployment-api.yaml",
        "deployment-worker.yaml",
        "service.yaml",
        "redis.yaml",
        "ingress.yaml",
        "httproute.yaml",
        "servicemonitor.yaml",
        "prometheusrule.yaml",
        "serviceaccount.yaml",
        "NOTES.txt",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"


def test_values_has_upstream_and_own_sections(values: dict[str, Any]) -> None:
    upstream = {
        "image", "imagePullSecrets", "args", "config", "cacheSigningKey", "serviceAccount",
        "podSecurityContext", "securityContext", "hostUsers", "resources", "nodeSelector",
        "tolerations", "affinity", "service", "ingress", "gatewayApi", "env", "envFrom",
        "extraVolumes", "extraVolumeMounts", "extraObjects",
    }  # fmt: skip
    ours = {"api", "worker", "redis"}
    assert upstream | ours <= set(values), f"missing: {sorted(upstream | ours - set(values))}"
    assert set(values["cacheSigningKey"]) == {"existingSecret", "key"}
    # Upstream's top-level replicaCount, strategy and probes are the API's (tests/unit/deploy/test_chart.py).
    assert {"replicaCount", "strategy", "livenessProbe", "readinessProbe"} <= set(values)
    assert values["strategy"]["type"] == "RollingUpdate"
    assert values["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert values["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"replicaCount", "concurrency", "tmpSizeLimit", "resources"} <= set(values["worker"])
    assert {"enabled", "url"} <= set(values["redis"])
    assert {"serviceMonitor", "rules"} <= set(values["service"]["metrics"])


def _resolve(values: dict[str, Any], dotted: str) -> str | None:
    """None when every segment of ``dotted`` exists in values.yaml, else the first missing prefix."""
    node: Any = values
    walked: list[str] = []
    for part in dotted.strip(".").split("."):
        walked.append(part)
        if not isinstance(node, dict) or part not in node:
            return ".".join(walked)
        if len(walked) == 1 and part in FREE_FORM:
            return None
        node = node[part]
    return None


def test_every_values_reference_in_templates_exists(values: dict[str, Any]) -> None:
    refs: dict[str, set[str]] = {}
    for name, text in _template_texts().items():
        for match in VALUES_REF.finditer(text):
            refs.setdefault(match.group(1), set()).add(name)
    assert len(refs) > 40, f"suspiciously few .Values references found: {sorted(refs)}"
    missing = {
        f".Values{path} (in {', '.join(sorted(files))}): no {gap!r}"
        for path, files in refs.items()
        if (gap := _resolve(values, path)) is not None
    }
    assert not missing, "\n".join(sorted(missing))


def test_component_references_exist_for_api_and_worker(values: dict[str, Any]) -> None:
    keys = {m.group(1) for text in _template_texts().values() for m in COMPONENT_REF.finditer(text)}
    assert keys, "no .component.x references found"
    for component in ("api", "worker"):
        absent = sorted(keys - set(values[component]))
        assert not absent, f"{component} lacks {absent}"


def test_ingress_and_gateway_roles_have_the_same_keys(values: dict[str, Any]) -> None:
    ingress_keys = {"enabled", "annotations", "labels", "className", "host", "tls"}
    gateway_keys = {"enabled", "annotations", "labels", "parentRefs", "hostnames"}
    for role in ("ui", "pxe"):
        assert ingress_keys <= set(values["ingress"][role]), role
        assert gateway_keys <= set(values["gatewayApi"][role]), role


def test_values_config_is_a_valid_factory_config(values: dict[str, Any], tmp_path: Path) -> None:
    config = values["config"]
    loaded = _load(config, tmp_path)
    assert loaded.cache.signingKeyPath == "/etc/image-factory/keys/cache-signing.key"
    # What the chart's ConfigMap holds: the same, plus redis.url.
    url = "redis://factory-image-factory-redis.default.svc:6379/0"
    assert _load({**config, "redis": {"url": url}}, tmp_path, "merged.yaml").redis.url == url


def _uncommented_config_block(text: str) -> str:
    """The `config:` block of values.yaml with its commented-out example keys uncommented."""
    lines = text.splitlines()
    start = lines.index("config:")
    block = ["config:"]
    for line in lines[start + 1 :]:
        if line and not line[0].isspace() and not line.startswith("#"):
            break  # next top-level key
        if line.startswith("#"):
            continue  # top-level comment between sections
        match = COMMENTED_KEY.match(line)
        block.append(match.group("indent") + match.group("rest") if match else line)
    return "\n".join(block) + "\n"


def test_documented_but_commented_config_keys_are_valid(tmp_path: Path) -> None:
    block = yaml.safe_load(_uncommented_config_block((CHART / "values.yaml").read_text(encoding="utf-8")))
    config = block["config"]
    # The examples must have been uncommented, not just the active keys re-read.
    for section in ("build", "http", "metrics", "secureBoot", "containerSignature"):
        assert section in config, f"commented example for {section!r} not found"
    assert "core" in config["artifacts"] and "s3" in config["cache"]
    _load(config, tmp_path)


def test_unknown_config_key_is_rejected(tmp_path: Path) -> None:
    # Guards the two tests above: loading must really refuse keys it does not know, and warn about
    # upstream's keys that do nothing here (the upstream chart README's cache.oci.enabled).
    with pytest.raises(ConfigError, match=r"did you mean 'cache\.oci\.registry'"):
        _load({"cache": {"oci": {"registy": "r"}}}, tmp_path)
    with pytest.raises(AssertionError):
        _load({"cache": {"oci": {"enabled": True}}}, tmp_path)


def test_helm_render(tmp_path: Path) -> None:
    import helm_python as helm  # helm-python-sdk, a test dependency (pyproject's ``test`` extra)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    chart = helm.Chart.load(str(CHART))
    rendered: dict[str, str] = chart.render(
        {"cacheSigningKey": {"key": key.decode()}}, name="factory", namespace="images", is_install=True
    )
    docs = [
        doc
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    for kind, name in [
        ("Deployment", "factory-image-factory-api"),
        ("Deployment", "factory-image-factory-worker"),
        ("Deployment", "factory-image-factory-redis"),
        ("Service", "factory-image-factory"),
        ("Secret", "factory-image-factory-cache-signing-key"),
    ]:
        assert (kind, name) in kinds
    if importlib.util.find_spec("kubernetes_validate") is not None:  # also optional and test-only
        import kubernetes_validate

        for doc in docs:
            if doc["apiVersion"].startswith(("v1", "apps/", "networking.k8s.io/")):
                kubernetes_validate.validate(doc, "1.30.0", strict=True)
    configmap = next(doc for doc in docs if doc["kind"] == "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
    assert load_config([str(path)], environ={}).redis.url.startswith("redis://factory-image-factory-redis.")

    with pytest.raises(helm.HelmError):
        chart.render({}, name="factory", namespace="images")  # no cache signing key


# --------------------------------------------------------------------------------------------------
# docker-compose and Dockerfile


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


def test_compose_services(compose: dict[str, Any]) -> None:
    # Brought up for real by tests/integration/test_compose.py; here the shape only.
    services = compose["services"]
    assert set(services) == {"redis", "registry", "s3", "api-1", "api-2", "worker-1", "worker-2"}
    assert services["redis"]["image"] == "${REDIS_IMAGE:-docker.io/library/redis:7}"
    assert services["registry"]["image"] == "${REGISTRY_IMAGE:-docker.io/library/registry:2}"
    assert "${REGISTRY_PORT:-5000}:5000" in services["registry"]["ports"]
    assert services["api-1"]["ports"] == ["${API1_PORT:-8080}:8080"]
    assert services["api-2"]["ports"] == ["${API2_PORT:-8081}:8080"]
    for name in ("api-1", "api-2", "worker-1", "worker-2"):
        service = services[name]
        assert set(service["depends_on"]) == {"redis", "registry", "s3"}
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["command"] == ["--config", "/config.yaml", name.split("-")[0]]
        assert service["image"] == services["api-1"]["image"]


def _mounted_config(service: dict[str, Any]) -> Path:
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == "/config.yaml":
            return (REPO_ROOT / source).resolve()
    raise AssertionError(f"no /config.yaml mount in {service['volumes']}")


def test_compose_config_file_loads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    path = _mounted_config(services["api-1"])
    assert path == _mounted_config(services["worker-2"])
    assert path == REPO_ROOT / "deploy" / "compose" / "config.yaml"
    config = load_config([str(path)], environ={})
    assert config.redis.url == "redis://redis:6379/0"
    assert config.containerSignature.disabled is True
    for repo in (config.artifacts.schematic, config.artifacts.installer.internal, config.cache.oci):
        assert (repo.registry, repo.insecure) == ("registry:5000", True)
    assert config.cache.signingKeyPath == "/etc/image-factory/keys/cache-signing.key"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line[0].isspace()]
    instructions = [i for i in instructions if i and not i[0].startswith("#")]
    froms = [rest[0] for op, *rest in instructions if op == "FROM"]
    # Multi-stage, both stages on the BASE_IMAGE build argument (a public Debian by default).
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    assert ["ARG", "BASE_IMAGE=docker.io/library/debian:bookworm-slim"] in instructions
    users = [rest[0] for op, *rest in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    # The project goes into the build stage's virtualenv, which the final stage copies.
    assert "/opt/image-factory/bin/pip install --no-deps --no-build-isolation ." in text
    assert ["ENTRYPOINT", '["image-factory"]'] in instructions
