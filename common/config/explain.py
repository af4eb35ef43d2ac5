"""``image-factory config --explain``: every effective key, where its value came from, secrets masked.

Upstream has no such command; an operator moving a configuration over needs to see which of the
sources won for each key and which keys this factory ignores, without pasting secrets into a ticket.
"""

from __future__ import annotations

from common.config.loader import LoadedConfig
from common.config.masking import masked
from common.config.render import as_dict, env_value, leaves


def explain(loaded: LoadedConfig) -> str:
    """Aligned columns KEY, SOURCE, VALUE sorted by key; then the keys accepted but ignored.

    SOURCE is ``default``, ``env IF_…``, ``file PATH`` or ``file PATH (IF_…)`` for a dotenv file; a
    value is printed as ``config --format env`` prints it, masked by ``masking.SECRET_RULE``.
    """
    rows = [("KEY", "SOURCE", "VALUE")]
    rows += [
        (path, loaded.origin(path), masked(path, env_value(value)))
        for path, value in sorted(leaves(as_dict(loaded.config)))
    ]
    lines = _aligned(rows)
    if loaded.ignored:
        lines += ["", "Accepted for compatibility with upstream, no effect in this factory:"]
        lines += _aligned(
            [(path, ", ".join(use.origins), f"({use.since})") for path, use in sorted(loaded.ignored.items())]
        )
    return "\n".join(lines) + "\n"


def _aligned(rows: list[tuple[str, str, str]]) -> list[str]:
    key_width = max(len(row[0]) for row in rows)
    source_width = max(len(row[1]) for row in rows)
    return [f"{k:<{key_width}}  {s:<{source_width}}  {v}".rstrip() for k, s, v in rows]
