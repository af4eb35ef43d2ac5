"""The cloud platforms Talos boots on, as the wizard offers them.

The table is upstream's: ``siderolabs/talos@ad88231:pkg/machinery/platforms/platforms.go``
(``CloudPlatforms``: names, labels, architectures, first Talos version, the disk image suffix the
final page links, boot methods and Secure Boot support), which factory.talos.dev's wizard renders.
Only the order differs (by label here). ``tests/unit/common/profile/test_platforms.py`` checks that
every path it names parses back through the grammar ``/image`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.talos.version import Version

ARCHES = ("amd64", "arm64")
AMD64 = ("amd64",)
DISK, ISO, PXE = "disk-image", "iso", "pxe"


@dataclass(frozen=True)
class CloudPlatform:
    name: str
    label: str
    arches: tuple[str, ...]
    disk_suffix: str | None  # e.g. "raw.xz"; None: the platform boots from no disk image
    boot_methods: tuple[str, ...]
    secureboot: bool = False
    min_version: Version | None = None

    def offered_for(self, version: Version) -> bool:
        return self.min_version is None or version >= self.min_version

    def boots_from(self, method: str) -> bool:
        return method in self.boot_methods

    def disk_image(self, arch: str, *, secureboot: bool = False) -> str:
        """The asset path of the platform's disk image (upstream's ``DiskImageDefaultPath``)."""
        if self.disk_suffix is None:
            raise ValueError(f"{self.name} boots from no disk image")
        return f"{self.name}-{arch}{'-secureboot' if secureboot else ''}.{self.disk_suffix}"


_PLATFORMS = (
    CloudPlatform("aws", "Amazon Web Services (AWS)", ARCHES, "raw.xz", (DISK,)),
    CloudPlatform("gcp", "Google Cloud (GCP)", ARCHES, "raw.tar.gz", (DISK,)),
    CloudPlatform("equinixMetal", "Equinix Metal", ARCHES, None, (PXE,)),
    CloudPlatform("azure", "Microsoft Azure", ARCHES, "vhd.xz", (DISK,), secureboot=True),
    CloudPlatform("digital-ocean", "Digital Ocean", AMD64, "raw.gz", (DISK,)),
    CloudPlatform("nocloud", "Nocloud", ARCHES, "raw.xz", (DISK, ISO, PXE), secureboot=True),
    CloudPlatform("openstack", "OpenStack", ARCHES, "raw.xz", (DISK, ISO, PXE)),
    CloudPlatform("vmware", "VMWare", ARCHES, "ova", (DISK, ISO)),
    CloudPlatform("akamai", "Akamai", AMD64, "raw.gz", (DISK,), min_version=Version(1, 7, 0)),
    CloudPlatform(
        "cloudstack",
        "Apache CloudStack",
        ARCHES,
        "raw.gz",
        (DISK,),
        secureboot=True,
        min_version=Version.parse("1.8.0-alpha.2"),
    ),
    CloudPlatform("hcloud", "Hetzner", AMD64, "raw.xz", (DISK,)),
    CloudPlatform("oracle", "Oracle Cloud", ARCHES, "qcow2", (DISK,)),
    CloudPlatform("upcloud", "UpCloud", AMD64, "raw.xz", (DISK,)),
    CloudPlatform("vultr", "Vultr", AMD64, None, (ISO, PXE)),
    CloudPlatform("exoscale", "Exoscale", ARCHES, "qcow2", (DISK,), min_version=Version(1, 3, 0)),
    CloudPlatform("opennebula", "OpenNebula", ARCHES, "raw.zst", (DISK, ISO), min_version=Version(1, 7, 0)),
    CloudPlatform("scaleway", "Scaleway", ARCHES, "raw.zst", (DISK, ISO)),
    CloudPlatform(
        "alibabacloud", "AlibabaCloud", ARCHES, "qcow2", (DISK,), min_version=Version.parse("1.14.0-beta.2")
    ),
)


def cloud_platforms() -> list[CloudPlatform]:
    """Every cloud platform, sorted by label."""
    return sorted(_PLATFORMS, key=lambda p: p.label.lower())


def cloud_platform(name: str) -> CloudPlatform | None:
    return next((p for p in cloud_platforms() if p.name == name), None)
