"""Cloud platforms offered by the wizard: every disk image path they name parses back, through the
path grammar ``/image`` uses, to that platform, architecture, Secure Boot flag and disk format."""

from __future__ import annotations

import pytest

from common.profile.path import parse_path
from common.profile.platforms import CloudPlatform, cloud_platform, cloud_platforms
from common.talos.version import Version


def test_known_formats() -> None:
    def disk(name: str, sb: bool = False) -> str:
        platform = cloud_platform(name)
        assert platform is not None
        return platform.disk_image("amd64", secureboot=sb)

    # upstream's DiskImageSuffix (talos pkg/machinery/platforms/platforms.go), as factory.talos.dev links them
    assert disk("aws") == "aws-amd64.raw.xz"
    assert disk("gcp") == "gcp-amd64.raw.tar.gz"
    assert disk("azure") == "azure-amd64.vhd.xz"
    assert disk("vmware") == "vmware-amd64.ova"
    assert disk("digital-ocean") == "digital-ocean-amd64.raw.gz"
    assert disk("nocloud", True) == "nocloud-amd64-secureboot.raw.xz"
    assert disk("opennebula") == "opennebula-amd64.raw.zst"
    assert cloud_platform("metal") is None and cloud_platform("nope") is None


@pytest.mark.parametrize("platform", cloud_platforms(), ids=lambda p: p.name)
def test_every_offered_disk_image_parses_back(platform: CloudPlatform) -> None:
    if platform.disk_suffix is None:
        with pytest.raises(ValueError):
            platform.disk_image("amd64")
        return
    for arch in platform.arches:
        for sb in (False, True) if platform.secureboot else (False,):
            profile = parse_path(platform.disk_image(arch, secureboot=sb))
            assert (profile.platform, profile.arch, bool(profile.secureboot)) == (platform.name, arch, sb)


def test_min_versions_and_single_arch() -> None:
    akamai = cloud_platform("akamai")
    assert akamai is not None
    assert not akamai.offered_for(Version(1, 6, 7)) and akamai.offered_for(Version(1, 7, 0))
    ocean = cloud_platform("digital-ocean")
    assert ocean is not None and ocean.arches == ("amd64",)
    labels = [p.label.lower() for p in cloud_platforms()]
    assert labels == sorted(labels)
