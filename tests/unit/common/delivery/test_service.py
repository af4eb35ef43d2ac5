"""Delivery's short memory: a presigned URL is only reused for the asset it was made for."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

from common.config import load_config
from common.delivery.service import Delivery


@dataclass(frozen=True)
class _Asset:
    url: str | None
    size: int = 3
    made: list[str] = field(default_factory=list, compare=False)

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return iter([b"abc"])

    def redirect_url(self, filename: str) -> str | None:
        self.made.append(filename)
        return self.url


def delivery() -> Delivery:
    services = SimpleNamespace(config=load_config([], environ={}))
    return Delivery(services, waiter=None)  # type: ignore[arg-type]


def test_a_presigned_url_is_remembered_for_its_asset() -> None:
    d = delivery()
    s3 = _Asset("https://s3.example/assets/k?X-Amz-Signature=1")
    assert d.redirect_url("k", s3, "kernel-amd64") == s3.url
    again = _Asset(s3.url)  # the same entry, looked up again
    assert d.redirect_url("k", again, "kernel-amd64") == s3.url
    assert s3.made == ["kernel-amd64"] and again.made == []  # not presigned twice


def test_the_registry_copy_is_not_redirected_to_s3_remembered_earlier() -> None:
    """S3 went down (or its object went stale): the lookup gives the registry copy, which has no URL;
    clients must get its bytes, not the URL remembered from before the outage."""
    d = delivery()
    s3 = _Asset("https://s3.example/assets/k?X-Amz-Signature=1")
    assert d.redirect_url("k", s3, "kernel-amd64") == s3.url
    registry_copy = _Asset(None)
    assert d.redirect_url("k", registry_copy, "kernel-amd64") is None
    assert registry_copy.made == ["kernel-amd64"]
    assert d.redirect_url("k", s3, "kernel-amd64") == s3.url  # S3 is back: its URL is still good
