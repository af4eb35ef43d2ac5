"""`config --explain`: every key, the source its value came from, secrets masked."""

from __future__ import annotations

import re
from pathlib import Path

from common.config import resolve_config
from common.config.explain import explain
from common.config.masking import MASK, is_secret
from common.config.render import as_dict, leaves
from common.config.schema import key_index


def rows(text: str) -> dict[str, tuple[str, str]]:
    """KEY → (SOURCE, VALUE) from the main table."""
    table = text.split("\n\n")[0].splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["KEY", "SOURCE", "VALUE"]
    out = {}
    for line in table[1:]:
        key, source, value = re.split(r"\s{2,}", line, maxsplit=2)
        out[key] = (source, value)
    return out


def test_every_key_with_its_source(tmp_path: Path) -> None:
    y = tmp_path / "a.yaml"
    y.write_text("build:\n  maxConcurrency: 2\ncache:\n  oci: r:5000/ns/cache\n")
    e = tmp_path / "b.env"
    e.write_text("IF_BUILD_MINTALOSVERSION=1.8.0\n")
    env = {"IF_BUILD_MAXCONCURRENCY": "3", "IF_HTTP_ALLOWEDORIGINS": "[*]"}
    loaded = resolve_config([f"env=IF_,{y}", str(e)], environ=env)
    table = rows(explain(loaded))
    assert set(table) == {path for path, _ in leaves(as_dict(loaded.config))}
    assert table["build.maxConcurrency"] == (f"file {y}", "2")  # the file came after env=IF_
    assert table["build.minTalosVersion"] == (f"file {e} (IF_BUILD_MINTALOSVERSION)", "1.8.0")
    assert table["http.allowedOrigins"] == ("env IF_HTTP_ALLOWEDORIGINS", '["*"]')
    assert table["cache.oci.registry"] == (f"file {y}", "r:5000")
    assert table["cache.oci.insecure"] == ("default", "false")
    assert table["http.certFile"] == ("default", '""')
    assert table["artifacts.refreshInterval"] == ("default", "5m0s")
    assert list(table) == sorted(table)


def test_secrets_are_masked_and_urls_lose_their_password() -> None:
    secret = "s3cr3t-value"
    env = {"IF_REDIS_URL": f"redis://:{secret}@redis:6379/0"}
    secrets = [k for k in key_index().values() if not k.is_section and is_secret(k.path) and k.type is str]
    env |= {f"IF_{k.env_name}": secret for k in secrets}
    text = explain(resolve_config([], environ=env))
    assert secret not in text
    table = rows(text)
    assert table["redis.url"] == ("env IF_REDIS_URL", f"redis://:{MASK}@redis:6379/0")
    for key in secrets:
        assert table[key.path] == (f"env IF_{key.env_name}", MASK)


def test_ignored_keys_are_listed_after_the_table(tmp_path: Path) -> None:
    y = tmp_path / "a.yaml"
    y.write_text("cache:\n  oci:\n    enabled: true\nauthentication:\n  auth0:\n    clientSecret: hunter2\n")
    text = explain(resolve_config([str(y)], environ={"IF_REGISTRY_JOBS": "64"}))
    assert "hunter2" not in text
    _, tail = text.split("\n\n", 1)
    lines = tail.splitlines()
    assert "no effect" in lines[0]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["authentication.auth0.clientSecret", "file"],
        ["cache.oci.enabled", "file"],
        ["registry.jobs", "env"],
    ]
    assert "env IF_REGISTRY_JOBS" in lines[3]


def test_nothing_ignored_means_no_second_part() -> None:
    assert "\n\n" not in explain(resolve_config([], environ={}))
