"""``make run``: the whole factory on this machine without Docker.

Starts private backing services (redis-server, docker-registry, SeaweedFS S3), writes a factory config
pointing at them, runs the API and one Celery worker, and supervises everything until Ctrl-C,
SIGTERM or ``python -m devstack.run --stop`` (``make stop``). State and logs live under ``.run/``.

    python -m devstack.run [--state-dir .run] [--port 8080]
    python -m devstack.run --stop [--state-dir .run]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.cache.signing import generate_key_pem
from common.config.options import RepositoryOptions
from common.registry.client import RegistryClient
from devstack.factory import FactoryAPI, FactoryWorker, factory_config, write_config
from devstack.release.release import Release, build_release, factory_overrides
from devstack.secureboot import development_keys
from devstack.services import (
    LOOPBACK,
    RedisServer,
    RegistryServer,
    S3Server,
    Service,
    ServiceError,
    free_port,
    port_is_free,
    venv_bin,
)

log = logging.getLogger("devstack")

BUCKET = "image-factory"
PID_FILE = "devstack.pid"
CONFIG_FILE = "config.yaml"
WORKER_CONFIG_FILE = "worker-config.yaml"  # the same, but for the worker's own metrics port


class _Shutdown(BaseException):
    """Raised from the signal handler; a BaseException so no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _ChildDied(Exception):
    def __init__(self, service: Service) -> None:
        super().__init__(service.name)
        self.service = service


# --------------------------------------------------------------------------------------------------


def seed_fixture_release(registry_host: str, state_dir: Path) -> Release:
    """Pushes the fixture Talos release (devstack.release) into the dev registry, once.

    The registry keeps its data under the state dir, so later runs only check that the release is
    still there (its newest imager tag resolves to the recorded digest) and reuse it.
    """
    out = state_dir / "release"
    summary = out / "release.json"
    if summary.exists():
        release = Release.load(summary)
        newest = release.versions[-1]
        imager = RegistryClient(
            RepositoryOptions(registry_host, release.namespace, "siderolabs/imager", insecure=True)
        )
        if imager.resolve(newest) == release.images.get(f"siderolabs/imager:{newest}"):
            release.registry = registry_host
            log.info("fixture release already in the registry (%s)", ", ".join(release.versions))
            return release
    log.info("building the fixture Talos release (first run: downloads Debian packages, ~1 min) ...")
    started = time.monotonic()
    release = build_release(registry_host, out)
    log.info("fixture release pushed in %.1fs: %s", time.monotonic() - started, ", ".join(release.versions))
    return release


def _signing_key(state: Path) -> Path:
    """The dev stack's cache signing key, kept across restarts so its cache stays valid."""
    path = state / "cache-signing.key"
    if not path.exists():
        path.write_bytes(generate_key_pem())
        path.chmod(0o600)
    return path


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        with client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def _find_factory_bin(explicit: str | None) -> str:
    if explicit:
        return explicit
    found = venv_bin("image-factory") or shutil.which("image-factory")
    if found is None:
        raise ServiceError(
            "the image-factory CLI is not installed in this environment; run `.venv/bin/pip install -e .`"
        )
    return str(found)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_devstack(pid: int) -> bool:
    """True if ``pid`` is alive and is a devstack supervisor (guards against stale, recycled pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"devstack.run" in cmdline or b"devstack/run.py" in cmdline


def stop_running(state_dir: Path, timeout: float = 90.0) -> int:
    """``make stop``: SIGTERM the supervisor recorded in the pid file and wait for it to clean up."""
    pid_file = state_dir / PID_FILE
    pid = _read_pid(pid_file)
    if pid is None or not _is_devstack(pid):
        print(f"dev stack is not running (no live supervisor in {pid_file})")
        pid_file.unlink(missing_ok=True)
        return 0
    print(f"stopping dev stack (pid {pid}) ...", flush=True)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_devstack(pid):
            print("dev stack stopped")
            return 0
        time.sleep(0.2)
    print(f"dev stack (pid {pid}) did not stop within {timeout:.0f}s; sending SIGKILL", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return 1


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signum)


def _metrics_addr(preferred: int) -> str:
    """Upstream's metrics port (and the next one for the worker) when free, else any free port."""
    return f"{LOOPBACK}:{preferred if port_is_free(preferred) else free_port()}"


def _banner(
    api: FactoryAPI,
    registry: RegistryServer,
    s3: S3Server,
    redis_url: str,
    reused: bool,
    state: Path,
    metrics: tuple[str, str] = ("", ""),
) -> str:
    redis_note = "reused from IF_REDIS_URL" if reused else "private"
    return "\n".join(
        [
            "",
            f"image-factory dev stack is up (supervisor pid {os.getpid()})",
            f"  API       http://{LOOPBACK}:{api.port}/",
            f"  Registry  {registry.url}  (use host {registry.host}, plain HTTP)",
            f"  S3        {s3.url}  bucket {BUCKET}, key {s3.access_key}/{s3.secret_key}, region {s3.region}",
            f"  Redis     {redis_url}  ({redis_note})",
            f"  Config    {state / CONFIG_FILE}",
            f"  Metrics   http://{metrics[0]}/metrics (API), http://{metrics[1]}/metrics (worker)",
            f"  SecureBoot on, development keys in {state / 'secureboot'}/ "
            f"(certificate: http://{LOOPBACK}:{api.port}/secureboot/signing-cert.pem)",
            f"  Logs      {state / 'logs'}/",
            "Stop with Ctrl-C or `make stop`.",
            "",
        ]
    )


def run(state_dir: Path, port: int, factory_bin: str | None) -> int:
    state = state_dir.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Keep generated state out of git even if the repo's .gitignore does not list it.
    (state / ".gitignore").write_text("*\n")
    file_handler = logging.FileHandler(logs / "devstack.log")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(file_handler)

    pid_file = state / PID_FILE
    other = _read_pid(pid_file)
    if other is not None and other != os.getpid() and _is_devstack(other):
        log.error("a dev stack is already running from %s (pid %d); `make stop` first", state, other)
        return 1
    if not port_is_free(port):
        log.error("port %d on %s is in use; pick another with --port", port, LOOPBACK)
        return 1
    try:
        binary = _find_factory_bin(factory_bin)
    except ServiceError as exc:
        log.error("%s", exc)
        return 1

    pid_file.write_text(f"{os.getpid()}\n")
    services: list[Service] = []
    exit_code = 0
    signal.signal(signal.SIGTERM, _raise_shutdown)
    signal.signal(signal.SIGINT, _raise_shutdown)

    def start(service: Service) -> None:
        services.append(service)  # before start(): a signal mid-start must still stop it
        log.info("starting %s ...", service.name)
        service.start()
        log.info("%s ready in %.2fs (pid %s)", service.name, service.startup_seconds or 0.0, service.pid)

    try:
        reused = False
        env_url = os.environ.get("IF_REDIS_URL")
        if env_url and _redis_answers(env_url):
            redis_url, reused = env_url, True
            log.info("reusing redis from IF_REDIS_URL")
        else:
            if env_url:
                log.warning("IF_REDIS_URL is set but does not answer PING; starting a private redis")
            redis_server = RedisServer(state / "redis", log_path=logs / "redis.log")
            start(redis_server)
            redis_url = redis_server.url

        registry = RegistryServer(state / "registry", log_path=logs / "registry.log")
        start(registry)
        s3 = S3Server(state / "s3", log_path=logs / "s3.log")
        start(s3)
        s3.create_bucket(BUCKET)

        release = seed_fixture_release(registry.host, state)

        config_path = state / CONFIG_FILE
        config = factory_config(
            redis_url,
            registry.host,
            port=port,
            s3_endpoint=s3.endpoint,
            s3_enabled=True,
            signing_key=_signing_key(state),
            **factory_overrides(release),
            **{"artifacts.storageDir": str(state / "artifacts")},
            # every -secureboot asset works out of the box, signed with a development key set
            **development_keys(state / "secureboot"),
            **{"metrics.addr": _metrics_addr(2122)},
        )
        write_config(config_path, config)
        log.info("wrote %s", config_path)
        metrics = (config["metrics"]["addr"], _metrics_addr(2123))
        worker_config_path = state / WORKER_CONFIG_FILE
        write_config(worker_config_path, {**config, "metrics": {"addr": metrics[1]}})

        api = FactoryAPI(binary, config_path, state, port, logs / "api.log", s3.credentials_env)
        start(api)
        # port 0: the worker listens on nothing (and an explicit port disables port-race retries)
        start(FactoryWorker(binary, worker_config_path, state, 0, logs / "worker.log", s3.credentials_env))

        print(_banner(api, registry, s3, redis_url, reused, state, metrics), flush=True)
        reported: set[str] = set()
        while True:
            for service in services:
                if service.running or service.name in reported:
                    continue
                if isinstance(service, (FactoryAPI, FactoryWorker)):
                    raise _ChildDied(service)
                # A backing service going away is something to observe (/readyz?verbose names it;
                # the routes that need it answer 503), not a reason to take the factory down.
                reported.add(service.name)
                log.warning("%s exited (code %s); the factory runs on", service.name, service.returncode)
            time.sleep(0.5)
    except _Shutdown as sig:
        log.info("received %s, shutting down", signal.Signals(sig.signum).name)
    except _ChildDied as dead:
        svc = dead.service
        log.error(
            "%s exited unexpectedly with code %s; last lines of %s:\n%s",
            svc.name,
            svc.returncode,
            svc.log_path,
            svc.log_tail() or "(log is empty)",
        )
        exit_code = 1
    except ServiceError as exc:
        log.error("%s", exc)
        exit_code = 1
    finally:
        # A second Ctrl-C must not abort the cleanup half way; every stop() has its own timeout.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for service in reversed(services):
            if service.proc is not None:
                log.info("stopping %s", service.name)
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", service.name)
                exit_code = exit_code or 1
        if _read_pid(pid_file) == os.getpid():
            pid_file.unlink(missing_ok=True)
        log.info("dev stack stopped")
    return exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=Path(".run"), help="state and logs (default .run)")
    parser.add_argument("--port", type=int, default=8080, help="API port on 127.0.0.1 (default 8080)")
    parser.add_argument("--stop", action="store_true", help="stop the dev stack running from --state-dir")
    parser.add_argument(
        "--factory-bin", default=None, help="image-factory executable (default: the one in this venv)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(levelname)s %(message)s")
    if args.stop:
        return stop_running(args.state_dir)
    return run(args.state_dir, args.port, args.factory_bin)


if __name__ == "__main__":
    sys.exit(main())
