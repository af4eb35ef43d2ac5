"""The web UI's routes: the wizard (``GET /?…``), the schematic it creates (``POST /ui/schematics``),
the schematic's page with its assets (``GET /ui/schematics/<id>/<version>``), "build now"
(``POST /ui/builds``) and ``GET /llms.txt``.

A thin adapter: the catalogs come from the artifacts manager, schematics from the schematic
service, asset states and builds from the delivery use case, exactly as the JSON routes get them.
No ``GET`` creates anything (upstream's last step does; brief §11). Every page is complete without
JavaScript; ``static/ui.js`` only improves it (copy buttons, live progress, search as you type).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_babel import gettext as _

from api.context import delivery, installers, services
from api.ui import i18n
from api.ui.assets import (
    AssetState,
    applicable_assets,
    installer_image,
    pxe_path,
    start_build,
    state_of,
)
from api.ui.llms import llms_txt
from api.ui.wizard import BOOTLOADER_MIN, State, Step, Wizard, quirks, resolve, schematic_document
from common.errors import InvalidInputError
from common.profile.platforms import cloud_platform
from common.talos import version as v
from common.version import VERSION

bp = Blueprint(
    "ui",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/ui/static",
)

#: No inline scripts or styles, nothing from elsewhere (the issue's "strict Content-Security-Policy").
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: The page's own query (what the final page was reached with), passed through "build now".
_CHOICE = ("target", "platform", "board", "arch", "secureboot")


@bp.context_processor
def page_context() -> dict[str, Any]:
    """What every page's layout needs: language switcher, labels (translated per request)."""

    def lang_url(code: str) -> str:
        pairs = [(k, val) for k, val in request.args.items(multi=True) if k != "lang"]
        return request.path + _query([*pairs, ("lang", code)])

    return {
        "locale": str(get_locale() or i18n.DEFAULT),
        "languages": i18n.LANGUAGES,
        "lang_url": lang_url,
        "factory_version": VERSION,
        "secureboot_enabled": services().config.secureBoot.enabled,
        "step_labels": {
            Step.TARGET: _("Hardware type"),
            Step.VERSION: _("Version"),
            Step.PLATFORM: _("Cloud platform"),
            Step.BOARD: _("Board"),
            Step.ARCH: _("Architecture"),
            Step.EXTENSIONS: _("Extensions"),
            Step.CUSTOMIZATION: _("Customization"),
        },
        "target_labels": {
            "metal": _("Bare-metal machine"),
            "cloud": _("Cloud server"),
            "sbc": _("Single-board computer"),
        },
        "bootloader_labels": {
            "auto": _("Automatic (the version's default)"),
            "sd-boot": _("systemd-boot (UEFI only)"),
            "grub": _("GRUB"),
            "dual-boot": _("Dual boot (GRUB for BIOS, systemd-boot for UEFI)"),
        },
    }


@bp.after_request
def headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["Vary"] = "Accept-Language, Cookie"
    return i18n.remember_language(response)


def _external() -> str:
    return services().config.http.externalURL.rstrip("/") or request.host_url.rstrip("/")


def _query(pairs: list[tuple[str, str]]) -> str:
    return "?" + urlencode(pairs) if pairs else ""


@bp.get("/")
def index() -> Response | str:
    i18n.check_lang_param()
    wizard = resolve(State.from_args(request.args), services().artifacts)
    return render_template("wizard.html", w=wizard, Step=Step, query=_query, quirks=quirks)


@bp.post("/ui/schematics")
def create() -> ResponseReturnValue:
    wizard = resolve(State.from_args(request.form), services().artifacts)
    try:
        body = schematic_document(wizard)
    except InvalidInputError as exc:
        errors = {"form": exc.message}
        page = render_template(
            "wizard.html", w=_with_errors(wizard, errors), Step=Step, query=_query, quirks=quirks
        )
        return page, 400
    created = services().schematics.create(body)
    installers().prebuild_later(created.id)
    state = wizard.state
    choice = [(k, val) for k, val in state.params() if k in _CHOICE]
    target = url_for("ui.schematic", schematic_id=created.id, version=f"v{state.version}") + _query(choice)
    return redirect(target, 303)


def _with_errors(wizard: Wizard, errors: dict[str, str]) -> Wizard:
    return replace(wizard, errors=errors)


@bp.get("/ui/schematics/<schematic_id>/<version>")
def schematic(schematic_id: str, version: str) -> str:
    canonical = services().schematics.get(schematic_id).decode()
    parsed = v.version_from_path(version)
    target = request.args.get("target", "metal")
    if target not in ("metal", "cloud", "sbc"):
        raise InvalidInputError(f"unknown target {target!r}")
    platform = cloud_platform(request.args.get("platform", "")) if target == "cloud" else None
    if target == "cloud" and platform is None:
        raise InvalidInputError("a cloud platform is needed (?platform=)")
    arch = "arm64" if target == "sbc" else request.args.get("arch", "amd64")
    if arch not in ("amd64", "arm64"):
        raise InvalidInputError(f"unknown architecture {arch!r}")
    secureboot = request.args.get("secureboot") == "true" and target != "sbc"
    tag = f"v{parsed}"
    d = delivery()
    states: list[AssetState] = [
        state_of(d, schematic_id, tag, asset)
        for asset in applicable_assets(target, parsed, arch, platform=platform, secureboot=secureboot)
    ]
    base = _external()
    pxe = pxe_path(target, arch, platform=platform, secureboot=secureboot)
    pxe_base = (services().config.http.externalPXEURL or base).rstrip("/")
    host = urlsplit(base).netloc
    choice = [(k, val) for k, val in request.args.items(multi=True) if k in _CHOICE]
    return render_template(
        "schematic.html",
        schematic_id=schematic_id,
        canonical=canonical,
        version=parsed,
        tag=tag,
        target=target,
        platform=platform,
        arch=arch,
        secureboot=secureboot,
        states=states,
        image_base=f"/image/{schematic_id}/{tag}/",  # relative: the browser is on the factory already
        pxe_url=f"{pxe_base}/pxe/{schematic_id}/{tag}/{pxe}" if pxe else None,
        installer=installer_image(
            host,
            schematic_id,
            parsed,
            platform=platform.name if platform else "metal",
            secureboot=secureboot,
        ),
        quirks=quirks(parsed),
        choice=choice,
        page_url=request.path + _query(choice),
        base="",
        min_cluster_create=BOOTLOADER_MIN,
        board=request.args.get("board", ""),
    )


@bp.post("/ui/builds")
def build_now() -> ResponseReturnValue:
    """Starts an asset's build and returns to the schematic's page, which shows its progress (the
    ``Prefer: respond-async`` path of ``/image``: queue or join, never wait)."""
    schematic_id = request.form.get("schematic", "")
    version = request.form.get("version", "")
    path = request.form.get("path", "")
    if not (schematic_id and version and path):
        abort(400, "schematic, version and path are needed")
    services().schematics.get(schematic_id)  # 404 for an unknown schematic, before anything is queued
    start_build(delivery(), schematic_id, version, path)
    choice = [(k, val) for k, val in request.form.items(multi=True) if k in _CHOICE]
    page = url_for("ui.schematic", schematic_id=schematic_id, version=version) + _query(choice)
    return redirect(f"{page}#asset-{path}", 303)


@bp.get("/llms.txt")
def llms() -> Response:
    return Response(llms_txt(_external()), mimetype="text/plain")
