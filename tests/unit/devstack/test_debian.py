"""Packages from another Debian suite without apt (``devstack.debian.suite_deb_file``).

Everything here runs against a fake mirror on loopback whose ``InRelease`` is signed with a throw-away
OpenPGP key, so every failure mode (bad signature, unknown key, replayed or expired release, wrong
hashes, damaged cache) is provoked without the network and without touching the real cache: each
test has its own ``XDG_CACHE_HOME``. The same mirror serves other architectures, metapackages and the
``-security`` archive for the arm64 kernel lookup. The real trixie chain is exercised by test_payload.py.
"""

from __future__ import annotations

import hashlib
import lzma
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack import debian

PACKAGE = "systemd-boot-efi"
SUITE = "trixie"
STUB = "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


def build_deb(package: str, version: str, arch: str, files: dict[str, bytes], depends: str = "") -> bytes:
    """A real (tiny) .deb holding ``files``."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp, "tree")
        (tree / "DEBIAN").mkdir(parents=True)
        control = f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        control += f"Depends: {depends}\n" if depends else ""
        control += "Maintainer: Tests <tests@example.invalid>\nDescription: fake package\n"
        (tree / "DEBIAN/control").write_text(control)
        for name, data in files.items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_bytes(data)
        out = Path(tmp, "out.deb")
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)],
            capture_output=True,
            check=True,
        )
        return out.read_bytes()


@dataclass(frozen=True)
class FakePackage:
    """A package for :meth:`FakeMirror.serve`; a metapackage has ``depends`` and no files."""

    name: str
    version: str
    files: dict[str, bytes] = field(default_factory=dict)
    depends: str = ""


@dataclass(frozen=True)
class Signers:
    """A GnuPG home with a trusted and a stranger key; ``keyring`` holds only the trusted one."""

    home: Path
    keyring: Path

    def sign(self, text: str, who: str = "trusted") -> bytes:
        """Clearsign ``text`` as ``who`` (the way Debian's InRelease is made)."""
        cmd = ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode", "loopback"]
        cmd += ["--passphrase", "", "--local-user", f"{who}@example.invalid", "--clearsign"]
        return subprocess.run(cmd, input=text.encode(), capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def signers() -> Iterator[Signers]:
    # A short path: gpg-agent's socket lives in the home when /run/user/<uid> does not exist.
    home = Path(tempfile.mkdtemp(prefix="gpg-", dir="/tmp"))
    home.chmod(0o700)
    try:
        gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        for who in ("trusted", "stranger"):
            uid = f"{who} <{who}@example.invalid>"
            subprocess.run(
                [*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], capture_output=True, check=True
            )
        keyring = home / "trusted.gpg"
        exported = subprocess.run(
            ["gpg", "--homedir", str(home), "--export", "trusted@example.invalid"],
            capture_output=True,
            check=True,
        ).stdout
        keyring.write_bytes(exported)
        yield Signers(home, keyring)
    finally:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False
        )
        shutil.rmtree(home, ignore_errors=True)


@dataclass
class FakeMirror:
    """A directory served over HTTP on loopback, laid out like deb.debian.org/debian."""

    root: Path
    url: str
    signers: Signers
    hits: list[str] = field(default_factory=list)

    def deb(self, version: str, stub: bytes, arch: str = "amd64") -> tuple[str, bytes]:
        """A real (tiny) systemd-boot-efi .deb: (pool path, bytes)."""
        data = build_deb(PACKAGE, version, arch, {STUB: stub})
        return f"pool/main/s/systemd/{PACKAGE}_{version}_{arch}.deb", data

    def publish(
        self,
        version: str = "257.99-1",
        *,
        codename: str = SUITE,
        who: str = "trusted",
        extra_release: str = "",
        corrupt: str | None = None,
        arches: tuple[str, ...] = ("amd64",),
    ) -> dict[str, Any]:
        """Write pool files, Packages.xz (plain and by-hash) per arch and a signed InRelease; ``corrupt``
        damages "packages" or "deb" after the hashes were taken. The stub of an arch other than amd64
        reads ``MZ stub <version> (<arch>)``. Returns the first arch's pool path and hash."""
        sums: list[str] = []
        result: dict[str, Any] = {"version": version}
        for arch in arches:
            stub = f"MZ stub {version}" + ("" if arch == "amd64" else f" ({arch})")
            pool, deb = self.deb(version, stub.encode(), arch)
            stanzas = [
                # an older version and another package: the resolver must pick the right stanza
                f"Package: {PACKAGE}\nVersion: 257.1-1\nArchitecture: {arch}\nFilename: pool/gone.deb\n"
                f"Size: 1\nSHA256: {'0' * 64}\n",
                f"Package: {PACKAGE}\nSource: systemd\nVersion: {version}\nArchitecture: {arch}\n"
                f"Description: simple UEFI boot manager - EFI binaries\n long description\n"
                f"Filename: {pool}\nSize: {len(deb)}\nSHA256: {hashlib.sha256(deb).hexdigest()}\n",
                f"Package: {PACKAGE}-signed\nVersion: 999\nArchitecture: {arch}\nFilename: pool/x.deb\n"
                f"Size: 1\nSHA256: {'1' * 64}\n",
            ]
            packages = lzma.compress("\n".join(stanzas).encode())
            sha = hashlib.sha256(packages).hexdigest()
            sums += [
                f" {'2' * 64}  1234 main/binary-{arch}/Packages\n",
                f" {sha} {len(packages)} main/binary-{arch}/Packages.xz\n",
            ]
            if corrupt == "packages":
                packages = packages[:-1] + bytes([packages[-1] ^ 1])
            if corrupt == "deb":
                deb = deb[:-1] + bytes([deb[-1] ^ 1])
            index = self.root / "dists" / SUITE / f"main/binary-{arch}"
            (index / "by-hash/SHA256").mkdir(parents=True, exist_ok=True)
            (index / "Packages.xz").write_bytes(packages)
            (index / "by-hash/SHA256" / sha).write_bytes(packages)
            (self.root / pool).parent.mkdir(parents=True, exist_ok=True)
            (self.root / pool).write_bytes(deb)
            result.setdefault("sha256", hashlib.sha256(deb).hexdigest())
            result.setdefault("pool", pool)
            result.setdefault("debs", {})[arch] = hashlib.sha256(deb).hexdigest()
        release = (
            f"Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: {codename}\n"
            f"Date: {format_datetime(datetime.now(UTC), usegmt=True)}\n{extra_release}"
            f"Acquire-By-Hash: yes\nArchitectures: {' '.join(arches)}\nComponents: main\nSHA256:\n"
            + "".join(sums)
        )
        (self.root / "dists" / SUITE / "InRelease").write_bytes(self.signers.sign(release, who))
        return result

    def serve(self, suite: str, arch: str, packages: list[FakePackage], *, base: str = "") -> None:
        """A signed ``suite`` under ``<root>/<base>`` with one arch's index holding ``packages``."""
        top = self.root / base if base else self.root
        stanzas = []
        for pkg in packages:
            deb = build_deb(pkg.name, pkg.version, arch, pkg.files, pkg.depends)
            pool = f"pool/main/{pkg.name[0]}/{pkg.name}/{pkg.name}_{pkg.version}_{arch}.deb"
            (top / pool).parent.mkdir(parents=True, exist_ok=True)
            (top / pool).write_bytes(deb)
            stanza = f"Package: {pkg.name}\nVersion: {pkg.version}\nArchitecture: {arch}\n"
            stanza += f"Depends: {pkg.depends}\n" if pkg.depends else ""
            stanza += f"Filename: {pool}\nSize: {len(deb)}\nSHA256: {hashlib.sha256(deb).hexdigest()}\n"
            stanzas.append(stanza)
        packed = lzma.compress("\n".join(stanzas).encode())
        index = top / "dists" / suite / f"main/binary-{arch}"
        index.mkdir(parents=True, exist_ok=True)
        (index / "Packages.xz").write_bytes(packed)
        release = (
            f"Origin: Debian\nSuite: {suite}\nCodename: {suite}\n"
            f"Date: {format_datetime(datetime.now(UTC), usegmt=True)}\n"
            f"Architectures: {arch}\nComponents: main\nSHA256:\n"
            f" {hashlib.sha256(packed).hexdigest()} {len(packed)} main/binary-{arch}/Packages.xz\n"
        )
        (top / "dists" / suite / "InRelease").write_bytes(self.signers.sign(release))


@pytest.fixture
def mirror(signers: Signers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMirror]:
    root = tmp_path / "mirror"
    root.mkdir()
    hits: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:
            hits.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(debian, "MIRROR", url)
    monkeypatch.setattr(debian, "SECURITY_MIRROR", f"{url}/security")
    monkeypatch.setattr(debian, "KEYRING", signers.keyring)
    try:
        yield FakeMirror(root, url, signers, hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_fetches_verifies_and_extracts(mirror: FakeMirror) -> None:
    want = mirror.publish()
    tree = debian.suite_package_tree(PACKAGE, SUITE)
    assert (tree / STUB).read_bytes() == b"MZ stub 257.99-1"
    assert tree.parent == debian.cache_dir() / "trees"
    deb = debian.suite_deb_file(PACKAGE, SUITE)
    assert deb == debian.cache_dir() / "debs" / f"{PACKAGE}_257.99-1_amd64.deb"
    assert hashlib.sha256(deb.read_bytes()).hexdigest() == want["sha256"]
    pkg = debian.resolve_suite_package(PACKAGE, SUITE)
    assert (pkg.suite, pkg.package, pkg.version, pkg.filename) == (SUITE, PACKAGE, "257.99-1", want["pool"])
    # Packages.xz came by hash (immune to a mirror update between requests), everything once.
    assert mirror.hits == [
        f"/dists/{SUITE}/InRelease",
        next(h for h in mirror.hits if "/by-hash/SHA256/" in h),
        f"/{want['pool']}",
    ]
    memo = (debian.cache_dir() / "suites.json").read_text()
    assert '"version": "257.99-1"' in memo


def test_warm_cache_is_offline_and_pinned(mirror: FakeMirror, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror.publish()
    first = debian.suite_package_tree(PACKAGE, SUITE)
    requests_made = len(mirror.hits)
    mirror.publish("258.1-1")  # the mirror moves on: a warm cache must not notice
    assert debian.suite_package_tree(PACKAGE, SUITE) == first
    assert len(mirror.hits) == requests_made
    monkeypatch.setattr(debian, "MIRROR", UNREACHABLE)
    assert debian.suite_package_tree(PACKAGE, SUITE) == first
    assert debian.systemd_boot_tree(SUITE) == first
    assert debian.resolve_suite_package(PACKAGE, SUITE).version == "257.99-1"
    # Without the .deb the suite is asked again, and the new answer is remembered.
    monkeypatch.setattr(debian, "MIRROR", mirror.url)
    debian.suite_deb_file(PACKAGE, SUITE).unlink()
    assert (debian.suite_package_tree(PACKAGE, SUITE) / STUB).read_bytes() == b"MZ stub 258.1-1"
    assert debian.resolve_suite_package(PACKAGE, SUITE).version == "258.1-1"


def test_cold_cache_without_network_is_a_clear_error(
    mirror: FakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(debian, "MIRROR", UNREACHABLE)
    with pytest.raises(debian.DebianError, match=r"GET http://127\.0\.0\.1:9/dists/trixie/InRelease failed"):
        debian.suite_deb_file(PACKAGE, SUITE)


def _rewrite_signed(mirror: FakeMirror, old: bytes, new: bytes) -> None:
    path = mirror.root / "dists" / SUITE / "InRelease"
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))


def test_tampered_inrelease_is_rejected(mirror: FakeMirror) -> None:
    mirror.publish()
    _rewrite_signed(mirror, b"Label: Debian", b"Label: Debiam")
    with pytest.raises(debian.DebianError, match="OpenPGP signature not valid"):
        debian.suite_deb_file(PACKAGE, SUITE)
    assert not (debian.cache_dir() / "suites.json").exists()


def test_unsigned_text_around_the_signature_is_ignored(mirror: FakeMirror) -> None:
    """Only gpgv's output counts: a replayed bookworm release with a "trixie" header bolted on fails."""
    mirror.publish(codename="bookworm")
    path = mirror.root / "dists" / SUITE / "InRelease"
    path.write_bytes(b"Codename: trixie\n\n" + path.read_bytes() + b"\nCodename: trixie\n")
    with pytest.raises(
        debian.DebianError, match="signed for Codename 'bookworm' / Suite 'stable', not 'trixie'"
    ):
        debian.suite_deb_file(PACKAGE, SUITE)


def test_unknown_key_is_rejected(mirror: FakeMirror) -> None:
    mirror.publish(who="stranger")
    with pytest.raises(debian.DebianError, match="OpenPGP signature not valid"):
        debian.suite_deb_file(PACKAGE, SUITE)


def test_expired_release_is_rejected(mirror: FakeMirror) -> None:
    past = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    mirror.publish(extra_release=f"Valid-Until: {past}\n")
    with pytest.raises(debian.DebianError, match="expired"):
        debian.suite_deb_file(PACKAGE, SUITE)


def test_corrupted_packages_index_is_rejected(mirror: FakeMirror) -> None:
    mirror.publish(corrupt="packages")
    with pytest.raises(
        debian.DebianError, match=r"Packages\.xz: got \d+ bytes with SHA256 .*, the index says"
    ):
        debian.suite_deb_file(PACKAGE, SUITE)


def test_corrupted_download_is_rejected_and_not_cached(mirror: FakeMirror) -> None:
    want = mirror.publish(corrupt="deb")
    with pytest.raises(debian.DebianError, match=rf"{want['pool']}: got \d+ bytes with SHA256"):
        debian.suite_deb_file(PACKAGE, SUITE)
    assert list((debian.cache_dir() / "debs").iterdir()) == []


def test_damaged_cached_deb_is_an_error(mirror: FakeMirror, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror.publish()
    deb = debian.suite_deb_file(PACKAGE, SUITE)
    data = bytearray(deb.read_bytes())
    data[100] ^= 0xFF
    deb.write_bytes(bytes(data))
    monkeypatch.setattr(debian, "MIRROR", UNREACHABLE)  # detected from the cache alone
    with pytest.raises(debian.DebianError, match="the cache is damaged"):
        debian.suite_package_tree(PACKAGE, SUITE)


def test_missing_package_is_a_clear_error(mirror: FakeMirror) -> None:
    mirror.publish()
    with pytest.raises(debian.DebianError, match=r"no no-such-package \(amd64\) in trixie/main/binary-amd64"):
        debian.suite_deb_file("no-such-package", SUITE)


# --------------------------------------------------------------------------------------------------
# other architectures, metapackages, the arm64 kernel


def test_arch_parameter_selects_the_index_and_is_remembered_apart(
    mirror: FakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = mirror.publish(arches=("amd64", "arm64"))
    arm = debian.suite_deb_file(PACKAGE, SUITE, arch="arm64")
    assert arm.name == f"{PACKAGE}_257.99-1_arm64.deb"
    assert hashlib.sha256(arm.read_bytes()).hexdigest() == want["debs"]["arm64"]
    assert "/dists/trixie/main/binary-arm64/by-hash/SHA256/" in " ".join(mirror.hits)
    assert not any("binary-amd64" in hit for hit in mirror.hits)
    tree = debian.systemd_boot_tree(SUITE, "arm64")
    assert (tree / STUB).read_bytes() == b"MZ stub 257.99-1 (arm64)"
    # The default stays amd64, with its own memo entry and file (existing callers are unaffected).
    assert (debian.suite_package_tree(PACKAGE, SUITE) / STUB).read_bytes() == b"MZ stub 257.99-1"
    pkg = debian.resolve_suite_package(PACKAGE, SUITE, arch="arm64")
    assert (pkg.architecture, pkg.deb_name) == ("arm64", arm.name)
    memo = (debian.cache_dir() / "suites.json").read_text()
    assert f'"{SUITE}/main/arm64/{PACKAGE}"' in memo and f'"{SUITE}/main/amd64/{PACKAGE}"' in memo
    monkeypatch.setattr(debian, "MIRROR", UNREACHABLE)  # warm: offline for both
    assert debian.suite_deb_file(PACKAGE, SUITE, arch="arm64") == arm
    assert debian.suite_deb_file(PACKAGE, SUITE).name == f"{PACKAGE}_257.99-1_amd64.deb"
    monkeypatch.setattr(debian, "MIRROR", mirror.url)
    with pytest.raises(debian.DebianError, match=r"no no-such-package \(arm64\) in trixie/main/binary-arm64"):
        debian.suite_deb_file("no-such-package", SUITE, arch="arm64")


def test_arch_package_tree_uses_the_host_suite_for_other_arches(
    mirror: FakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(debian, "host_suite", lambda: "bookworm")
    mirror.serve("bookworm", "arm64", [FakePackage("busybox-static", "1:1.35-1", {"bin/busybox": b"bb"})])
    tree = debian.arch_package_tree("busybox-static", "arm64")
    assert (tree / "bin/busybox").read_bytes() == b"bb"
    assert tree.name == "busybox-static_1%3a1.35-1_arm64"


KVER_NEW, KVER_OLD = "6.1.0-99-arm64", "6.1.0-90-arm64"
VMLINUZ = b"MZ" + b"\0" * 0x36 + b"ARM\x64" + b"\0" * 8


def _kernel(kver: str, version: str) -> list[FakePackage]:
    """``linux-image-arm64`` pinned to a real package, and an unrelated newer candidate of that name."""
    real = f"linux-image-{kver}"
    files = {f"boot/vmlinuz-{kver}": VMLINUZ, f"lib/modules/{kver}/modules.order": b""}
    return [
        FakePackage("linux-image-arm64", version, depends=f"{real} (= {version}), initramfs-tools | x"),
        FakePackage(real, version, files),
        FakePackage(real, f"{version}+rebuild", {"other": b""}),
        FakePackage("linux-image-6.1.0-99-arm64-dbg", "9", {"dbg": b""}),
    ]


def test_metapackage_resolves_to_the_pinned_real_package(mirror: FakeMirror) -> None:
    mirror.serve("bookworm", "arm64", _kernel(KVER_NEW, "6.1.200-1"))
    pkg = debian.resolve_suite_package("linux-image-arm64", "bookworm", arch="arm64")
    assert (pkg.package, pkg.version, pkg.architecture) == (f"linux-image-{KVER_NEW}", "6.1.200-1", "arm64")
    assert pkg.deb_name == f"linux-image-{KVER_NEW}_6.1.200-1_arm64.deb"
    tree = debian.suite_package_tree("linux-image-arm64", "bookworm", arch="arm64")
    assert (tree / f"boot/vmlinuz-{KVER_NEW}").read_bytes() == VMLINUZ


def test_security_suite_comes_from_the_security_mirror(mirror: FakeMirror) -> None:
    mirror.serve("bookworm-security", "arm64", _kernel(KVER_NEW, "6.1.200-1"), base="security")
    pkg = debian.resolve_suite_package("linux-image-arm64", "bookworm-security", arch="arm64")
    assert pkg.suite == "bookworm-security" and pkg.filename.startswith("pool/")
    debian.suite_deb_file("linux-image-arm64", "bookworm-security", arch="arm64")
    assert all(hit.startswith("/security/") for hit in mirror.hits)


@pytest.fixture
def amd64_kernel(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host's apt candidate for linux-image-amd64 as kernel_package sees it (mutable: [version])."""
    version = ["6.1.200-1"]
    monkeypatch.setattr(debian, "host_suite", lambda: "bookworm")
    monkeypatch.setattr(
        debian, "resolve_package", lambda name: ("linux-image-6.1.0-99-amd64", version[0], "amd64")
    )
    return version


def test_kernel_package_pairs_with_the_amd64_version(
    mirror: FakeMirror, amd64_kernel: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror.serve("bookworm-security", "arm64", _kernel(KVER_NEW, "6.1.200-1"), base="security")
    mirror.serve("bookworm", "arm64", _kernel(KVER_OLD, "6.1.150-1"))
    pkg = debian.kernel_package("arm64")
    assert (pkg.suite, pkg.package, pkg.version) == (
        "bookworm-security",
        f"linux-image-{KVER_NEW}",
        "6.1.200-1",
    )
    tree, kver = debian.kernel_tree("arm64")
    assert kver == KVER_NEW and (tree / f"boot/vmlinuz-{kver}").read_bytes() == VMLINUZ
    # Warm: no mirror at all.
    monkeypatch.setattr(debian, "MIRROR", UNREACHABLE)
    monkeypatch.setattr(debian, "SECURITY_MIRROR", UNREACHABLE)
    assert debian.kernel_package("arm64") == pkg
    assert debian.kernel_tree("arm64") == (tree, kver)
    # The amd64 kernel moving to the point release's version makes a fresh pairing.
    monkeypatch.setattr(debian, "MIRROR", mirror.url)
    monkeypatch.setattr(debian, "SECURITY_MIRROR", f"{mirror.url}/security")
    amd64_kernel[0] = "6.1.150-1"
    assert debian.kernel_package("arm64").package == f"linux-image-{KVER_OLD}"
    assert debian.kernel_tree("arm64")[1] == KVER_OLD


def test_kernel_package_without_a_match_takes_the_newest(mirror: FakeMirror, amd64_kernel: list[str]) -> None:
    amd64_kernel[0] = "6.1.300-1"  # the host's lists are newer than the mirror (or older: same answer)
    mirror.serve("bookworm-security", "arm64", _kernel(KVER_NEW, "6.1.200-1"), base="security")
    mirror.serve("bookworm", "arm64", _kernel(KVER_OLD, "6.1.150-1"))
    assert debian.kernel_package("arm64").version == "6.1.200-1"


def test_kernel_package_with_an_unreadable_suite_needs_an_exact_match(
    mirror: FakeMirror, amd64_kernel: list[str]
) -> None:
    """No security suite: fine if the point release has the amd64 version, an error otherwise."""
    mirror.serve("bookworm", "arm64", _kernel(KVER_OLD, "6.1.150-1"))
    with pytest.raises(debian.DebianError, match=r"no linux-image-arm64 \(= 6\.1\.200-1\) found: .*HTTP 404"):
        debian.kernel_package("arm64")
    amd64_kernel[0] = "6.1.150-1"
    assert debian.kernel_package("arm64").suite == "bookworm"


def test_host_suite_reads_os_release(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert debian.host_suite()  # whatever this machine runs
    real = Path.read_text

    def fake(path: Path, *args: Any, **kwargs: Any) -> str:
        if str(path) == "/etc/os-release":
            return 'PRETTY_NAME="Debian"\nVERSION_CODENAME="trixie"\n'
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", fake)
    assert debian.host_suite() == "trixie"
