"""Configurations written for upstream start this factory: its keys we lack warn, true typos stop it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.config import ConfigError, load_config, resolve_config
from common.config.compat import IGNORED_KEYS, lookup, suggest
from common.config.schema import key_index
from tests.support.fixtures import (
    CONFIGURATION_REFERENCE,
    UPSTREAM_HEAD_CONFIGURATION,
    code_blocks,
    helm_chart_config_examples,
    upstream_head_documented_keys,
)

# In upstream HEAD's options.go (and, for audit.file.*, its documented defaults) but not in the key list
# of its docs/configuration.md; and the chart README's key upstream never had.
UNDOCUMENTED_AT_HEAD = {
    "authentication.auth0.maxNodeAppsPerOrg",
    "audit.file.maxAge",
    "audit.file.maxSizeMB",
    "audit.file.maxBackups",
    "cache.oci.enabled",
}


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def warned_keys(warnings: list[str]) -> set[str]:
    keys = set()
    for warning in warnings:
        assert "has no effect" in warning, warning
        keys.add(warning.split("'")[1])
    return keys


def _leaf_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _leaf_paths(value, f"{prefix}{name}.")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_table_and_our_keys_are_disjoint() -> None:
    ours = key_index()
    assert not {p.lower() for p in IGNORED_KEYS} & set(ours)
    for path in IGNORED_KEYS:
        entry = lookup(path.upper())
        assert entry is not None and entry.path == path and not entry.is_section


def test_every_key_upstream_head_documents_is_ours_or_in_the_table() -> None:
    documented = upstream_head_documented_keys()
    assert len(documented) > 100 and "authentication.auth0.clientSecret" in documented
    for path in documented:
        assert path.lower() in key_index() or lookup(path) is not None, path
    ignored_leaves = {p for p in documented if (e := lookup(p)) is not None and not e.is_section}
    assert set(IGNORED_KEYS) - ignored_leaves == UNDOCUMENTED_AT_HEAD


def test_upstream_head_default_yaml_starts_with_one_warning_per_unimplemented_key(tmp_path: Path) -> None:
    block = code_blocks(UPSTREAM_HEAD_CONFIGURATION, "yaml", "## Default Configuration")[0]
    loaded = resolve_config([write(tmp_path, "head.yaml", block)], environ={})
    leaves = _leaf_paths(yaml.safe_load(block))
    expected = {p for p in leaves if p.lower() not in key_index()}
    assert expected == set(IGNORED_KEYS) - {"authentication.auth0.maxNodeAppsPerOrg", "cache.oci.enabled"}
    assert warned_keys(loaded.warnings) == expected
    assert len(loaded.warnings) == len(expected)
    assert loaded.config == load_config([], environ={})  # upstream's defaults are ours


def test_upstream_head_environment_block_as_variables_and_as_dotenv(tmp_path: Path) -> None:
    block = code_blocks(UPSTREAM_HEAD_CONFIGURATION, "env", "## Default Configuration")[0]
    env = dict(line.split("=", 1) for line in block.splitlines() if line.strip())
    from_env = resolve_config([], environ=env)
    from_file = resolve_config([write(tmp_path, "head.env", block)], environ={})
    expected = {p for p in IGNORED_KEYS if f"IF_{p.replace('.', '_').upper()}" in env}
    assert "audit.mode" in expected and "registry.jobs" in expected
    assert warned_keys(from_env.warnings) == warned_keys(from_file.warnings) == expected
    assert "(from env IF_REGISTRY_JOBS)" in "".join(from_env.warnings)
    assert from_env.config == from_file.config == load_config([], environ={})


def test_helm_chart_readme_examples_start_and_only_cache_oci_enabled_warns(tmp_path: Path) -> None:
    examples = helm_chart_config_examples()
    specs = [write(tmp_path, f"example{i}.json", json.dumps(ex)) for i, ex in enumerate(examples)]
    loaded = resolve_config(specs, environ={})
    assert len(loaded.warnings) == 1
    assert "'cache.oci.enabled'" in loaded.warnings[0] and "has no effect" in loaded.warnings[0]
    assert loaded.config.cache.oci.reference == "ghcr.io/siderolabs/image-factory/cache"
    assert loaded.config.cache.signingKeyPath == "/etc/image-factory/keys/cache-signing.key"
    assert loaded.config.artifacts.schematic.registry == "registry.example.com"
    assert loaded.config.http.externalPXEURL == "https://pxe-factory.example.com/"


def test_published_reference_environment_block_loads_including_bracketed_origins() -> None:
    block = code_blocks(CONFIGURATION_REFERENCE, "env", "## Default configuration")[0]
    env = dict(line.split("=", 1) for line in block.splitlines() if line.strip())
    assert env["IF_HTTP_ALLOWEDORIGINS"] == "[*]"
    loaded = resolve_config([], environ=env)
    assert loaded.warnings == []
    assert loaded.config.http.allowedOrigins == ["*"]
    assert loaded.config == load_config([], environ={})


@pytest.mark.parametrize(
    ("text", "written", "meant"),
    [
        ("htp:\n  httpListenAddr: ':1'\n", "htp", "http"),
        ("htp.httpListenAddr: ':1'\n", "htp.httpListenAddr", "http.httpListenAddr"),
        ("http:\n  httpListenAdr: ':1'\n", "http.httpListenAdr", "http.httpListenAddr"),
        ("cache:\n  oci:\n    registy: r\n", "cache.oci.registy", "cache.oci.registry"),
        ("cache:\n  gsa:\n    keyFil: k\n", "cache.gsa.keyFil", "cache.gsa.keyFile"),
        ("authentication:\n  enabeld: true\n", "authentication.enabeld", "authentication.enabled"),
        ("enterprise:\n  vex:\n    dta: ghcr.io/x/y\n", "enterprise.vex.dta", "enterprise.vex.data"),
    ],
)
def test_typo_in_a_file_stops_with_a_suggestion(tmp_path: Path, text: str, written: str, meant: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config([write(tmp_path, "a.yaml", text)], environ={})
    assert str(exc.value) == (
        f"unknown configuration key {written!r} (from file {tmp_path / 'a.yaml'}); did you mean {meant!r}?"
    )


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("IF_HTP_HTTPLISTENADDR", "'http.httpListenAddr' (IF_HTTP_HTTPLISTENADDR)"),
        ("IF_CACHE_OCI_REGISTY", "'cache.oci.registry' (IF_CACHE_OCI_REGISTRY)"),
        ("IF_REGISTRY_JOB", "'registry.jobs' (IF_REGISTRY_JOBS)"),
    ],
)
def test_typo_in_the_environment_names_the_variable_to_set(name: str, meant: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config([], environ={name: "x"})
    assert str(exc.value).endswith(f"(from env {name}); did you mean {meant}?")


def test_typo_in_a_dotenv_file_names_the_variable_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'cache.oci.registry' \(IF_CACHE_OCI_REGISTRY\)\?$"):
        load_config([write(tmp_path, "a.env", "IF_CACHE_OCI_REGISTY=x\n")], environ={})


def test_nothing_close_means_no_suggestion(tmp_path: Path) -> None:
    assert suggest("zzzzzz") is None
    with pytest.raises(ConfigError) as exc:
        load_config([write(tmp_path, "a.yaml", "zzzzzz: 1\n")], environ={})
    assert "did you mean" not in str(exc.value)


def test_environment_sections_as_json_and_other_prefixes() -> None:
    env = {
        "IF_AUTHENTICATION": '{"enabled": true, "auth0": {"clientSecret": "s"}}',
        "X_AUDIT_MODE": "file",
    }
    loaded = resolve_config(["env=X_"], environ=env)
    assert warned_keys(loaded.warnings) == {
        "authentication.enabled",
        "authentication.auth0.clientSecret",
        "audit.mode",
    }
    assert "(from env X_AUDIT_MODE)" in " ".join(loaded.warnings)
    with pytest.raises(ConfigError, match=r"did you mean 'authentication\.enabled'"):
        load_config([], environ={"IF_AUTHENTICATION": '{"enabeld": true}'})


def test_one_warning_per_key_naming_every_source(tmp_path: Path) -> None:
    y = write(tmp_path, "a.yaml", "audit:\n  mode: file\n")
    loaded = resolve_config([y, "env=IF_"], environ={"IF_AUDIT_MODE": "log"})
    assert loaded.warnings == [
        f"configuration key 'audit.mode' (from env IF_AUDIT_MODE, file {y}) has no effect: "
        "this factory does not implement it (upstream v1.4.0)"
    ]


def test_sections_given_whole_and_any_letter_case(tmp_path: Path) -> None:
    text = "enterprise:\n  vex:\n    data: ghcr.io/x/y\nAUTHENTICATION:\nCache:\n  GSA: {}\n"
    loaded = resolve_config([write(tmp_path, "a.yaml", text)], environ={})
    assert warned_keys(loaded.warnings) == {"enterprise.vex.data", "authentication", "cache.gsa"}


def test_load_config_logs_each_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    y = write(tmp_path, "a.yaml", "cache:\n  oci:\n    enabled: true\nregistry:\n  jobs: 64\n")
    with caplog.at_level(logging.WARNING, logger="common.config"):
        load_config([y], environ={})
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned_keys(messages) == {"cache.oci.enabled", "registry.jobs"}
