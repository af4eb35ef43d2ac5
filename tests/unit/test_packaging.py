"""What ships: the wheel ``pip install .`` builds (and the container image installs) holds the
product — the composition root, the API, the worker and the shared library — and nothing of the
development stack or the tests, and its console script is the composition root's."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.paths import REPO_ROOT


def test_the_wheel_ships_the_product_and_not_the_dev_stack(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("image_factory-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert tops == {"image_factory", "api", "worker", "common"}
    assert "common/delivery/service.py" in names and "worker/imager/build.py" in names
    assert {
        "api/ui/templates/wizard.html",
        "api/ui/static/ui.js",
        "api/ui/translations/fr/LC_MESSAGES/messages.po",
    } <= set(names)  # the web UI's package data
    assert "image-factory = image_factory.cli:main" in scripts


def test_the_container_image_copies_what_the_wheel_needs_and_no_dev_stack() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert {"image_factory", "api", "worker", "common"} <= copied
    assert "devstack" not in copied and "tests" not in copied
