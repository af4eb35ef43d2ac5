"""The streaming newc writer/reader, checked against GNU cpio itself (both directions)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from worker.imager import cpio

EPOCH = 1559424892


def _tree(root: Path) -> Path:
    """Odd sizes (padding), an empty file, nested and empty directories, a symlink, a 0755 file."""
    (root / "d/sub/deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "d/a.txt").write_bytes(b"hello\n")
    (root / "d/sub/b.bin").write_bytes(bytes(range(256)) * 5 + b"xyz")
    (root / "d/sub/deeper/c").write_bytes(b"")
    (root / "d/tool").write_bytes(b"#!/bin/sh\n")
    (root / "d/tool").chmod(0o755)
    (root / "d/link").symlink_to("a.txt")
    (root / "Z-upper").write_bytes(b"sorted before lower case\n")
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.name == "tool" else 0o644)
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)
    return root


def _dir_nlink_is_computed_value(root: Path) -> bool:
    """GNU cpio writes st_nlink; ours is 2 + subdirectories (ext4/tmpfs agree, btrfs does not)."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            subdirs = sum(1 for p in path.iterdir() if p.is_dir() and not p.is_symlink())
            if path.stat().st_nlink != 2 + subdirs:
                return False
    return True


def test_walk_sorts_bytewise_and_lists_directories_first(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    (root / "d/linkdir").symlink_to("sub")
    assert list(cpio.walk(root)) == [
        "Z-upper",
        "d",
        "d/a.txt",
        "d/link",
        "d/linkdir",  # a symlink to a directory is listed, not followed
        "d/sub",
        "d/sub/b.bin",
        "d/sub/deeper",
        "d/sub/deeper/c",
        "d/tool",
        "empty-dir",
    ]


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_write_tree_is_byte_identical_to_gnu_cpio(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    if not _dir_nlink_is_computed_value(root):
        pytest.skip("this filesystem reports other directory link counts than ext4")
    names = list(cpio.walk(root))
    gnu = subprocess.run(
        ["cpio", "-H", "newc", "--create", "--reproducible", "--quiet", "-R", "+0:+0"],
        input="".join(f"{n}\n" for n in names).encode(),
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    ours = io.BytesIO()
    cpio.write_tree(ours, root, names, mtime=EPOCH)
    assert ours.getvalue() == gnu
    assert len(gnu) % 512 == 0


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_extracts_what_we_write(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    with open(archive, "wb") as f, cpio.NewcWriter(f, mtime=EPOCH) as w:
        w.add_directory("etc", 0o750)
        w.add_bytes("etc/motd", b"x" * 1001, 0o600)
        w.add_symlink("motd", "etc/motd")
        w.add_directory("usr")
        big = tmp_path / "big"
        big.write_bytes(os.urandom(3 << 20))
        w.add_file("usr/big", big, 0o644)
    out = tmp_path / "out"
    out.mkdir()
    with open(archive, "rb") as src:
        subprocess.run(["cpio", "-idm", "--quiet"], stdin=src, cwd=out, check=True)
    assert (out / "etc/motd").read_bytes() == b"x" * 1001
    assert stat.S_IMODE((out / "etc/motd").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "etc").stat().st_mode) == 0o750
    assert os.readlink(out / "motd") == "etc/motd"
    assert (out / "usr/big").read_bytes() == big.read_bytes()
    assert (out / "usr/big").stat().st_mtime == EPOCH


def test_round_trip_through_a_pipe(tmp_path: Path) -> None:
    """The reader never seeks: it works on a decompressor's stdout; big members are streamed out."""
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom((2 << 20) + 3))
    archive = tmp_path / "a.cpio"
    with open(archive, "wb") as f, cpio.NewcWriter(f, mtime=EPOCH) as w:
        w.add_directory("dir")
        w.add_bytes("dir/small", b"abc", 0o640)
        w.add_file("dir/payload", payload)
        w.add_symlink("dir/l", "small")
    with subprocess.Popen(["cat", str(archive)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        reader = cpio.NewcReader(proc.stdout)
        seen = []
        for member in reader:
            seen.append((member.name, stat.S_IMODE(member.mode), member.size, member.mtime, member.ino))
            if member.name == "dir/payload":
                with open(tmp_path / "copy", "wb") as out:
                    reader.copy_data(out)
            elif member.name == "dir/small":
                assert reader.read_data() == b"abc"
            elif member.name == "dir/l":
                assert member.is_symlink and reader.read_data() == b"small"
        rest = proc.stdout.read()
    assert seen == [
        ("dir", 0o755, 0, EPOCH, 0),
        ("dir/small", 0o640, 3, EPOCH, 1),
        ("dir/payload", 0o644, payload.stat().st_size, EPOCH, 2),
        ("dir/l", 0o777, 5, EPOCH, 3),
    ]
    assert (tmp_path / "copy").read_bytes() == payload.read_bytes()
    assert reader.position + len(rest) == archive.stat().st_size
    assert rest.strip(b"\0") == b""  # only the padding to 512 bytes is left after the trailer


def test_read_data_returns_big_members_whole(tmp_path: Path) -> None:
    blob = os.urandom((3 << 20) + 5)
    archive = tmp_path / "a.cpio"
    with open(archive, "wb") as f, cpio.NewcWriter(f, mtime=0) as w:
        w.add_bytes("big", blob)
        w.add_bytes("after", b"ok")
    with subprocess.Popen(["cat", str(archive)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        reader = cpio.NewcReader(proc.stdout)
        got = {m.name: reader.read_data() for m in reader}
        proc.stdout.read()
    assert got == {"big": blob, "after": b"ok"}


def test_unread_data_is_skipped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with cpio.NewcWriter(buf, mtime=0) as w:
        w.add_bytes("a", b"1" * 7)
        w.add_bytes("b", b"2" * 9)
        w.add_bytes("c", b"3")
    buf.seek(0)
    reader = cpio.NewcReader(buf)
    names = []
    for member in reader:
        names.append(member.name)
        if member.name == "b":
            assert reader.read_data() == b"2" * 9
    assert names == ["a", "b", "c"]


def test_concatenated_archives_and_padding(tmp_path: Path) -> None:
    first, second = io.BytesIO(), io.BytesIO()
    with cpio.NewcWriter(first, mtime=1) as w:
        w.add_bytes("kernel/x86/microcode/AuthenticAMD.bin", b"ucode")
    with cpio.NewcWriter(second, mtime=2) as w:
        w.add_bytes("init", b"#!")
    stream = io.BytesIO(first.getvalue() + second.getvalue())
    reader = cpio.NewcReader(stream)
    assert [m.name for m in reader] == ["kernel/x86/microcode/AuthenticAMD.bin"]
    skipped = cpio.skip_padding(stream)
    assert reader.position + skipped == len(first.getvalue())
    assert [(m.name, m.mtime) for m in cpio.NewcReader(stream)] == [("init", 2)]


def test_trailer_matches_gnu_cpio() -> None:
    buf = io.BytesIO()
    cpio.NewcWriter(buf, mtime=EPOCH).close()
    data = buf.getvalue()
    assert len(data) == 512
    header = data[:110]
    fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    # ino, mode, uid, gid, nlink, mtime, size, devmaj, devmin, rdevmaj, rdevmin, namesize, check
    assert fields == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]
    assert data[110:121] == b"TRAILER!!!\0"


@pytest.mark.parametrize("name", ["", "/", ".", "../etc", "a/../../b", "nul\0byte"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(cpio.CpioError):
        cpio.NewcWriter(io.BytesIO(), mtime=0).add_bytes(name, b"")


def test_leading_slash_is_stripped() -> None:
    buf = io.BytesIO()
    with cpio.NewcWriter(buf, mtime=0) as w:
        w.add_bytes("/abs/name", b"")
    buf.seek(0)
    assert [m.name for m in cpio.NewcReader(buf)] == ["abs/name"]


def test_fields_must_fit() -> None:
    with pytest.raises(cpio.CpioError, match="does not fit"):
        cpio.NewcWriter(io.BytesIO(), mtime=1 << 33).add_bytes("x", b"")


def test_special_files_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(cpio.CpioError, match="only directories"):
        cpio.NewcWriter(io.BytesIO(), mtime=0).add_path("fifo", tmp_path / "fifo")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"070707" + b"0" * 104, "no newc header"),
        (b"070701" + b"Z" * 104, "corrupt"),
    ],
)
def test_malformed_archives(data: bytes, message: str) -> None:
    with pytest.raises(cpio.CpioError, match=message):
        list(cpio.NewcReader(io.BytesIO(data)))


def test_truncated_member_data() -> None:
    buf = io.BytesIO()
    with cpio.NewcWriter(buf, mtime=0) as w:
        w.add_bytes("a", b"x" * 100)
        w.add_bytes("b", b"y")
    cut = io.BytesIO(buf.getvalue()[:150])
    with pytest.raises(cpio.CpioError, match="truncated"):
        list(cpio.NewcReader(cut))


def test_writer_refuses_members_after_close() -> None:
    w = cpio.NewcWriter(io.BytesIO(), mtime=0)
    w.close()
    w.close()  # idempotent
    with pytest.raises(cpio.CpioError, match="closed"):
        w.add_bytes("late", b"")
