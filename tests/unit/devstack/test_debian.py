"""Packages from another Debian suite without apt (``devstack.debian.suite_deb_file``).

Everything here runs against a fake mirror on loopback whose ``InRelease`` is signed with a throw-away
OpenPGP key, so every failure mode (bad signature, unknown key, replayed or expired release, wrong
hashes, damaged cache) is provoked without the network and without touching the real cache: each
test has its own ``XDG_CACHE_HOME``. The real trixie chain is exercised by test_payload.py.
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

    def deb(self, version: str, stub: bytes) -> tuple[str, bytes]:
        """A real (tiny) systemd-boot-efi .deb: (pool path, bytes)."""
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp, "tree")
            (tree / "DEBIAN").mkdir(parents=True)
            (tree / "DEBIAN/control").write_text(
                f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: amd64\n"
                "Maintainer: Tests <tests@example.invalid>\nDescription: fake stub\n"
            )
            (tree / STUB).parent.mkdir(parents=True)
            (tree / STUB).write_bytes(stub)
            out = Path(tmp, "out.deb")
            subprocess.run(
                ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(out)],
                capture_output=True,
                check=True,
            )
            data = out.read_bytes()
        return f"pool/main/s/systemd/{PACKAGE}_{version}_amd64.deb", data

    def publish(
        self,
        version: str = "257.99-1",
        *,
        codename: str = SUITE,
        who: str = "trusted",
        extra_release: str = "",
        corrupt: str | None = None,
    ) -> dict[str, Any]:
        """Write pool file, Packages.xz (plain and by-hash) and a signed InRelease; ``corrupt`` damages
        "packages" or "deb" after the hashes were taken."""
        pool, deb = self.deb(version, f"MZ stub {version}".encode())
        stanzas = [
            # an older version and another package: the resolver must pick the right stanza
            f"Package: {PACKAGE}\nVersion: 257.1-1\nArchitecture: amd64\nFilename: pool/gone.deb\n"
            f"Size: 1\nSHA256: {'0' * 64}\n",
            f"Package: {PACKAGE}\nSource: systemd\nVersion: {version}\nArchitecture: amd64\n"
            f"Description: simple UEFI boot manager - EFI binaries\n long description\n"
            f"Filename: {pool}\nSize: {len(deb)}\nSHA256: {hashlib.sha256(deb).hexdigest()}\n",
            f"Package: {PACKAGE}-signed\nVersion: 999\nArchitecture: amd64\nFilename: pool/x.deb\n"
            f"Size: 1\nSHA256: {'1' * 64}\n",
        ]
        packages = lzma.compress("\n".join(stanzas).encode())
        sha = hashlib.sha256(packages).hexdigest()
        release = (
            f"Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: {codename}\n"
            f"Date: {format_datetime(datetime.now(UTC), usegmt=True)}\n{extra_release}"
            "Acquire-By-Hash: yes\nArchitectures: amd64\nComponents: main\nSHA256:\n"
            f" {'2' * 64}  1234 main/binary-amd64/Packages\n"
            f" {sha} {len(packages)} main/binary-amd64/Packages.xz\n"
        )
        if corrupt == "packages":
            packages = packages[:-1] + bytes([packages[-1] ^ 1])
        if corrupt == "deb":
            deb = deb[:-1] + bytes([deb[-1] ^ 1])
        index = self.root / "dists" / SUITE / "main/binary-amd64"
        (index / "by-hash/SHA256").mkdir(parents=True, exist_ok=True)
        (index / "Packages.xz").write_bytes(packages)
        (index / "by-hash/SHA256" / sha).write_bytes(packages)
        (self.root / pool).parent.mkdir(parents=True, exist_ok=True)
        (self.root / pool).write_bytes(deb)
        (self.root / "dists" / SUITE / "InRelease").write_bytes(self.signers.sign(release, who))
        return {"version": version, "sha256": hashlib.sha256(deb).hexdigest(), "pool": pool}


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
