"""The cloud platforms Talos boots on, as the wizard offers them (Talos ``pkg/machinery/platforms/cloud.go``).

Which platforms exist, their disk image formats and whether they take Secure Boot images are not
repeated here: they come from Talos's built-in imager profiles (:mod:`common.profile.defaults`),
which the factory already uses to parse asset paths, so an offered link always parses. What is
added is what a person choosing needs: a label, the architectures and the first Talos version.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.profile.defaults import DEFAULT_PROFILE_NAMES, default_profile
from common.profile.model import OutFormat
from common.talos.version import Version

ARCHES = ("amd64", "arm64")

_LABELS = {
    "akamai": "Akamai",
    "alibabacloud": "Alibaba Cloud",
    "aws": "Amazon Web Services (AWS)",
    "azure": "Microsoft Azure",
    "cloudstack": "Apache CloudStack",
    "digital-ocean": "DigitalOcean",
    "exoscale": "Exoscale",
    "gcp": "Google Cloud (GCP)",
    "hcloud": "Hetzner",
    "nocloud": "Nocloud",
    "opennebula": "OpenNebula",
    "openstack": "OpenStack",
    "oracle": "Oracle Cloud",
    "scaleway": "Scaleway",
    "upcloud": "UpCloud",
    "vmware": "VMware",
    "vultr": "Vultr",
}
#: Platforms Talos ships for one architecture only (cloud.go's ``Architectures``).
_SINGLE_ARCH = {"digital-ocean": ("amd64",)}
#: First Talos release with the platform (cloud.go's ``MinVersion``); absent means every release.
_MIN_VERSION = {
    "akamai": Version(1, 7, 0),
    "cloudstack": Version(1, 8, 0),
    "opennebula": Version(1, 7, 0),
    "alibabacloud": Version(1, 10, 0),
}


@dataclass(frozen=True)
class CloudPlatform:
    name: str
    label: str
    arches: tuple[str, ...]
    secureboot: bool
    min_version: Version | None

    def offered_for(self, version: Version) -> bool:
        return self.min_version is None or version >= self.min_version

    def disk_image(self, arch: str, *, secureboot: bool = False) -> str:
        """The asset path of the platform's disk image, in the format its default profile names."""
        profile = default_profile(f"secureboot-{self.name}" if secureboot else self.name) or default_profile(
            self.name
        )
        assert profile is not None and profile.output.image_options is not None
        disk = profile.output.image_options.disk_format.value
        out = profile.output.out_format
        compression = "" if out is OutFormat.RAW else out.value
        suffix = "-secureboot" if secureboot else ""
        return f"{self.name}-{arch}{suffix}.{disk}{compression}"


def cloud_platforms() -> list[CloudPlatform]:
    """Every cloud platform with a built-in image profile, sorted by label."""
    found = []
    for name in DEFAULT_PROFILE_NAMES:
        if name not in _LABELS:
            continue
        found.append(
            CloudPlatform(
                name=name,
                label=_LABELS[name],
                arches=_SINGLE_ARCH.get(name, ARCHES),
                secureboot=f"secureboot-{name}" in DEFAULT_PROFILE_NAMES,
                min_version=_MIN_VERSION.get(name),
            )
        )
    return sorted(found, key=lambda p: p.label.lower())


def cloud_platform(name: str) -> CloudPlatform | None:
    return next((p for p in cloud_platforms() if p.name == name), None)
