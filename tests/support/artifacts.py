"""An ArtifactsManager on the fixture release, as the worker and API build it from config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.artifacts.manager import ArtifactsManager
from common.artifacts.store import ArtifactStore
from common.config import Config
from common.config.schema import assign
from common.cosign.source import verifier_from_config
from devstack.release.release import Release, factory_overrides

__all__ = ["make_config", "manager"]


def make_config(overrides: dict[str, Any]) -> Config:
    config = Config()
    for key, value in overrides.items():
        assign(config, key, value)
    return config


def manager(
    release: Release, store_dir: Path, clock: Any = None, **extra: Any
) -> tuple[ArtifactsManager, Config]:
    config = make_config({**factory_overrides(release), **extra})
    store = ArtifactStore(store_dir, 2 * 1024**3)
    verifier = verifier_from_config(config.containerSignature)
    kwargs = {"clock": clock} if clock else {}
    return ArtifactsManager(config, store, verifier, **kwargs), config
