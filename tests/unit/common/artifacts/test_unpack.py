import io
import tarfile
from pathlib import Path

import pytest

from common.artifacts.unpack import UnpackError, apply_layers


def tar(
    *members: tuple[str, str, bytes | str | None], pax: dict[str, dict[str, str]] | None = None
) -> io.BytesIO:
    """Members are (kind, name, data-or-linkname); kinds: f file, d dir, l symlink, h hard link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as archive:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            info.pax_headers = (pax or {}).get(name, {})
            if kind == "f":
                payload = data.encode() if isinstance(data, str) else (data or b"")
                info.size = len(payload)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                archive.addfile(info, io.BytesIO(payload))
            elif kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                archive.addfile(info)
            elif kind == "h":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                archive.addfile(info)
    buffer.seek(0)
    return buffer


def test_layers_apply_in_order_with_whiteouts(tmp_path: Path) -> None:
    lower = tar(
        ("d", "etc", None),
        ("f", "etc/keep", "keep"),
        ("f", "etc/gone", "gone"),
        ("d", "opaque", None),
        ("f", "opaque/old", "old"),
        ("f", "bin/run.sh", "#!/bin/sh\n"),
    )
    upper = tar(
        ("f", "etc/.wh.gone", ""),
        ("f", "opaque/.wh..wh..opq", ""),
        ("f", "opaque/new", "new"),
        ("f", "etc/keep", "replaced"),
        ("l", "link", "etc/keep"),
        ("h", "hard", "etc/keep"),
    )
    apply_layers([lower, upper], tmp_path)
    assert (tmp_path / "etc/keep").read_text() == "replaced"
    assert not (tmp_path / "etc/gone").exists()
    assert sorted(p.name for p in (tmp_path / "opaque").iterdir()) == ["new"]
    assert (tmp_path / "link").readlink() == Path("etc/keep")
    assert (tmp_path / "hard").read_text() == "replaced"
    assert (tmp_path / "bin/run.sh").stat().st_mode & 0o111


def test_selinux_labels_are_returned_not_set(tmp_path: Path) -> None:
    layer = tar(
        ("f", "rootfs/usr/local/etc/talos/config.yaml", "x"),
        pax={
            "rootfs/usr/local/etc/talos/config.yaml": {
                "SCHILY.xattr.security.selinux": "system_u:object_r:x_t:s0"
            }
        },
    )
    labels = apply_layers([layer], tmp_path)
    assert labels == {"rootfs/usr/local/etc/talos/config.yaml": "system_u:object_r:x_t:s0"}


@pytest.mark.parametrize(
    "members",
    [
        [("f", "../escape", "x")],
        [("f", "a/../../escape", "x")],
        [("l", "evil", "/tmp"), ("f", "evil/planted", "x")],
        [("l", "evil", "../../"), ("f", "evil/planted", "x")],
        [("h", "hard", "/etc/passwd")],
    ],
)
def test_entries_that_leave_the_root_are_refused(tmp_path: Path, members: list[tuple[str, str, str]]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnpackError):
        apply_layers([tar(*members)], dest)
    assert not (tmp_path / "escape").exists()
    assert not Path("/tmp/planted").exists()


def test_absolute_names_stay_inside(tmp_path: Path) -> None:
    apply_layers([tar(("f", "/abs/file", "x"))], tmp_path)
    assert (tmp_path / "abs/file").read_text() == "x"
