"""An installer pulled through the registry frontend boots and shows its schematic.

The installer image is what Talos writes to disk on install/upgrade. Here: a schematic with the
fixture's ``siderolabs/dummy-module`` extension and extra kernel arguments; skopeo pulls the amd64
image of ``<factory>/metal-installer/<schematic>:v1.12.4`` (built on pull by the real workers) into a
``dir:`` copy; the boot assets come out of its top layer (Talos ≥ 1.10: ``usr/install/amd64/
systemd-boot.efi`` and the UKI ``vmlinuz.efi``), are laid out on an ESP the way the Talos installer
does (systemd-boot on the removable-media path, the UKI under ``EFI/Linux``) and booted once under
OVMF. The fixture's init prints the ``IMAGE-FACTORY-BOOT-REPORT`` line.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.schematic.emit import schematic_id
from common.schematic.model import Customization, Schematic
from devstack.release.release import Release
from devstack.services import RegistryServer
from tests.support.qemu import Disk, boot, esp_image, qemu_available
from tests.support.stack import Stack, factory_stack
from worker.imager.cmdline import Cmdline

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 and OVMF are needed"),
]

VERSION = "v1.12.4"
PULL_WAIT = 600
TIMEOUT = 180
ARGS = ("console=ttyS0", "test=installer-pull")
SCHEMATIC = Schematic(
    customization=Customization(official_extensions=("siderolabs/dummy-module",), extra_kernel_args=ARGS)
)
ASSETS = ("usr/install/amd64/systemd-boot.efi", "usr/install/amd64/vmlinuz.efi")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryServer, fixture_release: Release
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("installer-pull"), None, registry, fixture_release, apis=1, workers=2
    ) as s:
        yield s


def _pull_amd64(stack: Stack, sid: str, dest: Path, skopeo: str) -> dict[str, object]:
    """skopeo copies the linux/amd64 image of the index into ``dir:<dest>``; returns its manifest."""
    ref = f"docker://{stack.api.url.removeprefix('http://')}/metal-installer/{sid}:{VERSION}"
    command = [skopeo, "--override-os", "linux", "--override-arch", "amd64", "copy", "--src-tls-verify=false"]
    proc = subprocess.run(
        [*command, ref, f"dir:{dest}"],
        capture_output=True,
        text=True,
        timeout=PULL_WAIT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    manifest: dict[str, object] = json.loads((dest / "manifest.json").read_text())
    config = json.loads((dest / manifest["config"]["digest"].split(":")[1]).read_text())  # type: ignore[index]
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    return manifest


def _extract(layer: Path, names: tuple[str, ...], out: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    with gzip.open(layer) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
        for member in archive:
            name = member.name.lstrip("./")
            if name in names and member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                path = out / Path(name).name
                path.write_bytes(data.read())
                found[name] = path
    return found


def test_pulled_installer_boots_with_the_schematic(stack: Stack, skopeo: str, tmp_path: Path) -> None:
    body = "customization:\n  extraKernelArgs:\n" + "".join(f"    - {a}\n" for a in ARGS)
    body += "  systemExtensions:\n    officialExtensions:\n      - siderolabs/dummy-module\n"
    sid = stack.create_schematic(body)
    assert sid == schematic_id(SCHEMATIC)
    manifest = _pull_amd64(stack, sid, tmp_path / "image", skopeo)
    layers = manifest["layers"]
    assert isinstance(layers, list) and len(layers) >= 2
    top = tmp_path / "image" / layers[-1]["digest"].split(":")[1]
    assets = _extract(top, ASSETS, tmp_path)
    assert sorted(assets) == sorted(ASSETS), f"top layer lacks boot assets: {sorted(assets)}"
    uki = assets["usr/install/amd64/vmlinuz.efi"]
    assert uki.read_bytes()[:2] == b"MZ" and assets[ASSETS[0]].read_bytes()[:2] == b"MZ"
    # laid out as the Talos installer does it: sd-boot as the removable-media loader, the UKI in
    # EFI/Linux (systemd-boot finds it there), no menu delay
    esp = esp_image(
        tmp_path / "esp.img",
        {
            "EFI/BOOT/BOOTX64.EFI": assets[ASSETS[0]],
            f"EFI/Linux/Talos-{VERSION}.efi": uki,
            "loader/loader.conf": b"timeout 0\n",
        },
    )
    result = boot(firmware="uefi", disks=[Disk(esp)], timeout=TIMEOUT)
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    report = result.report
    assert report["errors"] == [], result.describe()
    assert report["boot"] == "uefi" and report["version"] == VERSION
    cmdline = Cmdline(report["cmdline"])
    assert cmdline.get("console") == ["ttyS0"], report["cmdline"]  # replaced, not appended
    assert cmdline.get("test") == ["installer-pull"], report["cmdline"]
    assert cmdline.get("talos.platform") == ["metal"], report["cmdline"]
    assert cmdline.get("talos.experimental.wipe") is None, report["cmdline"]  # the main profile, not reset
    names = [(layer["name"], layer["version"]) for layer in report["extensions"]]
    assert names[0][0] == "dummy-module", names
    assert ("schematic", sid) in names, names
    assert report["modules"] == [{"name": "dummy", "loaded": True}]
