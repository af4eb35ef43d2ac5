from datetime import timedelta

import pytest

from common.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m0s", timedelta(minutes=5)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("0", timedelta(0)),
        ("-2s", timedelta(seconds=-2)),
        ("1h1m1s1ms", timedelta(hours=1, minutes=1, seconds=1, milliseconds=1)),
        ("250us", timedelta(microseconds=250)),
    ],
)
def test_parse_go_syntax(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("5", 'time: missing unit in duration "5"'),
        ("5x", 'time: unknown unit "x" in duration "5x"'),
        ("m", 'time: invalid duration "m"'),
        ("1h 5m", 'time: invalid duration "1h 5m"'),
    ],
)
def test_parse_errors_use_go_wording(text: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(text)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(minutes=5), "5m0s"),
        (timedelta(minutes=15), "15m0s"),
        (timedelta(hours=1), "1h0m0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(seconds=1, milliseconds=500), "1.5s"),
        (timedelta(0), "0s"),
        (timedelta(hours=26, seconds=3), "26h0m3s"),
    ],
)
def test_format_like_go(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
