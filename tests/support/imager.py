"""Builds through the real pipeline for tests: fixture release → enhancement → build plan → imager."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common.artifacts.manager import ArtifactsManager
from common.profile.enhance import BuildPlan, enhance
from common.profile.model import SecureBootAssets
from common.profile.path import parse_path
from common.schematic.emit import marshal, schematic_id
from common.schematic.model import Schematic
from common.talos.version import parse_tolerant
from devstack.release.release import Release
from tests.support.artifacts import manager
from worker.imager.build import BuildResult, build
from worker.imager.signing import NO_SIGNERS, Signers

__all__ = ["EXTERNAL_URL", "ImagerHarness", "imager_harness"]

EXTERNAL_URL = "http://factory.test/"


@dataclass
class ImagerHarness:
    artifacts: ArtifactsManager
    root: Path
    schematic: Schematic = field(default_factory=Schematic)  # used when a call names none

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    def plan(
        self,
        path: str,
        version: str,
        schematic: Schematic | None = None,
        secureboot: SecureBootAssets | None = None,
    ) -> BuildPlan:
        chosen = schematic if schematic is not None else self.schematic
        return enhance(
            parse_path(path),
            chosen,
            schematic_id=schematic_id(chosen),
            schematic_yaml=marshal(chosen),
            version=version,
            catalogs=self.artifacts,
            secureboot=secureboot,
        )

    def build(
        self,
        path: str,
        version: str,
        schematic: Schematic | None = None,
        dest: str = "out",
        *,
        secureboot: SecureBootAssets | None = None,
        signers: Signers = NO_SIGNERS,
    ) -> BuildResult:
        plan = self.plan(path, version, schematic, secureboot)
        return build(
            plan,
            sources=self.artifacts,
            external_url=EXTERNAL_URL,
            dest=self.root / dest / plan.key,
            scratch_root=self.scratch,
            signers=signers,
        )

    def base_initramfs(self, version: str, arch: str = "amd64") -> Path:
        with self.artifacts.imager(parse_tolerant(version)) as imager:
            return imager.fs / "usr/install" / arch / "initramfs.xz"


@contextlib.contextmanager
def imager_harness(
    release: Release, root: Path, schematic: Schematic | None = None
) -> Iterator[ImagerHarness]:
    """A harness on ``release``; on exit, checks that no build left its scratch folder behind."""
    artifacts, _ = manager(release, root / "store")
    harness = ImagerHarness(artifacts, root, schematic or Schematic())
    yield harness
    assert not harness.scratch.exists() or not any(harness.scratch.iterdir()), "a build left scratch behind"
