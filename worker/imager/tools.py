"""Running the external tools the imager needs, with errors that say which tool failed and why.

Each run is reaped with ``wait4`` so its own peak RSS and wall time are known; a build collects
them in a :class:`ToolLog` (peak memory of the build, and the benchmark's "raw tools" floor).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.errors import FactoryError

log = logging.getLogger(__name__)

#: Every build runs with a fixed locale and timezone so tools sort and stamp the same way everywhere.
_BASE_ENV = {
    "LC_ALL": "C",
    "TZ": "UTC",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


class ToolError(FactoryError):
    """A tool exited non-zero or is missing; the build fails (500), the message names the tool."""

    status = 500


@dataclass(frozen=True)
class ToolRun:
    name: str
    seconds: float
    peak_rss: int  # bytes


@dataclass
class ToolLog:
    """The tools one build ran (collected through a context variable, so threads don't mix)."""

    runs: list[ToolRun] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    @property
    def peak_rss(self) -> int:
        return max((r.peak_rss for r in self.runs), default=0)


_current: contextvars.ContextVar[ToolLog | None] = contextvars.ContextVar("imager_tool_log", default=None)


@contextlib.contextmanager
def recording() -> Iterator[ToolLog]:
    record = ToolLog()
    token = _current.set(record)
    try:
        yield record
    finally:
        _current.reset(token)


def which(name: str) -> str:
    path = shutil.which(name, path=_BASE_ENV["PATH"])
    if path is None:
        raise ToolError(f"required tool {name!r} is not installed")
    return path


def _pump(src: IO[bytes], sink: list[bytes]) -> None:
    while chunk := src.read(1 << 16):
        sink.append(chunk)


def _feed(dst: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):
        dst.write(data)
    with contextlib.suppress(BrokenPipeError):
        dst.close()


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | IO[bytes] | None = None,
    stdout: IO[bytes] | None = None,
) -> bytes:
    """Runs ``cmd`` and returns its stdout (unless redirected to ``stdout``).

    ``stdin`` may be bytes or an open file; the tool's stderr is kept for the error message only.
    """
    args = [os.fspath(c) for c in cmd]
    name = Path(args[0]).name
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    full_env = {**_BASE_ENV, **(env or {})}
    feed = stdin if isinstance(stdin, bytes) else None
    source: int | IO[bytes] = subprocess.DEVNULL
    if feed is not None:
        source = subprocess.PIPE
    elif stdin is not None and not isinstance(stdin, bytes):
        source = stdin
    log.debug("running %s", " ".join(args))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=source,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise ToolError(f"{name} could not be started: {exc}") from exc
    out: list[bytes] = []
    err: list[bytes] = []
    threads = [threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)]
    if stdout is None:
        threads.append(threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True))
    if feed is not None:
        threads.append(threading.Thread(target=_feed, args=(proc.stdin, feed), daemon=True))
    for t in threads:
        t.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    record = _current.get()
    if record is not None:
        record.runs.append(ToolRun(name, time.monotonic() - started, usage.ru_maxrss * 1024))
    if proc.returncode != 0:
        tail = b"".join(err).decode(errors="replace").strip()[-2000:]
        raise ToolError(f"{name} failed with exit code {proc.returncode}: {tail}")
    return b"".join(out)


# --- feeding and reading tools through pipes ---------------------------------------------------------

_STREAM_CHUNK = 1 << 20


def stream_to_tool(
    cmd: Sequence[str | os.PathLike[str]],
    produce: Callable[[IO[bytes]], None],
    *,
    stdout: IO[bytes] | None = None,
) -> None:
    """Runs ``cmd`` with ``produce`` writing its stdin through a pipe, so nothing is staged in memory."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []
    broken = threading.Event()

    def writer() -> None:
        try:
            with open(write_fd, "wb") as pipe:
                produce(pipe)
        except BrokenPipeError:
            broken.set()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=writer, name=f"feed-{Path(os.fspath(cmd[0])).name}", daemon=True)
    thread.start()
    tool_error: ToolError | None = None
    try:
        with open(read_fd, "rb") as pipe:
            run(cmd, stdin=pipe, stdout=stdout)
    except ToolError as exc:
        tool_error = exc
    finally:
        thread.join()
    if failure:
        raise failure[0] from tool_error
    if tool_error is not None:
        raise tool_error
    if broken.is_set():
        raise ToolError(f"{Path(os.fspath(cmd[0])).name} stopped reading its input")


@contextlib.contextmanager
def stream_from_tool(cmd: Sequence[str | os.PathLike[str]], *, stdin: IO[bytes]) -> Iterator[IO[bytes]]:
    """Runs ``cmd`` and yields its stdout as a stream; whatever is left unread is drained."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def runner() -> None:
        try:
            with open(write_fd, "wb") as pipe:
                run(cmd, stdin=stdin, stdout=pipe)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=runner, name=f"read-{Path(os.fspath(cmd[0])).name}", daemon=True)
    thread.start()
    try:
        with open(read_fd, "rb") as pipe:
            yield pipe
            while pipe.read(_STREAM_CHUNK):
                pass
    finally:
        thread.join()
    if failure:
        raise failure[0]
