"""Where a build's GRUB comes from (worker.imager.grub): the release's where it has a platform, the
factory's otherwise, and a platform neither has named in a 501, never a bare 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.imager import grub as grub_mod
from worker.imager.grub import FACTORY, RELEASE, GrubUnavailableError, grub_platform_dir, select_grub
from worker.imager.tools import ToolError


def _platforms(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "modinfo.sh").write_text("grub_target_cpu=x\n")
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_the_release_grub_is_preferred_platform_by_platform(tmp_path: Path) -> None:
    release = _platforms(tmp_path / "release", "i386-pc", "x86_64-efi", "arm64-efi")
    factory = _platforms(tmp_path / "factory", "i386-pc", "x86_64-efi")
    chosen = select_grub(release, factory)
    assert dict(chosen.dirs) == {p: release / p for p in ("i386-pc", "x86_64-efi", "arm64-efi")}
    assert chosen.source == RELEASE and chosen.missing == []
    assert chosen.describe() == "GRUB from the release's imager image (usr/lib/grub)"


def test_a_release_without_grub_gets_the_factory_s_and_arm64_is_said_to_be_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = _platforms(tmp_path / "factory", "i386-pc", "x86_64-efi")
    monkeypatch.setattr(grub_mod, "FACTORY_GRUB", factory)  # the default is read at call time
    chosen = select_grub(tmp_path / "release-without-grub")
    assert dict(chosen.dirs) == {"i386-pc": factory / "i386-pc", "x86_64-efi": factory / "x86_64-efi"}
    assert dict(chosen.origins) == {"i386-pc": FACTORY, "x86_64-efi": FACTORY}
    assert chosen.source == FACTORY and chosen.missing == ["arm64-efi"]
    assert chosen.describe() == (
        f"GRUB from this factory ({factory}): the release's imager image has no usr/lib/grub; "
        "unavailable: arm64-efi"
    )
    with pytest.raises(GrubUnavailableError) as caught:
        grub_platform_dir(chosen.dirs, "arm64-efi")
    assert caught.value.status == 501 and isinstance(caught.value, ToolError)
    assert str(caught.value) == (
        "GRUB arm64-efi is unavailable: the release's imager image has no usr/lib/grub/arm64-efi and "
        f"this factory has no {factory}/arm64-efi (Debian package grub-efi-arm64-bin)"
    )
    assert grub_platform_dir(chosen.dirs, "i386-pc") == factory / "i386-pc"


def test_a_partial_release_grub_is_completed_by_the_factory(tmp_path: Path) -> None:
    release = _platforms(tmp_path / "release", "x86_64-efi")
    (release / "i386-pc").mkdir()  # a directory without modinfo.sh is no GRUB platform
    factory = _platforms(tmp_path / "factory", "i386-pc", "x86_64-efi", "arm64-efi")
    chosen = select_grub(release, factory)
    assert dict(chosen.origins) == {"i386-pc": FACTORY, "x86_64-efi": RELEASE, "arm64-efi": FACTORY}
    assert chosen.source == f"{RELEASE} + {FACTORY}"
    assert chosen.describe() == (
        f"GRUB from the release's imager image, i386-pc, arm64-efi from this factory ({factory})"
    )


def test_no_grub_anywhere(tmp_path: Path) -> None:
    chosen = select_grub(tmp_path / "release", tmp_path / "factory")
    assert chosen.source == "none" and chosen.missing == ["i386-pc", "x86_64-efi", "arm64-efi"]
    with pytest.raises(GrubUnavailableError, match=r"GRUB i386-pc is unavailable.*grub-pc-bin"):
        grub_platform_dir(chosen.dirs, "i386-pc")
