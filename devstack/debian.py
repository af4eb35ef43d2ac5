"""Real Debian packages (kernel, busybox, systemd-boot, GRUB) as inputs for the release fixture.

We cannot pull ``ghcr.io/siderolabs/imager``, so the fixture is made of Debian's own binaries. They are
fetched with ``apt-get download`` (never taken from the host's installed files, so the fixture does not
depend on what happens to be installed) and cached outside the repository, keyed by the exact package
version, so a warm run makes no network access and only a few ``apt-cache`` look-ups.

A few inputs must be newer than the host's suite has (systemd ≥ 257 for multi-profile UKIs; bookworm has
252), and the arm64 payload needs packages of another architecture (the host's apt only knows amd64).
Those come from a suite's ``InRelease`` -> ``Packages.xz`` -> ``.deb`` chain fetched by hand and verified
the way apt does (``gpgv`` against the Debian archive keyring, then SHA256 at each step), so the host's
apt configuration is never touched; the answer is remembered so warm runs stay offline.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import requests

__all__ = [
    "KEYRING",
    "MIRROR",
    "SECURITY_MIRROR",
    "SYSTEM_PACKAGES",
    "UKI_PROFILES_SUITE",
    "DebianError",
    "SuitePackage",
    "arch_package_tree",
    "cache_dir",
    "deb_file",
    "grub_arm64_efi_dir",
    "grub_dirs",
    "host_suite",
    "kernel_package",
    "kernel_tree",
    "package_tree",
    "resolve_package",
    "resolve_suite_package",
    "suite_deb_file",
    "suite_package_tree",
    "systemd_boot_tree",
]

#: Debian packages the fixture builder, the QEMU helper and the boot tests run at runtime. The kernel,
#: busybox-static, systemd-boot-efi and grub-*-bin are downloaded as .debs instead (not installed).
SYSTEM_PACKAGES: tuple[str, ...] = (
    "apt",  # apt-get download, apt-cache
    "dpkg",  # dpkg-deb -x
    "kmod",  # depmod
    "squashfs-tools",  # mksquashfs, unsquashfs
    "xz-utils",
    "zstd",
    "gcc",  # compiles the fixture's static /init
    "libc6-dev",  # libc.a and the kernel UAPI headers for it
    "gcc-aarch64-linux-gnu",  # cross-compiles the arm64 payload's static /init
    "libc6-dev-arm64-cross",  # its libc.a
    "qemu-system-x86",
    "qemu-system-arm",  # qemu-system-aarch64: the arm64 boot tests
    "qemu-efi-aarch64",  # AAVMF, UEFI for them
    "qemu-utils",  # qemu-img (qcow2 disks)
    "ovmf",
    "gdisk",  # sgdisk (GPT disks in the boot tests)
    # the imager's tools (worker/imager)
    "xorriso",  # xorrisofs, and grub-mkrescue's ISO writer
    "grub-common",  # grub-mkrescue, grub-mkimage
    "grub-pc-bin",  # i386-pc modules grub-mkrescue falls back to
    "grub-efi-amd64-bin",  # x86_64-efi modules, likewise
    "mtools",  # mcopy, mattrib (FAT images without mounting)
    "dosfstools",  # mkfs.vfat
    "squashfs-tools-ng",  # tar2sqfs: extension squashfs with SELinux xattrs from PAX records
    "cpio",
    "xfsprogs",  # mkfs.xfs: the BOOT partition of GRUB and dual-boot disk images
    "libfaketime",  # a frozen clock for mkfs.xfs 6.1, which ignores SOURCE_DATE_EPOCH
    "pigz",  # .gz and .tar.gz outputs
    "bubblewrap",  # bwrap: the box overlay installers run in (worker/imager/overlay.py)
    "fdisk",  # tests only: sfdisk reads the GPTs the imager writes
    # packages of other suites (suite_deb_file): InRelease signatures and the keys to check them with
    "gpgv",
    "debian-archive-keyring",
    # tests only: sign a fake mirror's InRelease (tests/unit/devstack/test_debian.py)
    "gpg",
    "gpg-agent",
)

#: Mirror for packages of other suites (``suite_deb_file``); read at call time so tests can redirect it.
MIRROR = "http://deb.debian.org/debian"
#: Mirror for ``<codename>-security`` suites (they live in a separate archive), read at call time too.
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
#: The Debian archive's signing keys. Bookworm's debian-archive-keyring carries trixie's archive and release
#: keys since 2023.3+deb12u2, and trixie's InRelease is also signed with bookworm's archive key.
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: The suite whose systemd-boot-efi (≥ 257) understands multi-profile UKIs (Talos ≥ 1.10).
UKI_PROFILES_SUITE = "trixie"
#: The suite assumed when ``/etc/os-release`` names none (the Makefile targets bookworm machines).
DEFAULT_SUITE = "bookworm"
#: The architecture the host's apt serves; any other comes from a suite without apt.
HOST_ARCH = "amd64"

#: (connect, read) seconds for every request to the mirror.
_HTTP_TIMEOUT = (15.0, 120.0)
#: Refuse an InRelease larger than this (trixie's is ~140 kB): a wrong URL must not fill the disk.
_MAX_INRELEASE = 16 * 1024 * 1024

#: Metapackage -> prefix of the real package it depends on (the one carrying the files).
_METAPACKAGES = {"linux-image-amd64": "linux-image-", "linux-image-arm64": "linux-image-"}

_lock = threading.Lock()
_updated = False


class DebianError(RuntimeError):
    """A Debian package could not be resolved, downloaded or extracted."""


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/image-factory``: shared by checkouts, survives ``make clean``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "image-factory"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _apt_update() -> None:
    """Fetch package lists once per process: a fresh machine (or container) often has none."""
    global _updated
    with _lock:
        if _updated:
            return
        _updated = True
        if os.geteuid() != 0:
            raise DebianError("apt package lists missing or stale and we are not root: run apt-get update")
        proc = _run(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"])
        if proc.returncode != 0:
            raise DebianError(f"apt-get update failed: {proc.stderr.strip()[-2000:]}")


def _show(name: str) -> dict[str, str]:
    """The candidate version's control fields (``apt-cache show``), updating the lists once if needed."""
    for attempt in range(2):
        proc = _run(["apt-cache", "show", "--no-all-versions", name])
        fields: dict[str, str] = {}
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                if not line or line[0].isspace() or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key, value.strip())
        if fields.get("Version"):
            return fields
        if attempt == 0:
            _apt_update()
    raise DebianError(f"no installable candidate for Debian package {name!r}: {proc.stderr.strip()}")


def _lists_fingerprint() -> str:
    """Identifies the state of apt's package lists and pinning: candidates only change with it."""
    parts: list[str] = []
    for pattern in ("/var/lib/apt/lists/*Packages*", "/etc/apt/preferences*", "/etc/apt/preferences.d/*"):
        for path in sorted(glob.glob(pattern)):
            with contextlib.suppress(OSError):
                st = os.stat(path)
                parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _resolve_uncached(name: str) -> tuple[str, str, str]:
    fields = _show(name)
    prefix = _METAPACKAGES.get(name)
    if prefix is not None:
        deps = [d.strip().split(" ")[0] for d in fields.get("Depends", "").replace("|", ",").split(",")]
        real = [d for d in deps if d.startswith(prefix) and d != name]
        if len(real) != 1:
            raise DebianError(f"cannot resolve metapackage {name!r}: depends {deps}")
        return _resolve_uncached(real[0])
    return fields["Package"], fields["Version"], fields["Architecture"]


@functools.cache
def resolve_package(name: str) -> tuple[str, str, str]:
    """(package, version, architecture) of the candidate, following metapackages to the real package.

    ``apt-cache`` takes ~1 s per call where apt's binary cache is disabled (Debian container images), so
    answers are remembered on disk for as long as the package lists stay the same.
    """
    memo = cache_dir() / "resolved.json"
    fingerprint = _lists_fingerprint()
    known: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(memo.read_text())
    if known.get("lists") != fingerprint:
        known = {"lists": fingerprint, "packages": {}}
    hit = known["packages"].get(name)
    if isinstance(hit, list) and len(hit) == 3:
        return hit[0], hit[1], hit[2]
    result = _resolve_uncached(name)
    known["lists"] = _lists_fingerprint()  # _show may have run apt-get update
    known["packages"][name] = list(result)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, memo)
    return result


def deb_file(name: str) -> Path:
    """The cached .deb of the candidate version, downloaded (atomically) on first use."""
    package, version, arch = resolve_package(name)
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    # apt-get download's own naming (epoch ':' URL-encoded), so a manual download is reused as-is.
    path = debs / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"
    if path.is_file():
        return path
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        cmd = ["apt-get", "download", f"{package}={version}"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-o", "APT::Sandbox::User=root"]  # the _apt user cannot write to root's cache
        proc = _run(cmd, cwd=Path(tmp))
        if proc.returncode != 0:
            try:
                _apt_update()  # stale lists point at files the mirror no longer has
            except DebianError as exc:
                raise DebianError(
                    f"apt-get download {package}={version} failed: {proc.stderr.strip()}; {exc}"
                ) from exc
            proc = _run(cmd, cwd=Path(tmp))
        got = list(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or len(got) != 1:
            raise DebianError(f"apt-get download {package}={version} failed: {proc.stderr.strip()[-2000:]}")
        os.replace(got[0], path)
    return path


def package_tree(name: str) -> Path:
    """The extracted root of a Debian package (``dpkg-deb -x``), cached per exact version."""
    return _extract(deb_file(name))


def _extract(deb: Path) -> Path:
    """``dpkg-deb -x`` of a cached .deb into ``trees/<deb name>``, once.

    Extraction goes to a private temporary directory that is renamed into place, so concurrent callers
    (xdist workers, two test sessions) never see a half-extracted tree; the loser of a race discards
    its copy.
    """
    trees = cache_dir() / "trees"
    trees.mkdir(parents=True, exist_ok=True)
    final = trees / deb.name.removesuffix(".deb")
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(dir=trees, prefix=".extract-"))
    try:
        proc = _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        if proc.returncode != 0:
            raise DebianError(f"dpkg-deb -x {deb} failed: {proc.stderr.strip()}")
        tmp.chmod(0o755)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def host_suite() -> str:
    """The host's Debian codename (``bookworm``): other architectures' packages come from it."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME" and value.strip().strip("\"'"):
                return value.strip().strip("\"'")
    return DEFAULT_SUITE


def arch_package_tree(name: str, arch: str = HOST_ARCH) -> Path:
    """``name`` for ``arch``: the host's apt candidate for amd64, the host suite's package otherwise."""
    if arch == HOST_ARCH:
        return package_tree(name)
    return suite_package_tree(name, host_suite(), arch=arch)


def kernel_tree(arch: str = HOST_ARCH) -> tuple[Path, str]:
    """(extracted ``linux-image-<kver>`` tree, kernel version such as ``6.1.0-56-amd64``).

    amd64 is the host's apt candidate; another architecture is :func:`kernel_package`'s, fetched
    without apt.
    """
    if arch == HOST_ARCH:
        package, _, _ = resolve_package("linux-image-amd64")
        tree = package_tree(package)
    else:
        pkg = kernel_package(arch)
        package = pkg.package
        tree = _extract(_kernel_deb(arch, pkg))
    kver = package.removeprefix("linux-image-")
    if not (tree / "lib/modules" / kver).is_dir() or not (tree / "boot" / f"vmlinuz-{kver}").is_file():
        raise DebianError(f"{package} has no lib/modules/{kver} or boot/vmlinuz-{kver}")
    return tree, kver


def systemd_boot_tree(suite: str | None = None, arch: str = HOST_ARCH) -> Path:
    """Extracted systemd-boot-efi: ``usr/lib/systemd/boot/efi/{linuxx64.efi.stub,systemd-bootx64.efi}``
    (``linuxaa64.efi.stub``, ``systemd-bootaa64.efi`` for arm64).

    ``suite=None`` is the host's apt candidate (bookworm: 252), or the host suite's package for another
    architecture; a suite name such as :data:`UKI_PROFILES_SUITE` fetches that suite's package without
    apt (:func:`suite_deb_file`).
    """
    if suite is None:
        return arch_package_tree("systemd-boot-efi", arch)
    return suite_package_tree("systemd-boot-efi", suite, arch=arch)


def grub_dirs() -> tuple[Path, Path]:
    """The extracted GRUB module directories ``(…/usr/lib/grub/i386-pc, …/usr/lib/grub/x86_64-efi)``."""
    pc = package_tree("grub-pc-bin") / "usr/lib/grub/i386-pc"
    efi = package_tree("grub-efi-amd64-bin") / "usr/lib/grub/x86_64-efi"
    for path in (pc, efi):
        if not path.is_dir():
            raise DebianError(f"{path} missing from the extracted GRUB package")
    return pc, efi


def grub_arm64_efi_dir() -> Path:
    """GRUB's ``arm64-efi`` module directory (the host suite's arm64 package; host grub-mkimage uses it)."""
    path = arch_package_tree("grub-efi-arm64-bin", "arm64") / "usr/lib/grub/arm64-efi"
    if not path.is_dir():
        raise DebianError(f"{path} missing from the extracted GRUB package")
    return path


# --------------------------------------------------------------------------------------------------
# packages of another suite, without apt


@dataclass(frozen=True)
class SuitePackage:
    """A binary package as another suite's signed ``Packages`` index describes it."""

    suite: str
    package: str
    version: str
    architecture: str
    filename: str  # pool path relative to the mirror root
    size: int
    sha256: str

    @property
    def deb_name(self) -> str:
        """apt-get download's naming (epoch ':' URL-encoded), the same as :func:`deb_file` uses."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


_suite_lock = threading.RLock()
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _suite_memo() -> Path:
    return cache_dir() / "suites.json"


def _memo_key(suite: str, component: str, arch: str, name: str) -> str:
    return f"{suite}/{component}/{arch}/{name}"


def _read_memo() -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(_suite_memo().read_text())
        if isinstance(data, dict):
            return data
    return {}


def _memo_hit(key: str) -> SuitePackage | None:
    """The remembered answer, or None when absent or malformed (a hand-edited memo is re-resolved)."""
    hit = _read_memo().get(key)
    if not isinstance(hit, dict):
        return None
    try:
        pkg = SuitePackage(**hit)
    except TypeError:
        return None
    texts = (pkg.suite, pkg.package, pkg.version, pkg.architecture, pkg.filename, pkg.sha256)
    if not all(isinstance(t, str) for t in texts) or not isinstance(pkg.size, int):
        return None
    return pkg if _SHA256.fullmatch(pkg.sha256) else None


def _write_memo(key: str, pkg: SuitePackage | None) -> None:
    """Remember (None: forget) an answer atomically (a concurrent writer may win; both are valid)."""
    known = _read_memo()
    if pkg is None:
        known.pop(key, None)
    else:
        known[key] = asdict(pkg)
    memo = _suite_memo()
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, memo)


def _get(url: str, max_size: int) -> bytes:
    """GET ``url`` into memory, refusing more than ``max_size`` bytes."""
    try:
        with requests.get(url, timeout=_HTTP_TIMEOUT, stream=True) as resp:
            if resp.status_code != 200:
                raise DebianError(f"GET {url}: HTTP {resp.status_code}")
            buf = bytearray()
            for chunk in resp.iter_content(1 << 20):
                buf.extend(chunk)
                if len(buf) > max_size:
                    raise DebianError(f"GET {url}: more than the expected {max_size} bytes")
            return bytes(buf)
    except requests.RequestException as exc:
        raise DebianError(f"GET {url} failed: {exc}") from exc


def _get_verified(url: str, size: int, sha256: str) -> bytes:
    """GET ``url`` and check it against the size and SHA256 a signed index gave for it."""
    data = _get(url, size)
    got = hashlib.sha256(data).hexdigest()
    if len(data) != size or got != sha256:
        raise DebianError(
            f"{url}: got {len(data)} bytes with SHA256 {got}, the index says {size} bytes {sha256}"
        )
    return data


def _verify_inrelease(data: bytes, keyring: Path, url: str) -> str:
    """The signed text of a clearsigned ``InRelease``, checked with ``gpgv`` like apt does.

    Accepted when no signature is bad and at least one is good and valid (made by a key in the keyring
    that is neither expired nor revoked); signatures by keys we lack are ignored, so a release also
    signed with a future key still verifies. Only gpgv's output is used: text around the signed block
    is never trusted.
    """
    if shutil.which("gpgv") is None:
        raise DebianError("gpgv not found: install gpgv (devstack.debian.SYSTEM_PACKAGES)")
    if not keyring.is_file():
        raise DebianError(f"keyring {keyring} missing: install debian-archive-keyring")
    with tempfile.TemporaryDirectory(prefix="inrelease-") as tmp:
        signed, out = Path(tmp, "InRelease"), Path(tmp, "signed")
        signed.write_bytes(data)
        home = Path(tmp, "gnupg")
        home.mkdir(mode=0o700)
        cmd = ["gpgv", "--homedir", str(home), "--status-fd", "1", "--keyring", str(keyring.resolve())]
        proc = _run([*cmd, "--output", str(out), str(signed)])
        blocks: list[set[str]] = []
        for line in proc.stdout.splitlines():
            words = line.split()
            if len(words) < 2 or words[0] != "[GNUPG:]":
                continue
            if words[1] == "NEWSIG" or not blocks:
                blocks.append(set())
            blocks[-1].add(words[1])
        bad = [b for b in blocks if b & {"BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"}]
        good = [b for b in blocks if {"GOODSIG", "VALIDSIG"} <= b]
        if bad or not good or not out.is_file():
            detail = proc.stderr.strip()[-1500:] or proc.stdout.strip()[-1500:]
            raise DebianError(f"{url}: OpenPGP signature not valid with {keyring}: {detail}")
        try:
            return out.read_text()
        except UnicodeDecodeError as exc:
            raise DebianError(f"{url}: signed text is not UTF-8") from exc


def _control_fields(text: str) -> dict[str, str]:
    """deb822 fields of one stanza; a multi-line field's value is its lines joined with newlines."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key, value.strip())
    return fields


def _check_release(fields: dict[str, str], suite: str, url: str) -> None:
    """The signed release must be the suite asked for (no replay of another one) and not expired."""
    if suite not in (fields.get("Codename"), fields.get("Suite")):
        signed_for = f"Codename {fields.get('Codename')!r} / Suite {fields.get('Suite')!r}"
        raise DebianError(f"{url}: signed for {signed_for}, not {suite!r}")
    until = fields.get("Valid-Until")
    if until:
        try:
            expires = parsedate_to_datetime(until)
        except (TypeError, ValueError) as exc:
            raise DebianError(f"{url}: unparsable Valid-Until {until!r}") from exc
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires < datetime.now(UTC):
            raise DebianError(f"{url}: expired (Valid-Until {until})")


def _index_entry(fields: dict[str, str], path: str, url: str) -> tuple[int, str]:
    """(size, SHA256) of ``path`` in the release's SHA256 list."""
    for line in fields.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == path and _SHA256.fullmatch(parts[0]) and parts[1].isdigit():
            return int(parts[1]), parts[0]
    raise DebianError(f"{url}: no SHA256 for {path}")


def _version_gt(a: str, b: str) -> bool:
    return _run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def _newest(candidates: list[dict[str, str]]) -> dict[str, str]:
    """The stanza with the highest Version (``dpkg --compare-versions``; a suite rarely has two)."""
    best = candidates[0]
    for other in candidates[1:]:
        if _version_gt(other["Version"], best["Version"]):
            best = other
    return best


def _mirror_for(suite: str) -> str:
    """Security updates live in their own archive; every other suite on the main mirror."""
    return SECURITY_MIRROR if suite.endswith("-security") else MIRROR


def _stanza(text: str, name: str, arch: str, where: str, version: str | None = None) -> dict[str, str]:
    """The newest stanza for ``name`` on ``arch`` (or ``all``) in a Packages index (exactly ``version``)."""
    candidates: list[dict[str, str]] = []
    for match in re.finditer(rf"^Package: {re.escape(name)}\n(?:.+\n?)*", text, re.M):
        fields = _control_fields(match.group(0))
        if fields.get("Architecture") in (arch, "all") and version in (None, fields.get("Version")):
            candidates.append(fields)
    if not candidates:
        wanted = f"{name} (= {version})" if version else name
        raise DebianError(f"no {wanted} ({arch}) in {where}")
    return _newest(candidates)


def _real_package(fields: dict[str, str], prefix: str, where: str) -> tuple[str, str | None]:
    """(name, pinned version or None) of the one ``prefix*`` package a metapackage depends on."""
    real: list[tuple[str, str | None]] = []
    for dep in fields.get("Depends", "").replace("|", ",").split(","):
        m = re.fullmatch(r"\s*([a-z0-9][a-z0-9+.-]*)(?::\w+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?\s*", dep)
        if m and m.group(1).startswith(prefix) and m.group(1) != fields.get("Package"):
            real.append((m.group(1), m.group(3) if m.group(2) == "=" else None))
    if len(real) != 1:
        raise DebianError(f"{where}: cannot resolve metapackage {fields.get('Package')!r}: depends {real}")
    return real[0]


def _resolve_online(
    name: str, suite: str, component: str, arch: str, mirror: str, keyring: Path
) -> SuitePackage:
    """InRelease (gpgv) -> Packages.xz (SHA256 from InRelease) -> the package's stanza."""
    base = mirror.rstrip("/")
    release_url = f"{base}/dists/{suite}/InRelease"
    release = _control_fields(_verify_inrelease(_get(release_url, _MAX_INRELEASE), keyring, release_url))
    _check_release(release, suite, release_url)
    index = f"{component}/binary-{arch}/Packages.xz"
    size, sha = _index_entry(release, index, release_url)
    plain = f"{base}/dists/{suite}/{index}"
    urls = [plain]
    if release.get("Acquire-By-Hash", "").lower() == "yes":
        # The by-hash name is immutable, so a mirror update between our two requests cannot bite.
        urls.insert(0, f"{base}/dists/{suite}/{component}/binary-{arch}/by-hash/SHA256/{sha}")
    errors: list[str] = []
    for url in urls:
        try:
            packed = _get_verified(url, size, sha)
            break
        except DebianError as exc:
            errors.append(str(exc))
    else:
        raise DebianError("; ".join(errors))
    try:
        text = lzma.decompress(packed).decode()
    except (lzma.LZMAError, UnicodeDecodeError) as exc:
        raise DebianError(f"{plain}: cannot decompress: {exc}") from exc
    where = f"{suite}/{index}"
    fields = _stanza(text, name, arch, where)
    prefix = _METAPACKAGES.get(name)
    if prefix is not None:  # e.g. linux-image-arm64 -> linux-image-6.1.0-56-arm64 (= 6.1.192-2)
        real, version = _real_package(fields, prefix, where)
        fields = _stanza(text, real, arch, where, version)
    sha256, size_text, filename = fields.get("SHA256", ""), fields.get("Size", ""), fields.get("Filename", "")
    if (
        not _SHA256.fullmatch(sha256)
        or not size_text.isdigit()
        or not filename
        or ".." in filename.split("/")
    ):
        raise DebianError(f"{suite}/{index}: incomplete stanza for {name}: {fields}")
    return SuitePackage(
        suite=suite,
        package=fields["Package"],
        version=fields["Version"],
        architecture=fields["Architecture"],
        filename=filename,
        size=int(size_text),
        sha256=sha256,
    )


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resolve_suite_package(
    name: str,
    suite: str,
    *,
    component: str = "main",
    arch: str = "amd64",
    mirror: str | None = None,
    keyring: Path | None = None,
    refresh: bool = False,
) -> SuitePackage:
    """``name`` as ``suite`` on the mirror has it, remembered in ``suites.json`` in the cache.

    A metapackage of ``_METAPACKAGES`` (``linux-image-arm64``) resolves to the real package it depends
    on. The remembered answer pins the version (the fixture must not change under a warm cache when the
    mirror moves); ``refresh`` asks the mirror again. The memo is not keyed by mirror: every mirror
    serves the same signed archive. ``mirror``/``keyring`` default to :data:`MIRROR` (or
    :data:`SECURITY_MIRROR` for a ``*-security`` suite)/:data:`KEYRING` as they are at call time.
    """
    key = _memo_key(suite, component, arch, name)
    with _suite_lock:
        if not refresh and (hit := _memo_hit(key)) is not None:
            return hit
        pkg = _resolve_online(name, suite, component, arch, mirror or _mirror_for(suite), keyring or KEYRING)
        _write_memo(key, pkg)
        return pkg


def suite_deb_file(
    name: str,
    suite: str,
    *,
    component: str = "main",
    arch: str = "amd64",
    mirror: str | None = None,
    keyring: Path | None = None,
) -> Path:
    """The cached, SHA256-verified .deb of ``name`` from ``suite``, downloaded (atomically) on first use.

    Warm: no network at all. The cached file is re-hashed on every call, so a damaged cache is an
    error rather than a silently different fixture. If the remembered file is gone from the cache the
    suite is asked again (the mirror may have moved on to a newer version).
    """
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with _suite_lock:
        pkg = _memo_hit(_memo_key(suite, component, arch, name))
        if pkg is None or not (debs / pkg.deb_name).is_file():
            pkg = resolve_suite_package(
                name, suite, component=component, arch=arch, mirror=mirror, keyring=keyring, refresh=True
            )
        return _fetch_deb(pkg, mirror or _mirror_for(suite))


def _fetch_deb(pkg: SuitePackage, mirror: str) -> Path:
    """The cached .deb of ``pkg`` (re-hashed), downloaded from ``mirror`` and checked if not cached yet."""
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    with _suite_lock:
        path = debs / pkg.deb_name
        if path.is_file():
            got = _sha256_file(path)
            if got != pkg.sha256:
                raise DebianError(
                    f"cached {path} has SHA256 {got} but {pkg.suite}'s signed index says {pkg.sha256}: "
                    f"the cache is damaged, delete the file (and {_suite_memo()})"
                )
            return path
        url = f"{mirror.rstrip('/')}/{pkg.filename}"
        data = _get_verified(url, pkg.size, pkg.sha256)
        fd, tmp = tempfile.mkstemp(dir=debs, prefix=".download-", suffix=".deb")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return path


def suite_package_tree(name: str, suite: str, **kwargs: Any) -> Path:
    """The extracted root of ``suite``'s ``name`` (keyword arguments as for :func:`suite_deb_file`)."""
    return _extract(suite_deb_file(name, suite, **kwargs))


def kernel_package(arch: str) -> SuitePackage:
    """``arch``'s Debian kernel (the real package behind ``linux-image-<arch>``), paired with amd64's.

    The host's amd64 kernel is apt's candidate, usually a security update, so ``<host suite>-security``
    is asked before ``<host suite>``, and the package with the amd64 kernel's exact Debian version
    (same sources, same ABI such as ``6.1.0-56``) wins; failing that, the newest found. The pairing is
    remembered per amd64 version: a warm cache is offline, a new amd64 kernel makes a fresh look.
    """
    _, want, _ = resolve_package("linux-image-amd64")
    key = f"kernel/{arch}/{want}"
    with _suite_lock:
        if (hit := _memo_hit(key)) is not None:
            return hit
        suite = host_suite()
        found: list[SuitePackage] = []
        errors: list[str] = []
        for candidate in (f"{suite}-security", suite):
            try:
                pkg = resolve_suite_package(f"linux-image-{arch}", candidate, arch=arch, refresh=True)
            except DebianError as exc:
                errors.append(str(exc))
                continue
            found.append(pkg)
            if pkg.version == want:
                break
        best = next((p for p in found if p.version == want), None)
        if best is None:
            if errors or not found:  # a suite we could not read may have held the matching kernel
                raise DebianError(f"no linux-image-{arch} (= {want}) found: {'; '.join(errors)}")
            best = found[0]
            for other in found[1:]:
                if _version_gt(other.version, best.version):
                    best = other
        _write_memo(key, best)
        return best


def _kernel_deb(arch: str, pkg: SuitePackage) -> Path:
    """The pinned kernel .deb; if it was never downloaded and the mirror dropped it, pair afresh once."""
    try:
        return _fetch_deb(pkg, _mirror_for(pkg.suite))
    except DebianError:
        if (cache_dir() / "debs" / pkg.deb_name).is_file():
            raise  # a damaged cache is reported, not papered over
        _, want, _ = resolve_package("linux-image-amd64")
        _write_memo(f"kernel/{arch}/{want}", None)
        fresh = kernel_package(arch)
        if fresh == pkg:
            raise
        return _fetch_deb(fresh, _mirror_for(fresh.suite))
