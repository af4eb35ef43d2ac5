"""Installer container images (``kind: installer``), as the Talos imager's ``outInstaller`` builds them.

The new image is go-containerregistry's ``mutate`` chain re-done by hand: an empty OCI image with
``architecture``/``os`` set, the base installer's ``config`` section (re-marshalled the way Go's
``v1.Config`` struct does it), ``created``, then the base layers (only the first one when there are
exactly two: older installers kept stock boot assets in layer 2), one artifacts layer and, for
SBC overlays, one overlay layer. Each appended layer adds ``{"created":"0001-01-01T00:00:00Z"}`` to
``history`` and its diff id to ``rootfs.diff_ids``; the base's own history is not kept.

New layers are Go ``archive/tar`` streams (Talos ``pkg/imager/filemap``) reproduced byte for byte:
USTAR headers (PAX only for what USTAR cannot hold), entries sorted by path, uid/gid 0, mtime 0,
no record padding. Artifacts are written with mode 0 and no parent directory entries, exactly as
upstream (the installer runs as root, and runtimes create missing parents). Compression is gzip
with Go's header (no name, mtime 0, XFL 4 for BestSpeed) over zlib level 1: reproducible on one
zlib build, but not the same compressed bytes as Go's ``compress/flate`` (diff ids do match).

The result is written as a "docker save" archive the way ``tarball.Write`` does: config, layers,
``manifest.json``. Everything streams through files; no layer is ever held in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from common.artifacts.manager import ImageLayers
from common.errors import FactoryError

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "ZERO_TIME",
    "InstallerError",
    "InstallerImage",
    "Layer",
    "OverlayLayerSource",
    "artifact_paths",
    "build_installer_image",
    "go_json",
    "tar_header",
    "write_docker_archive",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
#: ``types.MediaType.IsDistributable() == false``: tarball.Write lists them under LayerSources.
_FOREIGN = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
    }
)
#: Go's zero ``time.Time`` as encoding/json writes it (``v1.Time`` has no omitempty effect).
ZERO_TIME = "0001-01-01T00:00:00Z"
_CHUNK = 1 << 20
_BLOCK = 512


class InstallerError(FactoryError):
    """The base image or the inputs cannot make an installer image."""


# --- Go encoding/json ------------------------------------------------------------------------------


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``json.Marshal`` writes it (HTML-escaped ``<>&``, U+2028/9 escaped).

    Callers pass dicts already in Go struct field order; map keys must be pre-sorted.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    # These characters can only occur inside strings, so a plain replace is exact.
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise InstallerError(f"unsupported digest {digest!r}")
    return hexpart


# --- image model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer blob on disk, with what a manifest descriptor and the config need to know."""

    digest: str  # sha256 of the compressed blob
    diff_id: str  # sha256 of the uncompressed tar
    size: int
    media_type: str
    path: Path
    # Carried over from a base layer's descriptor (partial.Descriptor keeps them).
    annotations: Mapping[str, str] | None = None
    urls: tuple[str, ...] | None = None

    def descriptor(self) -> dict[str, Any]:
        """The ``v1.Descriptor`` for the OCI manifest, in Go field order."""
        out: dict[str, Any] = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @property
    def distributable(self) -> bool:
        return self.media_type not in _FOREIGN


@dataclass(frozen=True)
class InstallerImage:
    """A single-platform image: config JSON plus layer blobs (what a registry frontend serves)."""

    config: bytes
    layers: list[Layer]

    @property
    def config_digest(self) -> str:
        return _sha256(self.config)

    def manifest(self) -> bytes:
        """The OCI manifest mutate would compute (OCI manifest and config media types)."""
        return go_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "size": len(self.config), "digest": self.config_digest},
                "layers": [layer.descriptor() for layer in self.layers],
            }
        )

    def docker_manifest(self) -> bytes:
        """The manifest of this image once read back from its docker archive (``tarball.Image``).

        The factory publishes *that* image, so its registry serves Docker schema 2 media types
        (config and layer descriptors rewritten; foreign layers keep their descriptor).
        """
        layers: list[dict[str, Any]] = []
        for layer in self.layers:
            if layer.distributable:
                layers.append({"mediaType": DOCKER_LAYER, "size": layer.size, "digest": layer.digest})
            else:
                layers.append(layer.descriptor())
        return go_json(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": DOCKER_CONFIG,
                    "size": len(self.config),
                    "digest": self.config_digest,
                },
                "layers": layers,
            }
        )


@dataclass(frozen=True)
class OverlayLayerSource:
    """The target-arch overlay image (unpacked) and the board's choices for the overlay layer."""

    root: Path  # has artifacts/ and installers/<name>
    installer_name: str
    extra_options_yaml: bytes


def artifact_paths(arch: str, *, use_sdboot_for_uefi: bool, secureboot: bool) -> list[str]:
    """In-image paths of the artifacts layer, in upstream's order.

    sd-boot installers (≥1.10, or any secure boot build) carry ``systemd-boot.efi`` and the UKI
    (``vmlinuz.efi.signed`` for secure boot before 1.10); older ones ``vmlinuz`` and ``initramfs.xz``.
    """
    base = f"usr/install/{arch}/"
    if use_sdboot_for_uefi or secureboot:
        uki = base + "vmlinuz.efi" + (".signed" if secureboot and not use_sdboot_for_uefi else "")
        return [base + "systemd-boot.efi", uki]
    return [base + "vmlinuz", base + "initramfs.xz"]


# --- Go archive/tar --------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes:
    """Go's formatOctal: zero-padded octal, NUL-terminated; 0 when it does not fit."""
    if value < 0 or value >= 8 ** (width - 1):
        value = 0
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _put(block: bytearray, offset: int, width: int, data: bytes) -> None:
    """Go's formatString: truncate, NUL-terminate when shorter (the block starts zeroed)."""
    chunk = data[:width]
    block[offset : offset + len(chunk)] = chunk
    if len(data) > width and chunk.endswith(b"/"):
        # Go replaces a trailing slash of a truncated V7 name with NUL (buggy readers).
        block[offset + len(chunk.rstrip(b"/"))] = 0


def _finish(block: bytearray) -> bytes:
    """setFormat(USTAR|PAX): magic, version, checksum (6 octal digits, NUL, space)."""
    block[257:263] = b"ustar\0"
    block[263:265] = b"00"
    block[148:156] = b" " * 8
    block[148:156] = _octal(sum(block), 7) + b" "
    return bytes(block)


def _split_ustar(name: str) -> tuple[str, str] | None:
    """Go's splitUSTARPath: a (prefix, name) split that fits 155/100 bytes, if any."""
    raw = name.encode()
    if len(raw) <= 100 or not name.isascii():
        return None
    length = len(raw)
    if length > 156:
        length = 156
    elif raw[length - 1 : length] == b"/":
        length -= 1
    i = name.rfind("/", 0, length)
    nlen = len(raw) - i - 1
    if i <= 0 or nlen > 100 or nlen == 0 or i > 155:
        return None
    return name[:i], name[i + 1 :]


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    size = len(body) + len(str(len(body)))
    if len(str(size)) + len(body) != size:
        size = len(str(size)) + len(body)
    return str(size).encode() + body


def _v7(name: bytes, mode: int, size: int, typeflag: bytes, *, devices: bool) -> bytearray:
    """templateV7Plus (devices=True) / writeRawFile (devices=False) with uid/gid/mtime 0."""
    block = bytearray(_BLOCK)
    _put(block, 0, 100, name)
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size, 12)
    block[136:148] = _octal(0, 12)
    block[156:157] = typeflag
    if devices:
        block[329:337] = _octal(0, 8)
        block[337:345] = _octal(0, 8)
    return block


def tar_header(name: str, mode: int, size: int, typeflag: bytes) -> bytes:
    """The header block(s) Go's ``tar.Writer.WriteHeader`` emits for a bare Name/Mode/Size header."""
    raw = name.encode()
    pax: dict[str, str] = {}
    split = None
    if len(raw) > 100 or not name.isascii():
        split = _split_ustar(name)
        if split is None:
            pax["path"] = name
    if size >= 8**11:
        pax["size"] = str(size)
    if not pax:
        if split is not None:
            block = _v7(split[1].encode(), mode, size, typeflag, devices=True)
            _put(block, 345, 155, split[0].encode())
        else:
            block = _v7(raw, mode, size, typeflag, devices=True)
        return _finish(block)
    data = b"".join(_pax_record(k, v) for k, v in sorted(pax.items()))
    head, _, tail = name.rpartition("/")
    pax_name = f"{head}/PaxHeaders.0/{tail}" if head else f"PaxHeaders.0/{tail}"
    pax_name_raw = pax_name.encode("ascii", "ignore")[:100].rstrip(b"/")
    ext = _finish(_v7(pax_name_raw, 0, len(data), b"x", devices=False))
    ext += data + b"\0" * (-len(data) % _BLOCK)
    main = _finish(_v7(name.encode("ascii", "ignore"), mode, size, typeflag, devices=True))
    return ext + main


class _Writer(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class _Entry:
    name: str
    mode: int
    source: Path | None  # None: a directory
    size: int = 0


def _write_tar(entries: Iterable[_Entry], out: _Writer) -> None:
    """A Go ``archive/tar`` stream: headers, data padded to 512, two zero blocks, no record padding."""
    for entry in entries:
        if entry.source is None:
            out.write(tar_header(entry.name, entry.mode, 0, b"5"))
            continue
        out.write(tar_header(entry.name, entry.mode, entry.size, b"0"))
        written = 0
        with open(entry.source, "rb") as src:
            while chunk := src.read(min(_CHUNK, entry.size - written + 1)):
                written += len(chunk)
                if written > entry.size:
                    raise InstallerError(f"{entry.source} grew while it was being archived")
                out.write(chunk)
        if written != entry.size:
            raise InstallerError(f"{entry.source} shrank while it was being archived")
        out.write(b"\0" * (-entry.size % _BLOCK))
    out.write(b"\0" * (2 * _BLOCK))


# --- gzip layer blobs ------------------------------------------------------------------------------


class _LayerSink:
    """Gzips what is written into a file, hashing both sides (digest and diff id) on the way."""

    # Go's gzip header: no name, mtime 0, XFL 4 (BestSpeed), OS 255 (unknown).
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self.compressed = hashlib.sha256()
        self.uncompressed = hashlib.sha256()
        self.crc = 0
        self.length = 0
        self.size = 0
        self._emit(self.HEADER)

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.compressed.update(data)
            self.size += len(data)

    def write(self, data: bytes) -> int:
        self.uncompressed.update(data)
        self.crc = zlib.crc32(data, self.crc)
        self.length += len(data)
        self._emit(self.compressor.compress(data))
        return len(data)

    def close(self) -> None:
        self._emit(self.compressor.flush(zlib.Z_FINISH))
        self._emit(struct.pack("<II", self.crc & 0xFFFFFFFF, self.length & 0xFFFFFFFF))


def _build_layer(entries: Sequence[_Entry], workdir: Path, name: str) -> Layer:
    """Writes one layer blob into ``workdir`` (sorted like filemap.Layer) and describes it."""
    ordered = sorted(entries, key=lambda e: e.name.encode())
    for previous, current in itertools.pairwise(ordered):
        if previous.name == current.name:
            raise InstallerError(f"duplicate path {current.name!r} in the {name} layer")
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / f".{name}.tar.gz.partial"
    with open(partial, "wb") as out:
        sink = _LayerSink(out)
        _write_tar(ordered, sink)
        sink.close()
    digest = "sha256:" + sink.compressed.hexdigest()
    path = workdir / f"{name}-{sink.compressed.hexdigest()}.tar.gz"
    os.replace(partial, path)
    return Layer(
        digest=digest,
        diff_id="sha256:" + sink.uncompressed.hexdigest(),
        size=sink.size,
        media_type=OCI_LAYER,
        path=path,
    )


def _artifact_entries(files: Sequence[tuple[str, Path]]) -> list[_Entry]:
    """filemap.File{ImagePath, SourcePath} with ImageMode unset: mode 0, no directory entries."""
    entries = []
    for image_path, source in files:
        name = image_path.lstrip("/")  # upstream: strings.TrimLeft(path, "/")
        if not name or ".." in name.split("/") or name.endswith("/"):
            raise InstallerError(f"invalid installer artifact path {image_path!r}")
        st = os.stat(source)
        if not stat.S_ISREG(st.st_mode):
            raise InstallerError(f"installer artifact {source} is not a regular file")
        entries.append(_Entry(name=name, mode=0, source=source, size=st.st_size))
    return entries


def _walk(source: Path, image_base: str) -> Iterator[_Entry]:
    """filemap.Walk: every entry below ``source`` (the root itself only when it is a file).

    Modes are the lstat permission bits; contents are read through symlinks, as os.Open does.
    """

    def entry(path: Path, image_path: str) -> _Entry:
        mode = stat.S_IMODE(os.lstat(path).st_mode) & 0o777
        st = os.stat(path)  # follows symlinks like upstream's os.Open + Stat
        if stat.S_ISDIR(st.st_mode):
            return _Entry(name=image_path, mode=mode, source=None)
        if not stat.S_ISREG(st.st_mode):
            raise InstallerError(f"overlay entry {path} is not a regular file or directory")
        return _Entry(name=image_path, mode=mode, source=path, size=st.st_size)

    if not source.is_dir() or source.is_symlink():
        yield entry(source, image_base)
        return
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for child in sorted(dirnames + filenames):
            path = Path(dirpath, child)
            rel = path.relative_to(source).as_posix()
            yield entry(path, f"{image_base}/{rel}")


def _overlay_entries(overlay: OverlayLayerSource, workdir: Path) -> list[_Entry]:
    """``overlay/artifacts/…``, ``overlay/installers/default`` and ``overlay/extra-options``."""
    name = overlay.installer_name
    if not name or "/" in name or name in (".", ".."):
        raise InstallerError(f"invalid overlay installer name {name!r}")
    installer = overlay.root / "installers" / name
    if not installer.is_file():
        raise InstallerError(f"overlay has no installer {name!r}")
    artifacts = overlay.root / "artifacts"
    if not artifacts.is_dir():
        raise InstallerError("overlay image has no artifacts directory")
    workdir.mkdir(parents=True, exist_ok=True)
    options = workdir / "overlay-extra-options"
    options.write_bytes(overlay.extra_options_yaml)
    return [
        *_walk(artifacts, "overlay/artifacts"),
        *_walk(installer, "overlay/installers/default"),
        _Entry(
            name="overlay/extra-options", mode=0o644, source=options, size=len(overlay.extra_options_yaml)
        ),
    ]


# --- config ----------------------------------------------------------------------------------------

# v1.Config fields in struct order, with their JSON kind.
_CONFIG_FIELDS: tuple[tuple[str, str], ...] = (
    ("AttachStderr", "bool"),
    ("AttachStdin", "bool"),
    ("AttachStdout", "bool"),
    ("Cmd", "strings"),
    ("Healthcheck", "health"),
    ("Domainname", "string"),
    ("Entrypoint", "strings"),
    ("Env", "strings"),
    ("Hostname", "string"),
    ("Image", "string"),
    ("Labels", "labels"),
    ("OnBuild", "strings"),
    ("OpenStdin", "bool"),
    ("StdinOnce", "bool"),
    ("Tty", "bool"),
    ("User", "string"),
    ("Volumes", "set"),
    ("WorkingDir", "string"),
    ("ExposedPorts", "set"),
    ("ArgsEscaped", "bool"),
    ("NetworkDisabled", "bool"),
    ("MacAddress", "string"),
    ("StopSignal", "string"),
    ("Shell", "strings"),
)
_HEALTH_FIELDS: tuple[tuple[str, str], ...] = (
    ("Test", "strings"),
    ("Interval", "int"),
    ("Timeout", "int"),
    ("StartPeriod", "int"),
    ("Retries", "int"),
)


def _go_struct(section: Mapping[str, Any], fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Unmarshal into a Go struct and marshal back: known fields only, struct order, omitempty.

    Go matches keys case-insensitively (the last matching key wins) and sorts map keys.
    """
    folded = {name.casefold(): (name, kind) for name, kind in fields}
    values: dict[str, Any] = {}
    for key, value in section.items():
        match = folded.get(key.casefold())
        if match is None or value is None:
            continue
        name, kind = match
        ok = {
            "bool": isinstance(value, bool),
            "string": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "strings": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "labels": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
            "set": isinstance(value, dict),
            "health": isinstance(value, dict),
        }[kind]
        if not ok:
            raise InstallerError(f"base installer config: {key} has an unexpected type")
        if kind == "labels":
            value = dict(sorted(value.items()))
        elif kind == "set":
            value = {k: {} for k in sorted(value)}
        elif kind == "health":
            value = _go_struct(value, _HEALTH_FIELDS)
        values[name] = value
    out: dict[str, Any] = {}
    for name, kind in fields:
        if name not in values:
            continue
        value = values[name]
        if kind != "health" and not value:  # omitempty (a non-nil *HealthConfig is always kept)
            continue
        out[name] = value
    return out


def _config(base: Mapping[str, Any], arch: str, created: str | None, diff_ids: list[str]) -> bytes:
    """The new image's config, as json.Marshal(v1.ConfigFile) after the mutate chain."""
    section = base.get("config") or {}
    if not isinstance(section, dict):
        raise InstallerError("base installer config has no usable config section")
    if created is None:
        base_created = base.get("created")
        created = base_created if isinstance(base_created, str) and base_created else ZERO_TIME
    return go_json(
        {
            "architecture": arch,
            "created": created,
            "history": [{"created": ZERO_TIME} for _ in diff_ids],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": _go_struct(section, _CONFIG_FIELDS),
        }
    )


def _base_layers(base: ImageLayers, config: Mapping[str, Any]) -> list[Layer]:
    """The kept base layers with their diff ids (by position, as partial.BlobToDiffID does)."""
    rootfs = config.get("rootfs") or {}
    diff_ids = (rootfs.get("diff_ids") or []) if isinstance(rootfs, dict) else []
    if len(diff_ids) != len(base.layers):
        raise InstallerError(
            f"base installer has {len(base.layers)} layers but {len(diff_ids)} diff ids in its config"
        )
    kept = list(zip(base.layers, diff_ids, strict=True))
    if len(kept) == 2:
        # Talos ≥1.5 installers put the stock boot assets in layer 2: drop it, we add our own.
        kept = kept[:1]
    layers = []
    for (descriptor, path), diff_id in kept:
        digest, size = str(descriptor["digest"]), int(descriptor["size"])
        _hex(digest)
        _hex(str(diff_id))
        actual = os.stat(path).st_size
        if actual != size:
            raise InstallerError(f"base layer {digest} is {actual} bytes on disk, expected {size}")
        urls = descriptor.get("urls")
        layers.append(
            Layer(
                digest=digest,
                diff_id=str(diff_id),
                size=size,
                media_type=str(descriptor.get("mediaType") or DOCKER_LAYER),
                path=Path(path),
                annotations=descriptor.get("annotations") or None,
                urls=tuple(urls) if urls else None,
            )
        )
    return layers


def build_installer_image(
    base: ImageLayers,
    files: Sequence[tuple[str, Path]],
    *,
    arch: str,
    workdir: Path,
    created: str | None,
    overlay: OverlayLayerSource | None = None,
) -> InstallerImage:
    """The installer image for one arch: kept base layers + artifacts layer (+ overlay layer).

    ``files`` are (in-image path, source file); ``created`` replaces upstream's ``time.Now()`` so
    builds are reproducible (None keeps the base's). New layer blobs are written into ``workdir``.
    """
    if not files:
        raise InstallerError("an installer image needs boot artifacts")
    try:
        base_config = json.loads(base.config)
    except ValueError as e:
        raise InstallerError(f"base installer config is not JSON: {e}") from e
    if not isinstance(base_config, dict):
        raise InstallerError("base installer config is not a JSON object")
    layers = _base_layers(base, base_config)
    layers.append(_build_layer(_artifact_entries(files), workdir, "artifacts"))
    if overlay is not None:
        layers.append(_build_layer(_overlay_entries(overlay, workdir), workdir, "overlay"))
    config = _config(base_config, arch, created, [layer.diff_id for layer in layers])
    return InstallerImage(config=config, layers=layers)


# --- docker archive --------------------------------------------------------------------------------


def _archive_manifest(image: InstallerImage, repo_tags: list[str] | None) -> bytes:
    """manifest.json: ``[{"Config","RepoTags","Layers"[,"LayerSources"]}]`` as json.Marshal writes it."""
    item: dict[str, Any] = {
        "Config": image.config_digest,
        "RepoTags": repo_tags,
        "Layers": [f"{_hex(layer.digest)}.tar.gz" for layer in image.layers],
    }
    sources = {layer.diff_id: layer.descriptor() for layer in image.layers if not layer.distributable}
    if sources:
        item["LayerSources"] = dict(sorted(sources.items()))
    return go_json([item])


def write_docker_archive(image: InstallerImage, out: Path, *, repo_tags: list[str] | None) -> None:
    """A "docker save" tarball as go-containerregistry's ``tarball.Write`` produces it.

    Entries (regular files, mode 0644, mtime 0): ``sha256:<hex>`` config, ``<hex>.tar.gz`` per
    distinct layer, ``manifest.json``. The factory passes a digest reference: ``RepoTags`` null.
    """
    manifest = _archive_manifest(image, repo_tags)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with open(partial, "wb") as tar:
            tar.write(tar_header(image.config_digest, 0o644, len(image.config), b"0"))
            tar.write(image.config + b"\0" * (-len(image.config) % _BLOCK))
            seen: set[str] = set()
            for layer in image.layers:
                hexpart = _hex(layer.digest)
                if hexpart in seen:
                    continue
                seen.add(hexpart)
                tar.write(tar_header(f"{hexpart}.tar.gz", 0o644, layer.size, b"0"))
                written = 0
                with open(layer.path, "rb") as blob:
                    while chunk := blob.read(_CHUNK):
                        written += len(chunk)
                        tar.write(chunk)
                if written != layer.size:
                    raise InstallerError(f"layer {layer.digest} is {written} bytes, expected {layer.size}")
                tar.write(b"\0" * (-layer.size % _BLOCK))
            tar.write(tar_header("manifest.json", 0o644, len(manifest), b"0"))
            tar.write(manifest + b"\0" * (-len(manifest) % _BLOCK))
            tar.write(b"\0" * (2 * _BLOCK))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
