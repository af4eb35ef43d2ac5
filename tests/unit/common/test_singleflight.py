"""One read in flight per key: the waiters of one build share its Redis reads and its waiting place."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from common.builds.state import BuildRecord, Status
from common.builds.waiter import Waiter
from common.singleflight import SingleFlight


class _Counting:
    """A slow call that records how many of its calls ran at once."""

    def __init__(self, result: Any = "value", delay: float = 0.05) -> None:
        self.result, self.delay = result, delay
        self.calls = self.running = self.most = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        with self._lock:
            self.running -= 1
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


def test_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    call = _Counting()
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: flight.do("k", call), range(50)))
    assert results == ["value"] * 50
    assert call.most == 1 and call.calls < 50
    assert flight.do("k", _Counting("again", 0)) == "again"  # nothing is remembered afterwards


def test_every_caller_gets_the_error_as_an_exception_of_its_own() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    call = _Counting(ConnectionError("down"))
    raised: list[BaseException] = []

    def one(_: int) -> None:
        try:
            flight.do("k", call)
        except ConnectionError as exc:
            raised.append(exc)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(one, range(20)))
    assert len(raised) == 20 and all(str(e) == "down" for e in raised)
    assert call.most == 1


def test_a_call_begun_before_started_after_is_not_shared() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    old = _Counting("old", 0.3)
    threading.Thread(target=flight.do, args=("k", old)).start()
    time.sleep(0.05)
    assert flight.do("k", lambda: "new", started_after=time.monotonic()) == "new"
    assert flight.do("k", lambda: "fresh") == "fresh"


class _Pubsub:
    def subscribe(self, *_: Any) -> None:
        pass

    def get_message(self, timeout: float) -> None:
        time.sleep(timeout)


class _State:
    timeout = 600.0

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.read = _Counting(None, 0.02)

    def get(self, key: str) -> BuildRecord:
        self.read()
        if self.finished.is_set():
            return BuildRecord(key, Status.SUCCEEDED, heartbeat=time.time())
        return BuildRecord(key, Status.RUNNING, heartbeat=time.time())


@pytest.fixture
def waiter() -> Any:
    state = _State()
    w = Waiter(SimpleNamespace(pubsub=lambda **_: _Pubsub()), state, limit=2)  # type: ignore[arg-type]
    yield w
    w.close()


def test_waiters_of_one_build_read_its_record_one_at_a_time(waiter: Waiter) -> None:
    state: _State = waiter.state  # type: ignore[assignment]
    threading.Timer(0.3, state.finished.set).start()
    threading.Timer(0.35, lambda: [e.set() for e in list(waiter._events.get("k", []))]).start()
    with ThreadPoolExecutor(150) as pool:
        records = list(pool.map(lambda _: waiter.wait("k", 10, lambda r: None), range(150)))
    assert all(r is not None and r.status is Status.SUCCEEDED for r in records)
    assert state.read.most == 1  # 150 waiters woken at once, one Redis read in flight
    assert state.read.calls < 150


def test_a_request_for_a_build_already_waited_for_joins_beyond_the_limit(waiter: Waiter) -> None:
    assert waiter.try_reserve(["a"]) and waiter.try_reserve(["b"])
    assert not waiter.try_reserve(["c"])  # a third build: no place left
    joined = threading.Event()

    def wait_for_a() -> None:
        joined.set()
        waiter.wait("a", 0.5, lambda r: None)

    thread = threading.Thread(target=wait_for_a)
    thread.start()
    joined.wait()
    time.sleep(0.05)
    assert waiter.try_reserve(["a"])  # "a" already has a waiter here: joining costs only a thread
    assert not waiter.try_reserve(["a", "c"])  # not every build of the request is waited for
    thread.join()
    assert not waiter.try_reserve(["a"])  # nobody waits for "a" any more
    for _ in range(3):
        waiter.release()
    assert waiter.waiting == 0
