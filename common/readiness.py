"""Readiness: whether this replica can serve (``/readyz``), and how its dependencies are doing.

**A replica is unready only because of its own state**: it is still starting, or it is shutting
down (:data:`lifecycle`). The API process marks itself serving once its app is built; whoever
handles SIGTERM calls ``lifecycle.shutting_down()`` so that the load balancer stops sending new
requests while the in-flight ones finish.

**The shared dependencies** (Redis, the registries, S3) are checked and reported, in
``/readyz?verbose`` and through :func:`states` (for metrics), **but never make a replica unready.**
Every replica shares them: if a Redis or registry blip made ``/readyz`` fail, every replica would
leave the load balancer at the same moment and a partial outage would become a total one, while
most of the factory still works: cached assets are served (from S3, or in S3 mode from the
registry copy of the entry), schematics and the version list are served from memory (the latter
stale, see the ``talos-versions`` check). Instead, each request that needs the missing dependency
answers 503 with ``Retry-After``: new builds and build status without Redis, cached assets whose
entry or bytes are unreachable, and so on.

Only what this process calls is checked: Redis, every distinct registry host among
``artifacts.schematic``, ``cache.oci``, ``artifacts.core`` and ``artifacts.installer.internal``,
and S3 when ``cache.s3.enabled``. ``artifacts.installer.external`` and the CDN are only ever
redirect targets (clients fetch from them; this process never does), so they are not checked.

Upstream (``siderolabs/image-factory`` from v1.3.0, ``internal/frontend/http/http.go``
``handleReady``) answers 200 with an empty body, or 503 ``not ready`` while an enterprise plugin
(the vulnerability scanner's database) is warming up: readiness of the process itself, as here.
The ``?verbose`` listing is ours, in the format of Kubernetes' own ``/readyz?verbose``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import redis
from botocore.exceptions import BotoCoreError, ClientError

from common.cache.s3 import make_client
from common.config import Config
from common.config.options import RepositoryOptions, S3Options
from common.errors import UnavailableError
from common.registry.client import RegistryClient

log = logging.getLogger(__name__)

#: Raises when the dependency is down; the exception's message is the reason reported.
Check = Callable[[], None]

#: Seconds ``/readyz?verbose`` (and a metrics scrape) waits for all checks together; a check still
#: running by then is reported failed. Each check runs in its own thread, so one hanging dependency
#: cannot delay the others' answers.
CHECK_TIMEOUT = 3.0

#: The name under which this process's own state is reported, first.
LIFECYCLE = "lifecycle"


class Phase(StrEnum):
    STARTING = "starting"
    SERVING = "serving"
    SHUTTING_DOWN = "shutting down"


class Lifecycle:
    """This process's own state: the only thing that makes ``/readyz`` answer 503.

    Per process: gunicorn forks its workers after the app is built, so each worker inherits
    ``SERVING`` and must be told about its own shutdown. The methods only assign an attribute, so
    they are safe to call from a signal handler or any thread. Shutting down is final.
    """

    def __init__(self) -> None:
        self.phase = Phase.STARTING

    def starting(self) -> None:
        self.phase = Phase.STARTING

    def serving(self) -> None:
        if self.phase is not Phase.SHUTTING_DOWN:
            self.phase = Phase.SERVING

    def shutting_down(self) -> None:
        self.phase = Phase.SHUTTING_DOWN

    @property
    def ready(self) -> bool:
        return self.phase is Phase.SERVING


#: This process's lifecycle (one per process).
lifecycle = Lifecycle()


# --- the checks -------------------------------------------------------------------------------


@dataclass
class RegistryUse:
    keys: list[str] = field(default_factory=list)
    insecure: bool = False


def registries(config: Config) -> dict[str, RegistryUse]:
    """Registry hosts this process calls, each with the configuration keys that point at it."""
    core = config.artifacts.core
    used = {
        "artifacts.schematic": config.artifacts.schematic,
        "cache.oci": config.cache.oci,
        "artifacts.core": RepositoryOptions(registry=core.registry, insecure=core.insecure),
        "artifacts.installer.internal": config.artifacts.installer.internal,
    }
    hosts: dict[str, RegistryUse] = {}
    for key, repo in used.items():
        if repo.registry:
            use = hosts.setdefault(repo.registry, RegistryUse())
            use.keys.append(key)
            use.insecure = use.insecure or repo.insecure  # plain HTTP if any key using it says so
    return hosts


def redis_check(client: redis.Redis) -> Check:
    def check() -> None:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise UnavailableError(f"redis is unavailable: {exc.__class__.__name__}: {exc}") from exc

    return check


def registry_check(repo: RepositoryOptions, keys: list[str]) -> Check:
    client = RegistryClient(repo)

    def check() -> None:
        try:
            client.ping()
        except UnavailableError as exc:
            raise UnavailableError(f"{exc.message} (used for {', '.join(keys)})") from exc

    return check


#: S3 error codes that mean the credentials themselves are wrong (not the permissions they carry):
#: an unknown key, a wrong secret, a bad or expired session token, a clock too far off to sign, a
#: request signed for another region. https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
CREDENTIAL_ERRORS = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
    }
)

#: The object the S3 check asks for; it need not exist (NoSuchKey is the expected answer).
S3_PROBE_KEY = "assets/.readyz-probe"


def s3_check(options: S3Options, client: Any | None = None) -> Check:
    """GET of an object that need not exist, in the bucket the cache uses.

    A GET (unlike HEAD) carries an error code, which tells wrong credentials (the factory cannot
    read or write anything: reported with the code and the environment variables to fix) from a
    missing bucket and from credentials that are fine but may not list the bucket (``AccessDenied``
    for a missing key: the cache still works, so that counts as up, as ``NoSuchKey`` does)."""

    def check() -> None:
        nonlocal client
        if client is None:  # built on first use: a process that never reports does not need one
            client = make_client(options)
        try:
            client.get_object(Bucket=options.bucket, Key=S3_PROBE_KEY)["Body"].close()
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            error = exc.response.get("Error", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))
            if code in CREDENTIAL_ERRORS:
                raise UnavailableError(
                    f"S3 refused the factory's credentials ({code}: {message}); check"
                    " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or CF_ACCESS_KEY and CF_SECRET_KEY)"
                ) from exc
            if code == "NoSuchBucket" or (status == 404 and code != "NoSuchKey"):
                raise UnavailableError(f"S3 bucket {options.bucket!r} does not exist") from exc
            if status >= 500 or status == 0:
                raise UnavailableError(f"S3 is unavailable: {exc}") from exc
        except BotoCoreError as exc:
            raise UnavailableError(f"S3 is unavailable: {exc.__class__.__name__}: {exc}") from exc

    return check


def versions_check(note: Callable[[], str | None]) -> Check:
    """Fails while the Talos version list is served stale because its refresh fails (no I/O)."""

    def check() -> None:
        stale = note()
        if stale:
            raise UnavailableError(stale)

    return check


def dependency_checks(
    config: Config, redis_client: redis.Redis, versions_note: Callable[[], str | None] | None = None
) -> dict[str, Check]:
    """Every dependency this process calls, by the name ``/readyz?verbose`` reports it under."""
    checks: dict[str, Check] = {"redis": redis_check(redis_client)}
    for host, use in registries(config).items():
        repo = RepositoryOptions(registry=host, insecure=use.insecure)
        checks[f"registry:{host}"] = registry_check(repo, use.keys)
    if config.cache.s3.enabled:
        checks["s3"] = s3_check(config.cache.s3)
    if versions_note is not None:
        checks["talos-versions"] = versions_check(versions_note)
    return checks


# --- running them -------------------------------------------------------------------------------


def check_states(checks: dict[str, Check], timeout: float = CHECK_TIMEOUT) -> dict[str, tuple[bool, str]]:
    """Runs every check at once: name → (ok, reason), in the checks' order; "" when ok."""
    if not checks:
        return {}
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readiness")
    try:
        futures = {name: pool.submit(check) for name, check in checks.items()}
        wait(futures.values(), timeout=timeout)
        states: dict[str, tuple[bool, str]] = {}
        for name, future in futures.items():
            if not future.done():
                states[name] = (False, f"no answer within {timeout:g}s")
                continue
            exc = future.exception()
            states[name] = (True, "") if exc is None else (False, _reason(exc))
        return states
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hanging check finishes on its own


def states(checks: dict[str, Check], timeout: float = CHECK_TIMEOUT) -> dict[str, tuple[bool, str]]:
    """:data:`LIFECYCLE` (this process; decides readiness) then every dependency (reported only)."""
    own = (True, "") if lifecycle.ready else (False, lifecycle.phase.value)
    return {LIFECYCLE: own, **check_states(checks, timeout)}


def _reason(exc: BaseException) -> str:
    """One line: the check's own message, or the unexpected exception's class and text."""
    if isinstance(exc, UnavailableError):
        text = exc.message
    else:
        log.warning("readiness check raised an unexpected error", exc_info=exc)
        text = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    return " ".join(text.split())
