"""The session's fixture release, built once per run and copied into this session's registry
(tests/support/xdist_shared.py), serves what a push would have: every tag and its digest, every blob,
signatures by skopeo, and the blobs are the shared build's (hard links, no second copy)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from devstack.release.release import Release, public_key_pem, signing_key
from devstack.services import RegistryServer

pytestmark = pytest.mark.integration

MANIFESTS = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def test_every_pushed_tag_answers_with_its_digest(registry: RegistryServer, fixture_release: Release) -> None:
    assert fixture_release.registry == registry.host
    assert len(fixture_release.images) > 20
    for ref, digest in fixture_release.images.items():
        repository, tag = ref.rsplit(":", 1)
        url = f"{registry.url}/v2/{fixture_release.namespace}/{repository}/manifests/{tag}"
        response = requests.head(url, headers={"Accept": MANIFESTS}, timeout=30)
        assert response.status_code == 200, (ref, response.status_code)
        assert response.headers["Docker-Content-Digest"] == digest, ref


def test_skopeo_copies_an_image_with_all_its_blobs(
    registry: RegistryServer, fixture_release: Release, skopeo: str, tmp_path: Path
) -> None:
    ref = f"docker://{registry.host}/{fixture_release.namespace}/siderolabs/imager:v1.12.4"
    subprocess.run(
        [skopeo, "copy", "--src-tls-verify=false", "--all", ref, f"oci:{tmp_path / 'layout'}"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == fixture_release.images["siderolabs/imager:v1.12.4"]


def test_the_copy_shares_the_builds_blobs_and_keys(
    registry: RegistryServer, fixture_release: Release
) -> None:
    repo = f"{registry.url}/v2/{fixture_release.namespace}/siderolabs/imager"
    index = requests.get(f"{repo}/manifests/v1.12.4", headers={"Accept": MANIFESTS}, timeout=30).json()
    digests = [m["digest"] for m in index["manifests"]]
    for digest in list(digests):
        manifest = requests.get(f"{repo}/manifests/{digest}", headers={"Accept": MANIFESTS}, timeout=30)
        digests += [layer["digest"] for layer in manifest.json()["layers"]]
    blobs = registry.data_dir / "docker/registry/v2/blobs/sha256"
    for digest in digests:
        data = blobs / digest[7:9] / digest[7:] / "data"
        assert data.stat().st_nlink >= 2, f"{digest} is a copy, not the shared build's blob"
    assert Path(fixture_release.public_key).read_bytes() == public_key_pem(signing_key())
    assert json.loads(Path(fixture_release.trusted_root).read_text())
