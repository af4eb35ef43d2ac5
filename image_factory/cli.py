"""``image-factory``: one console script, several process types, one way to load configuration."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence

from common.config import Config, ConfigError, load_config, resolve_config
from common.config.explain import explain
from common.config.render import reference_markdown, to_env, to_yaml
from common.logging import LEVELS, configure_logging
from common.version import VERSION

CONFIG_HELP = """Configuration source(s). Can be specified multiple times or as a comma-separated list.
Supported forms: env=[PREFIX] (environment variables with an optional prefix), FILE or file=FILE
(.json, .yaml/.yml, .env). Sources are applied in the order provided; later values override earlier
ones. A default env=IF_ is always applied first."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image-factory", description="Talos Linux boot asset factory")
    parser.add_argument("--config", action="append", default=[], metavar="configs", help=CONFIG_HELP)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=list(LEVELS),
        metavar="level",
        help="Log level [debug info warn error dpanic panic fatal] (default info)",
    )
    parser.add_argument("--version", action="version", version=f"image-factory {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="{api,worker,config,mirror}")
    sub.add_parser("api", help="serve the HTTP API under gunicorn on http.httpListenAddr (the default)")
    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--concurrency", type=int, default=None, help="worker processes (default: cores)")
    worker.add_argument("--queues", default=None, help="comma-separated queues to consume")
    show = sub.add_parser("config", help="print the effective configuration")
    how = show.add_mutually_exclusive_group()
    how.add_argument("--format", choices=["yaml", "env", "reference"], default="yaml")
    how.add_argument(
        "--explain",
        action="store_true",
        help="print each key with the source its value came from (default, file, env variable), "
        "secrets masked, and the upstream keys accepted without effect",
    )
    _add_mirror_parser(sub)
    return parser


def _add_mirror_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mirror = sub.add_parser(
        "mirror",
        help="copy the images a factory needs for Talos versions (with their signatures) to another "
        "registry, and print the configuration that points a factory at it",
        description="The source is this configuration's artifacts.core; every image is verified as the "
        "factory verifies it (containerSignature) before it is copied. Credentials come from the Docker "
        "config ($DOCKER_CONFIG/config.json or ~/.docker/config.json), as for the factory.",
    )
    mirror.add_argument(
        "versions", nargs="*", metavar="VERSION", help="Talos versions (default: all offered)"
    )
    mirror.add_argument("--to", dest="registry", help="destination registry host[:port]")
    mirror.add_argument("--namespace", default="", help="destination path prefix (artifacts.core.namespace)")
    mirror.add_argument("--insecure", action="store_true", help="plain HTTP to the destination registry")
    mirror.add_argument("--jobs", type=int, default=4, help="images copied at once (default 4)")
    mirror.add_argument("--list", action="store_true", help="print the source references; copy nothing")


def _fail(message: str) -> int:
    print(f"image-factory: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "api"  # upstream runs the service with no subcommand
    if command == "config":
        return _show_config(args.config, args.format, args.explain)
    configure_logging(args.log_level)  # first, so warnings about the configuration are JSON log lines
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    if command == "api":
        return _run_api(config, args.log_level)
    if command == "mirror":
        return _run_mirror(config, args)
    return _run_worker(config, args.log_level, args.concurrency, args.queues)


def _show_config(specs: list[str], fmt: str, explained: bool) -> int:
    """stdout carries only the configuration; warnings go to stderr as plain lines."""
    if fmt == "reference":
        sys.stdout.write(reference_markdown())
        return 0
    try:
        loaded = resolve_config(specs)
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    for warning in loaded.warnings:
        print(f"image-factory: warning: {warning}", file=sys.stderr)
    if explained:
        sys.stdout.write(explain(loaded))
    else:
        sys.stdout.write(to_env(loaded.config) if fmt == "env" else to_yaml(loaded.config))
    return 0


def _run_mirror(config: Config, args: argparse.Namespace) -> int:
    from common.errors import FactoryError
    from common.mirror.command import MirrorRequest, run_mirror
    from common.services import build_artifacts

    if not args.list and not args.registry:
        return _fail("mirror: --to <registry> is required (or --list)")
    if args.jobs < 1:
        return _fail("mirror: --jobs must be at least 1")
    request = MirrorRequest(
        registry=args.registry or "",
        namespace=args.namespace.strip("/"),
        insecure=args.insecure,
        versions=tuple(args.versions),
        jobs=args.jobs,
        list_only=args.list,
    )
    try:
        return run_mirror(config, build_artifacts(config), request, sys.stdout, sys.stderr)
    except FactoryError as exc:
        return _fail(f"mirror: {exc.message}")


def _with_metrics(config: Config, role: str, run: Callable[[], int]) -> int:
    """Runs the service with its metrics listener (and a worker's heartbeat): ``image_factory.metrics``."""
    from image_factory.metrics import process_metrics

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(process_metrics(config, role))
        except (OSError, ValueError) as exc:
            return _fail(f"metrics: cannot serve on metrics.addr {config.metrics.addr!r}: {exc}")
        return run()


def _run_api(config: Config, log_level: str) -> int:
    return _with_metrics(config, "api", lambda: _serve_api(config, log_level))


def _serve_api(config: Config, log_level: str) -> int:
    from api.server import serve
    from common.errors import FactoryError
    from common.profile.secureboot import signing_certificate_pem

    if config.secureBoot.enabled:  # the API serves the certificate and plans with the key locations
        try:
            signing_certificate_pem(config.secureBoot)
        except FactoryError as exc:
            return _fail(f"secure boot: {exc.message}")
    serve(config, log_level)
    return 0


def _run_worker(config: Config, log_level: str, concurrency: int | None, queues: str | None) -> int:
    return _with_metrics(config, "worker", lambda: _serve_worker(config, log_level, concurrency, queues))


def _serve_worker(config: Config, log_level: str, concurrency: int | None, queues: str | None) -> int:
    from common.builds.queue import BUILD_QUEUE
    from common.cache.signing import FileCacheSigner
    from worker.app import create_celery
    from worker.secureboot.base import SignerError
    from worker.secureboot.config import signers_from_config

    FileCacheSigner.from_path(config.cache.signingKeyPath)  # upstream refuses to start without it
    try:  # opened once here to refuse bad keys now, not at the first Secure Boot build
        signers_from_config(config.secureBoot)
    except SignerError as exc:
        return _fail(f"secure boot: {exc}")
    app = create_celery(config)
    argv = [
        "worker",
        f"--loglevel={logging.getLevelName(LEVELS[log_level])}",
        f"--queues={queues or 'default,' + BUILD_QUEUE}",
        "--without-gossip",
        "--without-mingle",
        "-n",
        "image-factory@%h",
    ]
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    app.worker_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
