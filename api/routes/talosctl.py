"""talosctl downloads for a Talos version, from the release's talosctl-all image."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Iterator
from urllib.parse import quote

from flask import Blueprint, Response

from api.context import services
from api.responses import json_response
from api.routes.meta import artifacts
from common.disposition import content_disposition
from common.errors import NotFoundError
from common.talos import version as v

bp = Blueprint("talosctl", __name__)
CHUNK = 1 << 20


@bp.get("/talosctl/<version>")
def talosctl_list(version: str) -> Response:
    parsed = v.parse_tolerant(version)
    tuples = artifacts().talosctl_tuples(parsed)
    base = services().config.http.externalURL.rstrip("/")
    tag = v.tag(parsed)
    return json_response(
        [f"{base}/talosctl/{quote(tag)}/{quote(name)}" for name in sorted(t.filename for t in tuples)]
    )


@bp.route("/talosctl/<version>/<path>", methods=["GET", "HEAD"])
def talosctl_file(version: str, path: str) -> Response:
    parsed = v.parse_tolerant(version)
    with artifacts().talosctl(parsed) as image:
        target = image.fs / path
        # A file name, never a path: upstream would 500 on a missing file; we say what is missing.
        # (A name longer than the filesystem allows is missing too: stat's ENAMETOOLONG is no 500.)
        try:
            present = target.parent == image.fs and target.is_file() and not target.is_symlink()
        except OSError:
            present = False
        if path in ("", ".", "..") or not present:
            raise NotFoundError(f"talosctl {v.tag(parsed)} has no file {path[:300]!r}")
        handle = open(target, "rb")  # noqa: SIM115 - streamed after the store entry is released
    size = os.fstat(handle.fileno()).st_size
    content_type = (mimetypes.guess_type(path)[0] if "." in path else None) or "application/octet-stream"
    headers = {"Content-Length": str(size), "Content-Disposition": content_disposition(path)}

    def stream() -> Iterator[bytes]:
        while chunk := handle.read(CHUNK):
            yield chunk

    # HEAD: Werkzeug sends the headers and skips the body.
    response = Response(
        stream(), status=200, headers=headers, content_type=content_type, direct_passthrough=True
    )
    response.call_on_close(handle.close)
    return response
