"""A bound on how long the API waits for a request: line, headers and body.

gunicorn's threaded worker gives a new connection 5 s to send its first byte, then reads the request
in a thread with blocking reads and no time limit (``timeout`` is 0 here: asset requests may wait
for builds), so a client trickling a byte now and then — slow-loris, on the headers or on a
``POST /schematics`` body — would hold that thread for as long as it likes.

:class:`DeadlineSocket` stands in for the socket gunicorn's request parser reads from (writes go to
the real socket, so downloads are not bounded). Each request gets ``http.requestReadTimeout`` from
the moment a thread starts on it; every ``recv`` waits at most for what is left, and once nothing
is left :class:`RequestReadTimeout` is raised: 408 written by the worker while the headers are
read, 408 rendered by the app while it reads the body. Either way the connection is then closed:
later reads fail with :class:`TimeoutError`, which gunicorn takes as "stop".
"""

from __future__ import annotations

import socket
import time
from typing import Any, NoReturn

from werkzeug.exceptions import RequestTimeout


class RequestReadTimeout(RequestTimeout):
    description = "request not received in time"


class DeadlineSocket:
    """Reads from ``sock`` until the ``deadline`` (a ``time.monotonic()`` value) the owner sets."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False

    def restart(self) -> None:
        """A new request on this connection: a full allowance again."""
        self.deadline = time.monotonic() + self.seconds
        self.expired = False

    def recv(self, size: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self._expire()
        previous = self.sock.gettimeout()  # gunicorn's own drain sets a shorter one
        self.sock.settimeout(remaining if previous is None else min(previous, remaining))
        try:
            return self.sock.recv(size)
        except TimeoutError:
            if time.monotonic() < self.deadline:
                raise
            self._expire()
        finally:
            self.sock.settimeout(previous)

    def _expire(self) -> NoReturn:
        if self.expired:  # answered once already: close, never a second answer
            raise TimeoutError("request read deadline passed")
        self.expired = True
        raise RequestReadTimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)
