"""``Content-Disposition: attachment`` for a file name that may be any Unicode (RFC 6266).

The name is :func:`common.builds.plan.safe_filename`'s: no path, quotes, backslashes, semicolons or
control characters. ``filename`` gets an ASCII stand-in (every other character, and ``%``, which some
clients decode, become ``_``); a name that is not plain ASCII also gets ``filename*`` with its UTF-8
bytes percent-encoded (RFC 8187), which clients that know it prefer. The header is ASCII either way,
so it can be sent as is, or handed to S3 in a presigned URL.
"""

from __future__ import annotations

from urllib.parse import quote


def content_disposition(filename: str) -> str:
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
