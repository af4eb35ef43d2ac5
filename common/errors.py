"""Error classes that carry their HTTP meaning, so every frontend maps them the same way.

Mirrors upstream's error tags: invalid input → 400, not found → 404, dependency
unavailable → 503, anything else → 500 ``internal server error``.
"""

from __future__ import annotations


class FactoryError(Exception):
    """Base class; ``status`` is the HTTP status the API answers with."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(FactoryError):
    """The client sent something we cannot accept (upstream's InvalidErrorTag)."""

    status = 400


class NotFoundError(FactoryError):
    """The thing asked for does not exist (upstream's ErrNotFoundTag)."""

    status = 404


class PayloadTooLargeError(FactoryError):
    status = 413


class UnavailableError(FactoryError):
    """A dependency (Redis, a registry, S3) did not answer; retrying later may work."""

    status = 503


class BadSourceError(FactoryError):
    """A source registry served something this factory must not use (content that does not match its
    digest): 502 naming the image and the reason. Upstream answers 500 ``internal server error``."""

    status = 502


class NotImplementedYetError(FactoryError):
    """A valid request for an output this factory cannot build yet (named in the message)."""

    status = 501


class RegistryAPIError(FactoryError):
    """An error with the registry API code a registry client should see (``NAME_UNKNOWN``,
    ``MANIFEST_UNKNOWN`` …, ``opencontainers/distribution-spec@v1.1.0:spec.md``, "Error Codes")."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
