"""``python -m devstack.release build --registry 127.0.0.1:5000 [--namespace NS] [--out DIR]``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from devstack.release.release import VERSIONS, build_release


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.release", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the fixture Talos release and push it")
    build.add_argument("--registry", required=True, help="plain-HTTP registry host:port")
    build.add_argument("--namespace", default="", help="path prefix for every repository")
    build.add_argument("--out", type=Path, default=Path(".run/release"), help="where cosign.pub etc. go")
    build.add_argument("--versions", default=",".join(VERSIONS), help="comma-separated Talos versions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    release = build_release(
        args.registry, args.out, args.namespace, [v for v in args.versions.split(",") if v]
    )
    print(release.to_json())
    print(f"fixture release pushed in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
