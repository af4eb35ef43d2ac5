import io
import tarfile

import yaml

from common.schematic import canonicalize
from worker.imager.schematic_extension import manifest, tarball

SCHEMATIC = b"""customization:
  extraKernelArgs: [nolapic, nomodeset]
  meta:
    - key: 10
      value: |
        a: b
"""
DESCRIPTION = "Virtual extension which specifies the schematic of the image built with schematic."


def test_manifest_is_go_yaml_of_the_talos_struct() -> None:
    schematic_id, canonical = canonicalize(SCHEMATIC)
    text = manifest(schematic_id, canonical, "https://factory.example.com/").decode()
    head = (
        "version: v1alpha1\n"
        "metadata:\n"
        "    name: schematic\n"
        f"    version: {schematic_id}\n"
        "    author: Image Factory (https://factory.example.com/)\n"
        f"    description: {DESCRIPTION}\n"
        "    compatibility:\n"
        "        talos:\n"
        "            version: '>= 1.0.0'\n"
        "    extraInfo: |\n"
    )
    assert text.startswith(head)
    assert yaml.safe_load(text)["metadata"]["extraInfo"].encode() == canonical


def test_before_talos_1_7_there_is_no_extra_info() -> None:
    text = manifest("a" * 64, None, "https://x/").decode()
    assert "extraInfo" not in text and text.endswith("version: '>= 1.0.0'\n")


def test_tarball_layout() -> None:
    schematic_id, canonical = canonicalize(b"{}")
    with tarfile.open(fileobj=io.BytesIO(tarball(schematic_id, canonical, "https://x/"))) as archive:
        members = archive.getmembers()
        assert [(m.name, m.type, m.mode) for m in members] == [
            ("manifest.yaml", tarfile.REGTYPE, 0o644),
            ("rootfs", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/share", tarfile.DIRTYPE, 0o755),
            ("rootfs/usr/local/share/schematic", tarfile.DIRTYPE, 0o755),
            (f"rootfs/usr/local/share/schematic/{schematic_id}", tarfile.REGTYPE, 0o644),
        ]
        assert all(m.mtime == 0 and m.uid == 0 for m in members)
    assert tarball(schematic_id, canonical, "https://x/") == tarball(schematic_id, canonical, "https://x/")
