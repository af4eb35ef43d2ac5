"""Apply configuration sources in order over the defaults, validating every value."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from marshmallow import ValidationError

from common.config.options import Config
from common.config.schema import assign, leaf_field
from common.config.sources import DEFAULT_SOURCE, Assignment, ConfigError, read_source, split_specs


def load_config(specs: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Config:
    """The effective configuration: defaults, then ``env=IF_``, then each ``--config`` source.

    Raises ConfigError with a one-line message naming the key, its source and what was expected.
    """
    env = os.environ if environ is None else environ
    config = Config()
    for spec in [DEFAULT_SOURCE, *split_specs(list(specs))]:
        for item in read_source(spec, env):
            assign(config, item.key.path, _convert(item))
    _check(config)
    return config


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
