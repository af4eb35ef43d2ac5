"""The boot report's Secure Boot flag: ``secure_boot_enabled`` of ``devstack/release/init/report.sh``.

Run on the host with the busybox the payload ships, on fake efivarfs files: 4 attribute bytes
(``0x06``: boot service + runtime access), then the value byte. efivarfs files cannot be seeked
(``lseek`` fails with ``ESPIPE``), which a plain file can only be made to do under strace's fault
injection; with it, the former ``od -j 4`` read is shown to print the attribute byte instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack import debian

REPORT_SH = Path(__file__).resolve().parents[3] / "devstack/release/init/report.sh"
ATTRIBUTES = b"\x06\x00\x00\x00"
#: lseek fails as on efivarfs (``no_llseek``), in busybox and every applet it runs.
NO_LSEEK = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=lseek", "-e", "inject=lseek:error=ESPIPE"]


def _busybox() -> str:
    return str(debian.package_tree("busybox-static") / "bin/busybox")


def _enabled(path: Path, prefix: tuple[str, ...] = ()) -> bool:
    env = {"IMAGE_FACTORY_REPORT_LIB": "1", "IMAGE_FACTORY_TMP": str(path.parent), "PATH": os.environ["PATH"]}
    script = '. "$1"; if secure_boot_enabled "$2"; then echo yes; else echo no; fi'
    proc = subprocess.run(
        [*prefix, _busybox(), "sh", "-c", script, "sh", str(REPORT_SH), str(path)],
        env=env,
        capture_output=True,
        check=True,
    )
    return {"yes\n": True, "no\n": False}[proc.stdout.decode()]


@pytest.mark.parametrize(
    ("content", "want"),
    [
        (ATTRIBUTES + b"\x01", True),
        (ATTRIBUTES + b"\x00", False),
        (b"\x01\x00\x00\x00\x00", False),  # a 1 among the attributes is not the value
        (ATTRIBUTES, False),  # no value byte
        (b"", False),
    ],
)
def test_secure_boot_flag(content: bytes, want: bool, tmp_path: Path) -> None:
    var = tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    var.write_bytes(content)
    assert _enabled(var) is want


def test_missing_variable_is_not_enabled(tmp_path: Path) -> None:
    assert _enabled(tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c") is False


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
def test_flag_is_read_without_seeking(tmp_path: Path) -> None:
    var = tmp_path / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    var.write_bytes(ATTRIBUTES + b"\x01")
    assert _enabled(var, tuple(NO_LSEEK)) is True
    # the emulation reproduces the bug: the old read's seek fails and od prints byte 0 (the attributes)
    old = subprocess.run(
        [*NO_LSEEK, _busybox(), "od", "-A", "n", "-t", "u1", "-j", "4", "-N", "1", str(var)],
        capture_output=True,
        check=False,
    )
    assert old.stdout.split() == [b"6"]
