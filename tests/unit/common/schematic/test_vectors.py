"""Every vector in the reference file (vendored in tests/fixtures): upstream's own schematic IDs,
recomputed from request bodies."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from common.schematic import canonicalize, marshal, parse_schematic, schematic_id
from tests.support.fixtures import SCHEMATIC_VECTORS

VECTORS: list[dict[str, Any]] = json.loads(SCHEMATIC_VECTORS.read_text())


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [f"{i}-{v['id'][:8]}" for i, v in enumerate(vectors)]


VERIFIED = [v for v in VECTORS if v["verified"]]
LEGACY = [v for v in VECTORS if not v["verified"]]


def test_vector_file_has_expected_shape() -> None:
    assert len(VECTORS) == 34
    assert len(LEGACY) == 1


@pytest.mark.parametrize("vector", VERIFIED, ids=_ids(VERIFIED))
def test_verified_vector_reproduces_canonical_text_and_id(vector: dict[str, Any]) -> None:
    schematic = parse_schematic(vector["schematic_yaml"].encode())
    canonical = marshal(schematic)
    assert canonical.decode() == vector["canonical_yaml"]
    assert schematic_id(schematic) == vector["id"]
    assert canonicalize(vector["schematic_yaml"].encode()) == (vector["id"], canonical)


@pytest.mark.parametrize("vector", VERIFIED, ids=_ids(VERIFIED))
def test_verified_vector_canonical_text_is_a_fixed_point(vector: dict[str, Any]) -> None:
    """Feeding the canonical text back in yields the same bytes (and so the same ID)."""
    canonical = vector["canonical_yaml"].encode()
    assert marshal(parse_schematic(canonical)) == canonical
    assert hashlib.sha256(canonical).hexdigest() == vector["id"]


@pytest.mark.parametrize("vector", LEGACY, ids=_ids(LEGACY))
def test_legacy_hmac_vector_text_matches_but_id_does_not(vector: dict[str, Any]) -> None:
    """The docs' 2a63b6e7… ID is from the HMAC era; the note gives the real sha256 ID of that body."""
    schematic_id_, canonical = canonicalize(vector["schematic_yaml"].encode())
    assert canonical.decode() == vector["canonical_yaml"]
    assert schematic_id_ != vector["id"]
    assert schematic_id_ == "eea1f9534c46d95c4715a2f13d17eacb927c13a42ef087c79b22c3bd0c49d073"
    assert schematic_id_ in vector["note"]
