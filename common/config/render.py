"""Print the effective configuration (YAML or ``IF_`` lines) and generate the key reference."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import yaml

from common.config.compat import IGNORED_KEYS
from common.config.durations import format_duration
from common.config.masking import SECRET_RULE
from common.config.options import Config
from common.config.schema import KeyInfo, key_index

ENV_PREFIX = "IF_"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def as_dict(config: Config) -> dict[str, Any]:
    result: dict[str, Any] = _plain(config)
    return result


class _IndentedDumper(yaml.SafeDumper):
    """Indents sequences under their key, as the Go YAML encoder does."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_yaml(config: Config) -> str:
    return yaml.dump(as_dict(config), Dumper=_IndentedDumper, indent=4, sort_keys=True, width=1 << 30)


def env_value(value: Any) -> str:
    """One value of ``as_dict`` as an ``IF_`` variable holds it: ``true``/``false``, lists as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def leaves(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, value in tree.items():
        if isinstance(value, dict):
            out.extend(leaves(value, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", value))
    return out


def to_env(config: Config) -> str:
    lines = [
        f"{ENV_PREFIX}{path.replace('.', '_').upper()}={env_value(value)}"
        for path, value in leaves(as_dict(config))
    ]
    return "\n".join(sorted(lines)) + "\n"


def _type_name(key: KeyInfo) -> str:
    return {str: "string", bool: "bool", int: "int", timedelta: "duration"}.get(key.type, "[]string")


def reference_markdown() -> str:
    """Every key with type, default, environment name and meaning, straight from the option classes."""
    defaults = dict(leaves(as_dict(Config())))
    lines = [
        "# Configuration reference",
        "",
        "Generated from `common/config/options.py` by `image-factory config --format reference`; "
        "do not edit by hand (a test fails when it is stale).",
        "",
        "Sources: `--config env=[PREFIX]`, `--config FILE` / `file=FILE` (`.json`, `.yaml`/`.yml`, `.env`), "
        "repeatable or comma-separated, applied in order after the defaults and the always-first `env=IF_`; "
        "later sources win. Durations use Go syntax (`5m0s`, `1h30m`, `500ms`); lists from the environment "
        'are JSON (`["*"]`), bracketed (`[*]`, as upstream\'s published reference writes it) or '
        "comma-separated. Keys marked *ours* do not exist upstream. A key some upstream version or edition "
        "has but this factory does not implement is accepted with a warning (see the end of this page); any "
        "other unknown key stops start-up, naming the closest known key. `image-factory config --explain` "
        "prints every key with its value and the source it came from.",
        "",
    ]
    for key in key_index().values():
        depth = key.path.count(".")
        if key.is_section:
            lines += [f"{'#' * min(depth + 2, 6)} `{key.path}`", "", key.doc, ""]
            continue
        default = env_value(defaults[key.path]) if key.path in defaults else ""
        shown = default or '""'
        ours = " *(ours)*" if key.ours else ""
        lines += [
            f"- **`{key.path}`**{ours} — `{_type_name(key)}`, default `{shown}`, "
            f"env `{ENV_PREFIX}{key.env_name}`  ",
            f"  {key.doc}",
            "",
        ]
    lines += [
        "## Upstream keys accepted without effect",
        "",
        "Each is named in one warning at start-up, with the sources that set it, and otherwise ignored "
        "(`common/config/compat.py` says where each comes from).",
        "",
    ]
    lines += [f"- `{path}` — {since}" for path, since in sorted(IGNORED_KEYS.items())]
    lines += ["", "## Secrets in `config --explain`", "", SECRET_RULE, ""]
    return "\n".join(lines).rstrip() + "\n"
