"""``GET /pxe/<schematic>/<version>/<platform>-<arch>[-secureboot]``: the iPXE script (brief §7)."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response

from api.context import services
from api.delivery import Pending, delivery
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
    svc = services()
    d = delivery()
    resolved = d.resolve(schematic_id, version, "cmdline-" + path)
    req, plan, key = resolved.request, resolved.plan, resolved.key
    asset = d.lookup(key)
    if asset is None:
        d.ensure(key, req, plan)
        waited = d.wait(key)
        if isinstance(waited, Pending):
            raise UnavailableError("the kernel command line is still being built; retry")
        asset = waited
    if asset.size > MAX_CMDLINE:
        raise UnavailableError("the cached kernel command line is implausibly large")
    cmdline = b"".join(asset.read()).decode().strip()
    http = svc.config.http
    base = http.externalPXEURL or http.externalURL
    p = plan.profile
    if p.secureboot:
        uki = _join(base, "image", schematic_id, req.version, f"{p.platform}-{p.arch}-secureboot-uki.efi")
        body = SECUREBOOT.format(uki=uki, cmdline=cmdline)
    else:
        kernel = _join(base, "image", schematic_id, req.version, f"kernel-{p.arch}")
        initramfs = _join(base, "image", schematic_id, req.version, f"initramfs-{p.arch}.xz")
        body = STANDARD.format(kernel=kernel, initramfs=initramfs, cmdline=cmdline)
    return Response(body, status=200, mimetype="text/plain")
