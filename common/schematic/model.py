"""The schematic data model: what a client asks the factory to build into an image.

Field layout mirrors upstream's Go struct (``pkg/schematic/schematic.go``) because the schematic ID is the
sha256 of that struct's YAML encoding: the emitter (``emit.py``) walks these classes in exactly the Go
field order and applies Go's ``omitempty`` rules, so nothing here may be reordered for cosmetic reasons.

Values inside ``Overlay.options`` are the Go-typed values go-yaml would decode into ``map[string]any``:
``str``, ``int`` (Go ``int``; values above 2**63-1 are Go ``uint64``), ``float``, ``bool``, ``None``,
``list``, ``dict`` (nested maps keep typed keys) and :class:`GoTime` for timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Bootloader names upstream accepts (``imageropts.BootloaderKind``); "none" is the zero value.
BOOTLOADERS: tuple[str, ...] = ("none", "dual-boot", "sd-boot", "grub")

#: ``secureboot.enrollKeys`` values upstream accepts (``profile.SDBootEnrollKeys``), case-insensitively.
ENROLL_KEYS: tuple[str, ...] = ("off", "manual", "if-safe", "force")

_MAX_UINT64 = (1 << 64) - 1


@dataclass(frozen=True, order=True)
class GoTime:
    """A YAML timestamp decoded by go-yaml into ``time.Time``; ``text`` is its RFC 3339 (nano) form.

    Kept as text because Go carries nanoseconds and a fixed zone offset, neither of which
    ``datetime`` can round-trip exactly.
    """

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Overlay:
    """Overlay (SBC support) selection; ``options`` is free-form and hashed as go-yaml re-emits it."""

    image: str = ""
    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        """Go's ``isZero``: an empty options map counts as absent."""
        return not self.image and not self.name and not self.options


@dataclass(frozen=True)
class MetaValue:
    """One initial META entry; ``key`` is a Go ``uint8``."""

    key: int
    value: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.key, bool) or not isinstance(self.key, int) or not 0 <= self.key <= 255:
            raise ValueError(f"META key must be an integer 0-255, got {self.key!r}")


@dataclass(frozen=True)
class SecureBoot:
    """Secure Boot customization; ``enroll_keys`` keeps the client's text (it is hashed as written)."""

    enroll_keys: str = ""
    include_well_known_certificates: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.enroll_keys and not self.include_well_known_certificates


@dataclass(frozen=True)
class Customization:
    """Talos image customization; field order matches upstream's stable serialisation order."""

    embedded_machine_configuration: str = ""
    extra_kernel_args: tuple[str, ...] = ()
    meta: tuple[MetaValue, ...] = ()
    official_extensions: tuple[str, ...] = ()
    bootloader: str = ""
    secureboot: SecureBoot = field(default_factory=SecureBoot)
    sector_size: int = 0

    def __post_init__(self) -> None:
        # Accept lists for convenience but store tuples so the value stays immutable.
        for name in ("extra_kernel_args", "meta", "official_extensions"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        boot = self.bootloader.lower()
        if boot == "none":
            boot = ""
        if boot and boot not in BOOTLOADERS:
            raise ValueError(f"bootloader must be one of {', '.join(BOOTLOADERS)}, got {self.bootloader!r}")
        object.__setattr__(self, "bootloader", boot)
        if isinstance(self.sector_size, bool) or not 0 <= self.sector_size <= _MAX_UINT64:
            raise ValueError(f"sector size must fit an unsigned 64-bit integer, got {self.sector_size!r}")

    @property
    def is_empty(self) -> bool:
        """True when it marshals as ``customization: {}``."""
        return (
            not self.embedded_machine_configuration
            and not self.extra_kernel_args
            and not self.meta
            and not self.official_extensions
            and not self.bootloader
            and self.secureboot.is_empty
            and self.sector_size == 0
        )


@dataclass(frozen=True)
class Schematic:
    """A decoded schematic; ``owner`` is only ever set in Enterprise builds."""

    overlay: Overlay = field(default_factory=Overlay)
    customization: Customization = field(default_factory=Customization)
    owner: str = ""

    @property
    def is_empty(self) -> bool:
        """True for the default (vanilla) schematic."""
        return not self.owner and self.overlay.is_empty and self.customization.is_empty
