"""Multiprocess mode, as ``image-factory api|worker`` run it: every process of a pod records into one
directory, the listener merges them. prometheus_client picks the mode when it is first imported, so
each scenario runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from tests.paths import REPO_ROOT


def run(*code: str) -> Any:
    """Runs the ``code`` parts in a new interpreter (no PROMETHEUS_MULTIPROC_DIR inherited); returns
    what it printed last, as JSON."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(textwrap.dedent(part) for part in code)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


PRELUDE = """
import json, os, signal, time, urllib.request
from common.metrics.multiprocess import multiprocess_directory, process_exited

def scrape(port):
    from prometheus_client.parser import text_string_to_metric_families
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {s.name + json.dumps(s.labels, sort_keys=True): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}

def child(work):
    pid = os.fork()
    if pid == 0:
        try:
            work()
        finally:
            os._exit(0)
    return pid
"""


def test_processes_are_merged_and_dead_ones_stop_counting_in_gauges() -> None:
    result = run(
        PRELUDE,
        """
        with multiprocess_directory() as path:
            from common.metrics import definitions as d
            from common.metrics.exposition import MetricsServer
            from common.metrics.prometheus import process_backend
            m = process_backend()  # created before the forks, as gunicorn's preloaded app does
            assert process_backend() is m
            labels = {"talos_version": "1.12.4", "output_kind": "iso", "arch": "amd64"}

            def finished():  # records, then exits normally
                m.inc(d.ASSETS_BUILT, **labels)
                m.inc(d.CLIENTS_WAITING, 10)

            def killed():  # records, then is SIGKILLed before anyone says it died
                m.inc(d.ASSETS_BUILT, **labels)
                m.inc(d.CLIENTS_WAITING, 100)
                m.observe(d.ASSETS_BUILD_LATENCY, 5.0)
                time.sleep(60)

            m.inc(d.CLIENTS_WAITING, 1)
            os.waitpid(child(finished), 0)
            victim = child(killed)
            server = MetricsServer("127.0.0.1:0", path).start()
            try:
                deadline = time.time() + 10
                while scrape(server.port).get("image_factory_build_waiting_clients{}") != 101.0:
                    assert time.time() < deadline, scrape(server.port)
                    time.sleep(0.05)
                before = scrape(server.port)
            finally:
                os.kill(victim, signal.SIGKILL)
                os.waitpid(victim, 0)
            after = scrape(server.port)
            server.stop()
            print(json.dumps({"before": before, "after": after, "path": str(path)}))
        """,
    )
    built = (
        'image_factory_assets_built_total{"arch": "amd64", "output_kind": "iso", "talos_version": "1.12.4"}'
    )
    # The "finished" child exited without anyone calling process_exited: its live gauge was swept.
    assert result["before"]["image_factory_build_waiting_clients{}"] == 101.0
    assert result["before"][built] == 2.0
    after = result["after"]
    assert after[built] == 2.0  # counters of dead processes stay: they never go backwards
    assert after["image_factory_assets_build_latency_seconds_count{}"] == 1.0
    assert after["image_factory_build_waiting_clients{}"] == 1.0  # only the live process's gauge
    assert not os.path.exists(result["path"])  # removed with the context


def test_process_exited_drops_live_gauges_of_a_process() -> None:
    result = run(
        PRELUDE,
        """
        with multiprocess_directory() as path:
            from common.metrics import definitions as d
            from common.metrics.prometheus import process_backend
            m = process_backend()
            m.inc(d.BUILDS_RUNNING)
            m.inc(d.SCHEMATIC_CREATE)
            before = sorted(os.listdir(path))
            process_exited(os.getpid())
            print(json.dumps({"before": before, "after": sorted(os.listdir(path)), "pid": os.getpid()}))
        """,
    )
    pid = result["pid"]
    assert f"gauge_livesum_{pid}.db" in result["before"]
    assert f"gauge_livesum_{pid}.db" not in result["after"]
    assert f"counter_{pid}.db" in result["after"]


def test_directory_is_set_before_prometheus_client_is_imported_or_nothing_is_recorded() -> None:
    result = run(
        """
        import json, os
        import prometheus_client  # too early: the mode is fixed now
        from common.config import load_config
        from common.metrics import metrics_for
        from common.metrics.multiprocess import ENV, multiprocess_directory
        previous = os.environ.get(ENV)
        with multiprocess_directory():
            try:
                metrics_for(load_config([], environ={}))
            except RuntimeError as exc:
                error = str(exc)
        print(json.dumps({"error": error, "restored": os.environ.get(ENV) == previous}))
        """
    )
    assert "imported before PROMETHEUS_MULTIPROC_DIR" in result["error"]
    assert result["restored"]


def test_a_forked_process_leaving_through_the_context_leaves_the_directory_alone() -> None:
    result = run(
        """
        import json, os, sys
        from common.metrics.multiprocess import multiprocess_directory
        with multiprocess_directory() as path:
            pid = os.fork()
            if pid == 0:
                sys.exit(0)  # as a gunicorn worker does, from inside the master's frames
            _, status = os.waitpid(pid, 0)
            survived = path.is_dir()
        print(json.dumps({"survived": survived, "status": status, "removed": not path.exists()}))
        """
    )
    assert result == {"survived": True, "status": 0, "removed": True}
