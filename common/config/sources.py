"""Configuration sources as upstream defines them: ``env=[PREFIX]``, ``FILE`` and ``file=FILE``.

Each source yields assignments (canonical key, raw value, where it came from); the loader applies
them in order, so later sources win. Unlike upstream v1.0.2, the environment mapping works
(``IF_HTTP_HTTPLISTENADDR`` → ``http.httpListenAddr``). Unlike upstream, which ignores every key it
does not know, a key some upstream version or edition has and we do not (``compat.IGNORED_KEYS``)
yields an ``Ignored`` item the loader warns about, and any other unknown key is an error naming the
nearest known key. Files and ``IF_`` variables are treated alike.
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

from common.config import compat
from common.config.schema import KeyInfo, key_index

DEFAULT_SOURCE = "env=IF_"


class ConfigError(Exception):
    """A configuration problem; the CLI prints it on one line and exits with status 2."""


@dataclass(frozen=True)
class Assignment:
    key: KeyInfo
    value: Any
    origin: str  # e.g. "env IF_HTTP_HTTPLISTENADDR" or "file cfg.yaml"


@dataclass(frozen=True)
class Ignored:
    """A key of ``compat.IGNORED_KEYS`` a source set: accepted, warned about, without effect."""

    path: str  # canonical upstream spelling
    origin: str
    since: str  # where upstream has it, for the warning


Item = Assignment | Ignored


def unknown_key(path: str, origin: str, env_prefix: str | None = None) -> ConfigError:
    """The error for a key no version of upstream knows, with the nearest known key if any.

    ``env_prefix`` is set for environment sources, so the suggestion names the variable to set.
    """
    message = f"unknown configuration key {path!r} (from {origin})"
    guess = compat.suggest(path)
    if guess is not None:
        env = f" ({env_prefix}{guess.replace('.', '_').upper()})" if env_prefix is not None else ""
        message += f"; did you mean {guess!r}{env}?"
    return ConfigError(message)


def split_specs(values: list[str]) -> list[str]:
    """``--config`` may be repeated and each value may be a comma-separated list."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def read_source(spec: str, environ: Mapping[str, str]) -> Iterator[Item]:
    provider, sep, arg = spec.partition("=")
    if not sep:
        yield from _read_file(Path(spec))
    elif provider == "env":
        yield from _read_env(arg, environ)
    elif provider == "file":
        yield from _read_file(Path(arg))
    else:
        raise ConfigError(f"unsupported config provider: {provider} (in --config {spec})")


def _read_env(prefix: str, environ: Mapping[str, str]) -> Iterator[Item]:
    # With an empty prefix every variable is a candidate, so only matching ones are taken;
    # with a prefix, an unknown variable is almost certainly a typo and is reported.
    strict = bool(prefix)
    for name in sorted(environ):
        if not name.startswith(prefix):
            continue
        yield from _env_assignment(name, prefix, environ[name], f"env {name}", strict)


def _env_assignment(name: str, prefix: str, raw: str, origin: str, strict: bool) -> Iterator[Item]:
    """One variable, ``<prefix>HTTP_HTTPLISTENADDR``: prefix stripped, lower-cased, ``_`` → ``.``."""
    path = name[len(prefix) :].lower().replace("_", ".")
    key = key_index().get(path)
    if key is None:
        if compat.lookup(path) is not None:
            yield from _ignored(path, _env_value(raw, None), origin)
        elif strict:
            raise unknown_key(path, origin, prefix)
        return
    yield from _assign(key, _env_value(raw, key, origin), origin)


def _env_value(raw: str, key: KeyInfo | None, origin: str = "") -> Any:
    """Objects arrive as JSON (``IF_CACHE_OCI={"registry": …}``); lists are left to ``StringList``."""
    if not raw.lstrip().startswith("{"):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        if key is None:  # ignored whatever it holds
            return raw
        raise ConfigError(f"{key.path} (from {origin}): invalid JSON: {exc}") from exc


def _read_file(path: Path) -> Iterator[Item]:
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
            prefix = name[:3] if name.upper().startswith("IF_") else ""
            yield from _env_assignment(name, prefix, raw or "", f"{origin} ({name})", strict=True)
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


def _walk_mapping(prefix: str, data: dict[Any, Any], origin: str) -> Iterator[Item]:
    for raw_name, value in data.items():
        path = f"{prefix}{raw_name}"
        key = key_index().get(path.lower())
        if key is None:
            yield from _ignored(path, value, origin)
        else:
            yield from _assign(key, value, origin)


def _ignored(path: str, value: Any, origin: str) -> Iterator[Ignored]:
    """A key of ``compat.IGNORED_KEYS``; inside one of its sections every key must be one of them too.

    A section given as anything but a non-empty mapping (a repository shorthand string, ``null``)
    is named itself.
    """
    entry = compat.lookup(path)
    if entry is None:
        raise unknown_key(path, origin)
    if entry.is_section and isinstance(value, dict) and value:
        for name, item in value.items():
            yield from _ignored(f"{entry.path}.{name}", item, origin)
    else:
        yield Ignored(entry.path, origin, entry.since)


def _assign(key: KeyInfo, value: Any, origin: str) -> Iterator[Item]:
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
