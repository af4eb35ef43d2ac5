"""Debian's nginx as a service of its own: what the tests' CDN, their caching proxy and the delivery
benchmark's ceiling have in common.

nginx runs unprivileged in the sense that matters here: on a free loopback port (never :80), with
its prefix, pid, error log and temp folders under ``state_dir`` (``-p``/``-e``; nothing under
/var), in the foreground (``daemon off``). By default as one process (``master_process off``: no
privilege switch, no worker to sweep); the benchmark's ceiling runs a master and one worker, as a
production nginx would.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from devstack.services import Service

__all__ = ["NginxServer"]

NGINX = "/usr/sbin/nginx"  # not on PATH for every user on Debian
_TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class NginxServer(Service):
    """nginx serving what :meth:`http_block` says inside ``http {}``; subclasses say that, and when
    they are ready."""

    name = "nginx"
    binaries: ClassVar[dict[str, str]] = {"nginx": "nginx"}
    start_timeout = 15.0
    #: False: one process (``master_process off``); True: a master and one worker process.
    with_worker = False
    error_level = "warn"
    worker_connections = 1024

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.state_dir / "error.log"

    def http_block(self) -> str:
        """The directives inside ``http {}``, server blocks included (listen on :attr:`host`)."""
        raise NotImplementedError

    def prepare(self) -> None:
        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        processes = "worker_processes 1;" if self.with_worker else "master_process off;"
        temps = "\n".join(f"  {kind}_temp_path {d / (kind + '_temp')};" for kind in _TEMP_KINDS)
        self.config_path.write_text(
            f"""daemon off;
{processes}
pid {d / "nginx.pid"};
error_log {self.error_log} {self.error_level};
events {{ worker_connections {self.worker_connections}; }}
http {{
{temps}
{self.http_block()}
}}
"""
        )

    def command(self) -> list[str]:
        nginx = NGINX if Path(NGINX).exists() else shutil.which("nginx") or "nginx"
        return [nginx, "-p", f"{self.state_dir}/", "-c", str(self.config_path), "-e", str(self.error_log)]
