"""Reference data vendored into the repository (see tests/fixtures/README.md for the origin)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.paths import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SCHEMATIC_VECTORS = FIXTURES / "schematic-vectors.json"
CONFIGURATION_REFERENCE = FIXTURES / "configuration-reference.md"
HELM_CHART_README = FIXTURES / "helm-chart-readme.md"
UPSTREAM_HEAD_CONFIGURATION = FIXTURES / "upstream-head-configuration.md"


def code_blocks(path: Path, lang: str, after: str = "") -> list[str]:
    """The fenced ``lang`` blocks of a vendored Markdown file, from the heading ``after`` on."""
    text = path.read_text()
    if after:
        text = text[text.index(after) :]
    return re.findall(rf"```{lang}[^\n]*\n(.*?)```", text, re.S)


def helm_chart_config_examples() -> list[dict[str, Any]]:
    """The chart's default ``config`` value (its Values table), then every YAML example's ``config:``."""
    table = re.search(r"^\| config \| object \| `(\{.*?\})` \|", HELM_CHART_README.read_text(), re.M)
    assert table, "the Values table's config row"
    docs = [yaml.safe_load(block) for block in code_blocks(HELM_CHART_README, "yaml")]
    return [json.loads(table.group(1))] + [
        doc["config"] for doc in docs if isinstance(doc, dict) and "config" in doc
    ]


def upstream_head_documented_keys() -> list[str]:
    """Every key and section heading of upstream HEAD's configuration reference, in its order."""
    text = UPSTREAM_HEAD_CONFIGURATION.read_text()
    text = text[text.index("## Configuration Reference") : text.index("## Default Configuration")]
    return re.findall(r"^### `([^`]+)`$", text, re.M)
