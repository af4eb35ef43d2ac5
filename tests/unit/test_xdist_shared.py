"""tests/support/xdist_shared.py: a build shared by xdist workers happens once, and a registry's copy of
the shared storage shares only what distribution never rewrites."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.support.xdist_shared import build_once, copy_registry_storage, scope_of


def _slow_build(directory: Path) -> None:
    calls = directory.parent / "calls"
    with calls.open("a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(1.0)  # long enough for the other process to arrive while this one builds
    (directory / "made").write_text(str(os.getpid()))


def _build_in_process(root: Path) -> str:
    return (build_once(root, "thing", _slow_build) / "made").read_text()


def test_two_processes_asking_at_once_build_once(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = list(pool.map(_build_in_process, [tmp_path, tmp_path]))
    assert len((tmp_path / "calls").read_text().split()) == 1
    assert got[0] == got[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls", "thing", "thing.lock"]


def test_a_failed_build_leaves_nothing_and_the_next_caller_builds(tmp_path: Path) -> None:
    def broken(directory: Path) -> None:
        (directory / "half").write_text("x")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        build_once(tmp_path, "thing", broken)
    assert not (tmp_path / "thing").exists() and not (tmp_path / ".thing.building").exists()
    assert (build_once(tmp_path, "thing", _slow_build) / "made").is_file()


def _storage(root: Path, tag_digest: str) -> tuple[Path, Path]:
    v2 = root / "docker/registry/v2"
    blob = v2 / "blobs/sha256/ab" / ("ab" + "0" * 62) / "data"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"layer bytes")
    link = v2 / "repositories/fixture/siderolabs/imager/_manifests/tags/v1/current/link"
    link.parent.mkdir(parents=True)
    link.write_text(tag_digest)
    return blob, link


def test_registry_copy_links_blobs_and_copies_what_distribution_rewrites(tmp_path: Path) -> None:
    blob, link = _storage(tmp_path / "src", "sha256:aa")
    dest = tmp_path / "dest"
    copy_registry_storage(tmp_path / "src", dest)
    copied_blob = dest / blob.relative_to(tmp_path / "src")
    copied_link = dest / link.relative_to(tmp_path / "src")
    assert copied_blob.stat().st_ino == blob.stat().st_ino  # one inode: immutable, costs no space
    assert copied_link.stat().st_ino != link.stat().st_ino and copied_link.read_text() == "sha256:aa"
    copied_link.write_text("sha256:bb")  # distribution rewrites a tag's link in place
    assert link.read_text() == "sha256:aa"


def test_registry_copy_keeps_what_the_destination_has(tmp_path: Path) -> None:
    _storage(tmp_path / "src", "sha256:release")
    _, own = _storage(tmp_path / "dest", "sha256:pushed-by-a-test")
    copy_registry_storage(tmp_path / "src", tmp_path / "dest")
    assert own.read_text() == "sha256:pushed-by-a-test"


def test_grouped_modules_form_one_unit_of_work_and_others_their_own() -> None:
    assert scope_of("tests/integration/test_compose.py::test_x") == "group:podman"
    assert scope_of("tests/integration/test_container_image.py::test_y[a::b]") == "group:podman"
    assert scope_of("tests/unit/test_deploy.py::TestX::test_z") == "tests/unit/test_deploy.py"
