"""Feeding and reading tools through pipes (``stream_to_tool``/``stream_from_tool``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

import pytest

from worker.imager.extensions.manifest import ExtensionError
from worker.imager.tools import ToolError, stream_from_tool, stream_to_tool


def test_stream_to_tool_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as f:

        def produce(pipe: IO[bytes]) -> None:
            for _ in range(64):
                pipe.write(b"x" * 65536)

        stream_to_tool(["cat"], produce, stdout=f)
    assert out.stat().st_size == 64 * 65536


def test_stream_to_tool_reports_the_producer_error() -> None:
    def produce(pipe: object) -> None:
        raise ExtensionError("producer broke")

    with pytest.raises(ExtensionError, match="producer broke"):
        stream_to_tool(["cat"], produce, stdout=open(os.devnull, "wb"))  # noqa: SIM115


def test_stream_to_tool_reports_the_tool_error() -> None:
    def produce(pipe: object) -> None:
        for _ in range(1000):
            pipe.write(b"y" * 65536)  # type: ignore[attr-defined]

    with pytest.raises(ToolError, match="false failed"):
        stream_to_tool(["false"], produce)


def test_stream_to_tool_notices_an_early_exit() -> None:
    def produce(pipe: object) -> None:
        for _ in range(1000):
            pipe.write(b"y" * 65536)  # type: ignore[attr-defined]

    with pytest.raises(ToolError, match="stopped reading"):
        stream_to_tool(["true"], produce)


def test_stream_from_tool(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"z" * 300_000)
    with open(src, "rb") as f, stream_from_tool(["cat"], stdin=f) as stream:
        assert stream.read(10) == b"z" * 10  # the rest is drained, cat exits cleanly
    with (
        open(src, "rb") as f,
        pytest.raises(ToolError, match="exit code"),
        stream_from_tool(["sh", "-c", "cat; exit 3"], stdin=f) as stream,
    ):
        stream.read()
