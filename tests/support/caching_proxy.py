"""A caching reverse proxy in front of the factory: Debian's nginx with ``proxy_cache``.

It stands for a CDN or a site's caching proxy, to prove that what ``api.rendering.asset_response``
sends (``ETag``, ``Last-Modified``, ``Cache-Control``, 304s) lets a real cache reuse answers:
``tests/integration/test_http_caching.py`` and ``bench/proxy_cache.py``.

nginx runs as one process on a free loopback port, with all its state and its cache under
``state_dir`` (``devstack.nginx.NginxServer``).
``/static/asset`` is a file of ``static_size`` bytes nginx serves itself (the benchmark's ceiling);
every other path is proxied to ``origin`` through the cache, with ``proxy_cache_revalidate on`` (an
expired entry is revalidated with ``If-None-Match``/``If-Modified-Since``) and the entry's cache
status in ``X-Cache-Status`` and in :attr:`CachingProxy.log` (one ``$upstream_cache_status
$status $request_uri`` line per request). ``valid_for`` ignores the origin's ``Cache-Control`` and
keeps 200s that many seconds instead (tests use it to see revalidation without waiting an hour).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import requests

from devstack.nginx import NginxServer

__all__ = ["CachingProxy"]


class CachingProxy(NginxServer):
    name = "caching-proxy"

    def __init__(
        self, state_dir: Path, origin: str, static_size: int = 0, valid_for: int | None = None
    ) -> None:
        super().__init__(state_dir)
        self.origin = origin  # host:port of the factory API
        self.static_size = static_size
        self.valid_for = valid_for
        self.log = self.state_dir / "cache.log"

    def prepare(self) -> None:
        www = self.state_dir / "www" / "static"
        www.mkdir(parents=True, exist_ok=True)
        with open(www / "asset", "wb") as fh:
            fh.truncate(self.static_size)
        super().prepare()

    def http_block(self) -> str:
        d = self.state_dir
        validity = ""
        if self.valid_for is not None:
            validity = (
                f"proxy_ignore_headers Cache-Control Expires;\n      proxy_cache_valid 200 {self.valid_for}s;"
            )
        return f"""  log_format status "$upstream_cache_status $status $request_uri";
  access_log {self.log} status buffer=64k flush=1s;
  sendfile on;
  proxy_cache_path {d / "cache"} levels=1:2 keys_zone=assets:10m max_size=2g inactive=1h use_temp_path=off;
  upstream factory {{ server {self.origin}; keepalive 32; }}
  server {{
    listen {self.host};
    location /static/ {{ root {d / "www"}; }}
    location / {{
      proxy_pass http://factory;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache assets;
      proxy_cache_revalidate on;
      proxy_cache_lock on;
      {validity}
      add_header X-Cache-Status $upstream_cache_status always;
    }}
  }}"""

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/static/asset", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def statuses(self) -> Counter[str]:
        """``$upstream_cache_status`` of every request logged so far (``-`` when nothing was proxied)."""
        time.sleep(1.5)  # the log buffer is flushed every second
        text = self.log.read_text() if self.log.exists() else ""
        return Counter(line.split()[0] for line in text.splitlines() if line.strip())
