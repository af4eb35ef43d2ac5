"""The product version, reported in the ``Server`` header and by the CLI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    VERSION = "v" + _dist_version("image-factory")
except PackageNotFoundError:  # running from a source tree without installing
    VERSION = "v0.0.0-dev"

SERVER_HEADER = f"Image Factory {VERSION}"
