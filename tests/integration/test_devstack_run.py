"""`make run`'s supervisor end to end: up, healthy, ready; Redis stopped → reported by /readyz?verbose;
clean stop."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from devstack.services import free_port, wait_until

pytestmark = pytest.mark.integration


def test_make_run_stack(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.run", "--state-dir", str(state), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> requests.Response | None:
            try:
                response = requests.get(f"{url}/healthz", timeout=1)
            except requests.RequestException:
                return None
            return response if response.status_code == 200 else None

        # The first start builds and pushes the fixture release (payloads are cached after the first).
        health = wait_until(healthy, 300, "make run's API", log_path=state / "logs" / "devstack.log")
        assert health.headers["Server"].startswith("Image Factory v")
        assert health.headers["X-Request-ID"]
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
        # It serves its embedded fixture release, signature-verified.
        versions = requests.get(f"{url}/versions", timeout=30).json()
        assert "v1.12.4" in versions and "v1.11.2" not in versions
        extensions = requests.get(f"{url}/version/v1.12.4/extensions/official", timeout=60)
        assert extensions.status_code == 200 and "siderolabs/amd-ucode" in extensions.text

        config = (state / "config.yaml").read_text()
        match = re.search(r"redis://127\.0\.0\.1:(\d+)/0", config)
        assert match
        redis.Redis(port=int(match.group(1))).shutdown(nosave=True)
        time.sleep(0.5)
        down = requests.get(f"{url}/readyz?verbose", timeout=10)  # reported; the replica stays ready
        assert down.status_code == 200 and "[-]redis failed: redis is unavailable" in down.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=1)
