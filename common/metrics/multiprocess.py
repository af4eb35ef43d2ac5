"""Many processes, one ``/metrics``: prometheus_client's multiprocess mode, set up by the composition root.

An API pod is a gunicorn master and its worker processes; a worker pod is a Celery main process and
its prefork pool. Each process records its own values, so a scrape of any one of them would see a
fraction. In multiprocess mode every process writes its values to memory-mapped files in one
directory (``PROMETHEUS_MULTIPROC_DIR``), and the process serving ``/metrics`` merges them: counters
and histograms are summed (those of processes that exited too, so they never go backwards), gauges
combine by their definition's ``gauge_mode`` over the processes alive now.

prometheus_client chooses the mode once, when it is first imported, from the environment. So
:func:`multiprocess_directory` runs before anything imports it: ``image-factory api|worker`` enters it
first thing, the directory is fresh for this run (nothing of an earlier run is merged in), the
processes it forks inherit the variable, and it is removed when the command returns.

A live-mode gauge of a process that exited must stop counting: :func:`process_exited` (prometheus_client's
``mark_process_dead``) is called when gunicorn reaps a worker (its ``child_exit`` hook) and when a
Celery pool process shuts down; :func:`sweep_exited` catches the rest (a process killed with SIGKILL
or by the OOM killer) at every scrape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[Path]:
    """A fresh, private ``PROMETHEUS_MULTIPROC_DIR`` for this process and those it forks.

    Whatever the variable said before is ignored and restored afterwards: the directory must be
    empty at start (stale files would be merged into this run's counters) and is removed at exit,
    by this process only.
    """
    path = Path(tempfile.mkdtemp(prefix="image-factory-metrics-"))
    previous = os.environ.get(ENV)
    os.environ[ENV] = str(path)
    owner = os.getpid()
    try:
        yield path
    finally:
        # Not in a forked process leaving through its parent's frames (a gunicorn worker exits with
        # sys.exit from inside the master's serve()): the directory is the parent's, in use.
        if os.getpid() == owner:
            if previous is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = previous
            shutil.rmtree(path, ignore_errors=True)


def directory() -> Path | None:
    """The multiprocess directory of this process, if it runs in multiprocess mode."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def process_exited(pid: int) -> None:
    """Stops counting the live-mode gauges of process ``pid`` (its counters stay)."""
    path = directory()
    if path is None:
        return
    from prometheus_client.multiprocess import mark_process_dead

    with contextlib.suppress(FileNotFoundError):  # a concurrent sweep removed it first
        mark_process_dead(pid, str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep_exited(path: Path) -> list[int]:
    """Removes the live-mode gauge files of processes that no longer exist; returns their pids."""
    gone: set[int] = set()
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    for name in names:
        match = _LIVE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            gone.add(int(match.group(1)))
    if gone:
        from prometheus_client.multiprocess import mark_process_dead

        for pid in gone:
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, str(path))
    if gone:
        log.info("metrics of exited processes dropped", extra={"pids": sorted(gone)})
    return sorted(gone)
