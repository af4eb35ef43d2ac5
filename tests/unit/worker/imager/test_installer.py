"""Installer images: layer bytes as Go writes them, config as mutate builds it, archives real tools load."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from common.artifacts.manager import ImageLayers
from common.gojson import marshal as go_json
from worker.imager.docker_archive import write_docker_archive
from worker.imager.installer import (
    OverlayLayerSource,
    _Entry,
    _write_tar,
    artifact_paths,
    build_installer_image,
)
from worker.imager.installer_image import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    ZERO_TIME,
    InstallerError,
    InstallerImage,
)

CREATED = "2025-12-01T10:20:30Z"
UKI = "usr/install/amd64/vmlinuz.efi"
SDBOOT = "usr/install/amd64/systemd-boot.efi"
LABELS = {
    "org.opencontainers.image.source": "https://github.com/siderolabs/talos",
    "alpha.talos.dev/version": "v1.12.4",
}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, data: bytes = b"") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 1700000000
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info


def make_base(tmp: Path, *, two_layers: bool = False) -> ImageLayers:
    """A fake installer-base (or old two-layer installer) kept as pulled: blobs + config."""
    tmp.mkdir(parents=True, exist_ok=True)
    installer = b"\x7fELF fake installer\n"
    os_release = b'NAME="Talos"\nVERSION_ID=v1.12.4\n'
    link = _info("bin", tarfile.SYMTYPE, 0o777)
    link.linkname = "usr/bin"
    layers = [
        _tar(
            [
                (_info("usr", tarfile.DIRTYPE, 0o755), None),
                (_info("usr/bin", tarfile.DIRTYPE, 0o755), None),
                (_info("usr/bin/installer", mode=0o755, data=installer), installer),
                (link, None),
                (_info("etc", tarfile.DIRTYPE, 0o755), None),
                (_info("etc/os-release", data=os_release), os_release),
            ]
        )
    ]
    if two_layers:
        stock = b"stock kernel"
        layers.append(_tar([(_info("usr/install/amd64/vmlinuz", data=stock), stock)]))
    descriptors: list[tuple[dict[str, Any], Path]] = []
    for index, raw in enumerate(layers):
        blob = gzip.compress(raw, mtime=0)
        path = tmp / f"blob-{index}"
        path.write_bytes(blob)
        descriptors.append(({"mediaType": OCI_LAYER, "size": len(blob), "digest": sha(blob)}, path))
    config = {
        "architecture": "amd64",
        "created": "2025-06-01T00:00:00Z",
        "history": [{"created": "2025-06-01T00:00:00Z", "created_by": "COPY / /"} for _ in layers],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(raw) for raw in layers]},
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "VERSION=v1.12.4"],
            "Entrypoint": ["/bin/installer"],
            "Labels": LABELS,
            "WorkingDir": "",  # omitempty: dropped on re-marshal
            "OnBuild": None,
            "NotAGoField": True,  # unknown to v1.Config: dropped
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": 0, "digest": ""},
        "layers": [d for d, _ in descriptors],
    }
    return ImageLayers(
        digest=sha(b"index"), manifest=manifest, config=json.dumps(config).encode(), layers=descriptors
    )


@pytest.fixture
def assets(tmp_path: Path) -> dict[str, Path]:
    uki = tmp_path / "assets/uki.efi"
    uki.parent.mkdir()
    uki.write_bytes(os.urandom(1 << 20) + b"UKI-END")
    sdboot = tmp_path / "assets/sd-boot.efi"
    sdboot.write_bytes(b"MZ sd-boot " * 300)
    os.chmod(uki, 0o600)  # the source mode must not leak into the layer
    return {UKI: uki, SDBOOT: sdboot}


def build(tmp: Path, assets: dict[str, Path], **kwargs: Any) -> InstallerImage:
    base = kwargs.pop("base", None) or make_base(tmp / "base")
    return build_installer_image(
        base,
        [(UKI, assets[UKI]), (SDBOOT, assets[SDBOOT])],
        arch=kwargs.pop("arch", "amd64"),
        workdir=tmp / "work",
        created=kwargs.pop("created", CREATED),
        **kwargs,
    )


def layer_members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:*") as tar:
        return tar.getmembers()


# --- image model -------------------------------------------------------------------------------


def test_layers_config_and_manifest(tmp_path: Path, assets: dict[str, Path]) -> None:
    base = make_base(tmp_path / "base")
    image = build(tmp_path, assets, base=base)
    assert [layer.digest for layer in image.layers[:1]] == [base.layers[0][0]["digest"]]
    assert image.layers[0].path == base.layers[0][1]
    for layer in image.layers:
        blob = layer.path.read_bytes()
        assert sha(blob) == layer.digest and len(blob) == layer.size
        assert sha(gzip.decompress(blob)) == layer.diff_id
        assert layer.media_type == OCI_LAYER

    config = json.loads(image.config)
    # json.Marshal(v1.ConfigFile) field order, the base's history dropped, one zero entry per layer.
    assert list(config) == ["architecture", "created", "history", "os", "rootfs", "config"]
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["created"] == CREATED
    assert config["history"] == [{"created": ZERO_TIME}] * 2
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id for layer in image.layers]}
    assert config["config"] == {
        "Entrypoint": ["/bin/installer"],
        "Env": ["PATH=/usr/bin:/bin", "VERSION=v1.12.4"],
        "Labels": dict(sorted(LABELS.items())),
    }
    assert list(config["config"]) == ["Entrypoint", "Env", "Labels"]  # v1.Config struct order
    assert list(config["config"]["Labels"]) == sorted(LABELS)  # Go sorts map keys

    manifest = json.loads(image.manifest())
    assert image.manifest() == go_json(manifest)  # compact, as json.Marshal
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(image.config), "digest": sha(image.config)},
        "layers": [{"mediaType": OCI_LAYER, "size": la.size, "digest": la.digest} for la in image.layers],
    }
    docker = json.loads(image.docker_manifest())
    assert docker["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert docker["config"]["digest"] == sha(image.config)
    assert [d["digest"] for d in docker["layers"]] == [la.digest for la in image.layers]


def test_created_none_keeps_the_base_and_arch_is_set(tmp_path: Path, assets: dict[str, Path]) -> None:
    image = build(tmp_path, assets, created=None, arch="arm64")
    config = json.loads(image.config)
    assert config["created"] == "2025-06-01T00:00:00Z"
    assert config["architecture"] == "arm64"


def test_two_layer_base_keeps_only_its_first_layer(tmp_path: Path, assets: dict[str, Path]) -> None:
    base = make_base(tmp_path / "base", two_layers=True)
    image = build(tmp_path, assets, base=base)
    assert len(image.layers) == 2
    assert image.layers[0].digest == base.layers[0][0]["digest"]
    base_diff_ids = json.loads(base.config)["rootfs"]["diff_ids"]
    assert json.loads(image.config)["rootfs"]["diff_ids"] == [base_diff_ids[0], image.layers[1].diff_id]
    names = [m.name for m in layer_members(image.layers[1].path)]
    assert "usr/install/amd64/vmlinuz" not in names


def test_three_layer_base_is_kept_whole(tmp_path: Path, assets: dict[str, Path]) -> None:
    two = make_base(tmp_path / "base", two_layers=True)
    third = gzip.compress(_tar([]), mtime=0)
    (tmp_path / "base/blob-2").write_bytes(third)
    config = json.loads(two.config)
    config["rootfs"]["diff_ids"].append(sha(_tar([])))
    base = ImageLayers(
        digest=two.digest,
        manifest=two.manifest,
        config=json.dumps(config).encode(),
        layers=[
            *two.layers,
            ({"mediaType": OCI_LAYER, "size": len(third), "digest": sha(third)}, tmp_path / "base/blob-2"),
        ],
    )
    assert len(build(tmp_path, assets, base=base).layers) == 4


def test_artifacts_layer_is_what_go_archive_tar_writes(tmp_path: Path, assets: dict[str, Path]) -> None:
    image = build(tmp_path, assets)
    blob = image.layers[-1].path.read_bytes()
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"  # Go gzip: no name, mtime 0, BestSpeed
    raw = gzip.decompress(blob)
    members = layer_members(image.layers[-1].path)
    # Only the two files (sorted), no parent directories, mode 0, root, epoch: filemap.Build.
    assert [m.name for m in members] == [SDBOOT, UKI]
    for member in members:
        assert member.type == tarfile.REGTYPE and member.mode == 0
        assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (0, 0, "", "", 0)
    with tarfile.open(image.layers[-1].path, "r:gz") as tar:
        for member in members:
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == assets[member.name].read_bytes()
    # USTAR magic, Go's zeroed device fields, two end blocks and no 10 KiB record padding.
    assert raw[257:265] == b"ustar\x0000" and raw[329:345] == b"0000000\x00" * 2
    ends = (
        512
        + -(-assets[SDBOOT].stat().st_size // 512) * 512
        + 512
        + -(-assets[UKI].stat().st_size // 512) * 512
    )
    assert len(raw) == ends + 1024 and raw[ends:] == b"\0" * 1024


def test_tar_matches_go_golden(tmp_path: Path) -> None:
    """Bytes from Go's archive/tar (filemap.Build header shapes): USTAR split, PAX path, non-ASCII."""
    # Produced by a Go program writing tar.Header{Name, Mode, Size} / {Name, Mode, TypeDir}
    # for the same entries; SHA-256 of its output.
    golden = "1566f7086672e7f77ee92adc4c83b9eb49ac434b922df00278701fefc1cc6a31"
    files = {"one": b"hello\n", "two": b"k" * 1500, "empty": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def entry(name: str, mode: int, source: str | None) -> _Entry:
        if source is None:
            return _Entry(name, mode, None)
        return _Entry(name, mode, tmp_path / source, len(files[source]))

    out = io.BytesIO()
    _write_tar(
        [
            entry(SDBOOT, 0, "one"),
            entry(UKI, 0, "two"),
            entry("overlay/artifacts/arm64", 0o755, None),
            entry("overlay/artifacts/arm64/" + "d" * 70 + "/" + "f" * 60, 0o644, "two"),
            entry("overlay/artifacts/" + "n" * 130, 0o600, "one"),
            entry("overlay/artifacts/caf\u00e9.dtb", 0o644, "empty"),
        ],
        out,
    )
    assert hashlib.sha256(out.getvalue()).hexdigest() == golden
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
    assert names[3] == "overlay/artifacts/arm64/" + "d" * 70 + "/" + "f" * 60
    assert names[4:] == ["overlay/artifacts/" + "n" * 130, "overlay/artifacts/caf\u00e9.dtb"]


def test_builds_are_byte_identical(tmp_path: Path, assets: dict[str, Path]) -> None:
    base = make_base(tmp_path / "base")
    archives = []
    for run in ("a", "b"):
        image = build_installer_image(
            base,
            [(UKI, assets[UKI]), (SDBOOT, assets[SDBOOT])],
            arch="amd64",
            workdir=tmp_path / run,
            created=CREATED,
        )
        write_docker_archive(image, tmp_path / f"{run}.tar", repo_tags=None)
        archives.append((tmp_path / f"{run}.tar").read_bytes())
    assert archives[0] == archives[1]
    # The order the files are given in does not matter: filemap.Layer sorts.
    swapped = build_installer_image(
        base,
        [(SDBOOT, assets[SDBOOT]), ("/" + UKI, assets[UKI])],
        arch="amd64",
        workdir=tmp_path / "c",
        created=CREATED,
    )
    write_docker_archive(swapped, tmp_path / "c.tar", repo_tags=None)
    assert (tmp_path / "c.tar").read_bytes() == archives[0]


def test_layers_stream_instead_of_loading_files(tmp_path: Path) -> None:
    big = tmp_path / "big.efi"
    with open(big, "wb") as f:
        f.truncate(48 << 20)
    tracemalloc.start()
    try:
        image = build_installer_image(
            make_base(tmp_path / "base"), [(UKI, big)], arch="amd64", workdir=tmp_path / "w", created=CREATED
        )
        write_docker_archive(image, tmp_path / "out.tar", repo_tags=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20
    assert image.layers[-1].diff_id == sha(gzip.decompress(image.layers[-1].path.read_bytes()))


# --- docker archive ----------------------------------------------------------------------------


def test_docker_archive_layout(tmp_path: Path, assets: dict[str, Path]) -> None:
    image = build(tmp_path, assets)
    out = tmp_path / "installer-amd64.tar"
    write_docker_archive(image, out, repo_tags=None)
    config_hex = hashlib.sha256(image.config).hexdigest()
    layer_names = [layer.digest.removeprefix("sha256:") + ".tar.gz" for layer in image.layers]
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [f"sha256:{config_hex}", *layer_names, "manifest.json"]
        for member in members:
            assert member.type == tarfile.REGTYPE and member.mode == 0o644
            assert (member.uid, member.gid, member.mtime) == (0, 0, 0)

        def read(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None
            return f.read()

        assert read(f"sha256:{config_hex}") == image.config
        for name, layer in zip(layer_names, image.layers, strict=True):
            assert read(name) == layer.path.read_bytes()
        manifest = read("manifest.json")
    expected = (
        f'[{{"Config":"sha256:{config_hex}","RepoTags":null,"Layers":["' + '","'.join(layer_names) + '"]}]'
    )
    assert manifest == expected.encode()
    assert not list(tmp_path.glob(".*.partial"))

    write_docker_archive(image, out, repo_tags=["ghcr.io/siderolabs/installer-base:v1.12.4"])
    with tarfile.open(out) as tar:
        f = tar.extractfile("manifest.json")
        assert f is not None
        assert json.loads(f.read())[0]["RepoTags"] == ["ghcr.io/siderolabs/installer-base:v1.12.4"]


def _skopeo(*args: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_skopeo_inspects_the_archive(tmp_path: Path, assets: dict[str, Path]) -> None:
    image = build(tmp_path, assets)
    out = tmp_path / "installer-amd64.tar"
    write_docker_archive(image, out, repo_tags=None)
    info = json.loads(_skopeo("inspect", f"docker-archive:{out}"))
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Created"] == CREATED
    assert info["Labels"] == LABELS
    assert info["Env"] == ["PATH=/usr/bin:/bin", "VERSION=v1.12.4"]
    # The docker-archive source serves layers uncompressed, so it lists the diff ids.
    assert info["Layers"] == [layer.diff_id for layer in image.layers]
    assert json.loads(_skopeo("inspect", "--config", f"docker-archive:{out}")) == json.loads(image.config)


def test_skopeo_copies_to_an_oci_layout(tmp_path: Path, assets: dict[str, Path]) -> None:
    image = build(tmp_path, assets)
    out = tmp_path / "installer-amd64.tar"
    write_docker_archive(image, out, repo_tags=None)
    layout = tmp_path / "oci"
    _skopeo("copy", "--quiet", f"docker-archive:{out}", f"oci:{layout}:installer")

    def blob(digest: str) -> Path:
        return layout / "blobs/sha256" / digest.removeprefix("sha256:")

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_bytes())
    config = json.loads(blob(manifest["config"]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]
    assert config["config"]["Entrypoint"] == ["/bin/installer"]
    assert len(manifest["layers"]) == 2
    first = {m.name: m for m in layer_members(blob(manifest["layers"][0]["digest"]))}
    assert first["bin"].issym() and first["bin"].linkname == "usr/bin"
    assert first["usr/bin/installer"].mode == 0o755
    last = layer_members(blob(manifest["layers"][1]["digest"]))
    assert [(m.name, m.mode, m.type) for m in last] == [
        (SDBOOT, 0, tarfile.REGTYPE),
        (UKI, 0, tarfile.REGTYPE),
    ]
    with tarfile.open(blob(manifest["layers"][1]["digest"]), "r:*") as tar:
        f = tar.extractfile(UKI)
        assert f is not None
        assert f.read() == assets[UKI].read_bytes()


def test_podman_loads_the_archive(tmp_path: Path, assets: dict[str, Path]) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    image = build(tmp_path, assets)
    out = tmp_path / "installer-amd64.tar"
    write_docker_archive(image, out, repo_tags=None)
    # podman refuses a runroot longer than 50 characters: pytest's tmp_path is too long for it.
    with tempfile.TemporaryDirectory(prefix="pm-", dir="/tmp") as store:
        podman = ["podman", "--root", f"{store}/root", "--runroot", f"{store}/run", "--storage-driver", "vfs"]
        load = subprocess.run([*podman, "load", "-i", str(out)], capture_output=True, text=True, check=False)
        # `podman load` needs no container runtime: with vfs and its own root it works as root anywhere.
        assert load.returncode == 0, f"podman could not load the archive: {load.stderr.strip()}"
        config_id = hashlib.sha256(image.config).hexdigest()
        assert config_id in load.stdout
        inspect = subprocess.run(
            [*podman, "image", "inspect", config_id], capture_output=True, text=True, check=True
        )
        subprocess.run([*podman, "rmi", "--all", "--force"], capture_output=True, check=False)
    (info,) = json.loads(inspect.stdout)
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Config"]["Entrypoint"] == ["/bin/installer"]
    assert info["Labels"] == LABELS
    assert info["RootFS"]["Layers"] == [layer.diff_id for layer in image.layers]


# --- overlay layer -----------------------------------------------------------------------------


def make_overlay(root: Path) -> OverlayLayerSource:
    (root / "artifacts/arm64/u-boot/rock64").mkdir(parents=True)
    (root / "artifacts/arm64/firmware").mkdir(parents=True)
    (root / "artifacts/arm64/u-boot/rock64/u-boot-rockchip.bin").write_bytes(b"uboot" * 100)
    (root / "artifacts/arm64/firmware/fw.bin").write_bytes(b"fw")
    os.chmod(root / "artifacts/arm64/firmware/fw.bin", 0o600)
    os.chmod(root / "artifacts/arm64/firmware", 0o750)
    (root / "installers").mkdir()
    (root / "installers/rock64").write_bytes(b"\x7fELF rock64")
    (root / "installers/rockpi4").write_bytes(b"\x7fELF rockpi4")
    os.chmod(root / "installers/rock64", 0o755)
    (root / "profiles").mkdir()
    (root / "profiles/rock64.yaml").write_text("arch: arm64\n")
    return OverlayLayerSource(root=root, installer_name="rock64", extra_options_yaml=b"configTxtAppend: x\n")


def test_overlay_layer(tmp_path: Path, assets: dict[str, Path]) -> None:
    overlay = make_overlay(tmp_path / "overlay")
    image = build(tmp_path, assets, overlay=overlay, arch="arm64")
    assert len(image.layers) == 3
    assert len(json.loads(image.config)["history"]) == 3
    members = layer_members(image.layers[-1].path)
    got = [(m.name, m.type, m.mode) for m in members]
    # filemap.Walk skips each walked root: no overlay/, overlay/artifacts or overlay/installers.
    assert got == [
        ("overlay/artifacts/arm64", tarfile.DIRTYPE, 0o755),
        ("overlay/artifacts/arm64/firmware", tarfile.DIRTYPE, 0o750),
        ("overlay/artifacts/arm64/firmware/fw.bin", tarfile.REGTYPE, 0o600),
        ("overlay/artifacts/arm64/u-boot", tarfile.DIRTYPE, 0o755),
        ("overlay/artifacts/arm64/u-boot/rock64", tarfile.DIRTYPE, 0o755),
        ("overlay/artifacts/arm64/u-boot/rock64/u-boot-rockchip.bin", tarfile.REGTYPE, 0o644),
        ("overlay/extra-options", tarfile.REGTYPE, 0o644),
        ("overlay/installers/default", tarfile.REGTYPE, 0o755),
    ]
    with tarfile.open(image.layers[-1].path, "r:gz") as tar:
        for name, expected in (
            ("overlay/installers/default", b"\x7fELF rock64"),
            ("overlay/extra-options", b"configTxtAppend: x\n"),
        ):
            f = tar.extractfile(name)
            assert f is not None and f.read() == expected


def test_overlay_needs_the_named_installer(tmp_path: Path, assets: dict[str, Path]) -> None:
    overlay = make_overlay(tmp_path / "overlay")
    for name in ("missing", "../installers/rock64", ""):
        bad = OverlayLayerSource(root=overlay.root, installer_name=name, extra_options_yaml=b"")
        with pytest.raises(InstallerError):
            build(tmp_path, assets, overlay=bad)


# --- inputs and helpers ------------------------------------------------------------------------


def test_bad_inputs_are_rejected(tmp_path: Path, assets: dict[str, Path]) -> None:
    base = make_base(tmp_path / "base")
    with pytest.raises(InstallerError, match="needs boot artifacts"):
        build_installer_image(base, [], arch="amd64", workdir=tmp_path / "w", created=CREATED)
    with pytest.raises(InstallerError, match="invalid installer artifact path"):
        build_installer_image(
            base, [("usr/../etc/x", assets[UKI])], arch="amd64", workdir=tmp_path / "w", created=CREATED
        )
    with pytest.raises(InstallerError, match="duplicate"):
        build_installer_image(
            base,
            [(UKI, assets[UKI]), ("/" + UKI, assets[UKI])],
            arch="amd64",
            workdir=tmp_path / "w",
            created=CREATED,
        )
    config = json.loads(base.config)
    config["rootfs"]["diff_ids"].append(sha(b"extra"))
    wrong = ImageLayers(base.digest, base.manifest, json.dumps(config).encode(), base.layers)
    with pytest.raises(InstallerError, match="diff ids"):
        build_installer_image(
            wrong, [(UKI, assets[UKI])], arch="amd64", workdir=tmp_path / "w", created=CREATED
        )
    descriptor, path = base.layers[0]
    truncated = ImageLayers(base.digest, base.manifest, base.config, [({**descriptor, "size": 1}, path)])
    with pytest.raises(InstallerError, match="bytes on disk"):
        build_installer_image(
            truncated, [(UKI, assets[UKI])], arch="amd64", workdir=tmp_path / "w", created=CREATED
        )


def test_config_section_is_remarshalled_like_go(tmp_path: Path, assets: dict[str, Path]) -> None:
    base = make_base(tmp_path / "base")
    config = json.loads(base.config)
    config["config"] = {
        "entrypoint": ["/bin/installer"],  # Go matches field names case-insensitively
        "Volumes": {"/var": {"x": 1}, "/tmp": {}},
        "Healthcheck": {"Test": ["NONE"], "Unknown": 1},
        "Labels": {"b": "<&>"},
        "Tty": False,
        "Cmd": [],
    }
    other = ImageLayers(base.digest, base.manifest, json.dumps(config).encode(), base.layers)
    image = build(tmp_path, assets, base=other)
    assert b'"Labels":{"b":"\\u003c\\u0026\\u003e"}' in image.config
    section = json.loads(image.config)["config"]
    assert section == {
        "Healthcheck": {"Test": ["NONE"]},
        "Entrypoint": ["/bin/installer"],
        "Labels": {"b": "<&>"},
        "Volumes": {"/tmp": {}, "/var": {}},
    }
    assert list(section) == ["Healthcheck", "Entrypoint", "Labels", "Volumes"]


def test_artifact_paths() -> None:
    assert artifact_paths("amd64", use_sdboot_for_uefi=True, secureboot=False) == [SDBOOT, UKI]
    assert artifact_paths("arm64", use_sdboot_for_uefi=False, secureboot=True) == [
        "usr/install/arm64/systemd-boot.efi",
        "usr/install/arm64/vmlinuz.efi.signed",
    ]
    assert artifact_paths("amd64", use_sdboot_for_uefi=False, secureboot=False) == [
        "usr/install/amd64/vmlinuz",
        "usr/install/amd64/initramfs.xz",
    ]
