"""Per-build scratch folders: always removed, and reclaimed after a worker was killed mid-build.

Each folder is named after the process that owns it, so a sweep (at worker start) can remove those
whose owner is gone; a ``finally`` cannot run when a worker is SIGKILLed or the machine loses power.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_PREFIX = "build-"


def _owner_alive(name: str) -> bool:
    try:
        pid = int(name.removeprefix(_PREFIX).split("-", 1)[0])
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(root: Path) -> list[Path]:
    """Removes scratch folders of dead processes under ``root``; returns what it removed."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if entry.name.startswith(_PREFIX) and not _owner_alive(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    if removed:
        log.info("removed %d abandoned build folders under %s", len(removed), root)
    return removed


@contextlib.contextmanager
def scratch(root: Path) -> Iterator[Path]:
    """A fresh private folder under ``root``, removed on exit whatever happens."""
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def disk_usage(path: Path) -> int:
    """Bytes allocated under ``path`` (like ``du``; hard links to shared inputs counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                total += st.st_blocks * 512
    return total
