"""Reference data vendored into the repository (see tests/fixtures/README.md for the origin)."""

from __future__ import annotations

from tests.paths import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SCHEMATIC_VECTORS = FIXTURES / "schematic-vectors.json"
CONFIGURATION_REFERENCE = FIXTURES / "configuration-reference.md"
