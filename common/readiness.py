"""What /readyz checks: Redis and every distinct registry the configuration points at."""

from __future__ import annotations

from collections.abc import Callable

import redis

from common.config import Config
from common.config.options import RepositoryOptions
from common.errors import UnavailableError
from common.registry.client import RegistryClient

Check = Callable[[], None]


def registries(config: Config) -> dict[str, RepositoryOptions]:
    """Distinct registries by host, labelled with the first key that uses them."""
    repos = {
        "artifacts.schematic": config.artifacts.schematic,
        "cache.oci": config.cache.oci,
        "artifacts.core": RepositoryOptions(
            registry=config.artifacts.core.registry, insecure=config.artifacts.core.insecure
        ),
        "artifacts.installer.internal": config.artifacts.installer.internal,
    }
    seen: dict[str, RepositoryOptions] = {}
    labelled: dict[str, RepositoryOptions] = {}
    for label, repo in repos.items():
        if repo.registry and repo.registry not in seen:
            seen[repo.registry] = repo
            labelled[f"registry {repo.registry} ({label})"] = repo
    return labelled


def readiness_checks(config: Config, redis_client: redis.Redis) -> dict[str, Check]:
    def check_redis() -> None:
        try:
            redis_client.ping()
        except redis.RedisError as exc:
            raise UnavailableError(f"redis is unavailable: {exc}") from exc

    checks: dict[str, Check] = {"redis": check_redis}
    for label, repo in registries(config).items():
        checks[label] = RegistryClient(repo).ping
    return checks


def failing(checks: dict[str, Check]) -> list[str]:
    """Names of the checks that fail, in order."""
    down = []
    for name, check in checks.items():
        try:
            check()
        except UnavailableError:
            down.append(name)
    return down
