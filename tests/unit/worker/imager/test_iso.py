"""ISO generation: generator choice, the text files, and real ISOs read back with xorriso and
mtools (real payload from the release fixture, real GRUB, real systemd-boot).

Upstream: ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/iso`` and ``pkg/imager/out.go`` (``outISO``).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from common.errors import InvalidInputError
from common.profile.fill import select_bootloader
from common.profile.model import Bootloader, SDBootEnrollKeys
from devstack.debian import grub_dirs
from devstack.release.payload import Payload, build_payload
from worker.imager import tools
from worker.imager.iso import (
    IsoGenerator,
    IsoInputs,
    build_iso,
    grub_cfg,
    grub_quote,
    iso_label,
    loader_conf,
    native_args,
    select_generator,
    volume_id,
    volume_uuid,
)
from worker.imager.uki import build_uki

VERSION = "v1.12.4"
EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC
CMDLINE = "talos.platform=metal console=ttyS0 foo=bar"
ESP_TYPE_GUID = "28732ac11ff8d211ba4b00a0c93ec93b"  # C12A7328-F81F-11D2-BA4B-00A0C93EC93B, byte-swapped

G, U, H = IsoGenerator.GRUB, IsoGenerator.UEFI, IsoGenerator.HYBRID

# --------------------------------------------------------------------------------------------------
# §6.1 generator selection

#: (version, bootloader as given) -> generator without Secure Boot; None = rejected.
SELECTION: dict[tuple[str, Bootloader], IsoGenerator | None] = {
    **{(v, b): G for v in ("v1.7.0", "v1.9.0") for b in Bootloader},
    **{(v, b): H for v in ("v1.10.0", "v1.11.0") for b in Bootloader},
    **{
        (v, b): g
        for v in ("v1.12.0", "v1.13.0")
        for b, g in (
            (Bootloader.DUAL_BOOT, H),
            (Bootloader.SD_BOOT, U),
            (Bootloader.GRUB, G),
            (Bootloader.NONE, None),
        )
    },
}


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
@pytest.mark.parametrize(("version", "bootloader"), sorted(SELECTION))
def test_select_generator_table(version: str, bootloader: Bootloader, arch: str) -> None:
    # the arch never matters once the bootloader is known (arm64 1.10/1.11 gets the hybrid ISO too)
    expected = SELECTION[(version, bootloader)]
    if expected is None:
        with pytest.raises(InvalidInputError, match="no bootloader"):
            select_generator(version=version, bootloader=bootloader, secureboot=False)
    else:
        assert select_generator(version=version, bootloader=bootloader, secureboot=False) is expected
    # Secure Boot always means the sd-boot-only UEFI ISO, even with an explicit GRUB choice
    assert select_generator(version=version, bootloader=bootloader, secureboot=True) is U


@pytest.mark.parametrize(
    ("version", "arch", "expected"),
    [
        ("v1.7.0", "amd64", G),
        ("v1.7.0", "arm64", G),
        ("v1.9.0", "amd64", G),
        ("v1.9.0", "arm64", G),
        ("v1.10.0", "amd64", H),
        ("v1.10.0", "arm64", H),
        ("v1.11.0", "amd64", H),
        ("v1.11.0", "arm64", H),
        ("v1.12.0", "amd64", H),  # dual-boot default
        ("v1.12.0", "arm64", U),  # sd-boot default
        ("v1.13.0", "amd64", H),
        ("v1.13.0", "arm64", U),
    ],
)
def test_select_generator_with_default_bootloader(version: str, arch: str, expected: IsoGenerator) -> None:
    """What a schematic without a bootloader gets, after select_bootloader as fill_defaults runs it."""
    bootloader = select_bootloader(Bootloader.NONE, arch, version, False)
    assert select_generator(version=version, bootloader=bootloader, secureboot=False) is expected
    secure = select_bootloader(Bootloader.NONE, arch, version, True)
    assert select_generator(version=version, bootloader=secure, secureboot=True) is U


@pytest.mark.parametrize(
    ("version", "bootloader", "expected"),
    [
        ("v1.12.0-alpha.1", Bootloader.GRUB, G),  # pre-releases count as the release
        ("v1.12.0-alpha.1", Bootloader.SD_BOOT, U),
        ("v1.11.99", Bootloader.SD_BOOT, H),  # selection not honoured before 1.12
        ("v1.10.0-beta.0", Bootloader.GRUB, H),
        ("v1.9.99", Bootloader.DUAL_BOOT, G),
        ("latest", Bootloader.GRUB, G),  # unparsable = newest Talos: the choice counts
        ("latest", Bootloader.SD_BOOT, U),
    ],
)
def test_select_generator_version_edges(version: str, bootloader: Bootloader, expected: IsoGenerator) -> None:
    assert select_generator(version=version, bootloader=bootloader, secureboot=False) is expected


# --------------------------------------------------------------------------------------------------
# §6.2 labels and dates


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Talos-v1.12.0", "TALOS_V1_12_0"),
        ("Talos-v1.8.0-alpha.1", "TALOS_V1_8_0_ALPHA_1"),
        ("Talos-v1.10.3+build.7~x/y z", "TALOS_V1_10_3BUILD_7XYZ"),  # + ~ / space dropped
        ("Talos-v1.13.0-beta.0-35-g0123456789abcdef-dirty", "TALOS_V1_13_0_BETA_0_35_G0123456"),
        ("a_b-c.d", "A_B_C_D"),
        ("stra\u00dfe-\u0131x", "STRAE_IX"),  # Go's simple case mapping: sharp s dropped, dotless i -> I
        ("", ""),
    ],
)
def test_volume_id(label: str, expected: str) -> None:
    assert volume_id(label) == expected
    assert len(volume_id(label)) <= 32
    assert re.fullmatch(r"[A-Z0-9_]*", volume_id(label))


def test_label_and_native_args() -> None:
    assert iso_label("v1.12.0") == "Talos-v1.12.0"
    assert volume_id(iso_label("v1.12.0")) == "TALOS_V1_12_0"
    assert volume_uuid(EPOCH) == "2023111422132000"
    assert volume_uuid(0) == "1970010100000000"
    dates = ["-volume_date", "all_file_dates", f"={EPOCH}", "-volume_date", "uuid", "2023111422132000"]
    assert native_args("v1.8.0", EPOCH) == [*dates, "-volid", "TALOS_V1_8_0", "-volset-id", "Talos-v1.8.0"]
    assert native_args("v1.7.6", EPOCH) == dates  # no label before 1.8, but dates all the same
    assert native_args("v1.8.0-alpha.0", EPOCH)[6:] == [
        "-volid",
        "TALOS_V1_8_0_ALPHA_0",
        "-volset-id",
        "Talos-v1.8.0-alpha.0",
    ]


# --------------------------------------------------------------------------------------------------
# §6.3 grub.cfg, §6.4 loader.conf

GRUB_CFG_1_12 = """\
set default=0
set timeout=3

insmod all_video

terminal_input console
terminal_output console

menuentry "Talos ISO" {
\tset gfxmode=auto
\tset gfxpayload=text
\tlinux /boot/vmlinuz talos.platform=metal console=ttyS0 foo=bar
\tinitrd /boot/initramfs.xz
}

menuentry "Reset Talos installation" {
\tset gfxmode=auto
\tset gfxpayload=text
\tlinux /boot/vmlinuz talos.platform=metal console=ttyS0 foo=bar talos.experimental.wipe=system
\tinitrd /boot/initramfs.xz
}
"""

GRUB_CFG_1_3 = """\
set default=0
set timeout=3

insmod all_video

terminal_input console
terminal_output console

menuentry "Talos ISO" {
\tset gfxmode=auto
\tset gfxpayload=text
\tlinux /boot/vmlinuz a=\\{x\\}
\tinitrd /boot/initramfs.xz
}

"""


def test_grub_cfg_with_reset_entry() -> None:
    assert grub_cfg(CMDLINE, "v1.12.0") == GRUB_CFG_1_12
    assert grub_cfg(CMDLINE, "v1.4.0") == GRUB_CFG_1_12
    assert grub_cfg(CMDLINE, "latest") == GRUB_CFG_1_12


def test_grub_cfg_without_reset_entry_before_1_4() -> None:
    assert grub_cfg("a={x}", "v1.3.7") == GRUB_CFG_1_3
    assert grub_cfg("a={x}", "v1.3.7").endswith("}\n\n")


def test_grub_quote() -> None:
    assert grub_quote('\\ { } & $ | ; < > "') == '\\\\ \\{ \\} \\& \\$ \\| \\; \\< \\> \\"'
    assert grub_quote("a=b c='d' e=#f ~g") == "a=b c='d' e=#f ~g"  # everything else is left alone
    assert grub_quote("x\\{") == "x\\\\\\{"  # escapes are not escaped twice
    cfg = grub_cfg('k=$v;a&b|c<d>e"f', "v1.12.0")
    assert '\tlinux /boot/vmlinuz k=\\$v\\;a\\&b\\|c\\<d\\>e\\"f\n' in cfg
    assert '\tlinux /boot/vmlinuz k=\\$v\\;a\\&b\\|c\\<d\\>e\\"f talos.experimental.wipe=system\n' in cfg


@pytest.mark.parametrize("enroll", list(SDBootEnrollKeys))
def test_loader_conf(enroll: SDBootEnrollKeys) -> None:
    expected = f"# systemd-boot configuration\n\ntimeout 10\n\nsecure-boot-enroll {enroll.value}\n"
    assert loader_conf(enroll) == expected


# --------------------------------------------------------------------------------------------------
# real ISOs


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Payload:
    return build_payload(VERSION, tmp_path_factory.mktemp("payload"))


@pytest.fixture(scope="module")
def inputs(payload: Payload, tmp_path_factory: pytest.TempPathFactory) -> IsoInputs:
    """Inputs as the build hands them over: read-only files, as in the shared store."""
    store = tmp_path_factory.mktemp("store")
    uki = store / "vmlinuz.efi"
    build_uki(
        stub=payload.systemd_stub,
        kernel=payload.vmlinuz,
        initrd=payload.initramfs,
        cmdline=CMDLINE,
        version=VERSION,
        profiles=None,  # Debian's 252 stub has no multi-profile support
        epoch=EPOCH,
        out=uki,
    )
    for path in (payload.vmlinuz, payload.initramfs, payload.systemd_boot, uki):
        path.chmod(0o444)
    pc, efi = grub_dirs()
    return IsoInputs(
        arch="amd64",
        version=VERSION,
        kernel=payload.vmlinuz,
        initramfs=payload.initramfs,
        cmdline=CMDLINE,
        uki=uki,
        sd_boot=payload.systemd_boot,
        grub_dirs={"i386-pc": pc, "x86_64-efi": efi},
    )


def _build(generator: IsoGenerator, inputs: IsoInputs, root: Path, *, epoch: int = EPOCH) -> Path:
    root.mkdir(parents=True)
    work = root / "work"
    work.mkdir()
    out = root / f"{generator}.iso"
    build_iso(generator, inputs, out, workdir=work, epoch=epoch)
    return out


@pytest.fixture(scope="module")
def isos(inputs: IsoInputs, tmp_path_factory: pytest.TempPathFactory) -> dict[IsoGenerator, Path]:
    root = tmp_path_factory.mktemp("isos")
    assert inputs.uki is not None and inputs.sd_boot is not None
    files = (inputs.kernel, inputs.initramfs, inputs.uki, inputs.sd_boot)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_mode, p.read_bytes()) for p in files}
    built = {g: _build(g, inputs, root / g.value) for g in IsoGenerator}
    after = {p: (p.stat().st_mtime_ns, p.stat().st_mode, p.read_bytes()) for p in files}
    assert before == after, "inputs must never be touched (they are hard-linked or copied)"
    return built


def _xorriso(iso: Path, *commands: str) -> str:
    return tools.run(["xorriso", "-indev", iso, *commands]).decode()


def _files(iso: Path) -> dict[str, int]:
    """Every regular file in the ISO9660/Rock Ridge tree with its size."""
    out = _xorriso(iso, "-find", "/", "-type", "f", "-exec", "lsdl")
    files = {}
    for line in out.splitlines():
        m = re.match(r"^-\S+\s+\d+\s+\S+\s+\S+\s+(\d+)\s+.*'(/[^']*)'$", line)
        if m:
            files[m.group(2)] = int(m.group(1))
    return files


def _extract(iso: Path, path: str, dest: Path) -> bytes:
    tools.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", path, dest])
    return dest.read_bytes()


def _el_torito(iso: Path) -> list[tuple[str, str | None]]:
    """(platform, image path or None for an appended partition) per El Torito boot entry."""
    out = _xorriso(iso, "-report_el_torito", "plain")
    entries = re.findall(r"^El Torito boot img :\s+(\d+)\s+(\S+)\s", out, re.M)
    paths = dict(re.findall(r"^El Torito img path :\s+(\d+)\s+(\S+)$", out, re.M))
    return [(pltf, paths.get(n)) for n, pltf in entries]


def _esp(iso: Path, dest: Path) -> Path:
    """The EFI system partition (GPT type ESP, else MBR 0xef) cut out of the ISO into ``dest``."""
    out = _xorriso(iso, "-report_system_area", "plain")
    start = size = None
    gpt_types = dict(re.findall(r"^GPT type GUID\s+:\s+(\d+)\s+(\S+)$", out, re.M))
    gpt_ranges = {
        n: (int(s), int(c))
        for n, s, c in re.findall(r"^GPT start and size :\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
    }
    for n, guid in gpt_types.items():
        if guid == ESP_TYPE_GUID:
            start, size = gpt_ranges[n]
    if start is None:
        m = re.search(r"^MBR partition\s+:\s+\d+\s+\S+\s+0xef\s+(\d+)\s+(\d+)$", out, re.M)
        assert m, out
        start, size = int(m.group(1)), int(m.group(2))
    assert size is not None
    with iso.open("rb") as fh:
        fh.seek(start * 512)
        dest.write_bytes(fh.read(size * 512))
    return dest


def _mdir(image: Path) -> list[str]:
    return tools.run(["mdir", "-/", "-b", "-i", image, "::"]).decode().split()


def _pvd(iso: Path) -> dict[str, str]:
    out = _xorriso(iso, "-pvd_info")
    return {k.strip(): v.strip() for k, v in re.findall(r"^([A-Za-z .]+?)\s*: ?(.*)$", out, re.M)}


def test_el_torito_entries(isos: dict[IsoGenerator, Path]) -> None:
    assert _el_torito(isos[G]) == [("BIOS", "/boot/grub/i386-pc/eltorito.img"), ("UEFI", "/efi.img")]
    assert _el_torito(isos[H]) == [("BIOS", "/boot/grub/i386-pc/eltorito.img"), ("UEFI", None)]
    assert _el_torito(isos[U]) == [("UEFI", None)]


def test_grub_iso_tree(isos: dict[IsoGenerator, Path], inputs: IsoInputs, tmp_path: Path) -> None:
    files = _files(isos[G])
    assert files["/boot/vmlinuz"] == inputs.kernel.stat().st_size
    assert files["/boot/initramfs.xz"] == inputs.initramfs.stat().st_size
    assert _extract(isos[G], "/boot/grub/grub.cfg", tmp_path / "grub.cfg").decode() == GRUB_CFG_1_12
    assert _extract(isos[G], "/boot/vmlinuz", tmp_path / "vmlinuz") == inputs.kernel.read_bytes()
    # BIOS GRUB from grub-mkrescue, UEFI GRUB modules from the payload's x86_64-efi directory
    assert "/boot/grub/i386-pc/eltorito.img" in files
    assert "/boot/grub/i386-pc/normal.mod" in files
    assert "/boot/grub/x86_64-efi/normal.mod" in files
    assert "/boot/grub/x86_64-efi/moddep.lst" in files
    assert "/efi.img" in files
    assert not any(p.startswith(("/EFI/", "/loader/")) for p in files)
    # modules are xz-compressed (--compress=xz) and the EFI image carries the decompressor
    assert _extract(isos[G], "/boot/grub/x86_64-efi/normal.mod", tmp_path / "n.mod")[:6] == b"\xfd7zXZ\x00"
    efi_img = tmp_path / "efi.img"
    _extract(isos[G], "/efi.img", efi_img)
    assert _mdir(efi_img) == ["::/efi/", "::/efi/boot/", "::/efi/boot/bootx64.efi"]
    tools.run(["mcopy", "-i", efi_img, "::/efi/boot/bootx64.efi", tmp_path / "bootx64.efi"])
    core = (tmp_path / "bootx64.efi").read_bytes()
    assert core[:2] == b"MZ"
    assert b"search --fs-uuid --set=root 2023-11-14-22-13-20-00\n" in core  # the ISO's own volume UUID
    assert b"set prefix=(${root})/boot/grub\n" in core
    serial = f"{EPOCH >> 16:04X}-{EPOCH & 0xFFFF:04X}"  # mformat -N <epoch>, as GRUB_FAT_SERIAL_NUMBER
    assert f"Volume Serial Number is {serial}" in tools.run(["mdir", "-i", efi_img, "::"]).decode()
    # the same image is the GPT EFI partition for USB sticks
    assert _esp(isos[G], tmp_path / "esp.img").read_bytes() == efi_img.read_bytes()


@pytest.mark.parametrize("generator", [U, H])
def test_sd_boot_iso_tree(
    generator: IsoGenerator, isos: dict[IsoGenerator, Path], inputs: IsoInputs, tmp_path: Path
) -> None:
    iso = isos[generator]
    files = _files(iso)
    assert inputs.uki is not None and inputs.sd_boot is not None
    assert files["/EFI/BOOT/BOOTX64.EFI"] == inputs.sd_boot.stat().st_size
    assert files[f"/EFI/Linux/Talos-{VERSION}.efi"] == inputs.uki.stat().st_size
    assert _extract(iso, "/loader/loader.conf", tmp_path / "loader.conf").decode() == loader_conf(
        SDBootEnrollKeys.OFF
    )
    assert _extract(iso, "/loader/random-seed", tmp_path / "seed") == bytes(32)
    assert "/efiboot.img" not in files  # -m efiboot.img: only the appended partition has it
    if generator is H:
        assert files["/boot/vmlinuz"] == inputs.kernel.stat().st_size
        assert files["/boot/initramfs.xz"] == inputs.initramfs.stat().st_size
        assert _extract(iso, "/boot/grub/grub.cfg", tmp_path / "grub.cfg").decode() == GRUB_CFG_1_12
        assert "/boot/grub/i386-pc/eltorito.img" in files
        assert not any(p.startswith("/boot/grub/x86_64-efi/") for p in files)  # UEFI is sd-boot's
    else:
        assert sorted(files) == [
            "/EFI/BOOT/BOOTX64.EFI",
            f"/EFI/Linux/Talos-{VERSION}.efi",
            "/loader/loader.conf",
            "/loader/random-seed",
        ]

    esp = _esp(iso, tmp_path / "efiboot.img")
    assert _mdir(esp) == [
        "::/EFI/",
        "::/loader/",
        "::/EFI/BOOT/",
        "::/EFI/Linux/",
        "::/EFI/BOOT/BOOTX64.EFI",
        f"::/EFI/Linux/Talos-{VERSION}.efi",
        "::/loader/loader.conf",
        "::/loader/random-seed",
    ]
    tools.run(["mcopy", "-i", esp, f"::/EFI/Linux/Talos-{VERSION}.efi", "::/EFI/BOOT/BOOTX64.EFI", tmp_path])
    assert (tmp_path / f"Talos-{VERSION}.efi").read_bytes() == inputs.uki.read_bytes()
    assert (tmp_path / "BOOTX64.EFI").read_bytes() == inputs.sd_boot.read_bytes()
    attrs = tools.run(["mattrib", "-i", esp, "::/loader/random-seed"]).decode()
    assert re.match(r"^\s*A\s+R\s+::/loader/random-seed", attrs), attrs
    info = tools.run(["minfo", "-i", esp, "::"]).decode()
    assert "serial number: 1234ABCD" in info  # mkfs.vfat --invariant
    assert re.search(r"big size: (\d+) sectors", info)
    # FAT32 with enough clusters to be read as FAT32 (the small test UKI needs the 33 MiB floor)
    assert esp.stat().st_size >= 33 * 1024 * 1024


def test_volume_descriptor(isos: dict[IsoGenerator, Path]) -> None:
    for iso in isos.values():
        pvd = _pvd(iso)
        assert pvd["Volume Id"] == "TALOS_V1_12_4"
        assert pvd["Volume Set Id"] == "Talos-v1.12.4"
        assert pvd["Creation Time"] == "2023111422132000"
        assert pvd["Modif. Time"] == "2023111422132000"
    listing = _xorriso(isos[U], "-find", "/", "-exec", "lsdl")
    assert "Nov 14  2023" in listing and "root" not in listing
    assert all(" 0        0 " in line for line in listing.splitlines() if line.startswith(("-", "d")))


def test_appended_partition(isos: dict[IsoGenerator, Path]) -> None:
    uefi = _xorriso(isos[U], "-report_system_area", "plain")
    assert re.search(r"^MBR partition\s+:\s+1\s+0x00\s+0x83\s", uefi, re.M), uefi
    assert re.search(r"^MBR partition\s+:\s+2\s+0x00\s+0xef\s", uefi, re.M), uefi
    assert re.search(r"^Partition offset\s+:\s+16$", uefi, re.M)
    hybrid = _xorriso(isos[H], "-report_system_area", "plain")
    assert "protective-msdos-label grub2-mbr" in hybrid
    assert re.search(rf"^GPT type GUID\s+:\s+2\s+{ESP_TYPE_GUID}$", hybrid, re.M), hybrid
    assert re.search(r"^GPT partname local :\s+2\s+Appended2$", hybrid, re.M), hybrid
    grub = _xorriso(isos[G], "-report_system_area", "plain")
    assert re.search(r"^GPT partition path :\s+2\s+/efi.img$", grub, re.M), grub


def test_rebuild_is_byte_identical(isos: dict[IsoGenerator, Path], inputs: IsoInputs, tmp_path: Path) -> None:
    for generator, first in isos.items():
        again = _build(generator, inputs, tmp_path / generator.value)
        assert again.read_bytes() == first.read_bytes(), generator
        # all staging stayed in workdir, and grub-mkrescue cleaned its temp files up
        assert list((tmp_path / generator.value / "work" / "tmp").iterdir()) == []


def test_other_epoch_other_bytes(isos: dict[IsoGenerator, Path], inputs: IsoInputs, tmp_path: Path) -> None:
    for generator, first in isos.items():
        other = _build(generator, inputs, tmp_path / generator.value, epoch=EPOCH + 86400)
        assert other.read_bytes() != first.read_bytes(), generator
        assert _pvd(other)["Creation Time"] == "2023111522132000"


def test_before_1_8_has_no_label_but_fixed_dates(inputs: IsoInputs, tmp_path: Path) -> None:
    old = replace(inputs, version="v1.7.6", uki=None, sd_boot=None)
    first = _build(G, old, tmp_path / "a")
    pvd = _pvd(first)
    assert pvd["Volume Id"] == "ISOIMAGE"  # xorriso's default, as upstream
    assert pvd["Volume Set Id"] == ""
    assert pvd["Creation Time"] == "2023111422132000"
    assert _extract(first, "/boot/grub/grub.cfg", tmp_path / "grub.cfg").decode() == grub_cfg(
        CMDLINE, "v1.7.6"
    )
    assert _build(G, old, tmp_path / "b").read_bytes() == first.read_bytes()


def test_sd_boot_iso_for_arm64_names_the_loader_bootaa64(inputs: IsoInputs, tmp_path: Path) -> None:
    iso = _build(U, replace(inputs, arch="arm64", enroll_keys=SDBootEnrollKeys.MANUAL), tmp_path / "a")
    files = _files(iso)
    assert "/EFI/BOOT/BOOTAA64.EFI" in files and "/EFI/BOOT/BOOTX64.EFI" not in files
    conf = _extract(iso, "/loader/loader.conf", tmp_path / "loader.conf").decode()
    assert conf.endswith("secure-boot-enroll manual\n")


def test_secure_boot_files(inputs: IsoInputs, tmp_path: Path) -> None:
    """The signed ISO's extras: the signing certificate and the auto-enrolment databases."""
    extras = {}
    for name in ("cert.der", "PK.auth", "KEK.auth", "db.auth"):
        extras[name] = tmp_path / name
        extras[name].write_bytes(name.encode() * 10)
    sb = replace(
        inputs,
        enroll_keys=SDBootEnrollKeys.IF_SAFE,
        uki_signing_cert_der=extras["cert.der"],
        pk_auth=extras["PK.auth"],
        kek_auth=extras["KEK.auth"],
        db_auth=extras["db.auth"],
    )
    iso = _build(U, sb, tmp_path / "a")
    files = _files(iso)
    for path in (
        "/EFI/keys/uki-signing-cert.der",
        "/loader/keys/auto/PK.auth",
        "/loader/keys/auto/KEK.auth",
        "/loader/keys/auto/db.auth",
    ):
        assert path in files
    esp = _esp(iso, tmp_path / "esp.img")
    assert "::/loader/keys/auto/db.auth" in _mdir(esp)
    tools.run(["mcopy", "-i", esp, "::/loader/keys/auto/PK.auth", tmp_path / "pk.out"])
    assert (tmp_path / "pk.out").read_bytes() == extras["PK.auth"].read_bytes()


def test_missing_inputs_are_errors(inputs: IsoInputs, tmp_path: Path) -> None:
    work = tmp_path / "w1"
    work.mkdir()
    with pytest.raises(ValueError, match="UKI"):
        build_iso(U, replace(inputs, uki=None), tmp_path / "x.iso", workdir=work, epoch=EPOCH)
    work = tmp_path / "w2"
    work.mkdir()
    with pytest.raises(tools.ToolError, match="i386-pc"):
        build_iso(G, replace(inputs, grub_dirs={}), tmp_path / "x.iso", workdir=work, epoch=EPOCH)
    assert not (tmp_path / "x.iso").exists()


def test_only_workdir_is_written(inputs: IsoInputs, tmp_path: Path) -> None:
    """Staging happens in workdir; a relative workdir works too (paths are made absolute)."""
    (tmp_path / "w").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        build_iso(H, inputs, Path("out.iso"), workdir=Path("w"), epoch=EPOCH)
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.iso", "w"]
