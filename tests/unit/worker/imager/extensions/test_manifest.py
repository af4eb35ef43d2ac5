"""manifest.yaml as go-yaml reads it, and extensions.yaml as go-yaml writes it."""

from __future__ import annotations

import pytest

from worker.imager.extensions.config import extensions_yaml
from worker.imager.extensions.manifest import ExtensionError, Metadata, parse_manifest


def test_manifest_scalars_are_taken_as_written() -> None:
    """go-yaml fills string fields with the scalar's text: 1.10 stays "1.10", null is empty."""
    version, md = parse_manifest(
        b"version: v1alpha1\nunknown: [1, 2]\nmetadata:\n  name: 1.10\n  version: 010\n  author: true\n"
        b"  description: ~\n  compatibility:\n    talos:\n      version: 'null'\n"
    )
    assert version == "v1alpha1"
    assert (md.name, md.version, md.author, md.description, md.compatibility) == (
        "1.10",
        "010",
        "true",
        "",
        "null",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "invalid manifest: EOF"),
        (b"version: v1alpha1\nmetadata: [1]\n", "cannot unmarshal"),
        (b"version: {a: 1}\n", "cannot unmarshal !!map into string"),
        (b"version: v1alpha1\nversion: v1alpha1\n", "already defined"),
        (b"version: [\n", "invalid manifest"),
        (b"\xff\xfe", "invalid manifest"),
    ],
)
def test_manifest_errors(data: bytes, message: str) -> None:
    with pytest.raises(ExtensionError, match=message):
        parse_manifest(data)


def test_only_the_first_document_counts() -> None:
    version, md = parse_manifest(b"version: v1alpha1\nmetadata: {name: a}\n---\nversion: other\n")
    assert (version, md.name) == ("v1alpha1", "a")


def test_extensions_yaml_is_go_yaml() -> None:
    layers = [
        ("0.sqsh", Metadata("hello", "1.0", "me", "d", ">= v1.10.0", "line1\nline2\n")),
        ("modules.dep.sqsh", Metadata("modules.dep", "6.1.0", "Talos Machinery", "Combined")),
    ]
    assert extensions_yaml(layers).decode() == (
        "layers:\n"
        "    - image: 0.sqsh\n"
        "      metadata:\n"
        "        name: hello\n"
        '        version: "1.0"\n'
        "        author: me\n"
        "        description: d\n"
        "        compatibility:\n"
        "            talos:\n"
        "                version: '>= v1.10.0'\n"
        "        extraInfo: |\n"
        "            line1\n"
        "            line2\n"
        "    - image: modules.dep.sqsh\n"
        "      metadata:\n"
        "        name: modules.dep\n"
        "        version: 6.1.0\n"
        "        author: Talos Machinery\n"
        "        description: Combined\n"
        "        compatibility:\n"
        "            talos:\n"
        '                version: ""\n'
    )
