"""Layered configuration: one ``Config`` object shared by the API, the workers and the CLI."""

from common.config.loader import load_config, load_config_from_environment
from common.config.options import Config
from common.config.sources import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "load_config_from_environment"]
