"""Handing a build back: HandBack interrupts the build's main thread when the grace period ends."""

from __future__ import annotations

import threading
import time

import pytest

from common.shutdown import ShutdownClock
from worker.imager import tools
from worker.shutdown import HandBack, interruptible


def test_a_tool_still_running_when_the_grace_period_ends_is_killed_and_the_build_handed_back() -> None:
    clock = ShutdownClock()
    began = time.monotonic()
    threading.Timer(0.2, clock.begin, args=(0.3,)).start()
    with pytest.raises(HandBack), interruptible(clock):
        tools.run(["sleep", "30"])  # blocked in wait4: the signal interrupts it, the tool is killed
    assert time.monotonic() - began < 3


def test_a_build_finishing_within_the_grace_period_is_left_alone() -> None:
    clock = ShutdownClock()
    clock.begin(30.0)
    with interruptible(clock):
        tools.run(["sleep", "0.7"])


def test_nothing_is_interrupted_outside_the_window() -> None:
    clock = ShutdownClock()
    with interruptible(clock):
        pass
    clock.begin(0.0)
    time.sleep(1.2)  # the watcher is gone: no late signal
    with pytest.raises(HandBack), interruptible(clock):  # already due: given back before it starts
        pytest.fail("the body must not run")


def test_a_build_off_the_main_thread_is_not_interrupted() -> None:
    clock = ShutdownClock()
    clock.begin(0.0)
    outcome: list[str] = []

    def body() -> None:
        clock.reset()
        with interruptible(clock):
            clock.begin(0.0)
            time.sleep(1.0)
            outcome.append("finished")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == ["finished"]
