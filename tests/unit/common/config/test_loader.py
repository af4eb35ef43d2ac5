"""Every source kind, ordering, env mapping of every key type, and every error path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from common.config import ConfigError, load_config, load_config_from_environment
from common.config.schema import key_index


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_sources() -> None:
    config = load_config([], environ={})
    assert config.http.httpListenAddr == ":8080"
    assert config.http.allowedOrigins == ["*"]
    assert config.build.maxConcurrency == 6
    assert config.artifacts.refreshInterval == timedelta(minutes=5)
    assert config.cache.oci.reference == "ghcr.io/siderolabs/image-factory/cache"
    assert config.cache.s3.presignedURLTTL == timedelta(hours=1)
    assert config.cache.schematic.negativeTTL == timedelta(seconds=30)


def test_default_env_prefix_is_always_applied() -> None:
    config = load_config([], environ={"IF_BUILD_MAXCONCURRENCY": "3"})
    assert config.build.maxConcurrency == 3


@pytest.mark.parametrize(
    ("env", "getter", "expected"),
    [
        ({"IF_HTTP_HTTPLISTENADDR": "127.0.0.1:9000"}, lambda c: c.http.httpListenAddr, "127.0.0.1:9000"),
        ({"IF_CACHE_S3_ENABLED": "true"}, lambda c: c.cache.s3.enabled, True),
        ({"IF_CACHE_S3_ENABLED": "false"}, lambda c: c.cache.s3.enabled, False),
        ({"IF_BUILD_MAXCONCURRENCY": "12"}, lambda c: c.build.maxConcurrency, 12),
        ({"IF_HTTP_ALLOWEDORIGINS": '["*"]'}, lambda c: c.http.allowedOrigins, ["*"]),
        (
            {"IF_HTTP_ALLOWEDORIGINS": '["https://a.example","https://b.example"]'},
            lambda c: c.http.allowedOrigins,
            ["https://a.example", "https://b.example"],
        ),
        (
            {"IF_HTTP_ALLOWEDORIGINS": "https://a, https://b"},
            lambda c: c.http.allowedOrigins,
            ["https://a", "https://b"],
        ),
        ({"IF_HTTP_ALLOWEDORIGINS": "[*]"}, lambda c: c.http.allowedOrigins, ["*"]),  # the seed's form
        ({"IF_HTTP_ALLOWEDORIGINS": "*"}, lambda c: c.http.allowedOrigins, ["*"]),
        (
            {"IF_HTTP_ALLOWEDORIGINS": "[https://a, 'https://b',]"},
            lambda c: c.http.allowedOrigins,
            ["https://a", "https://b"],
        ),
        ({"IF_HTTP_ALLOWEDORIGINS": "[]"}, lambda c: c.http.allowedOrigins, []),
        ({"IF_BUILD_BROKENTALOSVERSIONS": '["1.9.1"]'}, lambda c: c.build.brokenTalosVersions, ["1.9.1"]),
        (
            {"IF_BUILD_BROKENTALOSVERSIONS": "[1.9.1, v1.10.0]"},
            lambda c: c.build.brokenTalosVersions,
            ["1.9.1", "v1.10.0"],
        ),
        (
            {"IF_ARTIFACTS_REFRESHINTERVAL": "1h30m"},
            lambda c: c.artifacts.refreshInterval,
            timedelta(minutes=90),
        ),
        (
            {"IF_CACHE_S3_PRESIGNEDURLTTL": "500ms"},
            lambda c: c.cache.s3.presignedURLTTL,
            timedelta(milliseconds=500),
        ),
        ({"IF_CACHE_SCHEMATIC_CAPACITY": "10"}, lambda c: c.cache.schematic.capacity, 10),
        ({"IF_ARTIFACTS_CORE_NAMESPACE": "mirror"}, lambda c: c.artifacts.core.namespace, "mirror"),
        (
            {"IF_ARTIFACTS_CORE_COMPONENTS_INSTALLERBASE": "x/ib"},
            lambda c: c.artifacts.core.components.installerBase,
            "x/ib",
        ),
        ({"IF_REDIS_URL": "redis://h:1/2"}, lambda c: c.redis.url, "redis://h:1/2"),
        (
            {"IF_CACHE_OCI": '{"registry": "r:5000", "insecure": true}'},
            lambda c: (c.cache.oci.registry, c.cache.oci.insecure, c.cache.oci.repository),
            ("r:5000", True, "cache"),
        ),
    ],
)
def test_env_mapping_of_every_type(env: dict[str, str], getter, expected) -> None:  # type: ignore[no-untyped-def]
    assert getter(load_config([], environ=env)) == expected


def test_every_leaf_key_is_reachable_from_the_environment() -> None:
    samples = {str: ("x", "x"), bool: ("true", True), int: ("7", 7), timedelta: ("3s", timedelta(seconds=3))}
    base = {"IF_HTTP_CERTFILE": "c", "IF_HTTP_KEYFILE": "k", "IF_CACHE_CDN_HOST": "h"}
    for key in key_index().values():
        if key.is_section:
            continue
        raw, expected = samples.get(key.type, ('["a"]', ["a"]))
        config = load_config([], environ={**base, f"IF_{key.env_name}": raw})
        value = config
        for part in key.path.split("."):
            value = getattr(value, part)
        assert value == expected, key.path


def test_yaml_json_and_dotenv_files(tmp_path: Path) -> None:
    y = write(tmp_path, "a.yaml", "http:\n  httpListenAddr: 127.0.0.1:1\nbuild:\n  maxConcurrency: 2\n")
    j = write(
        tmp_path, "b.json", json.dumps({"build": {"maxConcurrency": 4}, "cache": {"s3": {"enabled": True}}})
    )
    e = write(tmp_path, "c.env", "IF_BUILD_MINTALOSVERSION=1.5.0\nHTTP_EXTERNALURL=https://f.example/\n")
    config = load_config([y, f"file={j}", e], environ={})
    assert config.http.httpListenAddr == "127.0.0.1:1"
    assert config.build.maxConcurrency == 4  # the JSON file came later
    assert config.cache.s3.enabled is True
    assert config.build.minTalosVersion == "1.5.0"
    assert config.http.externalURL == "https://f.example/"


def test_yml_extension_and_case_insensitive_keys(tmp_path: Path) -> None:
    y = write(tmp_path, "a.YML", "HTTP:\n  HTTPLISTENADDR: ':9'\n")
    assert load_config([y], environ={}).http.httpListenAddr == ":9"


def test_order_later_wins_and_comma_separated(tmp_path: Path) -> None:
    y = write(tmp_path, "a.yaml", "build:\n  maxConcurrency: 2\n")
    env = {"IF_BUILD_MAXCONCURRENCY": "3", "X_BUILD_MAXCONCURRENCY": "5"}
    assert load_config([f"env=IF_,{y}"], environ=env).build.maxConcurrency == 2
    assert load_config([y, "env=IF_"], environ=env).build.maxConcurrency == 3
    assert load_config([y], environ=env).build.maxConcurrency == 2  # default env=IF_ comes first
    assert load_config([f"{y},env=X_"], environ=env).build.maxConcurrency == 5


def test_empty_env_prefix_takes_only_matching_variables() -> None:
    env = {"PATH": "/bin", "HOME": "/root", "BUILD_MAXCONCURRENCY": "9"}
    assert load_config(["env="], environ=env).build.maxConcurrency == 9


def test_repository_shorthand_string(tmp_path: Path) -> None:
    y = write(tmp_path, "a.yaml", "cache:\n  oci: 127.0.0.1:5000/image-factory/cache\n")
    oci = load_config([y], environ={}).cache.oci
    assert (oci.registry, oci.namespace, oci.repository) == ("127.0.0.1:5000", "image-factory", "cache")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"IF_BUILD_MAXCONCURRENCY": "many"},
            'build.maxConcurrency (from env IF_BUILD_MAXCONCURRENCY): Not a valid integer, got "many"',
        ),
        (
            {"IF_CACHE_S3_ENABLED": "maybe"},
            'cache.s3.enabled (from env IF_CACHE_S3_ENABLED): Not a valid boolean, got "maybe"',
        ),
        (
            {"IF_ARTIFACTS_REFRESHINTERVAL": "5"},
            "artifacts.refreshInterval (from env IF_ARTIFACTS_REFRESHINTERVAL): "
            'expected a duration such as "5m0s": time: missing unit in duration "5"',
        ),
        (
            {"IF_HTTP_ALLOWEDORIGINS": '["*"'},
            "http.allowedOrigins (from env IF_HTTP_ALLOWEDORIGINS): expected a JSON list",
        ),
        ({"IF_HTTP_LISTEN": "x"}, "unknown configuration key 'http.listen' (from env IF_HTTP_LISTEN)"),
        ({"IF_ARTIFACTS_REFRESHINTERVAL": "0s"}, "artifacts.refreshInterval: must be greater than zero"),
        ({"IF_CACHE_CDN_ENABLED": "true"}, "cache.cdn.host: required when cache.cdn.enabled is true"),
    ],
)
def test_env_errors_name_key_source_and_expectation(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config([], environ=env)
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "a.yaml",
            "http:\n  httpListenAdr: x\n",
            "unknown configuration key 'http.httpListenAdr' (from file",
        ),
        ("a.yaml", "build:\n  maxConcurrency: [1]\n", "build.maxConcurrency (from file"),
        ("a.yaml", "http: 5\n", "http (from file"),
        ("a.yaml", "- a\n", "expected a mapping at the top level"),
        ("a.yaml", "http: [\n", "cannot parse file"),
        ("a.json", "{", "cannot parse file"),
        ("a.toml", "x=1", "unsupported config format: .toml"),
        ("a.env", "IF_NOPE=1\n", "unknown configuration key 'nope'"),
        ("a.yaml", "build:\n  waitTimeout: 10\n", "build.waitTimeout (from file"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as exc:
        load_config([path], environ={})
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file_and_unknown_provider(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config([str(tmp_path / "absent.yaml")], environ={})
    with pytest.raises(ConfigError, match="unsupported config provider: vault"):
        load_config(["vault=secret/x"], environ={})


def test_empty_yaml_file_changes_nothing(tmp_path: Path) -> None:
    assert load_config([write(tmp_path, "e.yaml", "")], environ={}).build.maxConcurrency == 6


def test_entrypoints_read_sources_from_image_factory_config(tmp_path: Path) -> None:
    y = write(tmp_path, "a.yaml", "build:\n  maxConcurrency: 2\n")
    env = {
        "IMAGE_FACTORY_CONFIG": f"env=IF_,{y}",
        "IF_BUILD_MAXCONCURRENCY": "3",
        "IF_BUILD_MINTALOSVERSION": "1.7.0",
    }
    config = load_config_from_environment(env)
    assert (config.build.maxConcurrency, config.build.minTalosVersion) == (2, "1.7.0")
    assert load_config_from_environment({"IF_BUILD_MAXCONCURRENCY": "3"}).build.maxConcurrency == 3
