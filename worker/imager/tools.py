"""Running the external tools the imager needs, with errors that say which tool failed and why."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
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


def which(name: str) -> str:
    path = shutil.which(name, path=_BASE_ENV["PATH"])
    if path is None:
        raise ToolError(f"required tool {name!r} is not installed")
    return path


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
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    full_env = {**_BASE_ENV, **(env or {})}
    data = stdin if isinstance(stdin, bytes) else None
    stdin_arg = None if isinstance(stdin, bytes) or stdin is None else stdin
    log.debug("running %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=full_env,
            input=data,
            stdin=stdin_arg if data is None else None,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    except OSError as exc:
        raise ToolError(f"{Path(args[0]).name} could not be started: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise ToolError(f"{Path(args[0]).name} failed with exit code {proc.returncode}: {tail}")
    return proc.stdout if stdout is None else b""


def children_peak_rss() -> int:
    """Peak resident set (bytes) of the largest tool run so far by this process."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
