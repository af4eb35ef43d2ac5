"""System extensions for the initramfs: loading, compatibility, per-extension squashfs and ``modules.dep``.

Follows Talos v1.14.0-rc.1 (``pkg/machinery/extensions``, ``internal/pkg/extensions``,
``pkg/imager/extensions``) with the target version's quirks, rootless and without touching the
extension trees (they are shared, read-only caches): what upstream *moves* out of an extension
(microcode, firmware) is copied into the staging tree and left out of the squashfs instead.
Squashfs images are made with ``tar2sqfs`` from a tar stream (root ownership, fixed mtimes, SELinux
labels as PAX xattr records) because SELinux labels cannot be set on disk without privileges.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import IO, Any

import semver
import yaml

from common.artifacts.unpack import SELINUX_XATTR, apply_layers
from common.errors import InvalidInputError
from common.schematic.emit import Struct, marshal_value
from common.talos.quirks import Quirks
from common.talos.version import parse_strict, release_core
from worker.imager.tools import ToolError, run

__all__ = [
    "MODULES_DEP",
    "Extension",
    "ExtensionError",
    "ExtensionSource",
    "Metadata",
    "build_modules_dep",
    "check_compatibility",
    "compress",
    "embedded_config_extension",
    "extensions_yaml",
    "load",
    "load_all",
    "make_squashfs",
    "parse_manifest",
    "parse_range",
    "provides_modules",
    "stream_from_tool",
    "stream_to_tool",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.yaml"
ROOTFS = "rootfs"
MANIFEST_VERSION = "v1alpha1"
MODULES_DEP = "modules.dep"
#: manifests are a few KiB (the schematic's carries the schematic, itself capped far below this).
MAX_MANIFEST_SIZE = 4 << 20
#: upstream validates against its own version when the target one does not parse (the library's tag).
_LIBRARY_VERSION = semver.Version(1, 14, 0)
#: early-load CPU microcode: (glob under the firmware directory, blob in the uncompressed initramfs).
MICROCODE = (
    ("intel-ucode/*", "kernel/x86/microcode/GenuineIntel.bin"),
    ("amd-ucode/microcode_amd*.bin", "kernel/x86/microcode/AuthenticAMD.bin"),
)
#: ``/etc/modules.d/10-extra-modules.conf`` of the imager image.
DEPMOD_CONFIG = "search extras built-in\n"
#: the imager container's umask, which upstream's copies of firmware and modules.* go through.
_UMASK = 0o022
_CHUNK = 1 << 20
_MAX_SYMLINKS = 40
#: mksquashfs' and tar2sqfs' default block size.
SQUASHFS_BLOCK_SIZE = 131072


class ExtensionError(InvalidInputError):
    """An extension cannot be used: bad layout or manifest, or not made for this Talos/kernel."""


# --------------------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class ExtensionSource:
    """A flattened extension image (``manifest.yaml`` + ``rootfs/``), never modified.

    ``labels`` and ``modes`` are keyed like :func:`common.artifacts.unpack.apply_layers`'s result
    (``rootfs/usr/...`` relative to ``root``); ``modes`` gives exact permission bits where the tree on
    disk cannot hold them (rootless unpacking gives files u+rw).
    """

    root: Path
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    modes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_tarball(cls, tarball: Path, dest: Path, name: str) -> ExtensionSource:
        """Unpacks a virtual extension tar into ``dest``, keeping its SELinux labels and exact modes."""
        dest.mkdir(parents=True, exist_ok=True)
        with open(tarball, "rb") as stream:
            labels = apply_layers([stream], dest)
        modes: dict[str, int] = {}
        with tarfile.open(tarball, mode="r:*") as archive:
            for member in archive:
                rel = "/".join(p for p in PurePosixPath(member.name.lstrip("/")).parts if p != ".")
                if not rel or not member.isreg():
                    continue
                path = dest / rel
                if (
                    path.is_file()
                    and not path.is_symlink()
                    and (path.stat().st_mode & 0o7777) != (member.mode & 0o7777)
                ):
                    modes[rel] = member.mode & 0o7777
        return cls(root=dest, labels=labels, name=name, modes=modes)

    @property
    def display(self) -> str:
        return self.name or str(self.root)


# --------------------------------------------------------------------------------------------------
# manifest


@dataclass(frozen=True)
class Metadata:
    """``extensions.Metadata``: what ``extensions.yaml`` and ``talosctl get extensions`` show."""

    name: str = ""
    version: str = ""
    author: str = ""
    description: str = ""
    compatibility: str = ""  # compatibility.talos.version
    extra_info: str = ""

    def to_struct(self) -> Struct:
        """Go field order; ``extraInfo`` is ``omitempty``."""
        fields: list[tuple[str, Any]] = [
            ("name", self.name),
            ("version", self.version),
            ("author", self.author),
            ("description", self.description),
            ("compatibility", Struct((("talos", Struct((("version", self.compatibility),))),))),
        ]
        if self.extra_info:
            fields.append(("extraInfo", self.extra_info))
        return Struct(tuple(fields))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "author": self.author,
            "description": self.description,
            "compatibility": {"talos": {"version": self.compatibility}},
        }
        if self.extra_info:
            out["extraInfo"] = self.extra_info
        return out


_NULLS = frozenset(("", "~", "null", "Null", "NULL"))


def _string(node: yaml.Node | None, what: str) -> str:
    """go-yaml into a ``string`` field: any scalar's text as written, null is empty."""
    if node is None:
        return ""
    if not isinstance(node, yaml.ScalarNode):
        kind = "!!map" if isinstance(node, yaml.MappingNode) else "!!seq"
        raise ValueError(f"cannot unmarshal {kind} into string ({what})")
    if node.style is None and node.value in _NULLS and node.tag != "tag:yaml.org,2002:str":
        return ""
    return str(node.value)


def _fields(node: yaml.Node | None, what: str) -> dict[str, yaml.Node]:
    """A struct-typed node: keys to value nodes (unknown keys are ignored later, as go-yaml does)."""
    if node is None or (isinstance(node, yaml.ScalarNode) and node.style is None and node.value in _NULLS):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"cannot unmarshal into a struct ({what})")
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = _string(key, what)
        if name in out:
            raise ValueError(f'mapping key "{name}" already defined ({what})')
        out[name] = value
    return out


def parse_manifest(data: bytes) -> tuple[str, Metadata]:
    """``manifest.yaml`` → (manifest version, metadata); scalars typed as go-yaml decodes strings."""
    try:
        text = data.decode("utf-8")
        docs = yaml.compose_all(text, Loader=yaml.SafeLoader)
        root = next(iter(docs), None)
        if root is None:
            raise ValueError("EOF")
        top = _fields(root, "manifest")
        meta = _fields(top.get("metadata"), "metadata")
        compat = _fields(_fields(meta.get("compatibility"), "compatibility").get("talos"), "talos")
        version = _string(top.get("version"), "version")
        metadata = Metadata(
            name=_string(meta.get("name"), "name"),
            version=_string(meta.get("version"), "version"),
            author=_string(meta.get("author"), "author"),
            description=_string(meta.get("description"), "description"),
            compatibility=_string(compat.get("version"), "version"),
            extra_info=_string(meta.get("extraInfo"), "extraInfo"),
        )
    except (UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ExtensionError(f"invalid manifest: {exc}") from exc
    return version, metadata


# --------------------------------------------------------------------------------------------------
# version constraints (blang/semver v4 ParseRange, which upstream uses)

Range = Callable[[semver.Version], bool]
_COMPARATORS: dict[str, Callable[[int], bool]] = {
    "": lambda c: c == 0,
    "=": lambda c: c == 0,
    "==": lambda c: c == 0,
    "!": lambda c: c != 0,
    "!=": lambda c: c != 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
}


class RangeError(ValueError):
    """A constraint blang/semver would refuse to parse."""


def _trim_v(constraint: str) -> str:
    """Upstream's ``trim``: drop every ``v`` directly followed by a digit (``>= v1.10.0``)."""
    return re.sub(r"v(?=[0-9])", "", constraint)


def _split_and_trim(s: str) -> list[str]:
    """Split on spaces, except after ``>``, ``<`` or ``=`` (``>= 1.0.0`` is one part); drops 1-char parts."""
    parts: list[str] = []
    last = 0
    last_char = ""
    for i, ch in enumerate(s):
        if ch == " " and last_char not in (">", "<", "="):
            if last < i - 1:
                parts.append(s[last:i])
            last = i + 1
        elif ch != " ":
            last_char = ch
    if last < len(s) - 1:
        parts.append(s[last:])
    return [p.replace(" ", "") for p in parts]


def _split_or(parts: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    last = 0
    for i, part in enumerate(parts):
        if part == "||":
            if i == 0:
                raise RangeError("First element in range is '||'")
            out.append(parts[last:i])
            last = i + 1
    if last == len(parts):
        raise RangeError("Last element in range is '||'")
    out.append(parts[last:])
    return out


def _split_comparator(s: str) -> tuple[str, str]:
    for i, ch in enumerate(s):
        if ch.isdecimal():
            return s[:i].strip(), s[i:]
    raise RangeError(f"Could not get version from string: {s!r}")


def _bump(version: str, index: int) -> str:
    parts = version.split(".")
    try:
        parts[index] = str(int(parts[index]) + 1)
    except (ValueError, IndexError):
        return ""
    return ".".join(parts)


def _expand_wildcard(part: str) -> list[str]:
    """blang's ``expandWildcardVersion`` for one part (``>1.2.x`` → ``>=1.3.0``), quirks included."""
    op, version = _split_comparator(part)
    if ".x" not in part:
        return [part]
    pieces = version.split(".")
    kind = len(pieces) if pieces[-1] == "x" and len(pieces) in (2, 3) else 0  # 2: minor, 3: patch
    flat = version.replace(".x.x", ".x", 1).replace(".x", ".0", 1)
    if len(flat.split(".")) == 2:
        flat += ".0"
    out: list[str] = []
    increment = False
    result_op = ""
    if op == ">":
        result_op, increment = ">=", True
    elif op == ">=":
        result_op = ">="
    elif op == "<":
        result_op = "<"
    elif op == "<=":
        result_op, increment = "<", True
    elif op in ("", "=", "=="):
        out.append(">=" + flat)
        result_op, increment = "<", True
    elif op in ("!=", "!"):
        out.append("<" + flat)
        result_op, increment = ">=", True
    result = flat
    if increment:
        result = _bump(flat, 1) if kind == 3 else _bump(flat, 0) if kind == 2 else ""
    return [*out, result_op + result]


def _parse_version(text: str) -> semver.Version:
    """A range's bound: blang's strict ``Parse`` (no ``v``, no padding, no spaces)."""
    if not text or any(c.isspace() for c in text):
        raise RangeError(f"invalid version {text!r}")
    try:
        return parse_strict(text)
    except InvalidInputError as exc:
        raise RangeError(str(exc).removeprefix("error parsing version: ")) from exc


def _comparison(part: str) -> Range:
    op, text = _split_comparator(part)
    test = _COMPARATORS.get(op)
    if test is None:
        raise RangeError(f"Could not parse Range {part!r}: Could not parse comparator {op!r}")
    bound = _parse_version(text)
    return lambda v: test(v.replace(build=None).compare(bound))


def parse_range(constraint: str) -> Range:
    """blang/semver ``ParseRange``: AND with spaces, OR with ``||``, ops ``= == != ! > >= < <=``, ``x``."""
    alternatives: list[list[Range]] = []
    for conjunction in _split_or(_split_and_trim(constraint)):
        expanded = [p for part in conjunction for p in _expand_wildcard(part)]
        alternatives.append([_comparison(p) for p in expanded])
    return lambda v: any(all(test(v) for test in alt) for alt in alternatives)


def talos_core_version(version: str) -> semver.Version:
    """The version constraints are checked against: major.minor.patch (pre-release dropped)."""
    parsed = release_core(version)
    return _LIBRARY_VERSION if parsed is None else parsed


# --------------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class Extension:
    """A loaded extension; ``directory`` is its name in the tree (``0``, ``1``…), the squashfs' stem."""

    source: ExtensionSource
    directory: str
    metadata: Metadata

    @property
    def rootfs(self) -> Path:
        return self.source.root / ROOTFS

    @property
    def name(self) -> str:
        return self.source.display


def load(source: ExtensionSource, directory: str) -> Extension:
    """``extensions.Load``: exactly ``manifest.yaml`` and ``rootfs/``, manifest version ``v1alpha1``."""

    def fail(message: str) -> ExtensionError:
        return ExtensionError(f'extension "{source.display}": {message}')

    try:
        items = sorted(os.listdir(source.root), key=os.fsencode)
    except OSError as exc:
        raise fail(f"cannot read the image: {exc.strerror}") from exc
    metadata: Metadata | None = None
    has_rootfs = False
    for item in items:
        path = source.root / item
        if item == MANIFEST:
            if not path.is_file() or path.is_symlink():
                raise fail("manifest.yaml is not a regular file")
            try:
                if path.stat().st_size > MAX_MANIFEST_SIZE:
                    raise fail(f"manifest.yaml is larger than {MAX_MANIFEST_SIZE} bytes")
                version, metadata = parse_manifest(path.read_bytes())
            except ExtensionError as exc:
                raise fail(exc.message) from exc
            if version != MANIFEST_VERSION:
                raise fail(f'unsupported manifest version: "{version}"')
        elif item == ROOTFS:
            if not path.is_dir() or path.is_symlink():
                raise fail("rootfs is not a directory")
            has_rootfs = True
        else:
            raise fail(f'unexpected file "{item}"')
    if metadata is None:
        raise fail("extension manifest is missing")
    if not has_rootfs:
        raise fail("extension rootfs is missing")
    return Extension(source=source, directory=directory, metadata=metadata)


def check_compatibility(ext: Extension, version: str) -> None:
    """The manifest's Talos constraint against the target's core version (empty: any version)."""
    constraint = ext.metadata.compatibility
    if not constraint:
        return
    try:
        matches = parse_range(_trim_v(constraint))
    except RangeError as exc:
        raise ExtensionError(
            f'extension "{ext.name}": error parsing Talos version constraint {constraint!r}: {exc}'
        ) from exc
    if not matches(talos_core_version(version)):
        raise ExtensionError(
            f'extension "{ext.name}" is not compatible with Talos version {version}: '
            f"version constraint {constraint} can't be satisfied"
        )


def load_all(sources: Sequence[ExtensionSource], version: str) -> list[Extension]:
    """Loads then validates every extension in upstream's processing order.

    Upstream unpacks extension *i* into directory ``str(i)`` and lists the directories sorted as
    strings, so from 11 extensions on the order is 0, 1, 10, 11, …, 2, 3, ….
    """
    ordered = sorted(((str(i), src) for i, src in enumerate(sources)), key=lambda item: item[0])
    loaded = [load(src, directory) for directory, src in ordered]
    for ext in loaded:
        check_compatibility(ext, version)
    return loaded


# --------------------------------------------------------------------------------------------------
# paths inside an extension rootfs (symlinks resolved as if chrooted: an image cannot reach the host)


def _resolve(rootfs: Path, rel: str) -> Path:
    """``rootfs/rel`` with every symlink resolved inside ``rootfs`` (absolute targets start at it)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise ExtensionError(f"too many levels of symbolic links under {rootfs}/{rel}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def _mode(ext_modes: Mapping[str, int], key: str, st: os.stat_result) -> int:
    return ext_modes.get(key, st.st_mode & 0o7777)


# --------------------------------------------------------------------------------------------------
# streaming through tools


def stream_to_tool(
    cmd: Sequence[str | os.PathLike[str]],
    produce: Callable[[IO[bytes]], None],
    *,
    stdout: IO[bytes] | None = None,
) -> None:
    """Runs ``cmd`` with ``produce`` writing its stdin through a pipe, so nothing is staged in memory."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []
    broken = threading.Event()

    def writer() -> None:
        try:
            with open(write_fd, "wb") as pipe:
                produce(pipe)
        except BrokenPipeError:
            broken.set()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=writer, name=f"feed-{Path(os.fspath(cmd[0])).name}", daemon=True)
    thread.start()
    tool_error: ToolError | None = None
    try:
        with open(read_fd, "rb") as pipe:
            run(cmd, stdin=pipe, stdout=stdout)
    except ToolError as exc:
        tool_error = exc
    finally:
        thread.join()
    if failure:
        raise failure[0] from tool_error
    if tool_error is not None:
        raise tool_error
    if broken.is_set():
        raise ToolError(f"{Path(os.fspath(cmd[0])).name} stopped reading its input")


@contextmanager
def stream_from_tool(cmd: Sequence[str | os.PathLike[str]], *, stdin: IO[bytes]) -> Iterator[IO[bytes]]:
    """Runs ``cmd`` and yields its stdout as a stream; whatever is left unread is drained."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def runner() -> None:
        try:
            with open(write_fd, "wb") as pipe:
                run(cmd, stdin=stdin, stdout=pipe)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=runner, name=f"read-{Path(os.fspath(cmd[0])).name}", daemon=True)
    thread.start()
    try:
        with open(read_fd, "rb") as pipe:
            yield pipe
            while pipe.read(_CHUNK):
                pass
    finally:
        thread.join()
    if failure:
        raise failure[0]


# --------------------------------------------------------------------------------------------------
# squashfs


def _compressor_args(quirks: Quirks) -> list[str]:
    """mksquashfs ``-comp zstd -Xcompression-level 18`` (≥1.8) / ``-comp xz -Xdict-size 100%``.

    tar2sqfs 1.2.0 fails to parse ``dictsize=100%``, so the block size is spelled out.
    """
    if quirks.supports_zstd():
        return ["-c", "zstd", "-X", "level=18"]
    return ["-c", "xz", "-X", f"dictsize={SQUASHFS_BLOCK_SIZE}"]


def _tar_entries(root: Path, exclude: frozenset[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative name, path, lstat) for ``root`` ("" first) and everything below, sorted, dirs first."""

    def visit(directory: Path, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if rel in exclude:
                continue
            st = entry.stat(follow_symlinks=False)
            yield rel, Path(entry.path), st
            if stat.S_ISDIR(st.st_mode):
                yield from visit(Path(entry.path), rel + "/")

    yield "", root, root.lstat()
    yield from visit(root, "")


def _write_tar(
    out: IO[bytes],
    root: Path,
    *,
    epoch: int,
    labels: Mapping[str, str],
    modes: Mapping[str, int],
    exclude: frozenset[str],
) -> None:
    """A PAX tar of ``root``: uid/gid 0, mtimes ``epoch``, labels as ``SCHILY.xattr.security.selinux``."""
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for rel, path, st in _tar_entries(root, exclude):
            info = tarfile.TarInfo(rel or ".")
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = _mode(modes, rel, st)
            if rel in labels:
                info.pax_headers = {SELINUX_XATTR: labels[rel]}
            data: IO[bytes] | None = None
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFDIR:
                info.type = tarfile.DIRTYPE
            elif kind == stat.S_IFLNK:
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
            elif kind == stat.S_IFREG:
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = links[key]
                else:
                    links[key] = rel
                    info.type = tarfile.REGTYPE
                    info.size = st.st_size
                    data = open(path, "rb")  # noqa: SIM115 - closed right below
            elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
                info.type = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE}.get(
                    kind, tarfile.FIFOTYPE
                )
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            else:
                continue  # sockets cannot be archived
            try:
                archive.addfile(info, data)
            finally:
                if data is not None:
                    data.close()


def make_squashfs(
    root: Path,
    out: Path,
    *,
    quirks: Quirks,
    epoch: int,
    labels: Mapping[str, str] | None = None,
    modes: Mapping[str, int] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> None:
    """``mksquashfs root out -all-root -noappend`` + the version's compressor, via ``tar2sqfs``.

    ``labels``/``modes`` are keyed relative to ``root`` (``""`` is the root itself); ``exclude`` drops
    those subtrees (what upstream moved out before packing).
    """
    cmd: list[str | os.PathLike[str]] = ["tar2sqfs", "--quiet", "--force", "--no-skip"]
    # mksquashfs' defaults: an NFS export table, no tail-end packing, 128 KiB blocks
    cmd += ["--exportable", "--no-tail-packing", "--block-size", str(SQUASHFS_BLOCK_SIZE)]
    cmd += [*_compressor_args(quirks), "--defaults", f"mode=0755,mtime={epoch}", out]

    def produce(pipe: IO[bytes]) -> None:
        _write_tar(pipe, root, epoch=epoch, labels=labels or {}, modes=modes or {}, exclude=exclude)

    stream_to_tool(cmd, produce)


# --------------------------------------------------------------------------------------------------
# per-extension processing (upstream Extension.Compress)


def _relative(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys under ``prefix/`` re-rooted at it (``prefix`` itself becomes ``""``)."""
    out = {}
    for key, value in mapping.items():
        key = key.strip("/")
        if key == prefix:
            out[""] = value
        elif key.startswith(prefix + "/"):
            out[key[len(prefix) + 1 :]] = value
    return out


def _glob(rootfs: Path, directory: str, pattern: str) -> list[str]:
    """Go ``filepath.Glob(dir/pattern)``: sorted names, dot files included; logical rootfs paths."""
    real = _resolve(rootfs, directory)
    if not real.is_dir():
        return []
    names = sorted((n for n in os.listdir(real) if fnmatchcase(n, pattern)), key=os.fsencode)
    return [f"{directory}/{n}" for n in names]


def _append_file(ext: Extension, rel: str, out: IO[bytes]) -> None:
    real = _resolve(ext.rootfs, rel)
    if not real.is_file():
        raise ExtensionError(f'extension "{ext.name}": microcode /{rel} is not a regular file')
    with open(real, "rb") as src:
        while chunk := src.read(_CHUNK):
            out.write(chunk)


def _mkdirs(path: Path, mode: int) -> None:
    """``os.MkdirAll(path, mode)``: missing directories get ``mode`` (after the umask), others are kept."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir()
        directory.chmod(mode & ~_UMASK & 0o7777)


def _copy_file(src: Path, dst: Path, mode: int) -> None:
    if dst.is_symlink() or (dst.exists() and not dst.is_file()):
        raise ExtensionError(f"cannot copy {src.name}: {dst} exists and is not a regular file")
    dst.unlink(missing_ok=True)
    with open(src, "rb") as s, open(dst, "wb") as d:
        while chunk := s.read(_CHUNK):
            d.write(chunk)
    dst.chmod(mode & 0o777 & ~_UMASK)


def _copy_tree(
    ext: Extension, rel: str, dest: Path, *, skip: frozenset[str] = frozenset(), stack: tuple[Path, ...] = ()
) -> None:
    """Upstream ``copyFiles``/``moveFiles`` from an extension: symlinks followed (inside the image)."""
    real = _resolve(ext.rootfs, rel)
    try:
        st = real.stat()
    except OSError as exc:
        raise ExtensionError(f'extension "{ext.name}": /{rel}: {exc.strerror}') from exc
    mode = _mode(ext.source.modes, f"{ROOTFS}/{rel}", st)
    if stat.S_ISDIR(st.st_mode):
        if real in stack:
            raise ExtensionError(f'extension "{ext.name}": /{rel}: symbolic link loop')
        if dest.exists() and not dest.is_dir():
            raise ExtensionError(f'extension "{ext.name}": /{rel} collides with a file of another extension')
        _mkdirs(dest, mode | 0o700)
        for name in sorted(os.listdir(real), key=os.fsencode):
            child = f"{rel}/{name}"
            if child not in skip:
                _copy_tree(ext, child, dest / name, skip=skip, stack=(*stack, real))
    elif stat.S_ISREG(st.st_mode):
        _copy_file(real, dest, mode)
    else:
        raise ExtensionError(f'extension "{ext.name}": /{rel} is not a regular file or directory')


def _moved_away(rootfs: Path, rel: str) -> frozenset[str]:
    """What upstream's move of ``rel`` deletes, as tar paths: the directory (through symlinked parents);
    if ``rel`` itself is a symlink, the link and everything inside the directory it points to."""
    parent, _, leaf = rel.rpartition("/")
    path = _resolve(rootfs, parent) / leaf
    gone = {path.relative_to(rootfs).as_posix()}
    if path.is_symlink():
        target = _resolve(rootfs, rel)
        inside = target.relative_to(rootfs).as_posix()
        gone.update(f"{inside}/{name}" for name in os.listdir(target))
    return frozenset(gone)


def compress(ext: Extension, staging: Path, quirks: Quirks, epoch: int) -> str:
    """Microcode and firmware into ``staging``, the rest into ``staging/<directory>.sqsh``; returns its name.

    Microcode (``FW/intel-ucode/*``, ``FW/amd-ucode/microcode_amd*.bin``) is appended to
    ``kernel/x86/microcode/{GenuineIntel,AuthenticAMD}.bin``; the rest of ``FW`` (``/usr/lib/firmware``
    from 1.10, ``/lib/firmware`` before) goes to ``staging/FW``; neither ends up in the squashfs.
    """
    firmware = quirks.firmware_path().strip("/")
    consumed: set[str] = set()
    for pattern, blob in MICROCODE:
        directory, glob = pattern.rsplit("/", 1)
        matches = _glob(ext.rootfs, f"{firmware}/{directory}", glob)
        if not matches:
            continue
        target = staging / blob
        _mkdirs(target.parent, 0o755)
        with open(target, "ab") as out:
            for rel in matches:
                _append_file(ext, rel, out)
        target.chmod(0o644)
        consumed.update(matches)

    exclude: frozenset[str] = frozenset()
    if _resolve(ext.rootfs, firmware).exists():
        _copy_tree(ext, firmware, staging / firmware, skip=frozenset(consumed))
        exclude = _moved_away(ext.rootfs, firmware)

    name = f"{ext.directory}.sqsh"
    make_squashfs(
        ext.rootfs,
        staging / name,
        quirks=quirks,
        epoch=epoch,
        labels=_relative(ext.source.labels, ROOTFS),
        modes=_relative(ext.source.modes, ROOTFS),
        exclude=exclude,
    )
    (staging / name).chmod(0o644)
    return name


# --------------------------------------------------------------------------------------------------
# modules.dep (upstream GenerateKernelModuleDependencyTreeExtension)


def provides_modules(ext: Extension, quirks: Quirks) -> bool:
    """Whether the extension has a kernel modules directory (``/usr/lib/modules`` ≥1.10, else ``/lib``)."""
    return _resolve(ext.rootfs, quirks.kernel_modules_path().strip("/")).exists()


def build_modules_dep(
    rootfs_sqsh: Path, extensions: Sequence[Extension], quirks: Quirks, workdir: Path
) -> tuple[Path, Metadata]:
    """depmod over the base modules plus every extension's; returns (layer rootfs, its metadata).

    The layer holds only the regenerated ``modules.*`` files of the one kernel in the base rootfs.
    """
    modules = quirks.kernel_modules_path().strip("/")
    base = workdir / "base"
    run(["unsquashfs", "-no-xattrs", "-d", base, "-f", "-n", rootfs_sqsh, modules])
    tree = base / modules
    kernels = sorted(os.listdir(tree)) if tree.is_dir() else []
    if len(kernels) != 1 or not (tree / kernels[0]).is_dir() or (tree / kernels[0]).is_symlink():
        raise ToolError(f"invalid kernel modules path in the base rootfs: /{modules} holds {kernels}")
    kver = kernels[0]
    _make_writable(tree / kver)
    for ext in extensions:
        if not _resolve(ext.rootfs, f"{modules}/{kver}").is_dir():
            shipped = sorted(os.listdir(_resolve(ext.rootfs, modules)))
            raise ExtensionError(
                f'extension "{ext.name}" has no kernel modules for kernel {kver} '
                f"(/{modules} holds {', '.join(shipped) or 'nothing'})"
            )
        _copy_tree(ext, f"{modules}/{kver}", tree / kver)
    config = workdir / "10-extra-modules.conf"
    config.write_text(DEPMOD_CONFIG)
    basedir = str(tree).removesuffix("/lib/modules")
    run(["depmod", "--all", "--basedir", basedir, "--config", config, kver])

    layer = workdir / MODULES_DEP
    dest = layer / modules / kver
    _mkdirs(dest, 0o755)
    layer.chmod(0o755)
    for name in sorted(os.listdir(tree / kver), key=os.fsencode):
        src = tree / kver / name
        if name.startswith("modules.") and src.is_file():
            _copy_file(src, dest / name, src.stat().st_mode)
    metadata = Metadata(
        name=MODULES_DEP,
        version=kver,
        author="Talos Machinery",
        description="Combined modules.dep for all extensions",
    )
    return layer, metadata


def _make_writable(tree: Path) -> None:
    """unsquashfs keeps the rootfs' modes; the overlay copy and depmod need to write into it."""
    for directory, _, _ in os.walk(tree):
        os.chmod(directory, os.stat(directory).st_mode | 0o700)


# --------------------------------------------------------------------------------------------------
# extensions.yaml and the embedded-config virtual extension


def extensions_yaml(layers: Sequence[tuple[str, Metadata]]) -> bytes:
    """``extensions.Config`` as go-yaml encodes it: ``layers: [{image, metadata}]``."""
    items = [Struct((("image", image), ("metadata", md.to_struct()))) for image, md in layers]
    return marshal_value(Struct((("layers", items),)))


EMBEDDED_CONFIG = "embedded-config"
#: ``constants.EmbeddedConfigDirectory`` + ``ConfigFilename`` and ``StateSelinuxLabel``.
EMBEDDED_CONFIG_PATH = "usr/local/etc/talos/config.yaml"
STATE_SELINUX_LABEL = "system_u:object_r:system_state_t:s0"


def embedded_config_extension(config: bytes) -> bytes:
    """The imager's ``embedded-config`` virtual extension tar (Talos ≥1.12), entries in upstream's order."""
    manifest = marshal_value(
        Struct(
            (
                ("version", MANIFEST_VERSION),
                (
                    "metadata",
                    Metadata(
                        name=EMBEDDED_CONFIG,
                        version=hashlib.sha256(config).hexdigest(),
                        author="Imager",
                        description="Virtual extension which embeds the machine configuration.",
                        compatibility=">= 1.0.0",
                    ).to_struct(),
                ),
            )
        )
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:

        def add(
            name: str, kind: bytes, mode: int, data: bytes = b"", pax: dict[str, str] | None = None
        ) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.size = kind, mode, 0, len(data)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if pax:
                info.pax_headers = pax
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add(MANIFEST, tarfile.REGTYPE, 0o644, manifest)
        parts = EMBEDDED_CONFIG_PATH.split("/")[:-1]
        for i in range(len(parts) + 1):
            add("/".join([ROOTFS, *parts[:i]]), tarfile.DIRTYPE, 0o755)
        add(
            f"{ROOTFS}/{EMBEDDED_CONFIG_PATH}",
            tarfile.REGTYPE,
            0o400,
            config,
            {SELINUX_XATTR: STATE_SELINUX_LABEL},
        )
    return buffer.getvalue()
