"""``GET /pxe/<schematic>/<version>/<platform>-<arch>[-secureboot]``: the iPXE script.

The script's text follows upstream's ``siderolabs/image-factory:internal/frontend/http/pxe.go``.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response

from api.context import delivery, services
from common.delivery.service import Pending
from common.errors import UnavailableError

bp = Blueprint("pxe", __name__)

MAX_CMDLINE = 64 * 1024

STANDARD = """#!ipxe

imgfree
kernel {kernel} {cmdline}
initrd {initramfs}
boot
"""

SECUREBOOT = """#!ipxe

imgfree
kernel {uki} {cmdline}
boot
"""


def _join(base: str, *segments: str) -> str:
    """Go's ``url.JoinPath``: keeps the base's path, escapes each segment."""
    return base.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)


@bp.get("/pxe/<schematic_id>/<version>/<path>")
def pxe(schematic_id: str, version: str, path: str) -> Response:
    d = delivery()
    target = d.locate(schematic_id, version, "cmdline-" + path)
    found = d.obtain(target)
    if isinstance(found, Pending):
        raise UnavailableError("the kernel command line is still being built; retry")
    if found.size > MAX_CMDLINE:
        raise UnavailableError("the cached kernel command line is implausibly large")
    cmdline = b"".join(found.read()).decode().strip()
    http = services().config.http
    base = http.externalPXEURL or http.externalURL
    p, tag = target.plan.profile, target.request.version
    if p.secureboot:
        uki = _join(base, "image", schematic_id, tag, f"{p.platform}-{p.arch}-secureboot-uki.efi")
        body = SECUREBOOT.format(uki=uki, cmdline=cmdline)
    else:
        kernel = _join(base, "image", schematic_id, tag, f"kernel-{p.arch}")
        initramfs = _join(base, "image", schematic_id, tag, f"initramfs-{p.arch}.xz")
        body = STANDARD.format(kernel=kernel, initramfs=initramfs, cmdline=cmdline)
    return Response(body, status=200, mimetype="text/plain")
