"""Languages of the web UI: Flask-Babel with the catalogs under ``translations/``.

The language is ``?lang=``, then the ``lang`` cookie, then ``Accept-Language``, then English, as
upstream (brief §11); ``?lang=`` also sets the cookie for a year. Only ``.po`` files are in the
source tree: they are compiled to ``.mo`` once per process at start-up into a private directory
(``compile_catalogs``), so no binary is committed and an installed wheel needs no build step. A
message without a translation falls back to the English text, never to a placeholder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, Response, abort, request
from flask_babel import Babel

LANGUAGES = {"en": "English", "fr": "Français", "pl": "Polski", "ru": "Русский"}
DEFAULT = "en"
COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
SOURCES = Path(__file__).parent / "translations"


def select_locale() -> str:
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        return asked
    remembered = request.cookies.get(COOKIE, "")
    if remembered in LANGUAGES:
        return remembered
    return request.accept_languages.best_match(list(LANGUAGES), default=DEFAULT) or DEFAULT


def check_lang_param() -> None:
    """Upstream answers ``?lang=`` with nothing in it with 400 ``missing lang param``."""
    if "lang" in request.args and not request.args["lang"]:
        abort(400, "missing lang param")


def remember_language(response: Response) -> Response:
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        response.set_cookie(COOKIE, asked, max_age=COOKIE_MAX_AGE, path="/", httponly=True, samesite="Lax")
    return response


def compile_catalogs(sources: Path = SOURCES) -> Path:
    """Every ``<lang>/LC_MESSAGES/messages.po`` compiled into a fresh directory, removed at exit."""
    out = Path(tempfile.mkdtemp(prefix="image-factory-ui-"))
    atexit.register(_remove, out, os.getpid())
    for po in sources.glob("*/LC_MESSAGES/messages.po"):
        target = out / po.relative_to(sources).with_suffix(".mo")
        target.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=po.parent.parent.name)
        with target.open("wb") as fh:
            write_mo(fh, catalog)
    return out


def _remove(directory: Path, owner: int) -> None:
    """Only by the process that compiled them: gunicorn forks its workers from a preloaded app
    (``api.server``), and a worker that exits must not take the catalogs from the others."""
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def init_babel(app: Flask) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compile_catalogs())
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT
    Babel(app, locale_selector=select_locale)
