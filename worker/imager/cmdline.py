"""The Talos kernel command line, built exactly as the imager (v1.14.0-rc.1 + quirks) builds it.

Upstream sources (``siderolabs/talos@v1.14.0-rc.1`` unless noted):
go-procfs ``procfs/cmdline.go`` (the data model), talos ``pkg/imager/imager.go`` (``buildCmdline``),
``pkg/machinery/kernel/kernel.go`` (default and SecureBoot args), the platforms' ``KernelArgs``
under ``internal/app/machined/pkg/runtime/v1alpha1/platform/`` and
``pkg/machinery/imager/quirks/quirks.go``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from common.errors import InvalidInputError
from common.profile.path import go_quote
from common.talos.quirks import Quirks
from worker.imager.meta import META_ENV_VAR, encode_environment

__all__ = [
    "KINDS",
    "Cmdline",
    "UnknownPlatformError",
    "build_cmdline",
    "default_kernel_args",
    "platform_kernel_args",
    "platform_name",
    "secureboot_kernel_args",
]

KINDS = ("iso", "image", "installer", "kernel", "initramfs", "uki", "cmdline")

# Go's strings.Fields splits on unicode.IsSpace, which (unlike str.split) excludes \x1c-\x1f.
_GO_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def _parse(parameters: str) -> list[tuple[str, list[str]]]:
    """go-procfs ``parse``: split on whitespace, each token on the first ``=``, merge repeated keys."""
    parsed: list[tuple[str, list[str]]] = []
    index: dict[str, list[str]] = {}
    for token in _GO_SPACE.split(parameters.removesuffix("\n")):
        if not token:
            continue
        key, _, value = token.partition("=")
        if key in index:
            index[key].append(value)
        else:
            values = [value]
            index[key] = values
            parsed.append((key, values))
    return parsed


class Cmdline:
    """go-procfs ``Cmdline``: ordered keys, each with ordered values.

    A key whose values were all removed by ``delete`` keeps its position (and renders as nothing),
    as upstream; ``delete_all`` removes the key itself.
    """

    def __init__(self, parameters: str = "") -> None:
        self._params: list[tuple[str, list[str]]] = _parse(parameters)

    def _find(self, key: str) -> int | None:
        for i, (k, _) in enumerate(self._params):
            if k == key:
                return i
        return None

    def get(self, key: str) -> list[str] | None:
        """Values of ``key`` (a copy), or None when absent."""
        i = self._find(key)
        return None if i is None else list(self._params[i][1])

    def keys(self) -> list[str]:
        return [k for k, _ in self._params]

    def append(self, key: str, value: str) -> None:
        """Add ``value`` to an existing key, or add the key at the end."""
        i = self._find(key)
        if i is None:
            self._params.append((key, [value]))
        else:
            self._params[i][1].append(value)

    def set(self, key: str, values: Sequence[str]) -> None:
        """Replace the key's whole value list in place, or add it at the end."""
        i = self._find(key)
        if i is None:
            self._params.append((key, list(values)))
        else:
            self._params[i] = (key, list(values))

    def set_all(self, args: Iterable[str]) -> None:
        for key, values in _parse(" ".join(args)):
            self.set(key, values)

    def delete(self, key: str, values: Sequence[str]) -> None:
        """Remove the given values of ``key``; the key itself stays."""
        i = self._find(key)
        if i is not None:
            remaining = [v for v in self._params[i][1] if v not in values]
            self._params[i] = (key, remaining)

    def delete_all(self, key: str) -> None:
        i = self._find(key)
        if i is not None:
            del self._params[i]

    def append_all(
        self, args: Iterable[str], *, overwrite: Sequence[str] = (), delete_negated: bool = False
    ) -> None:
        """go-procfs ``AppendAll``: ``-key`` drops a key, ``-key=v`` drops a value, overwrite keys are Set."""
        for key, values in _parse(" ".join(args)):
            if delete_negated and len(key) > 1 and key[0] == "-":
                if values[0] == "":
                    self.delete_all(key[1:])
                else:
                    self.delete(key[1:], values)
                continue
            if key in overwrite:
                self.set(key, values)
                continue
            for value in values:
                self.append(key, value)

    def string(self) -> str:
        """Render exactly like go-procfs ``Parameters.String``."""
        s = "".join(f"{k} " if v == "" else f"{k}={v} " for k, values in self._params for v in values)
        return s.rstrip(" ")

    def strings(self) -> list[str]:
        return self.string().split(" ")

    def __str__(self) -> str:
        return self.string()

    def __repr__(self) -> str:
        return f"Cmdline({self.string()!r})"


class UnknownPlatformError(InvalidInputError):
    """``talos.platform`` names no Talos platform (upstream ``platform.NewPlatform`` fails)."""


_PLATFORM_ALIASES = {"packet": "equinixMetal"}

_CONSOLE_TTY1_TTYS0 = ["console=tty1", "console=ttyS0", "net.ifnames=0"]

_STATIC_PLATFORM_ARGS: dict[str, list[str]] = {
    "akamai": ["console=ttyS0", "console=tty0", "console=tty1", "net.ifnames=0"],
    "alibabacloud": _CONSOLE_TTY1_TTYS0,
    "azure": [
        "console=ttyS0,115200n8",
        "earlyprintk=ttyS0,115200",
        "rootdelay=300",
        "net.ifnames=0",
        "talos.dashboard.disabled=1",
        "sysctl.kernel.kexec_load_disabled=1",
    ],
    "cloudstack": _CONSOLE_TTY1_TTYS0,
    "container": [],
    "digital-ocean": ["console=ttyS0", "console=tty0", "console=tty1", "net.ifnames=0"],
    "exoscale": _CONSOLE_TTY1_TTYS0,
    "gcp": [
        "console=ttyS0",
        "net.ifnames=0",
        "talos.dashboard.disabled=1",
        "sysctl.kernel.kexec_load_disabled=1",
    ],
    "hcloud": _CONSOLE_TTY1_TTYS0,
    "nocloud": _CONSOLE_TTY1_TTYS0,
    "opennebula": _CONSOLE_TTY1_TTYS0,
    "openstack": _CONSOLE_TTY1_TTYS0,
    "oracle": [*_CONSOLE_TTY1_TTYS0, "talos.dashboard.disabled=1"],
    "scaleway": [*_CONSOLE_TTY1_TTYS0, "talos.dashboard.disabled=1"],
    "upcloud": ["net.ifnames=0"],
    "vultr": ["net.ifnames=0"],
}

_ARCH_PLATFORM_ARGS: dict[str, dict[str, list[str]]] = {
    "equinixMetal": {"amd64": ["console=ttyS1,115200n8"], "arm64": ["console=ttyAMA0,115200"]},
    "vmware": {
        "amd64": [
            "talos.config=guestinfo",
            "console=tty0",
            "console=ttyS0",
            "earlyprintk=ttyS0,115200",
            "net.ifnames=0",
        ],
        "arm64": ["talos.config=guestinfo", "console=tty0", "console=ttyAMA0", "net.ifnames=0"],
    },
}

_PLATFORMS = frozenset({"metal", "aws", *_STATIC_PLATFORM_ARGS, *_ARCH_PLATFORM_ARGS, *_PLATFORM_ALIASES})


def platform_name(platform: str) -> str:
    """The name Talos puts in ``talos.platform`` (``packet`` is the legacy alias of ``equinixMetal``)."""
    if platform not in _PLATFORMS:
        raise UnknownPlatformError(f"unknown platform: {go_quote(platform)}")
    return _PLATFORM_ALIASES.get(platform, platform)


def platform_kernel_args(platform: str, arch: str, version: str) -> list[str]:
    """The platform's ``KernelArgs(arch, quirks(version))``, as rendered tokens.

    Unknown platforms raise ``UnknownPlatformError`` (upstream: ``unknown platform: "foo"``,
    an invalid-input error). Arch-specific platforms return no args for other arches, as upstream.
    """
    name = platform_name(platform)
    quirks = Quirks(version)
    if name == "metal":
        if arch == "amd64":
            if quirks.metal_console_ttys0():
                return ["console=ttyS0", "console=tty0"]
            return ["console=tty0"]
        return ["console=ttyAMA0", "console=tty0"] if arch == "arm64" else []
    if name == "aws":
        args = list(_CONSOLE_TTY1_TTYS0)
        if quirks.nvme_io_timeout_aws_only():
            args.append("nvme_core.io_timeout=4294967295")
        return args
    if name in _ARCH_PLATFORM_ARGS:
        return list(_ARCH_PLATFORM_ARGS[name].get(arch, []))
    return list(_STATIC_PLATFORM_ARGS[name])


def default_kernel_args(version: str) -> list[str]:
    """``kernel.DefaultArgs(quirks(version))``."""
    quirks = Quirks(version)
    args: list[str] = []
    if not quirks.drop_init_on_alloc():
        args.append("init_on_alloc=1")
    args += ["slab_nomerge=", "pti=on", "consoleblank=0"]
    if not quirks.nvme_io_timeout_aws_only():
        args.append("nvme_core.io_timeout=4294967295")
    args.append("printk.devkmsg=on")
    if quirks.supports_ima():
        args += ["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]
    if quirks.supports_selinux():
        args.append("selinux=1")
    if quirks.module_sig_enforce():
        args.append("module.sig_enforce=1")
    if quirks.proc_mem_force_override():
        args.append("proc_mem.force_override=never")
    return args


def secureboot_kernel_args(version: str) -> list[str]:
    """``kernel.SecureBootArgs``: v1.14.0-rc.1 (what the factory links) adds lockdown for every version.

    Talos ``main`` (future 1.15) adds it only below 1.14 (quirk ForcesLockdownConfidentiality).
    """
    del version  # version-independent in v1.14.0-rc.1
    return ["lockdown=confidentiality"]


def build_cmdline(
    *,
    version: str,
    platform: str,
    arch: str,
    secureboot: bool,
    extra_args: Sequence[str],
    overlay_args: Sequence[str] = (),
    meta: Sequence[tuple[int, str]] = (),
    kind: str,
) -> str:
    """The final kernel command line for one factory build (``buildCmdline`` in ``pkg/imager/imager.go``).

    Combines the imager's ``buildCmdline`` with what the factory passes per output kind:
    extra args for iso/image/cmdline, and for uki/installer only with SecureBoot or Talos >= 1.10;
    none for kernel/initramfs. META goes on the command line for iso/cmdline only: image writes it
    to the META partition, the factory never passes it for uki/installer/kernel/initramfs.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    quirks = Quirks(version)
    unified = quirks.supports_unified_installer()
    if kind in ("kernel", "initramfs") or (kind in ("uki", "installer") and not (secureboot or unified)):
        extra_args = ()
    if kind not in ("iso", "cmdline"):
        meta = ()

    cmdline = Cmdline()
    cmdline.append("talos.platform", platform_name(platform))
    cmdline.set_all(platform_kernel_args(platform, arch, version))
    if kind == "iso" and quirks.supports_halt_if_installed():
        cmdline.append("talos.halt_if_installed", "1")
    if overlay_args:
        cmdline.set_all(overlay_args)
    cmdline.append_all(default_kernel_args(version))
    if secureboot:
        cmdline.append_all(secureboot_kernel_args(version))
    if meta:
        cmdline.append("talos.environment", f"{META_ENV_VAR}={encode_environment(meta, version)}")
    cmdline.append_all(extra_args, overwrite=("console", "talos.platform"), delete_negated=True)
    return cmdline.string()
