"""Byte-range windows over chunked streams, for servers that may ignore a Range request."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def window(chunks: Iterable[bytes], skip: int, length: int | None) -> Iterator[bytes]:
    """The bytes of ``chunks`` after the first ``skip``, at most ``length`` of them (all if None);
    stops reading as soon as the window is complete."""
    remaining = length
    if remaining == 0:
        return
    for chunk in chunks:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        if remaining is not None:
            chunk = chunk[:remaining]
            remaining -= len(chunk)
        if chunk:
            yield chunk
        if remaining == 0:
            return
