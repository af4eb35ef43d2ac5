"""The overlay installer, run for real under bubblewrap: its protocol, its box and the checks on what it did.

The installers are the fixture release's own (``devstack.release.content``), written out as the
overlay image has them; hostile behaviour comes from their ``fixtureFault`` option or from small
scripts written here. About 3 s in all (each run starts a sandbox; the timeout case waits 2 s).
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

import pytest

from common.config.options import OverlayInstallerOptions
from common.profile.model import Bootloader, ImageOptions, MetaValue, Output, OutputKind, Profile
from devstack.release import content
from devstack.release.oci import Entry
from worker.imager import gpt, overlay
from worker.imager.overlay import (
    Limits,
    OverlayError,
    OverlayRunner,
    OverlayTimeoutError,
    allowed_ranges,
    merge_profile,
)

pytestmark = pytest.mark.skipif(
    shutil.which("bwrap") is None or shutil.which("prlimit") is None, reason="needs bubblewrap and prlimit"
)

DISK = 64 * 1024 * 1024


def materialise(entries: list[Entry], root: Path) -> Path:
    for e in entries:
        path = root / e.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if e.data is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(e.data)
            path.chmod(e.mode)
    return root


@pytest.fixture(scope="module")
def rockchip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialise(content.rockchip_overlay_entries(), tmp_path_factory.mktemp("sbc-rockchip"))


@pytest.fixture(scope="module")
def raspberrypi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialise(content.overlay_entries(), tmp_path_factory.mktemp("sbc-raspberrypi"))


def runner(
    root: Path, work: Path, name: str = "rock64", limits: Limits | None = None, **options: str
) -> OverlayRunner:
    return OverlayRunner(
        name, executable_root=root, artifacts=root / "artifacts", options=options, work=work, limits=limits
    )


def layout(offset: int) -> gpt.GptLayout:
    specs = [
        gpt.PartitionSpec("EFI", gpt.EFI_SYSTEM, 16 * 1024 * 1024),
        gpt.PartitionSpec("META", gpt.LINUX_FILESYSTEM, 1 << 20),
    ]
    return gpt.plan_layout(DISK, specs, skip_lbas=offset)


def test_rockchip_get_options_and_install(rockchip: Path, tmp_path: Path) -> None:
    r = runner(rockchip, tmp_path / "box")
    opts = r.get_options()
    assert opts.name == "rock64"
    assert opts.kernel_args == content.ROCKCHIP_KERNEL_ARGS
    assert opts.offset_lbas == content.ROCKCHIP_OFFSET_LBAS
    lay = layout(opts.offset_lbas)
    # the offset moved the entries (and so the first partition) past U-Boot's room
    assert lay.entries_lba == 2 + content.ROCKCHIP_OFFSET_LBAS
    assert lay.partitions[0].start > content.ROCKCHIP_OFFSET_LBAS * 512
    esp = tmp_path / "esp"
    esp.mkdir()
    result = r.install(lay, esp)
    uboot = (rockchip / "artifacts/arm64/u-boot/rock64/u-boot-rockchip.bin").read_bytes()
    assert result.raw_writes == ((content.ROCKCHIP_UBOOT_SECTOR * 512, uboot),)
    assert result.esp_files == ("dtb/rockchip/rk3328-rock64.dtb",)
    assert (esp / "dtb/rockchip/rk3328-rock64.dtb").read_bytes() == (
        rockchip / "artifacts/arm64/dtb/rockchip/rk3328-rock64.dtb"
    ).read_bytes()


def test_raspberrypi_firmware_goes_to_the_esp(raspberrypi: Path, tmp_path: Path) -> None:
    r = runner(raspberrypi, tmp_path / "box", name="rpi_generic", configTxtAppend="dtoverlay=disable-bt")
    opts = r.get_options()
    assert "console=ttyAMA0,115200" in opts.kernel_args and opts.offset_lbas == 0
    esp = tmp_path / "esp"
    (esp / "EFI/boot").mkdir(parents=True)
    (esp / "EFI/boot/BOOTAA64.efi").write_bytes(b"grub")
    result = r.install(layout(0), esp)
    assert result.raw_writes == ()
    firmware = sorted(p.name for p in (raspberrypi / "artifacts/arm64/firmware/boot").iterdir())
    assert sorted(result.esp_files) == sorted(["config.txt", "u-boot.bin", *firmware])
    for name in firmware:
        assert (esp / name).read_bytes() == (
            raspberrypi / "artifacts/arm64/firmware/boot" / name
        ).read_bytes()
    assert (esp / "EFI/boot/BOOTAA64.efi").read_bytes() == b"grub"  # the image's own files are kept


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("fail", r"installer install failed \(exit code 3\): install: the board's bootloader is broken"),
        ("clobber", r"installer wrote to disk offset 0x0, outside the gaps it may use"),
        ("outside", r"installer wrote etc outside boot/EFI"),
        ("symlink", r"installer left boot/EFI/link, which is not a regular file"),
    ],
)
def test_misbehaving_installer_is_refused(rockchip: Path, tmp_path: Path, fault: str, message: str) -> None:
    r = runner(rockchip, tmp_path / "box", fixtureFault=fault, fixtureTarget="/etc/passwd")
    esp = tmp_path / "esp"
    esp.mkdir()
    with pytest.raises(OverlayError, match=r"overlay 'rock64': " + message) as info:
        r.install(layout(r.get_options().offset_lbas), esp)
    assert info.value.status == 502
    assert list(esp.iterdir()) == []  # nothing placed


def test_installer_cannot_write_outside_its_box(rockchip: Path, tmp_path: Path) -> None:
    target = tmp_path / "host" / "escaped"
    target.parent.mkdir()
    r = runner(rockchip, tmp_path / "box", fixtureFault="escape", fixtureTarget=str(target))
    with pytest.raises(OverlayError, match=r"overlay 'rock64': installer install failed"):
        r.install(layout(0), tmp_path)
    assert not target.exists()


def test_hanging_installer_times_out(rockchip: Path, tmp_path: Path) -> None:
    configured = OverlayInstallerOptions(timeout=timedelta(seconds=2))  # build.overlayInstaller.timeout
    r = runner(rockchip, tmp_path / "box", limits=Limits.from_options(configured), fixtureFault="hang")
    started = time.monotonic()
    with pytest.raises(
        OverlayTimeoutError, match=r"overlay 'rock64': installer install did not finish within 2s"
    ) as info:
        r.install(layout(0), tmp_path)
    assert time.monotonic() - started < 10
    assert info.value.status == 504


def test_bad_get_options_answer(rockchip: Path, tmp_path: Path) -> None:
    with pytest.raises(OverlayError, match="kernelArgs is not a list"):
        runner(rockchip, tmp_path, fixtureFault="options").get_options()


def script_overlay(tmp_path: Path, body: str) -> Path:
    root = tmp_path / "overlay"
    (root / "installers").mkdir(parents=True)
    (root / "installers" / "probe").write_text("#!/bin/sh\nset -eu\ncat >/dev/null\n" + body)
    (root / "installers" / "probe").chmod(0o755)
    return root


def test_box_has_no_network_no_host_files_and_bounded_memory(tmp_path: Path) -> None:
    # only the loopback interface exists, the host's /etc and home are not there, cwd is the box
    probe = (
        'test "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " ")" = lo\n'
        "test ! -e /etc/passwd && test ! -e /root\n"
        'test "$(pwd)" = /work\n'
        "echo 'name: probe'\n"
    )
    r = runner(script_overlay(tmp_path, probe), tmp_path / "box", name="probe")
    assert r.get_options().name == "probe"
    hog = "python3 -c 'bytearray(512 * 1024 * 1024)'\n"
    limited = Limits(memory=256 * 1024 * 1024)
    r = runner(script_overlay(tmp_path / "hog", hog), tmp_path / "box2", name="probe", limits=limited)
    with pytest.raises(OverlayError, match="MemoryError"):
        r.get_options()


def test_allowed_ranges_are_the_gpt_gaps() -> None:
    plain = layout(0)
    assert allowed_ranges(plain) == [(34 * 512, 2048 * 512)]
    moved = layout(100)
    assert allowed_ranges(moved) == [(2 * 512, 102 * 512), (134 * 512, 2048 * 512)]


def test_merge_profile_keeps_the_schematic_first() -> None:
    doc = content._overlay_profile(
        {"extraKernelArgs": ["a=1"], "metaContents": [{"key": 12, "value": "x"}]}, "grub"
    )
    p = Profile(arch="arm64", output=Output(kind=OutputKind.IMAGE, image_options=ImageOptions()))
    p.customization.extra_kernel_args = ["b=2"]
    merged = merge_profile(p, doc, "rock64")
    assert merged.customization.extra_kernel_args == [
        "a=1",
        "b=2",
    ]  # overlay's first, as upstream merges first
    assert merged.customization.meta_contents == [MetaValue(12, "x")]
    assert (
        merged.output.image_options is not None and merged.output.image_options.bootloader is Bootloader.GRUB
    )
    # the blanked fields (arch, diskSize, …) are ignored; a schematic's bootloader wins
    chosen = Profile(
        arch="arm64",
        output=Output(kind=OutputKind.IMAGE, image_options=ImageOptions(bootloader=Bootloader.SD_BOOT)),
    )
    merged = merge_profile(chosen, doc, "rock64")
    assert merged.arch == "arm64" and merged.output.image_options is not None
    assert (
        merged.output.image_options.bootloader is Bootloader.SD_BOOT
        and merged.output.image_options.disk_size == 0
    )
    with pytest.raises(OverlayError, match="not a mapping"):
        merge_profile(Profile(), b"- a\n", "rock64")


def test_worker_without_bubblewrap_answers_503(
    rockchip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that cannot build a box says so (503, retry elsewhere) instead of blaming the overlay."""
    monkeypatch.setattr(overlay, "_PATH", str(tmp_path / "empty"))
    with pytest.raises(overlay.SandboxUnavailableError, match="bubblewrap") as info:
        runner(rockchip, tmp_path / "box").get_options()
    assert info.value.status == 503
