"""``image-factory api|worker`` around the service: the listener, the directory, and forked processes
(gunicorn's workers end with ``sys.exit`` inside the master's frames) that must leave both alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from devstack.services import free_port
from tests.paths import REPO_ROOT


def test_listener_and_directory_outlive_forked_children_and_go_with_the_command() -> None:
    dead_redis = free_port()  # nothing listens there: the cluster state is reported as unreadable
    code = f"""
        import json, os, sys, time, urllib.request
        from common.config import load_config
        from image_factory.metrics import process_metrics
        config = load_config([], environ={{"IF_METRICS_ADDR": "127.0.0.1:0", "IF_REDIS_URL": "redis://127.0.0.1:{dead_redis}/0"}})
        from common.metrics import exposition
        started = []
        original = exposition.MetricsServer.start
        def start(self):
            started.append(self)
            return original(self)
        exposition.MetricsServer.start = start
        with process_metrics(config, "api"):
            port = started[0].port
            path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            pid = os.fork()
            if pid == 0:
                sys.exit(0)
            deadline = time.monotonic() + 10
            while os.waitpid(pid, os.WNOHANG) == (0, 0):
                assert time.monotonic() < deadline, "the child hung on the way out"
                time.sleep(0.05)
            text = urllib.request.urlopen(f"http://127.0.0.1:{{port}}/metrics", timeout=10).read().decode()
            inside = os.path.isdir(path)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{{port}}/metrics", timeout=2)
            closed = False
        except OSError:
            closed = True
        print(json.dumps({{"inside": inside, "after": os.path.exists(path), "closed": closed,
                          "env": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
                          "up": "image_factory_cluster_state_up 0.0" in text}}))
    """
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"inside": True, "after": False, "closed": True, "env": None, "up": True}
