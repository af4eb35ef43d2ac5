"""The shutdown clock, and requests waiting for a build in a stopping API process."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

import pytest

from common.builds.state import BuildRecord, Status
from common.builds.waiter import Waiter
from common.config import load_config
from common.delivery.service import Delivery, Pending, StoppingError
from common.shutdown import WAIT_SHARE, ShutdownClock


def test_the_clock_runs_from_the_first_begin() -> None:
    clock = ShutdownClock()
    assert not clock.stopping and clock.left() is None and clock.wait_left() is None and not clock.due()
    clock.begin(10.0)
    clock.begin(0.0)  # a second SIGTERM does not shorten the period
    assert clock.stopping and not clock.due()
    left, wait_left = clock.left(), clock.wait_left()
    assert left is not None and 9.0 < left <= 10.0
    assert wait_left is not None and 10.0 * WAIT_SHARE - 1 < wait_left <= 10.0 * WAIT_SHARE
    clock.reset()
    clock.begin(0.0)
    assert clock.due()


def test_a_shared_clock_started_in_the_parent_is_seen_by_a_child_forked_before() -> None:
    clock = ShutdownClock(shared=True)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a Celery pool process
        os.close(write)
        os.read(read, 1)  # the parent has begun
        os._exit(0 if clock.stopping and clock.due() else 1)
    os.close(read)
    clock.begin(0.0)
    os.write(write, b"x")
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


class _Redis:
    """Just enough for the waiter's notification listener: no message ever comes."""

    def pubsub(self, **_: Any) -> Any:
        return SimpleNamespace(subscribe=lambda *_: None, get_message=lambda timeout: time.sleep(timeout))


class _State:
    timeout = 600.0

    def get(self, key: str) -> BuildRecord:
        return BuildRecord(key, Status.RUNNING, heartbeat=time.time())


class _Metrics:
    """Drops every event, whatever it is."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *_, **__: None


def delivery(clock: ShutdownClock) -> tuple[Delivery, Waiter]:
    state = _State()
    waiter = Waiter(_Redis(), state, limit=2, shutdown=clock)  # type: ignore[arg-type]
    services = SimpleNamespace(config=load_config([], environ={}), builds=state, metrics=_Metrics())
    return Delivery(services, waiter), waiter  # type: ignore[arg-type]


def test_a_running_process_answers_a_wait_that_timed_out_with_pending() -> None:
    d, waiter = delivery(ShutdownClock())
    assert isinstance(d._wait(["k"], timeout=0.2), Pending)
    waiter.close()


def test_a_stopping_process_answers_a_wait_with_503_by_its_share_of_the_grace_period() -> None:
    clock = ShutdownClock()
    d, waiter = delivery(clock)
    clock.begin(1.0)
    began = time.monotonic()
    with pytest.raises(StoppingError) as raised:
        d._wait(["k"], timeout=600)
    assert 0.3 < time.monotonic() - began < 1.0  # half of the second, not the wait's 10 minutes
    assert raised.value.status == 503 and raised.value.retry_after > 0
    began = time.monotonic()
    with pytest.raises(StoppingError):  # a new wait after its share passed: answered at once
        d._wait(["k"], timeout=600)
    assert time.monotonic() - began < 0.3
    assert waiter.waiting == 0  # the waiting places were given back
    waiter.close()
