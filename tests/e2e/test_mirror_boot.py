"""The air-gap proof: a factory configured only with what ``image-factory mirror`` printed, the source
registry stopped, builds an ISO for test_imager_boot's schematic (two official extensions, kernel args,
META) that boots under QEMU with those extensions loaded, exactly as from the source.

One version is mirrored (the catalogs of every version: tests/integration/test_mirror.py). Cost: ~15 s
mirror, ~20 s build, 10-25 s boot (TCG).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from common.schematic.emit import marshal
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.e2e.test_imager_boot import SCHEMATIC, _check_cmdline, _check_report, _ok
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.mirror import Mirrored, mirrored_release
from tests.support.qemu import boot, qemu_available
from tests.support.stack import Stack, factory_stack
from worker.imager.build import kernel_cmdline

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 and OVMF are needed"),
]

VERSION = "v1.12.4"
ISO = "metal-amd64.iso"
BUILD_WAIT = 300
TIMEOUT = 240


@pytest.fixture(scope="module")
def mirrored(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Mirrored]:
    root = tmp_path_factory.mktemp("mirror-boot")
    with mirrored_release(root, registry, fixture_release, [VERSION]) as done:
        yield done


@pytest.fixture(scope="module")
def harness(fixture_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImagerHarness]:
    """Only for expectations (command line, extension contents), computed from the source release."""
    with imager_harness(fixture_release, tmp_path_factory.mktemp("mirror-expect"), SCHEMATIC) as h:
        yield h


@pytest.fixture(scope="module")
def stack(
    mirrored: Mirrored, fixture_release: Release, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    release, overrides = mirrored.stack_arguments(fixture_release)
    with factory_stack(
        tmp_path_factory.mktemp("mirror-boot-stack"), None, mirrored.destination, release, **overrides
    ) as s:
        yield s


def test_iso_from_the_mirror_boots_with_the_schematics_extensions(
    stack: Stack, harness: ImagerHarness, tmp_path: Path
) -> None:
    assert stack.config["artifacts"]["core"]["registry"] != harness.artifacts.core.registry
    schematic = stack.create_schematic(marshal(SCHEMATIC).decode())
    response = requests.get(f"{stack.api.url}/image/{schematic}/{VERSION}/{ISO}", timeout=BUILD_WAIT)
    assert response.status_code == 200, response.text
    iso = tmp_path / ISO
    iso.write_bytes(response.content)

    result = boot(cdrom=iso, firmware="bios", timeout=TIMEOUT)
    report = _ok(result)
    expected = kernel_cmdline(harness.plan(ISO, VERSION))
    _check_cmdline(expected, VERSION, iso=True)
    assert report["cmdline"] == f"BOOT_IMAGE=/boot/vmlinuz {expected}", result.describe()
    _check_report({**report, "cmdline": expected}, harness, VERSION, expected)
    print(f"mirror ISO: booted in {result.seconds:.1f} s")
