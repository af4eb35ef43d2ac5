"""Configuration sources as upstream defines them: ``env=[PREFIX]``, ``FILE`` and ``file=FILE``.

Each source yields assignments (canonical key, raw value, where it came from); the loader applies
them in order, so later sources win. Unlike upstream v1.0.2, the environment mapping works
(``IF_HTTP_HTTPLISTENADDR`` → ``http.httpListenAddr``), and unlike upstream an unknown key is an
error rather than silently ignored.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from common.config.schema import KeyInfo, key_index

DEFAULT_SOURCE = "env=IF_"


class ConfigError(Exception):
    """A configuration problem; the CLI prints it on one line and exits with status 2."""


@dataclass(frozen=True)
class Assignment:
    key: KeyInfo
    value: Any
    origin: str  # e.g. "env IF_HTTP_HTTPLISTENADDR" or "file cfg.yaml"


def split_specs(values: list[str]) -> list[str]:
    """``--config`` may be repeated and each value may be a comma-separated list."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def read_source(spec: str, environ: Mapping[str, str]) -> Iterator[Assignment]:
    provider, sep, arg = spec.partition("=")
    if not sep:
        yield from _read_file(Path(spec))
    elif provider == "env":
        yield from _read_env(arg, environ)
    elif provider == "file":
        yield from _read_file(Path(arg))
    else:
        raise ConfigError(f"unsupported config provider: {provider} (in --config {spec})")


def _read_env(prefix: str, environ: Mapping[str, str]) -> Iterator[Assignment]:
    # With an empty prefix every variable is a candidate, so only matching ones are taken;
    # with a prefix, an unknown variable is almost certainly a typo and is reported.
    strict = bool(prefix)
    for name in sorted(environ):
        if not name.startswith(prefix):
            continue
        yield from _env_assignment(name, name[len(prefix) :], environ[name], f"env {name}", strict)


def _env_assignment(name: str, suffix: str, raw: str, origin: str, strict: bool) -> Iterator[Assignment]:
    path = suffix.lower().replace("_", ".")
    key = key_index().get(path)
    if key is None:
        if strict:
            raise ConfigError(f"unknown configuration key {path!r} (from {origin})")
        return
    value: Any = raw
    if raw.lstrip().startswith("{"):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key.path} (from {origin}): invalid JSON: {exc}") from exc
    yield from _assign(key, value, origin)


def _read_file(path: Path) -> Iterator[Assignment]:
    ext = path.suffix.lower()
    origin = f"file {path}"
    if ext not in (".json", ".yaml", ".yml", ".env"):
        raise ConfigError(f"unsupported config format: {ext or path.name} (file {path})")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    if ext == ".env":
        for name, raw in dotenv_values(stream=io.StringIO(text)).items():
            suffix = name[3:] if name.upper().startswith("IF_") else name
            yield from _env_assignment(name, suffix, raw or "", f"{origin} ({name})", strict=True)
        return
    try:
        data = json.loads(text) if ext == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {origin}: {' '.join(str(exc).split())}") from exc
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    yield from _walk_mapping("", data, origin)


def _walk_mapping(prefix: str, data: dict[Any, Any], origin: str) -> Iterator[Assignment]:
    for raw_name, value in data.items():
        path = f"{prefix}{raw_name}"
        key = key_index().get(path.lower())
        if key is None:
            raise ConfigError(f"unknown configuration key {path!r} (from {origin})")
        yield from _assign(key, value, origin)


def _assign(key: KeyInfo, value: Any, origin: str) -> Iterator[Assignment]:
    if not key.is_section:
        yield Assignment(key, value, origin)
    elif isinstance(value, dict):
        yield from _walk_mapping(key.path + ".", value, origin)
    elif key.is_repository and isinstance(value, str):
        yield from _split_repository(key, value, origin)
    elif value is not None:
        raise ConfigError(f"{key.path} (from {origin}): expected a mapping, got {type(value).__name__}")


def _split_repository(key: KeyInfo, ref: str, origin: str) -> Iterator[Assignment]:
    """Upstream accepts ``127.0.0.1:5000/image-factory/cache`` for any repository section."""
    parts = [p for p in ref.split("/") if p]
    registry = ""
    if parts and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry = parts.pop(0)
    repository = parts.pop() if parts else ""
    index = key_index()
    for name, value in (("registry", registry), ("namespace", "/".join(parts)), ("repository", repository)):
        yield Assignment(index[f"{key.path}.{name}".lower()], value, origin)
