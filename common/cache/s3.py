"""S3 asset store in front of the OCI cache: clients are redirected to presigned S3 URLs.

Object key ``assets/<key>``, uploaded with Content-Type and ``Content-Disposition: attachment;
filename="<request path>"``. The S3 object is only trusted through the signed OCI entry, which
records the object's ETag; reads and the existence check use ``If-Match`` so an object replaced
behind our back is never served.

Deliberate difference from upstream: upstream stores only ``{"etag": …}`` in the OCI entry, so when
S3 is down or the object is stale the entry is useless and the asset is rebuilt. We store the asset
itself in OCI too, with the ETag in the (signed) manifest annotations: the OCI entry stays the
signed source of truth, and a stale or unreachable S3 degrades to streaming from the registry
(not redirectable) instead of a rebuild. It costs the registry storage of every asset. Entries in
upstream's reference format are still understood when reading.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import boto3.exceptions
import boto3.s3.transfer
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from common.cache.base import CHUNK, AssetInfo, CachedAsset
from common.cache.oci import ANNOTATION_S3_ETAG, OCIAsset, OCICache, range_length
from common.config.options import S3Options
from common.disposition import content_disposition
from common.errors import FactoryError, UnavailableError
from common.metrics import NULL_METRICS, Metrics
from common.metrics.definitions import S3_FALLBACKS
from common.streams import window

log = logging.getLogger(__name__)

PREFIX = "assets"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4 refuses longer expiries
DEFAULT_PRESIGN_SECONDS = 3600  # upstream's fallback for an unset TTL
MAX_REFERENCE_SIZE = 1024  # upstream's `{"etag": …}` reference blobs are tiny
PART_SIZE = 16 * 1024 * 1024


class S3Error(FactoryError):
    """S3 refused a request for a reason retrying will not fix (bucket missing, access denied…)."""


def make_client(options: S3Options) -> Any:
    """A boto3 S3 client for ``cache.s3``, with upstream's credential order.

    CF_ACCESS_KEY/CF_SECRET_KEY (Cloudflare R2) win when both are set; otherwise boto3's default
    chain (AWS_* variables, shared files, instance metadata). Short timeouts and few retries: the
    API falls back to the registry rather than keep a client waiting.
    """
    credentials: dict[str, str] = {}
    if os.environ.get("CF_ACCESS_KEY") and os.environ.get("CF_SECRET_KEY"):
        credentials = {
            "aws_access_key_id": os.environ["CF_ACCESS_KEY"],
            "aws_secret_access_key": os.environ["CF_SECRET_KEY"],
        }
    endpoint = options.endpoint.strip().rstrip("/")
    if endpoint and "://" not in endpoint:
        endpoint = f"{'http' if options.insecure else 'https'}://{endpoint}"
    config = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint else "auto"},
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 2, "mode": "standard"},
        # S3-compatible stores (R2, older MinIO) reject botocore's default trailing checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=options.region or None,
        config=config,
        **credentials,
    )


def presign_seconds(ttl: timedelta) -> int:
    seconds = int(ttl.total_seconds())
    if seconds <= 0:
        return DEFAULT_PRESIGN_SECONDS
    if seconds > MAX_PRESIGN_SECONDS:
        log.warning(
            "cache.s3.presignedURLTTL exceeds the SigV4 maximum; using 7 days", extra={"ttl": seconds}
        )
        return MAX_PRESIGN_SECONDS
    return seconds


@dataclass(frozen=True)
class S3Asset:
    """An S3 object vouched for by a signed OCI entry (``etag``)."""

    cache: S3Cache
    object_key: str
    etag: str
    size: int
    fallback: OCIAsset | None  # read from here if S3 fails before the first byte
    modified: datetime | None = None  # the object's Last-Modified

    @property
    def digest(self) -> str:
        """A strong validator for HTTP caches: the signed entry's layer digest, else the S3 ETag."""
        return self.fallback.layer_digest if self.fallback is not None else f"s3-{self.etag.strip(chr(34))}"

    def read(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        length = range_length(start, length, self.size)
        if length == 0:
            return iter(())
        return self._stream(start, length)

    def _stream(self, start: int, length: int) -> Generator[bytes, None, None]:
        client = self.cache.client
        try:
            response = client.get_object(
                Bucket=self.cache.bucket,
                Key=self.object_key,
                IfMatch=self.etag,
                Range=f"bytes={start}-{start + length - 1}",
            )
        except (BotoCoreError, ClientError) as exc:
            if self.fallback is None:
                raise _error(exc, f"reading s3://{self.cache.bucket}/{self.object_key}") from exc
            log.warning(
                "S3 read failed; streaming the asset from the registry",
                extra={"key": self.object_key, "error": str(exc)},
            )
            self.cache.metrics.inc(S3_FALLBACKS, reason="read_failed")
            yield from self.fallback.read(start, length)
            return
        body = response["Body"]
        skip = 0 if response.get("ContentRange") or start == 0 else start
        remaining = length
        try:
            for chunk in window(body.iter_chunks(CHUNK), skip, length):
                remaining -= len(chunk)
                yield chunk
        except BotoCoreError as exc:
            raise _error(exc, f"reading s3://{self.cache.bucket}/{self.object_key}") from exc
        finally:
            body.close()
        if remaining:
            raise UnavailableError(
                f"s3://{self.cache.bucket}/{self.object_key} ended {remaining} bytes early"
            )

    def redirect_url(self, filename: str) -> str | None:
        params = {"Bucket": self.cache.bucket, "Key": self.object_key}
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        try:
            url: str = self.cache.client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=self.cache.presign_seconds
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("cannot presign S3 URL", extra={"key": self.object_key, "error": str(exc)})
            return None
        return url


class S3Cache:
    def __init__(
        self, oci: OCICache, options: S3Options, client: Any | None = None, metrics: Metrics = NULL_METRICS
    ) -> None:
        self.oci = oci
        self.metrics = metrics
        self.bucket = options.bucket
        self.presign_seconds = presign_seconds(options.presignedURLTTL)
        self.client = client if client is not None else make_client(options)
        self.transfer = boto3.s3.transfer.TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE, max_concurrency=4
        )

    @staticmethod
    def object_key(key: str) -> str:
        return f"{PREFIX}/{key}"

    def put(self, key: str, path: Path, info: AssetInfo) -> None:
        """Uploads to S3, then publishes the asset with the object's ETag in the signed OCI entry.

        S3 refusing the upload (wrong credentials, no such bucket, access denied: nothing a retry
        fixes) does not fail the build: the asset is published to the registry alone, as with S3
        off, and streamed from there, so clients never get a 500 nor a redirect to an object that
        is not there. The refusal is logged as an error and counted
        (``image_factory_s3_fallbacks_total{reason="upload_refused"}``); ``/readyz?verbose`` names
        its cause. Such an entry stays registry-only until it is rebuilt. S3 not answering
        (:class:`UnavailableError`) is left to the worker's retries.
        """
        try:
            etag = self._upload(key, path, info)
        except S3Error as exc:
            log.error(
                "S3 refused the upload; publishing the asset to the registry only (streamed, not redirected)",
                extra={"key": key, "bucket": self.bucket, "error": str(exc)},
            )
            self.metrics.inc(S3_FALLBACKS, reason="upload_refused")
            self.oci.put(key, path, info)
            return
        self.oci.put(key, path, info, extra={ANNOTATION_S3_ETAG: etag})

    def _upload(self, key: str, path: Path, info: AssetInfo) -> str:
        """Uploads ``path`` as ``assets/<key>``; returns the object's ETag."""
        object_key = self.object_key(key)
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                object_key,
                ExtraArgs={
                    "ContentType": info.content_type,
                    "ContentDisposition": content_disposition(info.filename),
                },
                Config=self.transfer,
            )
            etag = str(self.client.head_object(Bucket=self.bucket, Key=object_key)["ETag"])
        except (BotoCoreError, ClientError, boto3.exceptions.S3UploadFailedError) as exc:
            raise _error(exc, f"uploading s3://{self.bucket}/{object_key}") from exc
        return etag

    def get(self, key: str) -> CachedAsset | None:
        entry = self.oci.get(key)
        if entry is None:
            return None
        etag = entry.s3_etag
        fallback: OCIAsset | None = entry
        if etag is None:
            etag = _upstream_reference(entry)
            if etag is None:  # an OCI-only entry (written with S3 disabled): serve it as is
                return entry
            fallback = None  # upstream's entry is only a pointer: nothing to fall back to
        object_key = self.object_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=object_key, IfMatch=etag)
        except (BotoCoreError, ClientError) as exc:
            stale = _status(exc) in (404, 412)
            reason = "stale or missing" if stale else "unreachable or failing"
            log.warning(
                f"S3 object is {reason}; {'streaming from the registry' if fallback else 'a miss'}",
                extra={"key": object_key, "error": str(exc)},
            )
            if fallback is not None:
                self.metrics.inc(S3_FALLBACKS, reason="stale" if stale else "unavailable")
            return fallback
        size = int(head["ContentLength"])
        if fallback is not None and size != fallback.size:
            log.warning("S3 object size differs from the signed entry", extra={"key": object_key})
            self.metrics.inc(S3_FALLBACKS, reason="size_mismatch")
            return fallback
        modified = head.get("LastModified")
        return S3Asset(
            self, object_key, etag, size, fallback, modified if isinstance(modified, datetime) else None
        )


def _upstream_reference(entry: OCIAsset) -> str | None:
    """The ETag from an entry in upstream's S3 format (``{"etag": "…"}\\n``), else None."""
    if entry.info is not None or entry.size > MAX_REFERENCE_SIZE:
        return None
    try:
        data = b"".join(entry.read())
        etag = json.loads(data).get("etag")
    except (ValueError, AttributeError, FactoryError):
        return None
    return etag if isinstance(etag, str) and etag else None


def _status(exc: Exception) -> int | None:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "NotFound"):
            return 404
        if code == "PreconditionFailed":
            return 412
        return int(status) if status else None
    return None


def _error(exc: Exception, what: str) -> FactoryError:
    """Outages (no connection, timeouts, 5xx) → UnavailableError; refusals → S3Error."""
    status = _status(exc)
    if isinstance(exc, ClientError) and status is not None and status < 500:
        return S3Error(f"S3 refused {what}: {exc}")
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, boto3.exceptions.S3UploadFailedError) and isinstance(cause, Exception):
        return _error(cause, what)  # boto3 wraps the ClientError of the failed part
    return UnavailableError(f"S3 unavailable while {what}: {exc.__class__.__name__}")


__all__ = ["S3Asset", "S3Cache", "S3Error", "make_client", "presign_seconds"]
