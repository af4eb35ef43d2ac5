"""Staging trees for images built from plain files (ISOs, disk partitions).

Files are copied or hard-linked into a scratch tree, stamped with the release's epoch, and copied into
FAT images in sorted order, so the same inputs give the same bytes on any host.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from worker.imager import tools

__all__ = ["Stage", "fat_copy"]


class Stage:
    """The scratch tree of one image plus what must not be touched (hard links to read-only inputs)."""

    def __init__(self, workdir: Path, epoch: int, tree: str = "iso") -> None:
        if epoch < 0:
            raise ValueError(f"epoch must not be negative: {epoch}")
        workdir = workdir.absolute()
        self.workdir = workdir
        self.tree = workdir / tree
        self.epoch = epoch
        self.linked: set[Path] = set()
        self.tmp = workdir / "tmp"
        self.tree.mkdir(mode=0o755)
        self.tmp.mkdir(mode=0o755)

    @property
    def env(self) -> dict[str, str]:
        """Tool environment: SOURCE_DATE_EPOCH as upstream's process has it, temp files kept in workdir."""
        return {
            "SOURCE_DATE_EPOCH": str(self.epoch),
            "GRUB_FAT_SERIAL_NUMBER": f"{self.epoch & 0xFFFFFFFF:x}",
            "TMPDIR": str(self.tmp),
        }

    def mkdir(self, rel: str) -> Path:
        path = self.tree / rel
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        return path

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> Path:
        path = self.tree / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def copy(self, src: Path, rel: str) -> Path:
        """A private copy (its timestamps get touched and it goes into FAT images)."""
        dst = self.tree / rel
        dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o644)
        return dst

    def link(self, src: Path, rel: str) -> Path:
        """Hard link (copy across filesystems) for files that only go into the ISO9660 tree.

        They are never touched (that would change the shared input's inode); xorriso's
        ``-volume_date all_file_dates`` fixes their dates in the ISO, and grub-mkrescue's ``-r``
        their owner and mode.
        """
        dst = self.tree / rel
        dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            return self.copy(src, rel)
        self.linked.add(dst)
        return dst

    def touch(self) -> None:
        """``utils.TouchFiles``: every staged path gets the epoch as atime and mtime.

        Directories also get mode 0755 whatever the umask (xorrisofs records modes without ``-r``).
        """
        stamp = (self.epoch, self.epoch)
        for dirpath, dirnames, filenames in os.walk(self.tree):
            for name in dirnames:
                Path(dirpath, name).chmod(0o755)
                os.utime(Path(dirpath, name), stamp)
            for name in filenames:
                path = Path(dirpath, name)
                if path not in self.linked:
                    os.utime(path, stamp, follow_symlinks=False)
        self.tree.chmod(0o755)
        os.utime(self.tree, stamp)


def fat_copy(image: Path, root: Path, names: Sequence[str], env: Mapping[str, str]) -> None:
    """Copies ``root/<name>`` trees into the FAT ``image`` like ``mcopy -s -p -Q -m``, in sorted order.

    ``mcopy -s`` would follow the host's readdir order (hash order on ext4, different per filesystem),
    which decides the order of directory entries and clusters; one ``mmd`` then one ``mcopy`` per
    directory with sorted names gives the same image everywhere.
    """
    dirs: list[str] = []
    files: dict[str, list[Path]] = {}
    for name in names:
        top = root / name
        if top.is_dir():
            dirs.append(name)
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                rel = Path(dirpath).relative_to(root).as_posix()
                dirs += [f"{rel}/{d}" for d in dirnames]
                if filenames:
                    files[rel] = [Path(dirpath, f) for f in sorted(filenames)]
        else:
            files.setdefault("", []).append(top)
    if dirs:
        tools.run(["mmd", "-i", image, *(f"::/{d}" for d in dirs)], env=env)
    for rel, paths in files.items():
        tools.run(["mcopy", "-p", "-Q", "-m", "-i", image, *paths, f"::/{rel}/" if rel else "::/"], env=env)
