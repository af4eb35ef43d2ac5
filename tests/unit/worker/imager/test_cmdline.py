"""Kernel command line: go-procfs semantics and the imager's construction order.

``siderolabs/go-procfs:procfs/cmdline.go`` (the data model) and
``siderolabs/talos@v1.14.0-rc.1:pkg/imager/imager.go`` (``buildCmdline``), as ported in
``worker/imager/cmdline.py``.
"""

from __future__ import annotations

import pytest

from common.errors import InvalidInputError
from worker.imager.cmdline import (
    Cmdline,
    UnknownPlatformError,
    build_cmdline,
    default_kernel_args,
    platform_kernel_args,
    platform_name,
)
from worker.imager.meta import decode_environment

DEFAULTS_LT_1_10 = (
    "init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on "
    "ima_template=ima-ng ima_appraise=fix ima_hash=sha512"
)
META_EXAMPLE = ((0xA, '{"externalIPs":["1.2.3.4"]}'),)
META_ENV = "talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ=="


# --- go-procfs Cmdline ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("", ""),
        ("a b=c", "a b=c"),
        ("slab_nomerge=", "slab_nomerge"),
        ("console=tty0 foo console=ttyS0", "console=tty0 console=ttyS0 foo"),
        ("a=b=c", "a=b=c"),
        ("  a\t\tb\n", "a b"),
        ("a\x1cb", "a\x1cb"),  # not whitespace for Go's strings.Fields
        ("a\u00a0b", "a b"),  # is whitespace for Go
        ("x = y", "x  y"),  # '=' alone is key "" with value "": Go renders an empty key
    ],
)
def test_parse_and_render_like_go_procfs(source: str, rendered: str) -> None:
    assert Cmdline(source).string() == rendered


def test_append_set_delete() -> None:
    c = Cmdline("talos.platform=metal console=tty0")
    c.append("console", "ttyS0")
    c.append("new", "1")
    assert str(c) == "talos.platform=metal console=tty0 console=ttyS0 new=1"
    c.set("console", ["ttyS1"])
    c.set("other", ["x", "y"])
    assert str(c) == "talos.platform=metal console=ttyS1 new=1 other=x other=y"
    c.delete("other", ["x"])
    assert c.get("other") == ["y"]
    c.delete("new", ["1"])  # key stays, renders nothing, keeps its position
    assert c.keys() == ["talos.platform", "console", "new", "other"]
    assert str(c) == "talos.platform=metal console=ttyS1 other=y"
    c.append("new", "2")
    assert str(c) == "talos.platform=metal console=ttyS1 new=2 other=y"
    c.delete_all("console")
    assert c.get("console") is None
    assert c.strings() == ["talos.platform=metal", "new=2", "other=y"]


def test_set_all_merges_repeated_keys_before_setting() -> None:
    c = Cmdline("console=tty0 a=1")
    c.set_all(["console=ttyS0 console=tty1", "b"])
    assert str(c) == "console=ttyS0 console=tty1 a=1 b"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-console"], "a=1 a=2 b"),
        (["-a=1"], "console=tty0 console=ttyS0 a=2 b"),
        (["-a=1 -a=2"], "console=tty0 console=ttyS0 b"),  # values gone, key kept (renders nothing)
        (["-a -a=1"], "console=tty0 console=ttyS0 b"),
        (["-a=3"], "console=tty0 console=ttyS0 a=1 a=2 b"),
        (["-missing"], "console=tty0 console=ttyS0 a=1 a=2 b"),
        (["-"], "console=tty0 console=ttyS0 a=1 a=2 b -"),  # a lone '-' is a valid kernel arg
        (["console=ttyS1,115200"], "console=ttyS1,115200 a=1 a=2 b"),
        (["console=x console=y"], "console=x console=y a=1 a=2 b"),
        (["a=3", "c"], "console=tty0 console=ttyS0 a=1 a=2 a=3 b c"),
        (["-b", "b=again"], "console=tty0 console=ttyS0 a=1 a=2 b=again"),
    ],
)
def test_append_all_with_removal_and_overwrite(args: list[str], expected: str) -> None:
    c = Cmdline("console=tty0 console=ttyS0 a=1 a=2 b")
    c.append_all(args, overwrite=("console",), delete_negated=True)
    assert str(c) == expected


def test_append_all_without_options_appends_negations_and_console() -> None:
    c = Cmdline("console=tty0")
    c.append_all(["-foo", "console=ttyS0"])
    assert str(c) == "console=tty0 console=ttyS0 -foo"


# --- platform kernel args -------------------------------------------------------------------------

_TTY1 = ["console=tty1", "console=ttyS0", "net.ifnames=0"]


@pytest.mark.parametrize(
    ("platform", "arch", "version", "expected"),
    [
        ("metal", "amd64", "v1.7.4", ["console=ttyS0", "console=tty0"]),
        ("metal", "amd64", "v1.8.0-alpha.1", ["console=tty0"]),
        ("metal", "amd64", "v1.12.0", ["console=tty0"]),
        ("metal", "amd64", "not-a-version", ["console=tty0"]),
        ("metal", "arm64", "v1.5.0", ["console=ttyAMA0", "console=tty0"]),
        ("metal", "riscv64", "v1.12.0", []),
        ("aws", "amd64", "v1.13.9", _TTY1),
        ("aws", "arm64", "v1.14.0-rc.1", [*_TTY1, "nvme_core.io_timeout=4294967295"]),
        (
            "azure",
            "amd64",
            "v1.12.0",
            [
                "console=ttyS0,115200n8",
                "earlyprintk=ttyS0,115200",
                "rootdelay=300",
                "net.ifnames=0",
                "talos.dashboard.disabled=1",
                "sysctl.kernel.kexec_load_disabled=1",
            ],
        ),
        (
            "gcp",
            "amd64",
            "v1.12.0",
            [
                "console=ttyS0",
                "net.ifnames=0",
                "talos.dashboard.disabled=1",
                "sysctl.kernel.kexec_load_disabled=1",
            ],
        ),
        (
            "digital-ocean",
            "amd64",
            "v1.12.0",
            ["console=ttyS0", "console=tty0", "console=tty1", "net.ifnames=0"],
        ),
        ("akamai", "amd64", "v1.12.0", ["console=ttyS0", "console=tty0", "console=tty1", "net.ifnames=0"]),
        ("alibabacloud", "amd64", "v1.12.0", _TTY1),
        ("cloudstack", "amd64", "v1.12.0", _TTY1),
        ("exoscale", "amd64", "v1.12.0", _TTY1),
        ("hcloud", "arm64", "v1.12.0", _TTY1),
        ("nocloud", "amd64", "v1.12.0", _TTY1),
        ("opennebula", "amd64", "v1.12.0", _TTY1),
        ("openstack", "amd64", "v1.12.0", _TTY1),
        ("oracle", "arm64", "v1.12.0", [*_TTY1, "talos.dashboard.disabled=1"]),
        ("scaleway", "amd64", "v1.12.0", [*_TTY1, "talos.dashboard.disabled=1"]),
        ("upcloud", "amd64", "v1.12.0", ["net.ifnames=0"]),
        ("vultr", "amd64", "v1.12.0", ["net.ifnames=0"]),
        (
            "vmware",
            "amd64",
            "v1.12.0",
            [
                "talos.config=guestinfo",
                "console=tty0",
                "console=ttyS0",
                "earlyprintk=ttyS0,115200",
                "net.ifnames=0",
            ],
        ),
        (
            "vmware",
            "arm64",
            "v1.12.0",
            ["talos.config=guestinfo", "console=tty0", "console=ttyAMA0", "net.ifnames=0"],
        ),
        ("equinixMetal", "amd64", "v1.12.0", ["console=ttyS1,115200n8"]),
        ("equinixMetal", "arm64", "v1.12.0", ["console=ttyAMA0,115200"]),
        ("packet", "amd64", "v1.12.0", ["console=ttyS1,115200n8"]),
        ("container", "amd64", "v1.12.0", []),
    ],
)
def test_platform_kernel_args(platform: str, arch: str, version: str, expected: list[str]) -> None:
    assert platform_kernel_args(platform, arch, version) == expected


def test_unknown_platform_is_invalid_input_like_upstream() -> None:
    with pytest.raises(UnknownPlatformError, match=r'^unknown platform: "foo"$') as err:
        platform_kernel_args("foo", "amd64", "v1.12.0")
    assert isinstance(err.value, InvalidInputError)
    assert err.value.status == 400
    with pytest.raises(UnknownPlatformError):
        build_cmdline(
            version="v1.12.0", platform="Metal", arch="amd64", secureboot=False, extra_args=(), kind="iso"
        )


def test_packet_is_named_equinix_metal() -> None:
    assert platform_name("packet") == "equinixMetal"
    line = build_cmdline(
        version="v1.11.0", platform="packet", arch="amd64", secureboot=False, extra_args=(), kind="cmdline"
    )
    assert line.startswith("talos.platform=equinixMetal console=ttyS1,115200n8 ")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("v1.5.0", DEFAULTS_LT_1_10.replace("slab_nomerge", "slab_nomerge=")),
        ("v1.10.99", DEFAULTS_LT_1_10.replace("slab_nomerge", "slab_nomerge=") + " selinux=1"),
        (
            "v1.14.0",
            "slab_nomerge= pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 "
            "proc_mem.force_override=never",
        ),
        (  # unparseable = latest, but without IMA (its quirk defaults the other way)
            "latest",
            "slab_nomerge= pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 "
            "proc_mem.force_override=never",
        ),
    ],
)
def test_default_kernel_args(version: str, expected: str) -> None:
    assert default_kernel_args(version) == expected.split(" ")


# --- build_cmdline: every string quoted in the references -----------------------------------------

_M = "talos.platform=metal console=tty0"

CASES: list[tuple[str, dict[str, object], str]] = [
    # worked examples of siderolabs/talos@v1.14.0-rc.1:pkg/imager/imager.go buildCmdline with
    # pkg/machinery/kernel/kernel.go's defaults and pkg/machinery/imager/quirks/quirks.go
    (
        "metal-amd64-iso-1.9",
        {"version": "v1.9.0", "platform": "metal", "arch": "amd64", "kind": "iso"},
        f"{_M} talos.halt_if_installed=1 {DEFAULTS_LT_1_10}",
    ),
    (
        "metal-amd64-iso-1.12",
        {"version": "v1.12.0", "platform": "metal", "arch": "amd64", "kind": "iso"},
        f"{_M} talos.halt_if_installed=1 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 "
        "nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1",
    ),
    (
        "metal-arm64-image-1.13",
        {"version": "v1.13.0", "platform": "metal", "arch": "arm64", "kind": "image"},
        "talos.platform=metal console=ttyAMA0 console=tty0 init_on_alloc=1 slab_nomerge pti=on "
        "consoleblank=0 "
        "nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 "
        "proc_mem.force_override=never",
    ),
    (
        "aws-amd64-image-1.14",
        {"version": "v1.14.0", "platform": "aws", "arch": "amd64", "kind": "image"},
        "talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 nvme_core.io_timeout=4294967295 "
        "slab_nomerge pti=on consoleblank=0 printk.devkmsg=on selinux=1 module.sig_enforce=1 "
        "proc_mem.force_override=never",
    ),
    (
        "azure-sb-image-1.12",
        {"version": "v1.12.0", "platform": "azure", "arch": "amd64", "kind": "image", "secureboot": True},
        "talos.platform=azure console=ttyS0,115200n8 earlyprintk=ttyS0,115200 rootdelay=300 net.ifnames=0 "
        "talos.dashboard.disabled=1 sysctl.kernel.kexec_load_disabled=1 init_on_alloc=1 slab_nomerge pti=on "
        "consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 "
        "lockdown=confidentiality",
    ),
    (
        "nocloud-extra-args-1.12",
        {
            "version": "v1.12.0",
            "platform": "nocloud",
            "arch": "amd64",
            "kind": "image",
            "extra_args": ["console=ttyS1,115200", "-selinux", "net.ifnames=1"],
        },
        "talos.platform=nocloud console=ttyS1,115200 net.ifnames=0 net.ifnames=1 init_on_alloc=1 "
        "slab_nomerge "
        "pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on module.sig_enforce=1",
    ),
    # siderolabs/image-factory:internal/integration/download_test.go "cmdline":
    # cmdline-metal-amd64 per version
    (
        "cmdline-metal-amd64-1.5",
        {"version": "v1.5.1", "platform": "metal", "arch": "amd64", "kind": "cmdline"},
        f"talos.platform=metal console=ttyS0 console=tty0 {DEFAULTS_LT_1_10}",
    ),
    (
        "cmdline-metal-amd64-1.8",
        {"version": "v1.8.2", "platform": "metal", "arch": "amd64", "kind": "cmdline"},
        f"{_M} {DEFAULTS_LT_1_10}",
    ),
    (
        "cmdline-metal-amd64-1.10",
        {"version": "v1.10.2", "platform": "metal", "arch": "amd64", "kind": "cmdline"},
        f"{_M} {DEFAULTS_LT_1_10} selinux=1",
    ),
    (
        "cmdline-metal-amd64-1.11",  # also the PXE metal/amd64 1.11 cmdline (§7)
        {"version": "v1.11.0", "platform": "metal", "arch": "amd64", "kind": "cmdline"},
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        "printk.devkmsg=on selinux=1",
    ),
    (
        "cmdline-aws-arm64-1.9",
        {"version": "v1.9.4", "platform": "aws", "arch": "arm64", "kind": "cmdline"},
        f"talos.platform=aws console=tty1 console=ttyS0 net.ifnames=0 {DEFAULTS_LT_1_10}",
    ),
    (
        "cmdline-extra-args-1.11",
        {
            "version": "v1.11.0",
            "platform": "metal",
            "arch": "amd64",
            "kind": "cmdline",
            "extra_args": ["nolapic", "nomodeset"],
        },
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        "printk.devkmsg=on selinux=1 nolapic nomodeset",
    ),
    (
        "cmdline-meta-1.11",
        {"version": "v1.11.0", "platform": "metal", "arch": "amd64", "kind": "cmdline", "meta": META_EXAMPLE},
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        f"printk.devkmsg=on selinux=1 {META_ENV}",
    ),
    (
        "cmdline-meta-then-extra-args-1.11",
        {
            "version": "v1.11.0",
            "platform": "metal",
            "arch": "amd64",
            "kind": "cmdline",
            "meta": META_EXAMPLE,
            "extra_args": ["nolapic", "nomodeset"],
        },
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        f"printk.devkmsg=on selinux=1 {META_ENV} nolapic nomodeset",
    ),
    # nocloud-amd64-uki.efi .cmdline per version
    (
        "uki-nocloud-1.9",
        {"version": "v1.9.4", "platform": "nocloud", "arch": "amd64", "kind": "uki"},
        f"talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 {DEFAULTS_LT_1_10}",
    ),
    (
        "uki-nocloud-1.10",
        {"version": "v1.10.2", "platform": "nocloud", "arch": "amd64", "kind": "uki"},
        f"talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 {DEFAULTS_LT_1_10} selinux=1",
    ),
    (
        "uki-nocloud-1.11",
        {"version": "v1.11.0", "platform": "nocloud", "arch": "amd64", "kind": "uki"},
        "talos.platform=nocloud console=tty1 console=ttyS0 net.ifnames=0 init_on_alloc=1 slab_nomerge pti=on "
        "consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1",
    ),
    # unified installer UKI cmdlines (platform default) and "installer/uki extra args" (>= 1.10)
    (
        "installer-metal-amd64-1.11",
        {"version": "v1.11.0", "platform": "metal", "arch": "amd64", "kind": "installer"},
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        "printk.devkmsg=on selinux=1",
    ),
    (
        "installer-metal-arm64-1.10",
        {"version": "v1.10.2", "platform": "metal", "arch": "arm64", "kind": "installer"},
        f"talos.platform=metal console=ttyAMA0 console=tty0 {DEFAULTS_LT_1_10} selinux=1",
    ),
    (
        "installer-extra-args-1.11",
        {
            "version": "v1.11.0",
            "platform": "metal",
            "arch": "amd64",
            "kind": "installer",
            "extra_args": ["nolapic", "nomodeset"],
        },
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        "printk.devkmsg=on selinux=1 nolapic nomodeset",
    ),
    (
        "uki-extra-args-1.10",
        {
            "version": "v1.10.2",
            "platform": "metal",
            "arch": "amd64",
            "kind": "uki",
            "extra_args": ["nolapic", "nomodeset"],
        },
        f"{_M} {DEFAULTS_LT_1_10} selinux=1 nolapic nomodeset",
    ),
    # PXE (siderolabs/image-factory:internal/integration/pxe_test.go): secureboot metal and equinixMetal
    (
        "pxe-metal-sb-1.11",
        {"version": "v1.11.0", "platform": "metal", "arch": "amd64", "kind": "cmdline", "secureboot": True},
        f"{_M} init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 "
        "printk.devkmsg=on selinux=1 lockdown=confidentiality",
    ),
    (
        "pxe-equinix-1.11",
        {"version": "v1.11.0", "platform": "equinixMetal", "arch": "amd64", "kind": "cmdline"},
        "talos.platform=equinixMetal console=ttyS1,115200n8 init_on_alloc=1 slab_nomerge pti=on "
        "consoleblank=0 "
        "nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1",
    ),
    (
        "pxe-equinix-1.5",
        {"version": "v1.5.0", "platform": "equinixMetal", "arch": "amd64", "kind": "cmdline"},
        f"talos.platform=equinixMetal console=ttyS1,115200n8 {DEFAULTS_LT_1_10}",
    ),
]


@pytest.mark.parametrize(("kwargs", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_reference_cmdlines(kwargs: dict[str, object], expected: str) -> None:
    args: dict[str, object] = {"secureboot": False, "extra_args": ()} | kwargs
    assert build_cmdline(**args) == expected  # type: ignore[arg-type]


def _build(**kwargs: object) -> str:
    args: dict[str, object] = {
        "version": "v1.12.0",
        "platform": "metal",
        "arch": "amd64",
        "secureboot": False,
        "extra_args": (),
        "kind": "cmdline",
    } | kwargs
    return build_cmdline(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "version", "secureboot", "has_extra", "has_meta"),
    [
        ("cmdline", "v1.5.0", False, True, True),
        ("iso", "v1.5.0", False, True, True),
        ("image", "v1.5.0", False, True, False),
        ("uki", "v1.9.0", False, False, False),
        ("installer", "v1.9.0", False, False, False),
        ("uki", "v1.9.0", True, True, False),
        ("installer", "v1.9.0", True, True, False),
        ("uki", "v1.10.0-alpha.1", False, True, False),  # pre-release counts as 1.10.0
        ("installer", "v1.10.0", False, True, False),
        ("kernel", "v1.12.0", False, False, False),
        ("initramfs", "v1.12.0", False, False, False),
    ],
)
def test_extra_args_and_meta_per_kind(
    kind: str, version: str, secureboot: bool, has_extra: bool, has_meta: bool
) -> None:
    line = _build(
        kind=kind, version=version, secureboot=secureboot, extra_args=["nolapic"], meta=META_EXAMPLE
    )
    assert line.endswith(" nolapic") is has_extra
    assert (META_ENV in line) is has_meta


@pytest.mark.parametrize(
    ("kind", "version", "expected"),
    [
        ("iso", "v1.7.4", False),
        ("iso", "v1.8.0", True),
        ("iso", "garbage", True),
        ("image", "v1.12.0", False),
    ],
)
def test_halt_if_installed_only_for_iso_from_1_8(kind: str, version: str, expected: bool) -> None:
    line = _build(kind=kind, version=version)
    assert ("talos.halt_if_installed=1" in line) is expected
    if expected:
        assert line.split(" ")[2] == "talos.halt_if_installed=1"


def test_lockdown_for_secureboot_on_every_version_as_in_v1_14_rc1() -> None:
    for version in ("v1.5.0", "v1.13.0", "v1.14.0", "v1.15.0"):
        assert _build(version=version, secureboot=True).endswith(" lockdown=confidentiality")
        assert "lockdown" not in _build(version=version)


def test_overlay_args_are_set_after_platform_and_halt_before_defaults() -> None:
    line = _build(
        kind="iso", arch="arm64", overlay_args=["console=tty1", "sysctl.kernel.kexec_load_disabled=1"]
    )
    assert line.startswith(
        "talos.platform=metal console=tty1 talos.halt_if_installed=1 sysctl.kernel.kexec_load_disabled=1 "
        "init_on_alloc=1 "
    )


def test_extra_args_overwrite_console_and_platform_and_can_remove_defaults() -> None:
    line = _build(
        version="v1.11.0",
        extra_args=[
            "talos.platform=nocloud",
            "console=ttyS0",
            "console=tty1",
            "-init_on_alloc",
            "slab_nomerge=off",
        ],
    )
    assert line == (
        "talos.platform=nocloud console=ttyS0 console=tty1 slab_nomerge slab_nomerge=off pti=on "
        "consoleblank=0 "
        "nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1"
    )


def test_extra_args_can_remove_one_console_value_and_meta() -> None:
    line = _build(
        version="v1.7.0",
        meta=META_EXAMPLE,
        extra_args=["-console=ttyS0", "-talos.environment", "-ima_hash=sha512"],
    )
    assert line == (
        "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 "
        "nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng ima_appraise=fix"
    )


def test_large_meta_is_compressed_on_the_cmdline_and_decodes() -> None:
    meta = [(0xA, "x" * 300), (0xC, "y")]
    line = _build(meta=meta)
    env = line.split(" ")[-1]
    prefix = "talos.environment=INSTALLER_META_BASE64="
    assert env.startswith(prefix + "H4sI")  # base64 of the gzip magic
    assert decode_environment(env.removeprefix(prefix)) == meta


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown output kind"):
        _build(kind="raw")
