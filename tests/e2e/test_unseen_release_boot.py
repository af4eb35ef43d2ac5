"""A Talos-like release this factory has never seen (issue 18): its imager image carries
``usr/install/amd64/*`` but no ``usr/lib/grub``, and its systemd-stub is Debian bookworm's (systemd 252,
before multi-profile UKIs).

Upstream takes GRUB from its own container, so it builds ISOs and disk images for such a release; this
factory takes each GRUB platform the release lacks from its own ``/usr/lib/grub`` (Debian's grub-pc-bin and
grub-efi-amd64-bin) and says so in the build log, with the build key. The old stub gets UKIs without
profiles (an old stub ignores ``.profile`` and boots the *last* ``.cmdline``: the wipe profile's), and the
build log says which profiles were dropped; the trixie stub (257) keeps them.

Proof by boots under QEMU, each asset the way it boots on a machine: the default v1.12.4 ISO (hybrid: GRUB
under SeaBIOS, systemd-boot + UKI under OVMF), the default raw disk (dual-boot: GRUB from the BIOS boot
partition, systemd-boot + UKI under OVMF) and a GRUB-only raw disk under OVMF (the factory's x86_64-efi).
Five boots, two at a time; every asset is built once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pefile
import pytest

from common.schematic.model import Customization, Schematic
from common.talos.version import parse_tolerant
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.imager import ImagerHarness, imager_harness
from tests.support.qemu import BootResult, Disk, boot, qemu_available
from tests.support.release_variants import bookworm_stub, imager_variant
from worker.imager import grub as grub_mod
from worker.imager.build import BuildResult, kernel_cmdline
from worker.imager.uki import stub_systemd_version

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 and OVMF are needed"),
]

VERSION = "v1.12.4"
TIMEOUT = 240
STUB = "usr/install/amd64/systemd-stub.efi"
ISO = "metal-amd64.iso"
RAW = "metal-amd64.raw"
GRUB_ONLY = Schematic(customization=Customization(bootloader="grub"))
EMPTY = Schematic()
WIPE = "talos.experimental.wipe"


def _no_grub(name: str) -> bool:
    return name == "usr/lib/grub" or name.startswith("usr/lib/grub/")


class _Records(logging.Handler):
    """The imager's log records (what the worker's build log says), kept for the tests to read."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def about(self, key: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "key", None) == key]


@dataclass
class Assets:
    harness: ImagerHarness
    log: _Records
    built: dict[str, BuildResult] = field(default_factory=dict)  # name -> asset
    keys: dict[str, str] = field(default_factory=dict)
    cmdlines: dict[str, str] = field(default_factory=dict)


#: name -> (path, schematic)
BUILDS = {"iso": (ISO, EMPTY), "dual": (RAW, EMPTY), "grub": (RAW, GRUB_ONLY)}


@pytest.fixture(scope="module")
def unseen(registry: RegistryServer, fixture_release: Release) -> Release:
    return imager_variant(
        registry,
        fixture_release,
        VERSION,
        drop=_no_grub,
        replace={STUB: bookworm_stub().read_bytes()},
        label="unseen",
    )


@pytest.fixture(scope="module")
def assets(unseen: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Assets]:
    records = _Records()
    logger = logging.getLogger("worker.imager.build")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        with imager_harness(unseen, tmp_path_factory.mktemp("unseen")) as harness:
            found = Assets(harness, records)
            for name, (path, schematic) in BUILDS.items():
                found.built[name] = harness.build(path, VERSION, schematic, dest=name)
                plan = harness.plan(path, VERSION, schematic)
                found.keys[name] = plan.key
                found.cmdlines[name] = kernel_cmdline(plan)
            yield found
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def boots(assets: Assets) -> dict[str, BootResult]:
    """Every boot of the module, two at a time (QEMU TCG is one thread per guest)."""
    plan = {
        "iso-bios": {"cdrom": assets.built["iso"].path, "firmware": "bios"},
        "iso-uefi": {"cdrom": assets.built["iso"].path, "firmware": "uefi"},
        "dual-bios": {"disks": [Disk(assets.built["dual"].path)], "firmware": "bios"},
        "dual-uefi": {"disks": [Disk(assets.built["dual"].path)], "firmware": "uefi"},
        "grub-uefi": {"disks": [Disk(assets.built["grub"].path)], "firmware": "uefi"},
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(boot, timeout=TIMEOUT, **kwargs) for name, kwargs in plan.items()}
        return {name: future.result() for name, future in futures.items()}


def _report(result: BootResult, firmware: str) -> dict[str, Any]:
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    assert result.report["errors"] == [], result.describe()
    assert result.report["boot"] == firmware and result.report["version"] == VERSION, result.describe()
    return result.report


def _esp_file(raw: Path, name: str, dest: Path) -> Path:
    """A file of the disk image's EFI system partition, read with sfdisk and mtools."""
    table = json.loads(subprocess.run(["sfdisk", "--json", raw], capture_output=True, check=True).stdout)
    esp = next(p for p in table["partitiontable"]["partitions"] if p["name"] == "EFI")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    image = f"{raw}@@{esp['start'] * 512}"
    subprocess.run(["mcopy", "-n", "-i", image, f"::/{name}", dest], check=True, env=env)
    return dest


def _sections(uki: Path) -> list[tuple[str, bytes]]:
    pe = pefile.PE(str(uki), fast_load=True)
    return [(s.Name.rstrip(b"\0").decode(), s.get_data()[: s.Misc_VirtualSize]) for s in pe.sections]


# --- the release ------------------------------------------------------------------------------------


def test_the_unseen_release_has_no_grub_and_a_systemd_252_stub(assets: Assets) -> None:
    with assets.harness.artifacts.imager(parse_tolerant(VERSION)) as imager:
        assert (imager.fs / "usr/install/amd64/vmlinuz").is_file()
        assert not (imager.fs / "usr/lib/grub").exists()
        assert stub_systemd_version(imager.fs / STUB) == 252


# --- GRUB from the factory, said in the build log ------------------------------------------------------


def test_grub_comes_from_the_factory_and_the_build_log_says_so(assets: Assets) -> None:
    for name in BUILDS:
        (line,) = [r for r in assets.log.about(assets.keys[name]) if r.getMessage().startswith("GRUB ")]
        assert line.getMessage().startswith(
            f"GRUB from this factory ({grub_mod.FACTORY_GRUB}): "
            "the release's imager image has no usr/lib/grub"
        ), line.getMessage()
        assert line.grub_source == "factory"  # type: ignore[attr-defined]
        assert {"i386-pc", "x86_64-efi"} <= set(line.grub_platforms)  # type: ignore[attr-defined]


def test_the_iso_boots_under_seabios_with_the_factory_s_grub(
    assets: Assets, boots: dict[str, BootResult]
) -> None:
    report = _report(boots["iso-bios"], "bios")
    assert report["cmdline"] == f"BOOT_IMAGE=/boot/vmlinuz {assets.cmdlines['iso']}", boots[
        "iso-bios"
    ].describe()


def test_the_dual_boot_disk_boots_under_seabios_with_the_factory_s_grub(
    assets: Assets, boots: dict[str, BootResult]
) -> None:
    report = _report(boots["dual-bios"], "bios")
    assert report["cmdline"] == f"BOOT_IMAGE=/A/vmlinuz {assets.cmdlines['dual']}", boots[
        "dual-bios"
    ].describe()


def test_the_grub_disk_boots_under_ovmf_with_the_factory_s_efi_grub(
    assets: Assets, boots: dict[str, BootResult]
) -> None:
    report = _report(boots["grub-uefi"], "uefi")
    assert report["cmdline"] == f"BOOT_IMAGE=/A/vmlinuz {assets.cmdlines['grub']}", boots[
        "grub-uefi"
    ].describe()


# --- a stub before multi-profile UKIs: no profiles, the main command line boots -----------------------


def test_the_old_stub_gets_uki_without_profiles_and_the_build_log_says_so(
    assets: Assets, tmp_path: Path
) -> None:
    dropped = {"iso": ["main", "reset"], "dual": ["main", "reset-maintenance"]}
    for name, profiles in dropped.items():
        (line,) = [r for r in assets.log.about(assets.keys[name]) if "without profiles" in r.getMessage()]
        assert line.levelno == logging.WARNING
        assert line.stub_systemd == 252 and line.dropped_profiles == profiles  # type: ignore[attr-defined]
    uki = _esp_file(assets.built["dual"].path, f"EFI/Linux/Talos-{VERSION}.efi", tmp_path / "uki.efi")
    sections = _sections(uki)
    assert ".profile" not in [n for n, _ in sections]
    (cmdline,) = [data for n, data in sections if n == ".cmdline"]
    assert cmdline.decode() == assets.cmdlines["dual"] and WIPE not in cmdline.decode()


def test_the_old_stub_boots_the_main_command_line_under_ovmf(
    assets: Assets, boots: dict[str, BootResult]
) -> None:
    for name in ("iso", "dual"):
        result = boots[f"{name}-uefi"]
        report = _report(result, "uefi")
        assert report["cmdline"] == assets.cmdlines[name], result.describe()
        assert WIPE not in report["cmdline"]


def test_the_trixie_stub_keeps_the_profiles(fixture_release: Release, tmp_path: Path) -> None:
    """The same disk from the fixture release (systemd 257 stub): main, then the reset profile."""
    with imager_harness(fixture_release, tmp_path / "fixture") as harness:
        built = harness.build(RAW, VERSION, EMPTY)
        cmdline = kernel_cmdline(harness.plan(RAW, VERSION, EMPTY))
    sections = _sections(_esp_file(built.path, f"EFI/Linux/Talos-{VERSION}.efi", tmp_path / "uki.efi"))
    profiles = [data for n, data in sections if n == ".profile"]
    cmdlines = [data.decode() for n, data in sections if n == ".cmdline"]
    assert profiles == [b"ID=main", b"ID=reset-maintenance\nTITLE=Reset to maintenance mode"]
    assert cmdlines == [cmdline, f"{cmdline} {WIPE}=system:EPHEMERAL,STATE"]
