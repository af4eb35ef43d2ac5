"""Apply configuration sources in order over the defaults, validating every value."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from marshmallow import ValidationError

from common.config.options import Config
from common.config.schema import assign, leaf_field
from common.config.sources import DEFAULT_SOURCE, Assignment, ConfigError, Ignored, read_source, split_specs

DEFAULT_ORIGIN = "default"

_log = logging.getLogger(__name__)


@dataclass
class IgnoredUse:
    """An accepted-but-ignored key (``compat.IGNORED_KEYS``) and every source that set it, in order."""

    since: str
    origins: list[str] = field(default_factory=list)

    def warning(self, path: str) -> str:
        return (
            f"configuration key {path!r} (from {', '.join(self.origins)}) has no effect: "
            f"this factory does not implement it ({self.since})"
        )


@dataclass
class LoadedConfig:
    """The effective configuration and how it came about: for ``config --explain`` and the warnings."""

    config: Config
    #: Leaf path → the source of the value in effect; keys no source set are absent (``DEFAULT_ORIGIN``).
    origins: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, IgnoredUse] = field(default_factory=dict)

    def origin(self, path: str) -> str:
        return self.origins.get(path, DEFAULT_ORIGIN)

    @property
    def warnings(self) -> list[str]:
        """One line per ignored key, however many sources set it."""
        return [use.warning(path) for path, use in self.ignored.items()]


def resolve_config(specs: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """The effective configuration: defaults, then ``env=IF_``, then each ``--config`` source.

    Raises ConfigError with a one-line message naming the key, its source and what was expected.
    """
    env = os.environ if environ is None else environ
    loaded = LoadedConfig(Config())
    for spec in [DEFAULT_SOURCE, *split_specs(list(specs))]:
        for item in read_source(spec, env):
            if isinstance(item, Ignored):
                use = loaded.ignored.setdefault(item.path, IgnoredUse(item.since))
                if item.origin not in use.origins:
                    use.origins.append(item.origin)
                continue
            assign(loaded.config, item.key.path, _convert(item))
            loaded.origins[item.key.path] = item.origin
    _check(loaded.config)
    return loaded


def load_config(specs: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Config:
    """``resolve_config``, logging one warning per accepted-but-ignored key."""
    loaded = resolve_config(specs, environ)
    for warning in loaded.warnings:
        _log.warning(warning)
    return loaded.config


def load_config_from_environment(environ: Mapping[str, str] | None = None) -> Config:
    """For entrypoints without a command line (gunicorn, celery): sources from ``IMAGE_FACTORY_CONFIG``.

    It takes what ``--config`` takes (comma-separated); ``env=IF_`` is applied first as always.
    """
    env = os.environ if environ is None else environ
    spec = env.get("IMAGE_FACTORY_CONFIG", "")
    return load_config([spec] if spec else [], env)


def _convert(item: Assignment) -> object:
    try:
        return leaf_field(item.key).deserialize(item.value)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
        reason = "; ".join(str(m).rstrip(".") for m in messages)
        if "got" not in reason:
            reason += f", got {json.dumps(item.value, default=str)}"
        raise ConfigError(f"{item.key.path} (from {item.origin}): {reason}") from exc


def _check(config: Config) -> None:
    """Rules that involve more than one value, or values that parse but cannot work."""
    if config.artifacts.refreshInterval.total_seconds() <= 0:
        raise ConfigError("artifacts.refreshInterval: must be greater than zero")
    if config.build.maxConcurrency < 1:
        raise ConfigError("build.maxConcurrency: must be at least 1")
    if config.http.workers < 1 or config.http.threads < 1:
        raise ConfigError("http.workers and http.threads: must be at least 1")
    if config.cache.cdn.enabled and not config.cache.cdn.host:
        raise ConfigError("cache.cdn.host: required when cache.cdn.enabled is true")
    if bool(config.http.certFile) != bool(config.http.keyFile):
        raise ConfigError("http.certFile and http.keyFile: set both for TLS, or neither")
