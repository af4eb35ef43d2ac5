"""One build: a :class:`BuildPlan` in, one asset file out (upstream ``Imager.Execute`` and its ``out*``
steps, ``siderolabs/talos@v1.14.0-rc.1:pkg/imager/imager.go`` and ``pkg/imager/out.go``).

Each output kind is one entry of :data:`OUTPUT_BUILDERS`. Signing services (Secure Boot) are
passed in as :class:`~worker.imager.signing.Signers` and used in three places only: the UKI stage
(:func:`worker.imager.uki.build_uki`: PCR policy, then Authenticode), systemd-boot
(:meth:`_Build.sd_boot`: Authenticode, as upstream's ``BuildSigned`` writes ``systemd-boot.efi.signed``)
and the key-enrolment databases of ISOs and disk images (:meth:`_Build.enrollment`:
``PK.auth``/``KEK.auth``/``db.auth``, :mod:`worker.secureboot.enrollment`). A Secure Boot build
without both signers fails: an unsigned Secure Boot asset is never produced.

Two inputs are checked rather than trusted, for releases this factory has never seen: GRUB is the
release's where its imager image has it and this factory's own otherwise (:mod:`worker.imager.grub`;
upstream always uses its container's), and a UKI gets profiles only if the release's systemd-stub
boots them (systemd >= 257, :func:`worker.imager.uki.stub_supports_profiles`): an older stub would boot
the last profile's command line, the wipe. Both choices are logged with the build key.

An overlay (single-board computers, :mod:`worker.imager.overlay`) is pulled by its catalog digest for
the asset's arch and this host's; its ``profiles/<name>.yaml`` is merged before the defaults are
filled, its installer's ``get-options`` kernel args go into every command line (UKIs and installers
too, unlike upstream #376), disk images reserve its ``partitionOptions.offset`` and get its checked
``install`` output, and installer images its overlay layer.

Everything happens in a private scratch folder that is removed whatever happens; the asset is moved
into ``dest`` only once complete, so a failed or interrupted build leaves nothing a cache could
pick up. Inputs come from the artifacts store read-only (hard-linked or streamed, never changed).
Every timestamp the tools write is the release's own date (its imager image's ``created``), so
the same plan always gives byte-identical output.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from common.artifacts.catalog import ImageDependency
from common.artifacts.manager import ImageLayers, UnpackedImage
from common.errors import FactoryError, NotImplementedYetError
from common.profile.enhance import BuildPlan
from common.profile.fill import fill_defaults, output_name, validate
from common.profile.model import Bootloader, OutFormat, OutputKind, Profile, SDBootEnrollKeys
from common.talos.quirks import Quirks
from common.talos.version import Version, parse_tolerant
from worker.imager import schematic_extension, tools
from worker.imager.cmdline import build_cmdline
from worker.imager.compress import compress
from worker.imager.disk import META_DISK_IMAGE_BOOTLOADER, DiskInputs, build_disk
from worker.imager.docker_archive import write_docker_archive
from worker.imager.extensions.config import embedded_config_extension
from worker.imager.extensions.loading import ExtensionSource
from worker.imager.formats import convert
from worker.imager.gpt import GptLayout
from worker.imager.grub import GrubSelection, select_grub
from worker.imager.initramfs import build_initramfs
from worker.imager.installer import OverlayLayerSource, build_installer_image
from worker.imager.iso import IsoGenerator, IsoInputs, build_iso, select_generator
from worker.imager.overlay import HOST_ARCH, OverlayError, OverlayOptions, OverlayRunner, merge_profile
from worker.imager.overlay import Limits as OverlayLimits
from worker.imager.pieces import NO_PIECES, Pieces, initramfs_key
from worker.imager.scratch import disk_usage, scratch
from worker.imager.signing import NO_SIGNERS, PCRSigner, PESigner, Signers
from worker.imager.uki import UKIProfile, build_uki, stub_supports_profiles, stub_systemd_version
from worker.secureboot.enrollment import enrollment_auth_files

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_BUILDERS", "BuildResult", "Sources", "build", "kernel_cmdline", "release_epoch"]


class SecureBootSigningError(FactoryError):
    """A Secure Boot build without the signers it needs: a server-side configuration problem (500)."""

    status = 500


class Sources(Protocol):
    """Where a build's inputs come from (``ArtifactsManager`` in production)."""

    def imager(self, version: Version) -> AbstractContextManager[UnpackedImage]: ...

    def image_by_digest(
        self, repository: str, digest: str, arch: str
    ) -> AbstractContextManager[UnpackedImage]: ...

    def installer_base(
        self, dependency: ImageDependency, arch: str
    ) -> AbstractContextManager[ImageLayers]: ...


@dataclass(frozen=True)
class BuildResult:
    path: Path  # the asset, in ``dest``
    name: str  # its file name as the imager names it, e.g. metal-amd64.iso
    size: int
    seconds: float
    tool_seconds: float  # time spent inside external tools
    peak_disk: int  # bytes of scratch space at the fullest point
    peak_rss: int  # bytes: the larger of this process's and any tool's peak


def release_epoch(config: dict[str, Any]) -> int:
    """SOURCE_DATE_EPOCH for a release: its imager image's creation time (0 if it has none)."""
    created = config.get("created")
    if not isinstance(created, str) or not created:
        return 0
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def _reset_peak_rss() -> None:
    # "5" resets VmHWM (Linux >= 4.0), so the peak we read later is this build's, not the worker's
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss() -> int:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _cmdline(p: Profile, overlay_args: Sequence[str] = ()) -> str:
    return build_cmdline(
        version=p.version,
        platform=p.platform,
        arch=p.arch,
        secureboot=p.secureboot_enabled,
        extra_args=p.customization.extra_kernel_args,
        overlay_args=overlay_args,
        meta=[(m.key, m.value) for m in p.customization.meta_contents],
        kind=p.output.kind.value,
    )


def kernel_cmdline(plan: BuildPlan) -> str:
    """The kernel command line ``plan``'s asset boots with (its cmdline, GRUB entries, UKI main profile)."""
    return _cmdline(fill_defaults(plan.profile))


class _Build:
    def __init__(
        self,
        plan: BuildPlan,
        sources: Sources,
        external_url: str,
        work: Path,
        signers: Signers = NO_SIGNERS,
        pieces: Pieces = NO_PIECES,
        overlay: _OverlaySources | None = None,
        overlay_limits: OverlayLimits | None = None,
    ) -> None:
        self.plan = plan
        self.signers = signers
        self.pieces = pieces
        self.sources = sources
        self.external_url = external_url
        self.work = work
        profile = plan.profile
        self.overlay: OverlayRunner | None = None
        self.overlay_options = OverlayOptions(name="")
        self._overlay_target: Path | None = None
        if overlay is not None and profile.overlay is not None:
            # upstream merges the overlay's profile before the defaults are filled (bootloader choice)
            name, options = profile.overlay.name, profile.overlay.options
            profile = merge_profile(copy.deepcopy(profile), overlay.profile_document(name), name)
            self.overlay = OverlayRunner(
                name,
                executable_root=overlay.host,
                artifacts=overlay.target / "artifacts",
                options=options,
                work=work / "overlay",
                limits=overlay_limits,
            )
            self._overlay_target = overlay.target
        self.profile: Profile = fill_defaults(profile)
        validate(self.profile)
        self.quirks = Quirks(self.profile.version)
        self.peak_disk = 0
        self._grub: GrubSelection | None = None
        if self.overlay is not None:
            self.overlay_options = self.overlay.get_options()

    def checkpoint(self) -> None:
        self.peak_disk = max(self.peak_disk, disk_usage(self.work))

    def cmdline(self) -> str:
        """Every kind's command line has the overlay's ``get-options`` kernel args (upstream #376
        drops them from UKIs and installers; they are what the board needs to boot at all)."""
        return _cmdline(self.profile, self.overlay_options.kernel_args)

    def overlay_install(self, layout: GptLayout, esp: Path) -> Sequence[tuple[int, bytes]]:
        if self.overlay is None:
            return ()
        result = self.overlay.install(layout, esp)
        log.info(
            "overlay %s installed %d files and %d raw writes",
            self.overlay.name,
            len(result.esp_files),
            len(result.raw_writes),
            extra={
                "key": self.plan.key,
                "overlay": self.overlay.name,
                "overlay_files": list(result.esp_files),
                "overlay_writes": [(off, len(data)) for off, data in result.raw_writes],
            },
        )
        return result.raw_writes

    def overlay_layer(self) -> OverlayLayerSource | None:
        if self.overlay is None or self._overlay_target is None:
            return None
        return OverlayLayerSource(self._overlay_target, self.overlay.name, self.overlay.options_yaml)

    def extensions(self, stack: ExitStack) -> list[ExtensionSource]:
        """Official extensions (by digest), then the schematic extension, then embedded config."""
        arch = self.profile.arch
        out = []
        for src in self.plan.extensions:
            image = stack.enter_context(self.sources.image_by_digest(src.repository, src.digest, arch))
            out.append(ExtensionSource(root=image.fs, labels=image.labels, name=src.name))
        canonical = self.plan.schematic_yaml if self.quirks.supports_overlay() else None
        virtual = self.work / "virtual"
        virtual.mkdir()
        tar = virtual / "schematic.tar"
        tar.write_bytes(schematic_extension.tarball(self.plan.schematic_id, canonical, self.external_url))
        out.append(ExtensionSource.from_tarball(tar, virtual / "schematic", "schematic"))
        if self.plan.embedded_config:
            tar = virtual / "embedded-config.tar"
            tar.write_bytes(embedded_config_extension(self.plan.embedded_config.encode()))
            out.append(ExtensionSource.from_tarball(tar, virtual / "embedded-config", "embedded-config"))
        return out

    def run(
        self, payload: Path, grub: Path, epoch: int, out: Path, stack: ExitStack, imager_digest: str = ""
    ) -> None:
        kind = self.profile.output.kind
        builder = OUTPUT_BUILDERS.get(kind)
        if builder is None:
            raise NotImplementedYetError(f"{kind} outputs are not built by this factory yet")
        builder(self, _Stage(payload, grub, epoch, out, stack, imager_digest))

    def initramfs(self, s: _Stage, out: Path) -> None:
        """The initramfs with every extension (the step all boot assets start from), reused from
        :attr:`pieces` when an earlier build of the same schematic made it."""
        key = self.initramfs_key(s)
        if self.pieces.fetch(key, out):
            log.info("initramfs reused", extra={"piece": key, "key": self.plan.key})
            return
        self._make_initramfs(s, out)
        self.pieces.store(key, out, f"initramfs-{self.profile.arch}.xz")

    def initramfs_key(self, s: _Stage) -> str:
        canonical = self.plan.schematic_yaml if self.quirks.supports_overlay() else None
        return initramfs_key(
            imager_digest=s.imager_digest,
            arch=self.profile.arch,
            version=self.profile.version,
            extension_digests=[src.digest for src in self.plan.extensions],
            schematic_id=self.plan.schematic_id,
            schematic_yaml=canonical,
            external_url=self.external_url,
            embedded_config=self.plan.embedded_config or "",
        )

    def _make_initramfs(self, s: _Stage, out: Path) -> None:
        p = self.profile
        scratch_dir = self.work / "initramfs"
        scratch_dir.mkdir()
        build_initramfs(
            base=s.payload / "initramfs.xz",
            extensions=self.extensions(s.stack),
            version=p.version,
            arch=p.arch,
            workdir=scratch_dir,
            out=out,
            epoch=s.epoch,
        )
        self.checkpoint()
        shutil.rmtree(scratch_dir)

    def reset_profile(self, cmdline: str) -> list[UKIProfile] | None:
        """Disk images and installers boot a UKI whose second profile resets to maintenance mode (if the
        release's stub boots profiles at all: :meth:`uki_profiles`)."""
        if not self.quirks.supports_uki_profiles():
            return None
        wipe = cmdline + " talos.experimental.wipe=system:EPHEMERAL,STATE"
        return [UKIProfile("reset-maintenance", "Reset to maintenance mode", wipe)]

    def iso(self, payload: Path, grub: Path, initramfs: Path, cmdline: str, epoch: int, out: Path) -> None:
        p = self.profile
        generator = select_generator(
            version=p.version,
            bootloader=p.output.iso_options.bootloader if p.output.iso_options else Bootloader.NONE,
            secureboot=p.secureboot_enabled,
        )
        uki = None
        if generator is not IsoGenerator.GRUB:
            uki = self.work / "vmlinuz.efi"
            reset = UKIProfile("reset", "Reset system disk", cmdline + " talos.experimental.wipe=system")
            self.uki(
                payload,
                initramfs,
                cmdline,
                [reset] if self.quirks.supports_uki_profiles() else None,
                epoch,
                uki,
            )
        enroll = SDBootEnrollKeys.OFF
        keys: dict[str, Path] = {}
        cert_der = None
        if p.secureboot_enabled:
            if p.output.iso_options is not None:
                enroll = p.output.iso_options.sd_boot_enroll_keys
            # upstream's Secure Boot ISO always carries the databases and the certificate (DER), so
            # `manual` enrolment and a user enrolling by hand both find them, whatever the mode
            keys = self.enrollment(epoch)
            cert_der = self.work / "uki-signing-cert.der"
            cert_der.write_bytes(self.pe_signer().certificate)
        iso_work = self.work / "iso"
        iso_work.mkdir()
        build_iso(
            generator,
            IsoInputs(
                arch=p.arch,
                version=p.version,
                kernel=payload / "vmlinuz",
                initramfs=initramfs,
                cmdline=cmdline,
                uki=uki,
                sd_boot=self.sd_boot(payload) if uki else None,
                grub_dirs=self.grub_dirs(grub) if generator is not IsoGenerator.UEFI else {},
                enroll_keys=enroll,
                uki_signing_cert_der=cert_der,
                pk_auth=keys.get("PK.auth"),
                kek_auth=keys.get("KEK.auth"),
                db_auth=keys.get("db.auth"),
            ),
            out,
            workdir=iso_work,
            epoch=epoch,
        )
        self.checkpoint()

    def image(self, payload: Path, grub: Path, initramfs: Path, cmdline: str, epoch: int, out: Path) -> None:
        """``outImage``: a raw disk (:mod:`worker.imager.disk`), then its format (:mod:`.formats`)."""
        p = self.profile
        opts = p.output.image_options
        if opts is None:  # fill_defaults always sets them
            raise ValueError("image output without image options")
        bootloader = opts.bootloader
        uki = None
        if bootloader in (Bootloader.SD_BOOT, Bootloader.DUAL_BOOT):
            uki = self.work / "vmlinuz.efi"
            self.uki(payload, initramfs, cmdline, self.reset_profile(cmdline), epoch, uki)
        meta = [(m.key, m.value) for m in p.customization.meta_contents]
        if (
            p.arch == "amd64"
            and not p.secureboot_enabled
            and self.quirks.use_sdboot_for_uefi()
            and bootloader is Bootloader.DUAL_BOOT
        ):
            meta.append((META_DISK_IMAGE_BOOTLOADER, Bootloader.DUAL_BOOT.value))
        enroll_keys, auto_enroll = None, {}
        if (
            p.secureboot_enabled
            and self.quirks.disk_image_enrolls_secureboot_keys()
            and opts.sd_boot_enroll_keys is not SDBootEnrollKeys.OFF
        ):
            # as upstream's buildImage: the line and the databases only when enrolment is on
            enroll_keys, auto_enroll = opts.sd_boot_enroll_keys, self.enrollment(epoch)
        raw = out.with_name(out.name.rsplit(".", 1)[0] + ".raw")
        uses_grub = bootloader in (Bootloader.GRUB, Bootloader.DUAL_BOOT)
        disk_work = self.work / "disk"
        disk_work.mkdir()
        build_disk(
            DiskInputs(
                arch=p.arch,
                version=p.version,
                bootloader=bootloader,
                disk_size=opts.disk_size,
                sector_size=opts.disk_sector_size or 512,
                kernel=payload / "vmlinuz",
                initramfs=initramfs,
                cmdline=cmdline,
                grub_dirs=self.grub_dirs(grub) if uses_grub else {},
                uki=uki,
                sd_boot=self.sd_boot(payload) if uki else None,
                meta=meta,
                enroll_keys=enroll_keys,
                auto_enroll=auto_enroll,
                skip_lbas=self.overlay_options.offset_lbas,
                overlay_install=self.overlay_install if self.overlay is not None else None,
            ),
            raw,
            workdir=disk_work,
            epoch=epoch,
        )
        self.checkpoint()
        shutil.rmtree(disk_work)
        converted = convert(
            raw, opts, platform=p.platform, arch=p.arch, workdir=self.work, epoch=epoch, quirks=self.quirks
        )
        self.checkpoint()
        if converted != out:
            os.replace(converted, out)

    def installer(
        self, payload: Path, initramfs: Path, cmdline: str, epoch: int, out: Path, stack: ExitStack
    ) -> None:
        """``outInstaller``: the base installer plus one layer of boot assets, as a docker archive."""
        p = self.profile
        dependency = self.plan.installer_base
        if dependency is None:
            raise ValueError("installer build without a pinned installer base")
        arch = p.arch
        if p.secureboot_enabled or self.quirks.supports_unified_installer():
            uki = self.work / "vmlinuz.efi"
            self.uki(payload, initramfs, cmdline, self.reset_profile(cmdline), epoch, uki)
            # Secure Boot installers made for Talos < 1.10 name the UKI vmlinuz.efi.signed (upstream
            # outInstaller: "support for older secureboot installers")
            signed = p.secureboot_enabled and not self.quirks.use_sdboot_for_uefi()
            files = [
                (f"usr/install/{arch}/systemd-boot.efi", self.sd_boot(payload)),
                (f"usr/install/{arch}/vmlinuz.efi{'.signed' if signed else ''}", uki),
            ]
        else:
            files = [
                (f"usr/install/{arch}/vmlinuz", payload / "vmlinuz"),
                (f"usr/install/{arch}/initramfs.xz", initramfs),
            ]
        base = stack.enter_context(self.sources.installer_base(dependency, arch))
        layers_work = self.work / "installer"
        layers_work.mkdir()
        created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        image = build_installer_image(
            base, files, arch=arch, workdir=layers_work, created=created, overlay=self.overlay_layer()
        )
        # what `docker load` names it: upstream's /image download tags the archive with the base
        # installer's name and version (the registry frontend will publish by digest instead)
        name = dependency.reference.split("@", 1)[0]
        write_docker_archive(image, out, repo_tags=[f"{name}:{p.version}"])
        self.checkpoint()

    def uki(
        self,
        payload: Path,
        initramfs: Path,
        cmdline: str,
        profiles: list[UKIProfile] | None,
        epoch: int,
        out: Path,
    ) -> None:
        signers = None
        if self.profile.secureboot_enabled:
            signers = (self.pe_signer(), self.pcr_signer())
        stub = payload / "systemd-stub.efi"
        profiles = self.uki_profiles(stub, profiles)
        build_uki(
            stub=stub,
            kernel=payload / "vmlinuz",
            initrd=initramfs,
            cmdline=cmdline,
            version=self.profile.version,
            profiles=profiles,
            epoch=epoch,
            out=out,
            signers=signers,
        )
        self.checkpoint()

    def grub_dirs(self, release_grub: Path) -> Mapping[str, Path]:
        """GRUB for this build: the release's where it has it, the factory's otherwise; said in the log."""
        if self._grub is None:
            self._grub = select_grub(release_grub)
            chosen = self._grub
            log.info(
                chosen.describe(),
                extra={
                    "key": self.plan.key,
                    "grub_source": chosen.source,
                    "grub_platforms": {p: f"{o} ({chosen.dirs[p]})" for p, o in chosen.origins.items()},
                    "grub_unavailable": chosen.missing,
                },
            )
        return self._grub.dirs

    def uki_profiles(self, stub: Path, profiles: list[UKIProfile] | None) -> list[UKIProfile] | None:
        """``profiles`` if ``stub`` boots multi-profile UKIs (systemd >= 257), else none: an older stub
        ignores ``.profile`` and boots the *last* ``.cmdline``, a later profile's (e.g. the wipe)."""
        if profiles is None or stub_supports_profiles(stub):
            return profiles
        version = stub_systemd_version(stub)
        log.warning(
            "UKI built without profiles: the release's systemd-stub (%s) predates multi-profile UKIs "
            "(systemd 257); dropped: %s",
            f"systemd {version}" if version is not None else "unknown version",
            ", ".join(["main", *(p.id for p in profiles)]),
            extra={
                "key": self.plan.key,
                "stub_systemd": version,
                "dropped_profiles": ["main", *(p.id for p in profiles)],
            },
        )
        return None

    def pe_signer(self) -> PESigner:
        """The Secure Boot (db) key's signer; a Secure Boot build without it fails (never unsigned)."""
        if self.signers.pe is None:
            raise SecureBootSigningError(_missing_signer("PE (secureBoot signing key)"))
        return self.signers.pe

    def pcr_signer(self) -> PCRSigner:
        if self.signers.pcr is None:
            raise SecureBootSigningError(_missing_signer("PCR (secureBoot PCR key)"))
        return self.signers.pcr

    def sd_boot(self, payload: Path) -> Path:
        """systemd-boot as it is shipped: the imager's own binary, or under Secure Boot a signed copy
        (signed once per build and reused by every stage that ships it)."""
        source = payload / "systemd-boot.efi"
        if not self.profile.secureboot_enabled:
            return source
        signed = self.work / "systemd-boot.efi.signed"
        if not signed.exists():
            partial = signed.with_name(signed.name + ".partial")
            shutil.copyfile(source, partial)
            partial.chmod(0o644)
            self.pe_signer().sign_pe(partial)
            os.replace(partial, signed)
        return signed

    def enrollment(self, epoch: int) -> dict[str, Path]:
        """``PK.auth``, ``KEK.auth``, ``db.auth`` enrolling the signing certificate (upstream
        ``prepareEnrollmentDBs``), with the Microsoft certificates when the schematic asks for them.

        The variables are stamped with the release date, not the wall clock, so the same plan keeps
        giving byte-identical assets (the timestamp only orders later updates of the same variable).
        """
        keys_dir = self.work / "enrollment"
        if not keys_dir.is_dir():
            sb = self.profile.input.secure_boot
            files = enrollment_auth_files(
                self.pe_signer(),
                include_well_known=bool(sb and sb.include_well_known_certs),
                timestamp=datetime.fromtimestamp(epoch, UTC),
            )
            keys_dir.mkdir()
            for name, data in files.items():
                (keys_dir / name).write_bytes(data)
        return {path.name: path for path in sorted(keys_dir.iterdir())}


def _missing_signer(which: str) -> str:
    return (
        f"a Secure Boot build needs the {which} signer and this worker has none "
        "(secureBoot configuration of the worker)"
    )


@dataclass(frozen=True)
class _OverlaySources:
    """An overlay's two unpacked images: ``host`` (its installer runs here) and ``target`` (the
    asset's arch: profile and artifacts). Both pulled by the catalog's digest and verified."""

    host: Path
    target: Path

    def profile_document(self, name: str) -> bytes:
        path = self.target / "profiles" / f"{name}.yaml"
        if not path.is_file() or path.is_symlink():
            raise OverlayError(f"overlay {name!r}: the image has no profiles/{name}.yaml")
        return path.read_bytes()


def _open_overlay(plan: BuildPlan, sources: Sources, stack: ExitStack) -> _OverlaySources | None:
    ref = plan.overlay
    if ref is None or plan.profile.overlay is None:
        return None
    target = stack.enter_context(sources.image_by_digest(ref.ref.repository, ref.digest, plan.profile.arch))
    if plan.profile.arch == HOST_ARCH:
        return _OverlaySources(host=target.fs, target=target.fs)
    host = stack.enter_context(sources.image_by_digest(ref.ref.repository, ref.digest, HOST_ARCH))
    return _OverlaySources(host=host.fs, target=target.fs)


@dataclass(frozen=True)
class _Stage:
    """What every output builder is handed: the imager payload, GRUB, epoch, output path, open inputs."""

    payload: Path  # the imager image's usr/install/<arch>
    grub: Path  # the imager image's usr/lib/grub (it may have none: worker.imager.grub completes it)
    epoch: int
    out: Path
    stack: ExitStack
    imager_digest: str = ""  # the imager image the payload came from (part of the pieces' keys)


def _kernel(b: _Build, s: _Stage) -> None:
    shutil.copyfile(s.payload / "vmlinuz", s.out)


def _cmdline_file(b: _Build, s: _Stage) -> None:
    s.out.write_text(b.cmdline())


def _initramfs(b: _Build, s: _Stage) -> None:
    b.initramfs(s, s.out)


def _with_initramfs(b: _Build, s: _Stage) -> Path:
    initramfs = b.work / "initramfs.xz"
    b.initramfs(s, initramfs)
    return initramfs


def _uki(b: _Build, s: _Stage) -> None:
    initramfs = _with_initramfs(b, s)
    profiles: list[UKIProfile] | None = [] if b.quirks.supports_uki_profiles() else None
    b.uki(s.payload, initramfs, b.cmdline(), profiles, s.epoch, s.out)


def _iso(b: _Build, s: _Stage) -> None:
    initramfs = _with_initramfs(b, s)
    b.iso(s.payload, s.grub, initramfs, b.cmdline(), s.epoch, s.out)


def _image(b: _Build, s: _Stage) -> None:
    initramfs = _with_initramfs(b, s)
    b.image(s.payload, s.grub, initramfs, b.cmdline(), s.epoch, s.out)


def _installer(b: _Build, s: _Stage) -> None:
    initramfs = _with_initramfs(b, s)
    b.installer(s.payload, initramfs, b.cmdline(), s.epoch, s.out, s.stack)


#: How each output kind is built (upstream's ``out*`` functions); a new kind is one entry here.
#: ``unknown`` has none: validation rejects it before a build, and ``run`` refuses it regardless.
OUTPUT_BUILDERS: dict[OutputKind, Callable[[_Build, _Stage], None]] = {
    OutputKind.KERNEL: _kernel,
    OutputKind.CMDLINE: _cmdline_file,
    OutputKind.INITRAMFS: _initramfs,
    OutputKind.UKI: _uki,
    OutputKind.ISO: _iso,
    OutputKind.IMAGE: _image,
    OutputKind.INSTALLER: _installer,
}


@contextlib.contextmanager
def _publishing(dest: Path, name: str) -> Iterator[Path]:
    """A temporary path in ``dest`` that becomes ``dest/name`` only if the body succeeds."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{name}.{os.getpid()}.partial"
    try:
        yield tmp
        os.replace(tmp, dest / name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def build(
    plan: BuildPlan,
    *,
    sources: Sources,
    external_url: str,
    dest: Path,
    scratch_root: Path,
    signers: Signers = NO_SIGNERS,
    pieces: Pieces = NO_PIECES,
    overlay_limits: OverlayLimits | None = None,
) -> BuildResult:
    """Builds ``plan`` into ``dest/<output name>``; raises (leaving nothing) on any failure.

    ``signers`` are the signing services a Secure Boot build would use (handed to the UKI stage);
    ``pieces`` keeps and hands out intermediate results shared between builds (the initramfs);
    ``overlay_limits`` bound the overlay installer's runs (``build.overlayInstaller``).
    """
    started = time.monotonic()
    _reset_peak_rss()
    with tools.recording() as record, scratch(scratch_root) as work, ExitStack() as stack:
        overlay = _open_overlay(plan, sources, stack)
        b = _Build(plan, sources, external_url, work, signers, pieces, overlay, overlay_limits)
        p = b.profile
        name = output_name(p)
        imager = stack.enter_context(sources.imager(parse_tolerant(p.version)))
        payload = imager.fs / "usr" / "install" / p.arch
        grub = imager.fs / "usr" / "lib" / "grub"
        epoch = release_epoch(imager.config)
        built = work / "out"
        built.mkdir()
        b.run(payload, grub, epoch, built / name, stack, imager.digest)
        b.checkpoint()
        if p.output.out_format not in (OutFormat.RAW, OutFormat.UNKNOWN):
            name = compress(built / name, p.output.out_format, epoch=epoch).name
            b.checkpoint()
        with _publishing(dest, name) as tmp:
            shutil.move(built / name, tmp)
        result = BuildResult(
            path=dest / name,
            name=name,
            size=(dest / name).stat().st_size,
            seconds=time.monotonic() - started,
            tool_seconds=record.seconds,
            peak_disk=b.peak_disk,
            peak_rss=max(_peak_rss(), record.peak_rss),
        )
    log.info(
        "built %s in %.1fs (tools %.1fs), %d bytes, peak disk %d MiB, peak memory %d MiB",
        result.name,
        result.seconds,
        result.tool_seconds,
        result.size,
        result.peak_disk >> 20,
        result.peak_rss >> 20,
        extra={"key": plan.key, "version": p.version, "kind": p.output.kind.value},
    )
    return result
