"""What each image of the fixture release holds, in the layouts the real Talos images use.

Extension images follow the extension contract (``manifest.yaml`` + ``rootfs/``), overlay images
the overlay contract (``installers/``, ``artifacts/``, ``profiles/``), catalogs their upstream
file formats. Content that cannot be real here (talosctl, the installer binary) is a small
script that says what it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from devstack.release.oci import Entry, directory, file, symlink
from devstack.release.payload import PayloadFlavour

SOURCE = "https://github.com/siderolabs/talos"
TALOSCTL_TUPLES = (
    "darwin-amd64",
    "darwin-arm64",
    "freebsd-amd64",
    "freebsd-arm64",
    "linux-amd64",
    "linux-arm64",
    "linux-armv7",
    "windows-amd64.exe",
    "windows-arm64.exe",
)


@dataclass(frozen=True)
class ExtensionSpec:
    """One system extension image of the fixture."""

    repository: str  # e.g. siderolabs/amd-ucode
    tag: str
    description: str
    constraint: str
    entries: tuple[Entry, ...]
    architectures: tuple[str, ...] = ("amd64", "arm64")
    author: str = "Sidero Labs"
    #: Entries only one architecture's image has (a kernel module is built for one architecture).
    arch_entries: Mapping[str, tuple[Entry, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.repository

    def manifest(self) -> bytes:
        return yaml.safe_dump(
            {
                "version": "v1alpha1",
                "metadata": {
                    "name": self.repository.rsplit("/", 1)[-1],
                    "version": self.tag,
                    "author": self.author,
                    "description": self.description,
                    "compatibility": {"talos": {"version": self.constraint}},
                },
            },
            sort_keys=False,
        ).encode()

    def layer_entries(self, arch: str | None = None) -> list[Entry]:
        """The layer of ``arch``'s image (None: only what every architecture shares)."""
        own = self.arch_entries.get(arch, ()) if arch is not None else ()
        return [file("manifest.yaml", self.manifest()), directory("rootfs"), *self.entries, *own]


def blob(label: str, size: int) -> bytes:
    """Deterministic filler content (firmware and microcode stand-ins) with a readable header."""
    header = f"image-factory fixture {label}\n".encode()
    count = max(0, -(-(size - len(header)) // hashlib.sha256().digest_size))  # digests to reach size
    stream = b"".join(hashlib.sha256(f"{label}:{i}".encode()).digest() for i in range(count))
    return (header + stream)[:size]


def extensions_for(
    version: str, flavour: PayloadFlavour, modules: Mapping[str, tuple[str, bytes]]
) -> list[ExtensionSpec]:
    """The fixture's official extensions for one Talos version (path layout follows the version).

    ``modules``: architecture -> (kernel version, ``dummy.ko`` of that kernel); the kernel-module
    extension has an image for each of them.
    """
    lib = "rootfs/usr/lib" if flavour.usr_merged else "rootfs/lib"
    return [
        ExtensionSpec(
            repository="siderolabs/dummy-module",
            tag=f"1.0.0-{version}",
            description="The dummy network driver as an out-of-tree module (a kernel-module extension).",
            constraint=f">= {version}",
            entries=(),
            architectures=tuple(modules),
            arch_entries={
                arch: (file(f"{lib}/modules/{kver}/extras/dummy.ko", module),)
                for arch, (kver, module) in modules.items()
            },
        ),
        ExtensionSpec(
            repository="siderolabs/test-firmware",
            tag=f"20250101-{version}",
            description="Firmware blobs for an imaginary NIC (a firmware extension).",
            constraint=f">= {version}",
            entries=(
                file(f"{lib}/firmware/test-firmware/nic.bin", blob("test-firmware nic.bin", 4096)),
                file(f"{lib}/firmware/test-firmware/LICENSE", "Fixture firmware, no rights reserved.\n"),
            ),
        ),
        ExtensionSpec(
            repository="siderolabs/amd-ucode",
            tag=f"20250101-{version}",
            description="AMD CPU microcode (loaded from the early initramfs).",
            constraint=f">= {version}",
            entries=(
                file(f"{lib}/firmware/amd-ucode/microcode_amd_fam17h.bin", blob("amd-ucode fam17h", 3200)),
                file(f"{lib}/firmware/amd-ucode/microcode_amd_fam19h.bin", blob("amd-ucode fam19h", 5568)),
            ),
        ),
        hello_world(),
    ]


def hello_world() -> ExtensionSpec:
    """The one extension every catalog lists unchanged; its constraint excludes Talos < 1.10."""
    return ExtensionSpec(
        repository="siderolabs/hello-world",
        tag="1.0.0",
        description="Static files under /usr/local; only compatible with Talos 1.10 and later.",
        constraint=">= v1.10.0",
        entries=(file("rootfs/usr/local/share/hello-world/hello.txt", "Hello from a system extension!\n"),),
    )


def extensions_catalog(lines: list[tuple[str, str, str]]) -> list[Entry]:
    """``image-digests`` and ``descriptions.yaml``: lines are (tagged ref, digest, description)."""
    digests = "".join(f"{ref}@{digest}\n" for ref, digest, _ in lines)
    descriptions = {
        f"{ref}@{digest}": {"author": "Sidero Labs", "description": text} for ref, digest, text in lines
    }
    return [
        file("image-digests", digests),
        file("descriptions.yaml", yaml.safe_dump(descriptions, sort_keys=True, width=1000)),
    ]


def overlays_catalog(overlays: list[tuple[str, str, str]]) -> list[Entry]:
    """``overlays.yaml``: (name, tagged image ref, digest) per overlay, in catalog order."""
    document = {"overlays": [{"name": n, "image": ref, "digest": d} for n, ref, d in overlays]}
    return [file("overlays.yaml", yaml.safe_dump(document, sort_keys=False))]


OVERLAY_INSTALLER = r"""#!/bin/sh
# Fixture overlay installer for Raspberry Pi-like boards, speaking the Talos overlay protocol:
#   get-options: stdin = extra options (YAML map), stdout = {name, kernelArgs, partitionOptions}
#   install:     stdin = {installDisk, mountPrefix, artifactsPath, extraOptions}
set -eu
field() { sed -n "s/^$1:[[:space:]]*//p" | head -n 1 | sed "s/^[\"']//; s/[\"']\$//"; }
case "${1:-}" in
get-options)
    cat >/dev/null
    cat <<'EOF'
name: @NAME@
kernelArgs:
    - console=tty0
    - console=ttyAMA0,115200
    - sysctl.kernel.kexec_load_disabled=1
    - talos.dashboard.disabled=1
EOF
    ;;
install)
    input=$(cat)
    disk=$(printf '%s\n' "$input" | field installDisk)
    prefix=$(printf '%s\n' "$input" | field mountPrefix)
    artifacts=$(printf '%s\n' "$input" | field artifactsPath)
    if [ -z "$disk" ] || [ -z "$prefix" ] || [ -z "$artifacts" ]; then
        echo "install: installDisk, mountPrefix and artifactsPath are required" >&2
        exit 1
    fi
    [ -e "$disk" ] || { echo "install: disk $disk does not exist" >&2; exit 1; }
    mkdir -p "$prefix/boot/EFI"
    cp -R "$artifacts/arm64/firmware/boot/." "$prefix/boot/EFI/"
    cp "$artifacts/arm64/u-boot/@NAME@/u-boot.bin" "$prefix/boot/EFI/u-boot.bin"
    printf 'arm_64bit=1\nenable_uart=1\nkernel=u-boot.bin\n' > "$prefix/boot/EFI/config.txt"
    ;;
*)
    echo "usage: $0 get-options|install" >&2
    exit 2
    ;;
esac
"""

OVERLAY_NAMES = ("rpi_generic", "revpi_generic")


def _overlay_profile(extra: dict[str, object] | None = None, bootloader: str = "") -> bytes:
    """A board's ``profiles/<name>.yaml``: what the factory keeps of it is customization and the
    bootloader (everything else is blanked before the merge, as upstream)."""
    image: dict[str, object] = {"diskSize": 1306525696, "diskFormat": "raw"}
    if bootloader:
        image["bootloader"] = bootloader
    profile: dict[str, object] = {"arch": "arm64", "platform": "metal", "secureboot": False}
    if extra:
        profile["customization"] = extra
    profile["output"] = {"kind": "image", "imageOptions": image, "outFormat": ".xz"}
    return yaml.safe_dump(profile, sort_keys=False).encode()


def overlay_entries() -> list[Entry]:
    """Raspberry Pi style: firmware files for the boot partition, config.txt, U-Boot as the kernel."""
    entries: list[Entry] = [
        file("artifacts/arm64/firmware/boot/bootcode.bin", blob("rpi bootcode.bin", 2048)),
        file("artifacts/arm64/firmware/boot/fixup.dat", blob("rpi fixup.dat", 1024)),
        file("artifacts/arm64/firmware/boot/start4.elf", blob("rpi start4.elf", 8192)),
        file("artifacts/arm64/dtb/broadcom/bcm2711-rpi-4-b.dtb", blob("rpi dtb", 1024)),
    ]
    for name in OVERLAY_NAMES:
        entries.append(file(f"installers/{name}", OVERLAY_INSTALLER.replace("@NAME@", name), 0o755))
        entries.append(file(f"artifacts/arm64/u-boot/{name}/u-boot.bin", blob(f"{name} u-boot.bin", 4096)))
        entries.append(file(f"profiles/{name}.yaml", _overlay_profile(bootloader="grub")))
    return entries


ROCKCHIP_REPOSITORY = "siderolabs/sbc-rockchip"
ROCKCHIP_TAG = "v0.1.0"
ROCKCHIP_NAMES = ("rock64",)
#: Where a Rockchip SoC's boot ROM looks for the bootloader: sector 64 (32 KiB), and the LBAs the
#: overlay asks the GPT entries to move past so U-Boot has room (10 MiB, as sbc-rockchip asks).
ROCKCHIP_UBOOT_SECTOR = 64
ROCKCHIP_OFFSET_LBAS = 2048 * 10
ROCKCHIP_UBOOT_SIZE = 300 * 1024
#: The board's console and the argument its profile adds (merged into every asset's command line).
ROCKCHIP_KERNEL_ARGS = ("console=tty1", "console=ttyS2,1500000n8")
ROCKCHIP_PROFILE_ARGS = ("fixture.overlay.profile=rock64",)

ROCKCHIP_INSTALLER = r"""#!/bin/sh
# Fixture overlay installer for Rockchip-like boards: U-Boot goes raw at sector 64 of the disk,
# before the first partition, in the gap partitionOptions.offset keeps free of the GPT entries.
# The option fixtureFault makes it misbehave on purpose, for the factory's containment tests:
#   fail | hang | escape (write to a host path) | clobber (raw write over the GPT) |
#   outside (a file outside boot/EFI) | symlink (a link to a host file) | options (bad get-options)
set -eu
option() { sed -n "s/^[[:space:]]*$1:[[:space:]]*//p" | head -n 1 | sed "s/^[\"']//; s/[\"']\$//"; }
field() { sed -n "s/^$1:[[:space:]]*//p" | head -n 1 | sed "s/^[\"']//; s/[\"']\$//"; }
case "${1:-}" in
get-options)
    fault=$(option fixtureFault)
    if [ "$fault" = options ]; then echo "kernelArgs: {not: a list}"; exit 0; fi
    cat <<'EOF'
name: @NAME@
kernelArgs:
    - @ARG1@
    - @ARG2@
partitionOptions:
    offset: @OFFSET@
EOF
    ;;
install)
    input=$(cat)
    disk=$(printf '%s\n' "$input" | field installDisk)
    prefix=$(printf '%s\n' "$input" | field mountPrefix)
    artifacts=$(printf '%s\n' "$input" | field artifactsPath)
    fault=$(printf '%s\n' "$input" | option fixtureFault)
    target=$(printf '%s\n' "$input" | option fixtureTarget)
    uboot="$artifacts/arm64/u-boot/@NAME@/u-boot-rockchip.bin"
    case "$fault" in
    fail) echo "install: the board's bootloader is broken (fixture fault)" >&2; exit 3 ;;
    hang) sleep 3600 ;;
    escape) echo escaped > "$target" ;;
    clobber) dd if="$uboot" of="$disk" bs=512 seek=0 conv=notrunc 2>/dev/null ;;
    outside) mkdir -p "$prefix/etc"; echo x > "$prefix/etc/outside" ;;
    symlink) mkdir -p "$prefix/boot/EFI"; ln -s "$target" "$prefix/boot/EFI/link" ;;
    esac
    dd if="$uboot" of="$disk" bs=512 seek=@SECTOR@ conv=notrunc 2>/dev/null
    mkdir -p "$prefix/boot/EFI/dtb/rockchip"
    cp "$artifacts/arm64/dtb/rockchip/rk3328-@NAME@.dtb" "$prefix/boot/EFI/dtb/rockchip/"
    ;;
*)
    echo "usage: $0 get-options|install" >&2
    exit 2
    ;;
esac
"""


def rockchip_installer(name: str) -> str:
    return (
        ROCKCHIP_INSTALLER.replace("@NAME@", name)
        .replace("@ARG1@", ROCKCHIP_KERNEL_ARGS[0])
        .replace("@ARG2@", ROCKCHIP_KERNEL_ARGS[1])
        .replace("@OFFSET@", str(ROCKCHIP_OFFSET_LBAS))
        .replace("@SECTOR@", str(ROCKCHIP_UBOOT_SECTOR))
    )


def rockchip_overlay_entries() -> list[Entry]:
    """Rockchip / U-Boot style: a raw bootloader before the first partition, a device tree on the ESP."""
    entries: list[Entry] = []
    for name in ROCKCHIP_NAMES:
        entries.append(file(f"installers/{name}", rockchip_installer(name), 0o755))
        uboot = blob(f"{name} u-boot-rockchip.bin", ROCKCHIP_UBOOT_SIZE)
        entries.append(file(f"artifacts/arm64/u-boot/{name}/u-boot-rockchip.bin", uboot))
        entries.append(file(f"artifacts/arm64/dtb/rockchip/rk3328-{name}.dtb", blob(f"{name} dtb", 2048)))
        custom: dict[str, object] = {"extraKernelArgs": list(ROCKCHIP_PROFILE_ARGS)}
        entries.append(file(f"profiles/{name}.yaml", _overlay_profile(custom)))
    return entries


INSTALLER_SCRIPT = """#!/bin/sh
# Fixture stand-in for the Talos installer binary of {version}.
echo "Talos installer {version} (image-factory fixture release)"
"""


def installer_entries(version: str, unified: bool) -> list[Entry]:
    """installer-base (>= 1.10: /usr/bin/installer, /bin -> usr/bin) or installer's first layer."""
    script = INSTALLER_SCRIPT.format(version=version)
    if unified:
        return [
            file("usr/bin/installer", script, 0o755),
            symlink("bin", "usr/bin"),
            directory("usr/share/grub"),
            file("etc/os-release", f'NAME="Talos"\nID=talos\nVERSION_ID={version}\n'),
        ]
    return [
        file("bin/installer", script, 0o755),
        directory("usr/share/grub"),
        file("etc/os-release", f'NAME="Talos"\nID=talos\nVERSION_ID={version}\n'),
    ]


def talosctl_entries(version: str) -> list[Entry]:
    entries = []
    for item in TALOSCTL_TUPLES:
        platform = item.removesuffix(".exe")
        body = f"#!/bin/sh\necho 'talosctl {version} {platform} (image-factory fixture release)'\n"
        entries.append(file(f"talosctl-{item}", body, 0o755))
    return entries


def image_labels(version: str) -> dict[str, str]:
    return {"alpha.talos.dev/version": version, "org.opencontainers.image.source": SOURCE}
