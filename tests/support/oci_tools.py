"""Small, independent OCI helpers for registry tests: copying images between repositories of one
registry with cross-repository blob mounts, checking an OCI image layout on disk, and checking a
cosign signature with two independent implementations (``cryptography`` and ``openssl``)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "MANIFEST_ACCEPT",
    "b64",
    "check_oci_layout",
    "get_manifest",
    "mount_copy",
    "put_manifest",
    "verify_ecdsa",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
TIMEOUT = 60


def get_manifest(host: str, repository: str, reference: str) -> tuple[bytes, str, str]:
    """``(body, media type, digest)`` of ``http://<host>/v2/<repository>/manifests/<reference>``."""
    response = requests.get(
        f"http://{host}/v2/{repository}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, (repository, reference, response.status_code, response.text)
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    return response.content, response.headers["Content-Type"].split(";")[0], digest


def put_manifest(host: str, repository: str, reference: str, body: bytes, media_type: str) -> str:
    response = requests.put(
        f"http://{host}/v2/{repository}/manifests/{reference}",
        data=body,
        headers={"Content-Type": media_type},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, (repository, reference, response.status_code, response.text)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _mount(host: str, source: str, target: str, digest: str) -> None:
    """Cross-repository blob mount (distribution-spec): no bytes travel."""
    response = requests.post(
        f"http://{host}/v2/{target}/blobs/uploads/",
        params={"mount": digest, "from": source},
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, (source, target, digest, response.status_code, response.text)


def mount_copy(host: str, source: str, target: str, reference: str, tag: str | None = None) -> str:
    """Copies ``source:reference`` (an index or a manifest, with every child and blob) to ``target``,
    tagged ``tag`` (default: ``reference``); returns the digest, which does not change."""
    body, media_type, digest = get_manifest(host, source, reference)
    document = json.loads(body)
    for child in document.get("manifests", []):
        mount_copy(host, source, target, child["digest"], child["digest"])
    for descriptor in [document.get("config"), *document.get("layers", [])]:
        if descriptor and descriptor.get("digest") and not descriptor.get("urls"):
            _mount(host, source, target, descriptor["digest"])
    put_manifest(host, target, tag or reference, body, media_type)
    return digest


def check_oci_layout(root: Path) -> dict[str, Any]:
    """Checks an OCI image layout (``skopeo copy … oci:<root>``): the ``oci-layout`` marker, every blob
    hashing to its name, and every descriptor reachable from ``index.json`` present with its size.
    Returns ``index.json``."""
    marker = json.loads((root / "oci-layout").read_text())
    assert marker == {"imageLayoutVersion": "1.0.0"}, marker
    blobs = root / "blobs" / "sha256"
    names = sorted(p.name for p in blobs.iterdir())
    assert names, "no blobs"
    for path in blobs.iterdir():
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == path.name, f"blob {path.name} hashes to {digest.hexdigest()}"
    index = json.loads((root / "index.json").read_text())

    def walk(descriptor: dict[str, Any]) -> None:
        algorithm, _, hexdigest = descriptor["digest"].partition(":")
        assert algorithm == "sha256", descriptor
        path = blobs / hexdigest
        assert path.is_file(), f"descriptor {descriptor['digest']} has no blob"
        assert path.stat().st_size == descriptor["size"], descriptor
        if descriptor.get("mediaType") in (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST):
            document = json.loads(path.read_bytes())
            for child in document.get("manifests", []):
                walk(child)
            for child in [document.get("config"), *document.get("layers", [])]:
                if child:
                    walk(child)

    for descriptor in index["manifests"]:
        walk(descriptor)
    return dict(index)


def verify_ecdsa(public_pem: bytes, payload: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (ASN.1 DER ECDSA over sha256, as cosign stores it) verifies, checked by
    ``cryptography`` and by ``openssl dgst -verify``; both must agree."""
    key = serialization.load_pem_public_key(public_pem)
    assert isinstance(key, ec.EllipticCurvePublicKey), type(key)
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        by_library = True
    except Exception:  # InvalidSignature, or a malformed DER signature
        by_library = False
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        pem, data, sig = Path(tmp, "key.pem"), Path(tmp, "payload"), Path(tmp, "payload.sig")
        pem.write_bytes(public_pem)
        data.write_bytes(payload)
        sig.write_bytes(signature)
        proc = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(pem), "-signature", str(sig), str(data)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    by_openssl = proc.returncode == 0 and "Verified OK" in proc.stdout
    assert by_library == by_openssl, (by_library, proc.stdout, proc.stderr)
    return by_library


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
