"""marshmallow schema derived from the option dataclasses, plus the key index used by every source."""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from marshmallow import ValidationError, fields

from common.config.durations import parse_duration
from common.config.options import Config, RepositoryOptions


class WeakString(fields.String):
    """A string that also takes integers, as Go's weakly typed decoding does (``namespace: 123``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ValidationError(f"expected a string, got {_describe(value)}")
        return value


class StringList(fields.Field):
    """A list of strings; from the environment as JSON (``["*"]``), bracketed (``[*]``) or comma-separated.

    The bracketed form without quotes is what upstream's published configuration reference prints
    for ``IF_HTTP_ALLOWEDORIGINS`` (seeds/configuration-reference.md). Upstream itself
    (``cmd/image-factory/flags/config.go@HEAD``, ``envTransform``) keeps a value that is not JSON as
    text, so it would allow the single origin ``[*]``; no origin, version or image name starts with
    ``[``, so we read the brackets as a list instead: ``[a, b]`` is ``["a", "b"]``.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    if not text.endswith("]"):
                        raise ValidationError(
                            f'expected a JSON list such as ["a","b"], got {text!r}'
                        ) from exc
                    return _split(text[1:-1], quotes=True)
            else:
                return _split(text)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(f"expected a list of strings, got {_describe(value)}")
        return list(value)


def _split(text: str, *, quotes: bool = False) -> list[str]:
    """Comma-separated items, trimmed, empty ones dropped; ``quotes`` also drops one pair around each."""
    items = [part.strip() for part in text.split(",")]
    if quotes:
        items = [i[1:-1] if len(i) >= 2 and i[0] == i[-1] and i[0] in "\"'" else i for i in items]
    return [i for i in items if i]


class GoDuration(fields.Field):
    """A Go duration string (``5m0s``, ``1h30m``, ``500ms``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> timedelta:
        if isinstance(value, timedelta):
            return value
        if not isinstance(value, str):
            raise ValidationError(f'expected a duration such as "5m0s", got {_describe(value)}')
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ValidationError(f'expected a duration such as "5m0s": {exc}') from exc


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {json.dumps(value, default=str)}"


_LEAF_FIELDS: dict[Any, type[fields.Field]] = {
    str: WeakString,
    bool: fields.Boolean,
    int: fields.Integer,
    list[str]: StringList,
    timedelta: GoDuration,
}


@dataclass(frozen=True)
class KeyInfo:
    """One configuration key: canonical dotted path, its type and documentation."""

    path: str
    type: Any
    doc: str
    ours: bool
    default: Any

    @property
    def is_section(self) -> bool:
        return dataclasses.is_dataclass(self.type)

    @property
    def is_repository(self) -> bool:
        return self.type is RepositoryOptions

    @property
    def env_name(self) -> str:
        return self.path.replace(".", "_").upper()


def _walk(cls: type, prefix: str, default_obj: Any) -> typing.Iterator[KeyInfo]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        default = getattr(default_obj, f.name)
        yield KeyInfo(path, tp, f.metadata.get("doc", ""), bool(f.metadata.get("ours")), default)
        if dataclasses.is_dataclass(tp):
            yield from _walk(typing.cast(type, tp), path + ".", default)


@functools.cache
def key_index() -> dict[str, KeyInfo]:
    """All keys and sections by lower-cased dotted path (keys match case-insensitively, as koanf does)."""
    return {k.path.lower(): k for k in _walk(Config, "", Config())}


def leaf_field(key: KeyInfo) -> fields.Field:
    """The marshmallow field that validates and converts one key's raw value."""
    return _LEAF_FIELDS[key.type]()


def assign(config: Config, path: str, value: Any) -> None:
    """Set a canonical dotted path on the dataclass tree."""
    *parents, leaf = path.split(".")
    target: Any = config
    for name in parents:
        target = getattr(target, name)
    setattr(target, leaf, value)
