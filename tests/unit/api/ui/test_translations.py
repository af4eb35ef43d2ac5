"""The web UI's catalogs: every message the templates and code use is translated in every language,
the ``.po`` sources compile, and a message a catalog lacks falls back to English (never to a
placeholder such as upstream's ``missing translation``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from babel.support import Translations

from api.ui import i18n
from tests.paths import REPO_ROOT

UI = REPO_ROOT / "api" / "ui"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]


def _used_messages() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(UI), METHODS, keywords={"_": None, "N_": None, "gettext": None}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


@pytest.mark.parametrize("lang", [code for code in i18n.LANGUAGES if code != i18n.DEFAULT])
def test_every_used_message_is_translated(lang: str) -> None:
    used = _used_messages()
    assert len(used) > 50  # the extraction itself works
    with (UI / "translations" / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=lang)
    translated = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
    assert sorted(used - set(translated)) == []  # `make ui-messages` and translate what is listed
    assert sorted(set(translated) - used) == []  # no stale entries


def test_catalogs_compile_and_unknown_messages_fall_back_to_english(tmp_path: Path) -> None:
    compiled = i18n.compile_catalogs()
    assert sorted(p.parent.parent.name for p in compiled.glob("*/LC_MESSAGES/messages.mo")) == [
        "fr",
        "pl",
        "ru",
    ]
    french = Translations.load(str(compiled), ["fr"])
    assert french.gettext("Next") == "Suivant"
    assert french.gettext("A message no catalog has") == "A message no catalog has"
    # a catalog missing an entry: that entry is English, the others translated
    partial = tmp_path / "src" / "fr" / "LC_MESSAGES"
    partial.mkdir(parents=True)
    (partial / "messages.po").write_text(
        'msgid ""\nmsgstr ""\n"Language: fr\\n"\n\nmsgid "Next"\nmsgstr "Suivant"\n'
    )
    loaded = Translations.load(str(i18n.compile_catalogs(tmp_path / "src")), ["fr"])
    assert loaded.gettext("Next") == "Suivant"
    assert loaded.gettext("Build now") == "Build now"
