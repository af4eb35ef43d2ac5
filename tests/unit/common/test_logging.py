"""The access line's background writer: same JSON as the synchronous handler, in order, nothing lost at
exit, a forked child writes its own lines only."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from common.logging import BackgroundStreamHandler, configure_logging, request_id_var


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    access = logging.getLogger("test.access")
    yield
    root.handlers[:], root.level = saved
    access.handlers[:] = []
    access.propagate = True


def _wait_for(stream: io.StringIO, lines: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = stream.getvalue()
        if text.count("\n") >= lines:
            return [json.loads(line) for line in text.splitlines()]
        time.sleep(0.01)
    raise AssertionError(f"only {stream.getvalue().count(chr(10))} of {lines} lines written")


def test_lines_from_many_threads_arrive_whole_in_order_per_thread_with_their_request_ids(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("info", background=("test.access",))
    access = logging.getLogger("test.access")
    assert isinstance(access.handlers[0], BackgroundStreamHandler) and not access.propagate

    def serve(worker: int) -> None:
        for n in range(50):
            token = request_id_var.set(f"r{worker}-{n}")
            try:
                access.info("request", extra={"n": n, "worker": worker})
            finally:
                request_id_var.reset(token)

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = _wait_for(stream, 200)
    assert len(entries) == 200
    for worker in range(4):
        mine = [e for e in entries if e["worker"] == worker]
        assert [e["n"] for e in mine] == list(range(50))
        assert all(e["request_id"] == f"r{worker}-{e['n']}" for e in mine)
        assert all(e["logger"] == "test.access" and e["msg"] == "request" for e in mine)


def test_queued_lines_are_written_at_exit_and_a_forked_child_writes_only_its_own() -> None:
    script = """
import logging, os, sys
from common.logging import configure_logging
configure_logging("info", background=("test.access",))
log = logging.getLogger("test.access")
log.info("parent-before-fork")
pid = os.fork()
if pid == 0:
    log.info("child")
    sys.exit(0)
os.waitpid(pid, 0)
for n in range(500):
    log.info("parent-%d", n)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=os.getcwd(),
    )
    messages = [json.loads(line)["msg"] for line in done.stderr.splitlines()]
    assert messages.count("parent-before-fork") == 1
    assert messages.count("child") == 1
    assert [m for m in messages if m.startswith("parent-") and m != "parent-before-fork"] == [
        f"parent-{n}" for n in range(500)
    ]


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_queued_while_the_writer_waits_are_written_in_one_write() -> None:
    """The writer is not woken per line (that cost the API a GIL hand-off per request)."""
    stream = CountingStream()
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(logging.Formatter("{message}", style="{"))
    record = logging.LogRecord("test.access", logging.INFO, __file__, 0, "line", (), None)
    handler.WRITE_INTERVAL = 0.5
    for _ in range(20):  # a request every 5 ms, 100 ms in all
        handler.handle(record)
        time.sleep(0.005)
    handler.drain()
    assert stream.getvalue() == "line\n" * 20
    assert stream.writes <= 3  # the first line at once, then the rest after WRITE_INTERVAL
