"""The build's dispatch tables and the signing seam (no tools: the stages are replaced by recorders)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.artifacts.manager import UnpackedImage
from common.profile.enhance import BuildPlan
from common.profile.model import Output, OutputKind, Profile
from common.talos.version import Version
from worker.imager import build as build_mod
from worker.imager.build import OUTPUT_BUILDERS, SecureBootSigningError, build
from worker.imager.signing import NO_SIGNERS, Signers


def test_every_output_kind_has_a_builder() -> None:
    assert set(OUTPUT_BUILDERS) == set(OutputKind) - {OutputKind.UNKNOWN}


class RecordingPESigner:
    """A PE signer that only records what it is asked to sign."""

    def __init__(self) -> None:
        self.signed: list[Path] = []

    @property
    def certificate(self) -> bytes:
        return b"not a certificate"

    def sign_pe(self, path: Path) -> None:
        self.signed.append(path)

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        raise AssertionError("nothing here asks for a raw signature")


class FakeSources:
    """An imager image with an empty payload; no extension or installer base is ever asked for."""

    def __init__(self, root: Path) -> None:
        self.fs = root / "imager"
        payload = self.fs / "usr" / "install" / "amd64"
        payload.mkdir(parents=True)
        for name in ("vmlinuz", "initramfs.xz", "systemd-stub.efi", "systemd-boot.efi"):
            (payload / name).write_bytes(name.encode())

    @contextlib.contextmanager
    def imager(self, version: Version) -> Iterator[UnpackedImage]:
        yield UnpackedImage(digest="", manifest_digest="", fs=self.fs, labels={}, config={})

    def image_by_digest(self, repository: str, digest: str, arch: str) -> Any:
        raise AssertionError("no extension images in these plans")

    def installer_base(self, dependency: Any, arch: str) -> Any:
        raise AssertionError("no installer base in these plans")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Signers]:
    """Fakes the initramfs and UKI assembly; records the signers each UKI stage is handed."""

    def fake_initramfs(*, out: Path, extensions: object, **_: object) -> None:
        out.write_bytes(b"initramfs")

    def fake_uki(*, out: Path, cmdline: str, **_: object) -> None:
        out.write_bytes(b"uki:" + cmdline.encode())

    seen: list[Signers] = []
    stage = build_mod._Build.uki

    def spy(self: build_mod._Build, *args: Any, **kwargs: Any) -> None:
        seen.append(self.signers)
        stage(self, *args, **kwargs)

    monkeypatch.setattr(build_mod, "build_initramfs", fake_initramfs)
    monkeypatch.setattr(build_mod, "build_uki", fake_uki)
    monkeypatch.setattr(build_mod._Build, "uki", spy)
    return seen


def _plan(*, secureboot: bool | None = None) -> BuildPlan:
    profile = Profile(
        arch="amd64",
        platform="metal",
        version="v1.12.0",
        secureboot=secureboot,
        output=Output(kind=OutputKind.UKI),
    )
    return BuildPlan(profile=profile, schematic_id="0" * 64, schematic_yaml=b"")


def _build(tmp: Path, plan: BuildPlan, **kwargs: Any) -> bytes:
    result = build(
        plan,
        sources=FakeSources(tmp),
        external_url="https://factory.test",
        dest=tmp / "dest",
        scratch_root=tmp / "scratch",
        **kwargs,
    )
    return result.path.read_bytes()


def test_signers_reach_the_uki_stage_without_changing_unsigned_builds(
    tmp_path: Path, recorded: list[Signers]
) -> None:
    signer = RecordingPESigner()
    signers = Signers(pe=signer)
    without = _build(tmp_path / "a", _plan())
    with_signers = _build(tmp_path / "b", _plan(), signers=signers)
    assert recorded == [NO_SIGNERS, signers]
    assert recorded[1].pe is signer
    assert with_signers == without  # not a Secure Boot build: nothing is signed
    assert signer.signed == []


def test_secure_boot_uki_is_never_built_unsigned(tmp_path: Path, recorded: list[Signers]) -> None:
    """Without both signers a Secure Boot UKI fails (500, named), and nothing is published."""
    signer = RecordingPESigner()
    for run, signers, missing in (("a", NO_SIGNERS, "PE"), ("b", Signers(pe=signer), "PCR")):
        with pytest.raises(SecureBootSigningError, match=f"a Secure Boot build needs the {missing} "):
            _build(tmp_path / run, _plan(secureboot=True), signers=signers)
        assert not any((tmp_path / run / "dest").glob("*"))
    assert recorded[-1].pe is signer
    assert signer.signed == []
