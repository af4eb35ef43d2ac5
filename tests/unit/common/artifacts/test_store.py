"""ArtifactStore under real contention: threads, spawned processes, SIGKILL, no mocks.

Builds are counted through files that ``build`` writes outside the store, so a count covers every
process. Processes coordinate through marker files, polled with a deadline.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from common.artifacts.store import ArtifactStore, StoreError, disk_usage

CTX = multiprocessing.get_context("spawn")
BIG = 1 << 40
CHUNK = 64 * 1024


def counting_build(counts: Path, payload: str, delay: float = 0.0) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        (counts / f"{os.getpid()}-{uuid.uuid4().hex}").write_text(payload)
        time.sleep(delay)
        (target / "payload").write_text(payload)
        (target / "blob").write_bytes(os.urandom(CHUNK))

    return build


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.01)


def builds(counts: Path) -> int:
    return len(list(counts.iterdir()))


def leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for sub in ("entries", "tmp", "locks") for p in (root / sub).iterdir()
    )


# -- child process bodies (module level, so "spawn" can import them) ------------------------------


def child_use(root: str, counts: str, key: str, out: str, barrier: Barrier | None) -> None:
    store = ArtifactStore(Path(root), BIG)
    if barrier is not None:
        barrier.wait(10)
    with store.entry(key, counting_build(Path(counts), key, delay=0.5)) as path:
        Path(out).write_text((path / "payload").read_text())


def child_hold(root: str, key: str, ready: str, release: str) -> None:
    store = ArtifactStore(Path(root), BIG)

    def build(target: Path) -> None:
        (target / "payload").write_text(key)

    with store.entry(key, build):
        Path(ready).touch()
        wait_for(Path(release))


def child_build_slowly(root: str, key: str, started: str, release: str | None) -> None:
    store = ArtifactStore(Path(root), BIG)

    def build(target: Path) -> None:
        (target / "partial").write_bytes(os.urandom(CHUNK))
        Path(started).touch()
        if release is None:
            time.sleep(60)  # killed long before this ends
        else:
            wait_for(Path(release))
        (target / "payload").write_text(key)

    with store.entry(key, build):
        pass


def run_child(target: Callable[..., None], *args: object) -> multiprocessing.process.BaseProcess:
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def join_ok(proc: multiprocessing.process.BaseProcess) -> None:
    proc.join(15)
    assert proc.exitcode == 0


# -- tests ----------------------------------------------------------------------------------------


@pytest.fixture
def counts(tmp_path: Path) -> Path:
    path = tmp_path / "counts"
    path.mkdir()
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_builds_once_under_threads(root: Path, counts: Path) -> None:
    store = ArtifactStore(root, BIG)
    barrier = threading.Barrier(8)
    seen: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(10)
            with store.entry("blob-sha256-aa", counting_build(counts, "hello", delay=0.3)) as path:
                seen.append((path / "payload").read_text())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert seen == ["hello"] * 8
    assert builds(counts) == 1
    assert store.keys() == ["blob-sha256-aa"]


def test_builds_once_under_processes(root: Path, counts: Path, tmp_path: Path) -> None:
    ArtifactStore(root, BIG)
    barrier = CTX.Barrier(4)
    outs = [tmp_path / f"out-{i}" for i in range(4)]
    procs = [
        run_child(child_use, str(root), str(counts), "tree-sha256-bb", str(out), barrier) for out in outs
    ]
    for proc in procs:
        join_ok(proc)
    assert [out.read_text() for out in outs] == ["tree-sha256-bb"] * 4
    assert builds(counts) == 1


def test_failing_build_leaves_nothing_and_a_later_call_rebuilds(root: Path, counts: Path) -> None:
    store = ArtifactStore(root, BIG)
    boom = RuntimeError("boom")

    def failing(target: Path) -> None:
        (target / "half").write_bytes(b"x" * CHUNK)
        raise boom

    with pytest.raises(RuntimeError) as info, store.entry("k", failing):
        pytest.fail("the with block must not run")
    assert info.value is boom
    assert leftovers(root) == []
    assert store.keys() == []

    with store.entry("k", counting_build(counts, "second")) as path:
        assert (path / "payload").read_text() == "second"
        assert not (path / "half").exists()
    assert builds(counts) == 1


def test_waiter_builds_itself_when_the_first_builder_fails(root: Path, counts: Path) -> None:
    store = ArtifactStore(root, BIG)
    started = threading.Event()
    result: list[str] = []

    def failing(target: Path) -> None:
        started.set()
        time.sleep(0.2)  # the waiter is blocked on the key's lock by now
        raise ValueError("registry went away")

    def waiter() -> None:
        started.wait(5)
        with store.entry("k", counting_build(counts, "retry")) as path:
            result.append((path / "payload").read_text())

    thread = threading.Thread(target=waiter)
    thread.start()
    with pytest.raises(ValueError, match="registry went away"), store.entry("k", failing):
        pass
    thread.join(5)
    assert result == ["retry"]
    assert builds(counts) == 1


def test_lru_order_is_shared_across_processes(root: Path, counts: Path, tmp_path: Path) -> None:
    store = ArtifactStore(root, BIG)
    for key in ("a", "b", "c"):
        with store.entry(key, counting_build(counts, key)):
            pass
        time.sleep(0.03)  # file timestamps tick per jiffy, not per nanosecond
    one = store.size() // 3

    # Another process uses the oldest entry: "b" becomes least recently used.
    out = tmp_path / "out"
    join_ok(run_child(child_use, str(root), str(counts), "a", str(out), None))
    assert out.read_text() == "a"
    time.sleep(0.03)

    # A new entry in a store sized for three evicts exactly "b" once "d" is built.
    small = ArtifactStore(root, 3 * one + one // 2)
    with small.entry("d", counting_build(counts, "d")):
        assert small.keys() == ["a", "c", "d"]
    assert small.evict() == 0
    assert small.size() == 3 * one

    # Shrinking the budget to one entry keeps the most recent use.
    assert ArtifactStore(root, one).evict() == 2 * one
    assert store.keys() == ["d"]
    assert builds(counts) == 4


def test_in_use_entry_survives_eviction_from_another_process(
    root: Path, counts: Path, tmp_path: Path
) -> None:
    store = ArtifactStore(root, BIG)
    for key in ("a", "b", "c"):
        with store.entry(key, counting_build(counts, key)):
            pass
    one = store.size() // 3
    ready, release = tmp_path / "ready", tmp_path / "release"
    proc = run_child(child_hold, str(root), "b", str(ready), str(release))
    try:
        wait_for(ready)
        empty = ArtifactStore(root, 0)
        assert empty.evict() == 2 * one
        assert empty.keys() == ["b"]
        assert empty.size() == one
    finally:
        release.touch()
        join_ok(proc)
    assert empty.evict() == one
    assert empty.keys() == []
    assert leftovers(root) == []
    assert builds(counts) == 3


def test_fresh_entry_over_budget_survives_its_own_eviction(root: Path, counts: Path) -> None:
    store = ArtifactStore(root, 0)
    with store.entry("big", counting_build(counts, "big")) as path:
        assert (path / "payload").read_text() == "big"
        assert store.keys() == ["big"]
        assert store.evict() == 0
        size = store.size()
        assert size >= CHUNK
    assert store.evict() == size
    assert store.keys() == []


def test_eviction_spares_a_build_in_progress(root: Path, tmp_path: Path) -> None:
    store = ArtifactStore(root, 0)
    started, release = tmp_path / "started", tmp_path / "release"
    proc = run_child(child_build_slowly, str(root), "slow", str(started), str(release))
    try:
        wait_for(started)
        assert store.evict() == 0
        assert len(list((root / "tmp").iterdir())) == 1  # the live build dir is kept
    finally:
        release.touch()
        join_ok(proc)
    assert store.keys() == ["slow"]


def test_sigkilled_builder_leaves_no_entry_and_the_next_caller_builds(
    root: Path, counts: Path, tmp_path: Path
) -> None:
    store = ArtifactStore(root, BIG)
    started = tmp_path / "started"
    proc = run_child(child_build_slowly, str(root), "victim", str(started), None)
    wait_for(started)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(5)
    assert proc.exitcode == -signal.SIGKILL
    assert store.keys() == []
    assert len(list((root / "tmp").iterdir())) == 1  # only the orphaned build dir

    with store.entry("victim", counting_build(counts, "rebuilt")) as path:
        assert (path / "payload").read_text() == "rebuilt"
        assert not (path / "partial").exists()
    assert builds(counts) == 1
    assert list((root / "tmp").iterdir()) == []  # swept by the eviction after the build


@pytest.mark.parametrize(
    "key",
    ["", ".hidden", ".", "..", "../x", "a/b", "a b", "a~b", "ü", "a\x00b", "x" * 201, "blob:sha256"],
)
def test_invalid_keys_are_refused(root: Path, key: str) -> None:
    store = ArtifactStore(root, BIG)
    called: list[Path] = []
    with pytest.raises(ValueError, match="invalid artifact store key"), store.entry(key, called.append):
        pass
    assert called == []
    assert leftovers(root) == []


@pytest.mark.parametrize("key", ["x" * 200, "blob-sha256-0123abcd", "tree.v1_A-Z"])
def test_valid_keys_are_accepted(root: Path, counts: Path, key: str) -> None:
    store = ArtifactStore(root, BIG)
    with store.entry(key, counting_build(counts, key)):
        pass
    assert store.keys() == [key]


def test_size_counts_allocated_blocks_not_apparent_size(root: Path) -> None:
    store = ArtifactStore(root, BIG)

    def build(target: Path) -> None:
        with open(target / "sparse.img", "wb") as f:
            f.truncate(100 << 20)
        (target / "real").write_bytes(os.urandom(CHUNK))
        os.link(target / "real", target / "hardlink")

    with store.entry("sparse", build) as path:
        assert (path / "sparse.img").stat().st_size == 100 << 20
        size = store.size()
        assert size == disk_usage(path)
    assert CHUNK <= size < 1 << 20
    assert store.keys() == ["sparse"]


def test_build_that_removes_its_directory_is_a_store_error(root: Path) -> None:
    store = ArtifactStore(root, BIG)
    with pytest.raises(StoreError, match="'gone'"), store.entry("gone", lambda target: target.rmdir()):
        pass
    assert leftovers(root) == []
