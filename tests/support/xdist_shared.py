"""What the pytest-xdist workers of one run build once and share, and how tests are grouped on them.

``make test`` runs ``pytest -n 2 --dist loadfile``. Each worker is a process with session fixtures of
its own (Redis, registry, S3 on private ports), so most things need no sharing. Two do:

* **Expensive builds** (the fixture release: ~50 s and 240 MB of registry storage). :func:`build_once`
  is the recipe of pytest-xdist's documentation ("Making session-scoped fixtures execute only once",
  https://pytest-xdist.readthedocs.io/en/stable/how-to.html): a directory under the run's temporary
  root (``getbasetemp().parent``, shared by the run's workers and by no other run), built under a file
  lock (PyPI ``filelock``) by whichever worker asks first, then only read. :func:`shared_release`
  builds the release into a private registry that way and copies its storage into each worker's own
  registry (:func:`copy_registry_storage`), so every worker keeps a registry nobody else writes to.
* **Scheduling** (:class:`GroupedFileScheduling`): ``loadfile`` sends whole modules to a worker, so a
  module-scoped stack (there are ~100 module fixtures: stacks, built disk images, rendered charts)
  starts once, not on both workers as with ``load``; the modules of :data:`GROUPS`, which share
  something machine-wide, go to the same worker, so they never run at the same time. Node ids stay
  as they are (``loadgroup`` would append ``@group`` to every one), so a failure can be re-run by
  copying its id.

Without xdist (``-n 0``, a plain ``pytest``) the same code runs in the one process, with the session's
own base temp as root, so nothing leaks between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from filelock import FileLock
from xdist.scheduler import LoadFileScheduling

from devstack.release.release import VERSIONS, Release, build_release
from devstack.services import RegistryServer

__all__ = [
    "GROUPS",
    "GroupedFileScheduling",
    "build_once",
    "copy_registry_storage",
    "run_root",
    "scope_of",
    "shared_release",
]

#: Modules (paths from the repository root) that must share one worker, by group name, and why.
GROUPS: dict[str, tuple[str, ...]] = {
    # Both build localhost/image-factory:dev in the machine's one podman storage (a build of the same tag
    # on each worker at once), and compose publishes fixed host ports (8080, 8081, 5000, 8333).
    "podman": ("tests/integration/test_container_image.py", "tests/integration/test_compose.py"),
}


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module's path, or the group of :data:`GROUPS` holding it."""
    module = nodeid.split("::", 1)[0]
    for group, modules in GROUPS.items():
        if module in modules:
            return f"group:{group}"
    return module


class GroupedFileScheduling(LoadFileScheduling):
    """pytest-xdist's ``loadfile`` scheduling, with the modules of :data:`GROUPS` as one unit each."""

    def _split_scope(self, nodeid: str) -> str:
        return scope_of(nodeid)


def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's directory shared by its xdist workers (``…/pytest-N``); the session's own without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_once(root: Path, name: str, build: Callable[[Path], None]) -> Path:
    """``root/name`` (``root``: :func:`run_root`), made by ``build(directory)`` once, whichever worker
    asks first.

    The others wait on the lock and then use what is there. ``build`` gets a fresh scratch directory
    that is renamed to ``name`` only when it returned, so a failed build leaves nothing behind and the
    next worker tries again (and reports its own error).
    """
    final = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not final.is_dir():
            scratch = root / f".{name}.building"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            try:
                build(scratch)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            scratch.rename(final)
    return final


def copy_registry_storage(src: Path, dest: Path) -> None:
    """Copy docker-registry filesystem storage ``src`` into ``dest`` (another registry's, maybe running).

    Blob data (``docker/registry/v2/blobs/…/data``) is hard-linked: distribution writes a blob once, by
    renaming a finished upload into place, and never rewrites it, so sharing the inode is safe and costs
    no space. Everything else (tag and layer ``link`` files, which distribution rewrites in place) is
    copied, so one registry's writes never show in another's. Files ``dest`` already has are kept: a
    blob path is its digest, and the release's tags must not overwrite a test's. Blobs come first, then
    the repositories that point at them.
    """
    files = sorted((p for p in src.rglob("*") if p.is_file()), key=lambda p: "/blobs/" not in str(p))
    for path in files:
        rel = path.relative_to(src)
        target = dest / rel
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[-1] == "data" and "blobs" in rel.parts:
            try:
                os.link(path, target)
                continue
            except OSError:  # another file system: a copy does as well
                pass
        shutil.copyfile(path, target)


def shared_release(
    registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
    namespace: str,
    versions: Sequence[str] = VERSIONS,
) -> Release:
    """The fixture release (devstack.release) under ``namespace`` in ``registry``, built once per run.

    The release's bytes do not depend on the registry it is pushed to (``build_release`` is
    deterministic; tests/integration/test_artifacts.py checks that a rebuild gives the same digests), so
    a copy of the storage it was pushed to serves exactly what a push would have. The returned
    :class:`Release` names ``registry`` and this session's copies of ``cosign.pub`` and
    ``trusted_root.json``.
    """
    key = hashlib.sha256(json.dumps([namespace, list(versions)]).encode()).hexdigest()[:12]

    def build(directory: Path) -> None:
        with RegistryServer(directory / "registry") as builder:
            build_release(builder.host, directory / "out", namespace=namespace, versions=versions)

    built = build_once(run_root(tmp_path_factory), f"release-{namespace}-{key}", build)
    copy_registry_storage(built / "registry" / "data", registry.data_dir)
    out = tmp_path_factory.mktemp("release")
    release = Release.load(built / "out" / "release.json")
    release.registry = registry.host
    release.public_key = str(shutil.copyfile(built / "out" / "cosign.pub", out / "cosign.pub"))
    if release.trusted_root:
        release.trusted_root = str(
            shutil.copyfile(built / "out" / "trusted_root.json", out / "trusted_root.json")
        )
    (out / "release.json").write_text(release.to_json())
    return release
