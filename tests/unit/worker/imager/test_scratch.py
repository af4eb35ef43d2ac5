"""Per-build scratch folders: removed on success and failure, reclaimed after a killed worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.imager.scratch import disk_usage, scratch, sweep


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folder_is_removed_after_success_and_failure(tmp_path: Path) -> None:
    with scratch(tmp_path) as work:
        (work / "file").write_bytes(b"x" * 10000)
        assert work.parent == tmp_path and work.name.startswith(f"build-{os.getpid()}-")
    assert not work.exists()
    with pytest.raises(RuntimeError), scratch(tmp_path) as work:
        (work / "deep/er").mkdir(parents=True)
        raise RuntimeError("tool failed")
    assert not work.exists()
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_only_folders_of_dead_processes(tmp_path: Path) -> None:
    abandoned = tmp_path / f"build-{dead_pid()}-abc"
    (abandoned / "sub").mkdir(parents=True)
    (abandoned / "sub/big.img").write_bytes(b"\0" * 4096)
    mine = tmp_path / f"build-{os.getpid()}-def"
    mine.mkdir()
    foreign = tmp_path / "not-a-build"
    foreign.mkdir()
    assert sweep(tmp_path) == [abandoned]
    assert not abandoned.exists() and mine.exists() and foreign.exists()
    assert sweep(tmp_path / "missing") == []


def test_a_killed_build_is_reclaimed(tmp_path: Path) -> None:
    """A process SIGKILLed inside scratch() leaves its folder; the next sweep removes it."""
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from worker.imager.scratch import scratch\n"
        "with scratch(Path(sys.argv[1])) as w:\n"
        "    (w / 'half-written.iso').write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert proc.returncode == -9
    (left,) = list(tmp_path.iterdir())
    assert (left / "half-written.iso").exists()
    assert sweep(tmp_path) == [left]
    assert list(tmp_path.iterdir()) == []


def test_disk_usage_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"y" * 1_000_000)
    os.link(tmp_path / "a", tmp_path / "b")
    assert 1_000_000 <= disk_usage(tmp_path) < 1_100_000
