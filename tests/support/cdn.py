"""A CDN in front of the test S3: Debian's nginx as a pull-through proxy, the way a real CDN is set up.

What the factory's CDN mode needs from a CDN (``common/cache/cdn.py``, README "S3 and a CDN"): the
factory hands out the presigned S3 URL with its host swapped for ``cache.cdn.host`` and
``cache.cdn.trimPrefix`` (the bucket) cut from its path. The CDN must put the prefix back (its
origin path), send the query string to the origin unchanged, and send the origin's own ``Host``,
the one the signature was made for. CloudFront does exactly that with an S3-endpoint origin, origin
path ``/<bucket>``, an origin request policy that forwards all query strings and no viewer ``Host``.

nginx runs unprivileged, as one process, with all its state under ``state_dir``
(``devstack.nginx.NginxServer``).
"""

from __future__ import annotations

from pathlib import Path

import requests

from devstack.nginx import NginxServer
from devstack.services import S3Server

__all__ = ["NginxCDN"]


class NginxCDN(NginxServer):
    """nginx on a free loopback port forwarding ``/<path>?<query>`` to ``<s3>/<bucket>/<path>?<query>``.

    Without ``bucket`` the origin path is empty and ``trimPrefix`` is ``/``: the URL keeps the bucket
    in its path, and one CDN serves every bucket of the S3 (what tests with one bucket per stack use).
    """

    name = "cdn"
    error_level = "info"
    worker_connections = 64

    def __init__(
        self, state_dir: Path | str, s3: S3Server, bucket: str | None = None, port: int | None = None
    ) -> None:
        super().__init__(state_dir, port)
        self.s3 = s3
        self.bucket = bucket

    @property
    def trim_prefix(self) -> str:
        """What ``cache.cdn.trimPrefix`` is set to: the path-style bucket prefix the origin puts back."""
        return f"/{self.bucket}" if self.bucket else "/"

    @property
    def origin_path(self) -> str:
        return f"/{self.bucket}" if self.bucket else ""

    @property
    def access_log(self) -> Path:
        return self.state_dir / "access.log"

    def http_block(self) -> str:
        origin = self.s3.endpoint
        return f"""  access_log {self.access_log};
  server {{
    listen {self.host};
    location / {{
      # The origin path (the trimmed prefix) back in front of the request URI, which carries
      # the presigned query string byte for byte (a proxy_pass with variables sends it as is).
      proxy_pass http://{origin}{self.origin_path}$request_uri;
      # The Host the URL was signed for (the S3 endpoint), not the CDN's own.
      proxy_set_header Host {origin};
      proxy_http_version 1.1;
      proxy_buffering off;
    }}
  }}"""

    def is_ready(self) -> bool:
        try:
            requests.get(f"{self.url}/", timeout=0.5)  # any answer (S3's 403) means it listens
        except requests.RequestException:
            return False
        return True
