"""Layered configuration: one ``Config`` object shared by the API, the workers and the CLI."""

from common.config.loader import LoadedConfig, load_config, load_config_from_environment, resolve_config
from common.config.options import Config
from common.config.sources import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "LoadedConfig",
    "load_config",
    "load_config_from_environment",
    "resolve_config",
]
