"""A hostile OCI registry for tests: a small threaded HTTP server in front of a real one.

Every ``GET``/``HEAD`` is forwarded to the real registry (``upstream``, e.g. the session's
docker-registry) and answered as it answered, so signatures, catalogs and manifests are the fixture
release's own; only the paths given a :class:`Behaviour` misbehave:

- ``endless``: the real body, then zeros for ever (chunked, so no Content-Length stops a client);
- ``trickle``: the real body one byte every ``interval`` seconds (never idle long enough for a
  socket timeout, never done);
- ``giant``: a JSON document that never ends (``{"a":"xxxx…``), for manifests;
- ``stall``: headers, then nothing.

Each misbehaving answer is logged in :attr:`HostileRegistry.served` (path, bytes sent, seconds until
the client hung up), so a test can prove the factory cut it off, and when.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

import requests
import zstandard

from common.registry.client import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from devstack.release import content
from devstack.release.oci import Image, Pushed, layer, with_parents
from devstack.release.release import UPSTREAM_REGISTRY, Publisher, Release, signing_key
from devstack.services import LOOPBACK, RegistryServer, free_port
from tests.support.oci_tools import get_manifest
from tests.support.release_variants import IMAGER, _copy_signed

__all__ = [
    "HOSTILE_EXTENSIONS",
    "Behaviour",
    "HostileRegistry",
    "HostileRelease",
    "Served",
    "hostile_release",
]

Kind = Literal["endless", "trickle", "giant", "stall"]
#: Headers of the real registry's answer passed on.
_PASSED = ("Content-Type", "Docker-Content-Digest", "Docker-Distribution-API-Version", "Link", "Location")


@dataclass(frozen=True)
class Behaviour:
    kind: Kind
    interval: float = 0.5  # trickle: seconds between bytes
    status: int = 200  # e.g. 400: an error whose body never ends


@dataclass
class Served:
    path: str
    kind: Kind
    sent: int = 0  # bytes written before the client went away (or the server stopped)
    seconds: float = 0.0  # from the first byte of the body to the client's hang-up
    done: bool = False


@dataclass
class HostileRegistry:
    upstream: str  # host:port of the real registry
    behaviours: dict[str, Behaviour] = field(default_factory=dict)  # exact request path → behaviour
    served: list[Served] = field(default_factory=list)
    port: int = 0
    _server: http.server.ThreadingHTTPServer | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> HostileRegistry:
        self.port = self.port or free_port()
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                registry._forward(self, head=True)

            def do_GET(self) -> None:
                behaviour = registry.behaviours.get(self.path.split("?", 1)[0])
                if behaviour is None:
                    registry._forward(self, head=False)
                else:
                    registry._misbehave(self, behaviour)

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="hostile-registry", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def finished(self, path: str, timeout: float = 30.0) -> Served:
        """The record of the last misbehaving answer on ``path``, once the client has hung up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [s for s in self.served if s.path == path and s.done]
            if done:
                return done[-1]
            time.sleep(0.05)
        raise AssertionError(f"nobody finished reading {path} within {timeout} s: {self.served}")

    # --- answers -------------------------------------------------------------------------------

    def _upstream(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> requests.Response:
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() in ("accept", "range", "authorization")
        }
        return requests.request(
            method, f"http://{self.upstream}{handler.path}", headers=headers, stream=True, timeout=60
        )

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, *, head: bool) -> None:
        with self._upstream(handler, "HEAD" if head else "GET") as answer:
            body = b"" if head else answer.raw.read(decode_content=False)
            handler.send_response(answer.status_code)
            for name in _PASSED:
                if name in answer.headers:
                    handler.send_header(name, answer.headers[name])
            length = answer.headers.get("Content-Length", "0") if head else str(len(body))
            handler.send_header("Content-Length", length)
            handler.end_headers()
            if body:
                handler.wfile.write(body)

    def _misbehave(self, handler: http.server.BaseHTTPRequestHandler, behaviour: Behaviour) -> None:
        record = Served(handler.path, behaviour.kind)
        self.served.append(record)
        real = b""
        content_type = "application/octet-stream"
        if behaviour.kind in ("endless", "trickle"):
            with self._upstream(handler, "GET") as answer:
                real = answer.raw.read(decode_content=False)
                content_type = answer.headers.get("Content-Type", content_type)
        elif behaviour.kind == "giant":
            content_type = "application/vnd.oci.image.index.v1+json"
        handler.send_response(behaviour.status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        started = time.monotonic()

        def chunk(data: bytes) -> None:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()
            record.sent += len(data)

        try:
            if behaviour.kind == "endless":
                chunk(real)
                zeros = bytes(64 * 1024)
                while not self._stopping.is_set():
                    chunk(zeros)
            elif behaviour.kind == "trickle":
                for i in range(len(real)):
                    if self._stopping.wait(behaviour.interval):
                        break
                    chunk(real[i : i + 1])
                else:
                    handler.wfile.write(b"0\r\n\r\n")
            elif behaviour.kind == "giant":
                chunk(b'{"schemaVersion":2,"annotations":{"a":"')
                filler = b"x" * (64 * 1024)
                while not self._stopping.is_set():
                    chunk(filler)
            else:  # stall: probe the peer without sending anything (b"" from recv: it hung up)
                while not self._stopping.wait(0.1) and _peer_open(handler):
                    pass
        except (BrokenPipeError, ConnectionResetError, BlockingIOError, OSError):
            pass
        finally:
            record.seconds = time.monotonic() - started
            record.done = True
            handler.close_connection = True


def _peer_open(handler: http.server.BaseHTTPRequestHandler) -> bool:
    try:
        return handler.connection.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read: still connected


# --- a release whose extensions misbehave ------------------------------------------------------

ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
#: The extensions :func:`hostile_release` adds to the catalog, and what each does.
HOSTILE_EXTENSIONS = {
    "good-ext": "An ordinary extension, served as it is.",
    "bomb-ext": "Its zstd layer is a decompression bomb.",
    "endless-ext": "The registry sends its layer, then zeros for ever.",
    "trickle-ext": "The registry sends its layer a byte at a time.",
    "giant-ext": "The registry answers its index with a document that never ends.",
}


@dataclass(frozen=True)
class HostileRelease:
    release: Release  # reduced to one version, in a namespace of its own, on the real registry
    indexes: dict[str, str]  # extension name (e.g. "bomb-ext") → its signed index digest
    layers: dict[str, str]  # extension name → the digest of its (only) layer
    manifests: dict[str, str]  # extension name → its linux/amd64 manifest digest

    def image(self, registry: str, name: str) -> str:
        """``<registry>/<namespace>/siderolabs/<name>@<index digest>``, as the factory names it."""
        return f"{registry}/{self.release.namespace}/siderolabs/{name}@{self.indexes[name]}"

    def blob_path(self, name: str) -> str:
        return f"/v2/{self.release.namespace}/siderolabs/{name}/blobs/{self.layers[name]}"

    def index_path(self, name: str) -> str:
        return f"/v2/{self.release.namespace}/siderolabs/{name}/manifests/{self.indexes[name]}"


def hostile_release(registry: RegistryServer, release: Release, version: str, bomb: int) -> HostileRelease:
    """``release`` reduced to ``version``, its extensions catalog listing :data:`HOSTILE_EXTENSIONS`,
    each signed with the release key like every other image; ``bomb-ext``'s layer is a zstd stream
    of a tar holding one file of ``bomb`` zero bytes (1 GiB compresses to about 32 KiB)."""
    namespace = f"hostile-{uuid.uuid4().hex[:8]}"
    for repository in (IMAGER, "siderolabs/overlays", "siderolabs/installer-base"):
        _copy_signed(registry, release.namespace, namespace, repository, version)
    publisher = Publisher(registry.host, namespace, signing_key(), None)
    labels = content.image_labels(version)
    unique = uuid.uuid4().hex  # blobs no other test shares (blobs are stored once per registry)
    lines, indexes, layers, manifests = [], {}, {}, {}
    for name, description in HOSTILE_EXTENSIONS.items():
        repository = f"siderolabs/{name}"
        spec = content.ExtensionSpec(
            repository=repository,
            tag="1.0.0",
            description=description,
            constraint=">= v1.0.0",
            entries=(content.file(f"rootfs/usr/local/share/{name}/README", f"{unique}\n" + "x" * 4096),),
        )
        if name == "bomb-ext":
            pushed = _push_bomb(publisher, spec, labels, bomb)
        else:
            images = [Image([layer(spec.layer_entries(a))], a, labels=labels) for a in spec.architectures]
            pushed = publisher.publish(repository, spec.tag, images)
        index = json.loads(get_manifest(registry.host, f"{namespace}/{repository}", pushed.digest)[0])
        amd64 = next(m for m in index["manifests"] if m["platform"]["architecture"] == "amd64")
        manifest = json.loads(get_manifest(registry.host, f"{namespace}/{repository}", amd64["digest"])[0])
        (descriptor,) = manifest["layers"]
        indexes[name], layers[name], manifests[name] = pushed.digest, descriptor["digest"], amd64["digest"]
        lines.append((f"{UPSTREAM_REGISTRY}/{repository}:{spec.tag}", pushed.digest, description))
    publisher.publish(
        "siderolabs/extensions",
        version,
        [Image([layer(content.extensions_catalog(lines))], a, labels=labels) for a in ("amd64", "arm64")],
    )
    reduced = dataclasses.replace(release, namespace=namespace, versions=[version], broken=[])
    return HostileRelease(reduced, indexes, layers, manifests)


class _ZstdSink:
    """Where ``tarfile`` writes the bomb: each piece hashed (the diff ID) and compressed at once, so
    the uncompressed stream never sits in memory."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=1).compressobj()
        self.diff_id = hashlib.sha256()
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.diff_id.update(data)
        self.parts.append(self.compressor.compress(data))
        return len(data)

    def blob(self) -> bytes:
        return b"".join(self.parts) + self.compressor.flush()


class _Zeros:
    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def _bomb_layer(spec: content.ExtensionSpec, size: int) -> _ZstdSink:
    """The extension's layer plus ``<first file>.zeros``, ``size`` zero bytes, as a zstd stream."""
    sink = _ZstdSink()
    bomb = content.file(f"{spec.entries[0].path}.zeros", b"")
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        archive.copybufsize = 1 << 20  # tarfile copies 16 KiB at a time otherwise
        for entry in with_parents([*spec.layer_entries(), bomb]):
            info = tarfile.TarInfo(entry.path)
            info.mode = entry.mode
            if entry.data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif entry is bomb:
                info.size = size
                archive.addfile(info, _Zeros(size))
            else:
                info.size = len(entry.data)
                archive.addfile(info, io.BytesIO(entry.data))
    return sink


def _push_bomb(
    publisher: Publisher, spec: content.ExtensionSpec, labels: dict[str, str], size: int
) -> Pushed:
    client = publisher.client(spec.repository)
    sink = _bomb_layer(spec, size)
    blob, diff_id = sink.blob(), sink.diff_id
    layer_descriptor = {"mediaType": ZSTD_LAYER, "size": len(blob), "digest": client.push_blob(blob)}
    entries = []
    for arch in spec.architectures:
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id.hexdigest()]},
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": client.push_blob(config)},
            "layers": [layer_descriptor],
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = client.put_manifest_bytes("sha256:" + hashlib.sha256(body).hexdigest(), body, OCI_MANIFEST)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "size": len(body),
                "digest": digest,
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, separators=(",", ":")
    )
    data = index.encode()
    digest = client.put_manifest_bytes(spec.tag, data, OCI_INDEX)
    publisher.sign(spec.repository, digest)
    return Pushed(digest, len(data), OCI_INDEX)
