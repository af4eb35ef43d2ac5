"""The pieces of ``image-factory mirror`` that need no registry (the copy itself: tests/integration)."""

from __future__ import annotations

import yaml

from common.config import Config
from common.mirror.command import MirrorRequest, _size, mirror_configuration
from common.mirror.needs import Needs
from common.talos import version as v
from image_factory.cli import main


def test_needs_lists_an_image_once_with_all_its_tags() -> None:
    needs = Needs()
    needs.add("siderolabs/hello-world", "sha256:" + "a" * 64, "1.0.0", "extension of v1.12.4")
    needs.add("siderolabs/hello-world", "sha256:" + "a" * 64, "1.0.0", "extension of v1.13.0")
    needs.add("siderolabs/hello-world", "sha256:" + "b" * 64, "1.0.1", "extension of v1.13.0")
    assert [(i.digest[7], i.tags, len(i.why)) for i in needs.images] == [
        ("a", ["1.0.0"], 2),
        ("b", ["1.0.1"], 1),
    ]
    assert (
        needs.images[0].reference("r.example/ns")
        == f"r.example/ns/siderolabs/hello-world:1.0.0@sha256:{'a' * 64}"
    )


def test_printed_configuration_points_at_the_mirror_and_keeps_the_verification() -> None:
    config = Config()
    config.containerSignature.publicKeyFile = "/keys/cosign.pub"
    config.artifacts.core.components.imager = "acme/imager"
    request = MirrorRequest(registry="mirror.local:5000", namespace="talos", insecure=True)
    text = mirror_configuration(config, request, [v.parse_tolerant("v1.12.4")])
    assert text.startswith(
        "# image-factory configuration for the mirror mirror.local:5000/talos (Talos v1.12.4)"
    )
    assert yaml.safe_load(text) == {
        "artifacts": {
            "core": {
                "registry": "mirror.local:5000",
                "namespace": "talos",
                "insecure": True,
                "components": {"imager": "acme/imager"},
            }
        },
        "containerSignature": {"disabled": False, "publicKeyFile": "/keys/cosign.pub"},
    }


def test_sizes_are_human() -> None:
    assert [_size(n) for n in (0, 1023, 1536, 5 * 1024**3)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]


def test_cli_wants_a_destination_unless_listing(capsys: object) -> None:
    assert main(["mirror", "v1.12.4"]) == 2
    assert main(["mirror", "--to", "r.example", "--jobs", "0"]) == 2
