"""Build state on a real Redis: the enqueue decisions, slots, queue positions and the waiter."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.builds.state import STALE_AFTER, UNAVAILABLE_TTL, BuildState, Enqueue, Status, record_key
from common.builds.waiter import Waiter
from devstack.services import RedisServer

pytestmark = pytest.mark.integration

REQ = {"schematic": "s" * 64, "version": "v1.12.4", "path": "metal-amd64.iso"}
META = {"kind": "iso", "version": "v1.12.4", "arch": "amd64"}


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/15")
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def state(client: redis.Redis, **kw: float) -> BuildState:
    options = {"max_queue": 3, "timeout": 600.0, "failure_ttl": 2.0, **kw}
    return BuildState(client, **options)  # type: ignore[arg-type]


def test_enqueue_join_and_queue_positions(client: redis.Redis) -> None:
    s = state(client)
    assert s.enqueue("a", REQ, **META) is Enqueue.ENQUEUED
    assert s.enqueue("a", REQ, **META) is Enqueue.JOINED
    assert s.enqueue("b", REQ, **META) is Enqueue.ENQUEUED
    assert (s.queue_position("a"), s.queue_position("b"), s.queue_position("z")) == (1, 2, None)
    rec = s.get("a")
    assert rec is not None and rec.status is Status.QUEUED and rec.request == REQ and rec.kind == "iso"


def test_queue_bound_refuses_new_builds_only(client: redis.Redis) -> None:
    s = state(client)
    for key in "abc":
        assert s.enqueue(key, REQ, **META) is Enqueue.ENQUEUED
    assert s.enqueue("d", REQ, **META) is Enqueue.FULL
    assert s.enqueue("a", REQ, **META) is Enqueue.JOINED  # joining is always fine
    s.start("a", "w:1", REQ)
    s.dequeue("a")
    assert s.enqueue("d", REQ, **META) is Enqueue.ENQUEUED


def test_failure_is_remembered_for_its_ttl(client: redis.Redis) -> None:
    s = state(client)
    s.enqueue("a", REQ, **META)
    s.start("a", "w:1", REQ)
    s.fail("a", status=400, message="bad extension")
    assert s.enqueue("a", REQ, **META) is Enqueue.FAILED
    rec = s.get("a")
    assert rec is not None
    assert (rec.status, rec.error_status, rec.error) == (Status.FAILED, 400, "bad extension")
    assert s.queue_position("a") is None
    assert 0 < client.ttl(record_key("a")) <= 2
    time.sleep(2.2)
    assert s.enqueue("a", REQ, **META) is Enqueue.ENQUEUED


def test_a_build_without_heartbeat_is_queued_again_with_its_attempts(client: redis.Redis) -> None:
    s = state(client)
    s.enqueue("a", REQ, **META)
    assert s.start("a", "w:1", REQ) == 1
    assert s.enqueue("a", REQ, **META) is Enqueue.JOINED
    client.hset(record_key("a"), "heartbeat", repr(time.time() - STALE_AFTER - 1))
    rec = s.get("a")
    assert rec is not None and rec.stale(time.time(), s.timeout)
    assert s.enqueue("a", REQ, **META) is Enqueue.ENQUEUED
    assert s.start("a", "w:2", REQ) == 2  # a build that keeps killing workers is not retried forever


def test_success_expires_and_feeds_the_eta(client: redis.Redis) -> None:
    s = state(client)
    for seconds in (10.0, 30.0, 20.0):
        s.enqueue("a", REQ, **META)
        s.start("a", "w:1", REQ)
        s.succeed("a", size=5, seconds=seconds)
    assert s.typical_seconds("v1.12.4", "iso", "amd64") == 20.0
    assert s.typical_seconds("v1.12.4", "iso", "arm64") is None
    assert 0 < client.ttl(record_key("a")) <= 24 * 3600
    # A succeeded record whose asset is gone from the cache is built again.
    assert s.enqueue("a", REQ, **META) is Enqueue.ENQUEUED


def test_slots_are_a_cluster_wide_semaphore_with_leases(client: redis.Redis) -> None:
    s = state(client)
    assert s.acquire_slot("t1", 2) and s.acquire_slot("t2", 2)
    assert not s.acquire_slot("t3", 2)
    assert s.acquire_slot("t1", 2)  # renewing one's own lease
    s.release_slot("t1")
    assert s.acquire_slot("t3", 2)
    assert s.acquire_slot("t4", 4, lease=0.2) and s.acquire_slot("t5", 4, lease=0.2)
    assert not s.acquire_slot("t6", 4)
    time.sleep(0.3)  # leases of dead holders run out
    assert s.acquire_slot("t6", 4)


def test_waiter_wakes_on_the_done_message(client: redis.Redis) -> None:
    s = state(client)
    waiter = Waiter(client, s, limit=2)
    s.enqueue("a", REQ, **META)
    s.start("a", "w:1", REQ)
    threading.Timer(0.3, lambda: s.succeed("a", size=1, seconds=1.0)).start()
    began = time.monotonic()
    rec = waiter.wait("a", 30, lambda r: pytest.fail("not stale"))
    assert rec is not None and rec.status is Status.SUCCEEDED
    assert time.monotonic() - began < 1.5  # woken by pub/sub, not by the 2 s poll
    assert waiter.try_reserve() and waiter.try_reserve() and not waiter.try_reserve()
    waiter.close()


def test_waiter_reports_stale_builds_and_times_out(client: redis.Redis) -> None:
    s = state(client)
    waiter = Waiter(client, s, limit=1)
    s.enqueue("a", REQ, **META)
    s.start("a", "w:1", REQ)
    client.hset(record_key("a"), "heartbeat", "0")
    stale: list[str] = []
    rec = waiter.wait("a", 0.5, lambda r: stale.append(r.key))
    assert rec is not None and rec.status is Status.RUNNING
    assert stale and set(stale) == {"a"}
    waiter.close()


def test_a_failure_for_an_outage_is_remembered_only_seconds(client: redis.Redis) -> None:
    s = state(client, failure_ttl=3600.0)
    s.enqueue("a", REQ, **META)
    s.start("a", "w:1", REQ)
    s.fail("a", status=503, message="registry is unavailable")
    assert s.enqueue("a", REQ, **META) is Enqueue.FAILED  # its waiters get the 503
    assert 0 < client.ttl(record_key("a")) <= UNAVAILABLE_TTL  # not the hour of failure_ttl


def test_the_heartbeat_restores_a_lost_record_and_keeps_a_requeued_one(client: redis.Redis) -> None:
    s = state(client)
    restore = {"status": "running", "worker": "w:1", "stage": "building"}
    s.enqueue("a", REQ, **META)
    s.start("a", "w:1", REQ)
    client.delete(record_key("a"))  # what a Redis restarted empty leaves
    s.beat("a", restore)
    rec = s.get("a")
    assert rec is not None and (rec.status, rec.worker) == (Status.RUNNING, "w:1")
    assert rec.heartbeat is not None and time.time() - rec.heartbeat < 5
    client.delete(record_key("a"))
    assert s.enqueue("a", REQ, **META) is Enqueue.ENQUEUED  # a waiter queued it again first
    s.beat("a", restore)
    rec = s.get("a")
    assert rec is not None and rec.status is Status.QUEUED  # not overwritten


def test_a_wait_rides_out_a_redis_restart_and_hands_the_lost_build_on(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as own:
        c = redis.Redis.from_url(own.url, socket_timeout=2, socket_connect_timeout=2)
        s = state(c)
        waiter = Waiter(c, s, limit=2)
        s.enqueue("a", REQ, **META)
        lost: list[str] = []

        def requeue(key: str) -> None:
            lost.append(key)
            s.enqueue(key, REQ, **META)
            s.start(key, "w:2", REQ)
            s.succeed(key, size=1, seconds=1.0)

        done = threading.Event()

        def restart() -> None:
            time.sleep(0.3)
            own.stop()
            time.sleep(2.5)  # longer than a poll: the wait meets the outage
            own.start()
            done.wait()  # redis-server dies with the thread that started it (PR_SET_PDEATHSIG)

        restarter = threading.Thread(target=restart)
        restarter.start()
        began = time.monotonic()
        try:
            rec = waiter.wait("a", 60, lambda r: pytest.fail("not stale"), requeue)
        finally:
            done.set()
            restarter.join()
        assert rec is not None and rec.status is Status.SUCCEEDED
        assert lost == ["a"]
        assert time.monotonic() - began < 15
        # Still down when its time is up: the outage is the answer (a 503 at the API's edge).
        own.stop()
        with pytest.raises(redis.ConnectionError):
            waiter.wait("b", 1.0, lambda r: None, lambda k: None)
        waiter.close()
        c.close()
