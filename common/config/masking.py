"""Which configuration values are secrets, decided by the key's name, for ``config --explain``.

By name rather than by value, so that a secret is masked however it looks; the rule is printed in
the generated reference from ``SECRET_RULE``, the one place it is written down.
"""

from __future__ import annotations

import re

MASK = "***"

SECRET_RULE = (
    "A key is secret when one of the camelCase words of its last path element is `password`, `passwd`, "
    "`passphrase`, `secret`, `token`, `pin` or `credential(s)`, or its last word is `key` (`sessionKey`), "
    "unless its last word says it only names or points at the secret: `path`, `file`, `dir`, `id`, "
    "`arn`, `name`, `label`, `url` or `ttl` (so `signingKeyPath`, `pinFile`, `tokenLabel` and `keyID` "
    'are shown). A secret prints as `***`; an empty one as `""`, so an unset secret is visible. In URL '
    "keys (last word `url`), the password of `scheme://user:password@host` is masked."
)
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "pin", "credential", "credentials"}
)
_REFERENCE_WORDS = frozenset({"path", "file", "dir", "id", "arn", "name", "label", "url", "ttl"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)([^/@]+)(@)")


def _words(path: str) -> list[str]:
    """``secureBoot.awsKMS.pcrKeyID`` → ``["pcr", "key", "id"]``."""
    return [w.lower() for w in _WORDS.findall(path.rsplit(".", 1)[-1])]


def is_secret(path: str) -> bool:
    """Whether a key holds a secret, by its name alone (``SECRET_RULE``)."""
    words = _words(path)
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    return words[-1] == "key" or any(w in _SECRET_WORDS for w in words)


def masked(path: str, text: str) -> str:
    """``text``, the value of key ``path``, safe to print (``SECRET_RULE``); empty as ``""``."""
    if text == "":
        return '""'
    if is_secret(path):
        return MASK
    if _words(path)[-1:] == ["url"]:
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    return text
