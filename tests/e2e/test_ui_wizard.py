"""The web UI in a real browser (Debian's chromium driven by Playwright, no browser download) against a
real stack (gunicorn API, Celery worker, Redis, registry, the fixture Talos release).

* A keyboard-only run of the wizard: bare metal, the newest stable version, amd64, two extensions found
  by searching, one extra kernel argument. The page's schematic ID is the one ``POST /schematics``
  returns for the same YAML; "build now" on the ISO shows progress and ends with a download link; the
  downloaded ISO boots in QEMU with the extensions and the argument.
* A cloud platform run and a single-board computer run reach their final pages with the right links.
* axe-core (vendored, ``tests/fixtures/axe-core``) finds no serious or critical violation on any page,
  and the Content-Security-Policy is never violated (no inline script or style).
* Screenshots of every step at 1280x800 and 390x844 go to ``$UI_SCREENSHOTS`` (``make ui-screenshots``
  writes ``docs/ui/``), else to the test's temporary folder.

One stack and one browser for the module. About 3 minutes on a busy 2-core machine, most of it the
ISO build (the first build of a stack pulls the release) and the QEMU boot.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from common.profile.path import parse_path
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer
from tests.paths import REPO_ROOT
from tests.support.qemu import boot, qemu_available
from tests.support.stack import Stack, factory_stack

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # a busy machine: release, builds, a boot

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO_ROOT / "tests" / "fixtures" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-default-apps",
]
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}
EXTENSIONS = ("siderolabs/dummy-module", "siderolabs/test-firmware")
KERNEL_ARG = "console=ttyS0"  # also what puts the fixture's boot report on the serial port
BUILD_WAIT = 420  # the stack's first build pulls the release; all of it on 2 busy cores
BOOT_TIMEOUT = 240


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(tmp_path_factory.mktemp("ui"), redis_server, registry, fixture_release) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is needed (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


class Session:
    """One browser context: a page, the CSP reports and console errors it saw, and its checks."""

    def __init__(self, browser: Browser, shots: Path, viewport: dict[str, int] = DESKTOP) -> None:
        self.context = browser.new_context(viewport=viewport, locale="en-US", accept_downloads=True)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.shots = shots
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"{response.status} {response.url}")

    def close(self) -> None:
        self.context.close()

    def check(self, name: str) -> None:
        """axe-core on the current page (no serious or critical violation), no CSP or script error,
        and a screenshot."""
        page = self.page
        page.evaluate(AXE.read_text())  # evaluated by the DevTools protocol: not subject to the page's CSP
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert bad == [], f"{name}: {bad}"
        assert self.problems == [], f"{name}: {self.problems}"
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def tab_to(self, selector: str, limit: int = 80) -> None:
        """Presses Tab until ``selector`` has the focus (keyboard only, as a person would)."""
        for _ in range(limit):
            self.page.keyboard.press("Tab")
            if self.page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"{selector} never got the focus after {limit} tabs")

    def press_and_load(self, key: str = "Enter") -> None:
        """Presses a key that submits a form, and waits for the page it loads."""
        with self.page.expect_navigation():
            self.page.keyboard.press(key)

    def step(self) -> str:
        return self.page.locator(".steps [aria-current=step]").inner_text()


@pytest.fixture
def session(browser: Browser, shots: Path) -> Iterator[Session]:
    s = Session(browser, shots)
    yield s
    s.close()


def _versions(stack: Stack) -> list[str]:
    answer = requests.get(f"{stack.api.url}/versions", timeout=30)
    answer.raise_for_status()
    versions: list[str] = answer.json()
    return versions


def _newest_stable(stack: Stack) -> str:
    from common.talos.version import parse_tolerant

    stable = [v for v in _versions(stack) if "-" not in v]
    return max(stable, key=parse_tolerant)


def _asset_row(page: Page, path: str) -> Any:
    return page.locator(f"tr[id='asset-{path}']")


# --- the keyboard-only run, "build now" and the ISO boot -------------------------------------------


@pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 and OVMF are needed")
def test_keyboard_only_metal_run_builds_an_iso_that_boots(
    stack: Stack, session: Session, tmp_path: Path
) -> None:
    page = session.page
    newest = _newest_stable(stack)
    page.goto(f"{stack.api.url}/")

    # 1. hardware type: bare metal is preselected
    assert session.step() == "Hardware type"
    assert page.locator("#target-metal").is_checked()
    session.check("1-target")
    session.tab_to("button.next")
    session.press_and_load()

    # 2. version: the newest stable one is preselected; pre-releases are marked
    page.wait_for_selector("select#version")
    assert page.input_value("select#version") == newest.removeprefix("v")
    assert page.locator("optgroup[label$='(pre-release)']").count() >= 1
    session.check("2-version")
    session.tab_to("button.next")
    session.press_and_load()

    # 3. architecture: amd64 preselected; Secure Boot is off on this factory and says so
    page.wait_for_selector("#arch-amd64")
    assert page.locator("#arch-amd64").is_checked()
    assert page.locator("#secureboot").is_disabled()
    assert "not enabled on this factory" in page.locator("#secureboot-off").inner_text()
    session.check("3-arch")
    session.tab_to("button.next")
    session.press_and_load()

    # 4. extensions: found by searching, chosen with the space bar
    page.wait_for_selector("#search")
    session.check("4-extensions")
    for needle, name in (("dummy", EXTENSIONS[0]), ("imaginary nic", EXTENSIONS[1])):
        session.tab_to("#search")
        page.keyboard.press("Control+A")
        page.keyboard.type(needle)
        session.press_and_load()  # the search button is the form's first: a GET with ?search=
        assert "search-go=1" in page.url
        box = f"input[name=extensions][value='{name}']"
        session.tab_to(box)
        page.keyboard.press(" ")
        assert page.locator(box).is_checked()
    assert re.search("search=imaginary", page.url)
    session.check("4-extensions-searched")
    session.tab_to("#extensions-next")
    session.press_and_load()

    # 5. customization: one extra kernel argument, then the form is POSTed
    page.wait_for_selector("#cmdline")
    assert page.url.startswith(f"{stack.api.url}/?")  # every step so far was a GET deep link
    session.check("5-customization")
    session.tab_to("#cmdline")
    page.keyboard.type(KERNEL_ARG)
    session.tab_to("#create")
    session.press_and_load()

    # 6. the schematic's page: the ID POST /schematics gives for the same YAML
    page.wait_for_selector("#schematic-id")
    expected_yaml = yaml.safe_dump(
        {
            "customization": {
                "extraKernelArgs": [KERNEL_ARG],
                "systemExtensions": {"officialExtensions": list(EXTENSIONS)},
            }
        }
    )
    created = requests.post(f"{stack.api.url}/schematics", data=expected_yaml.encode(), timeout=30)
    assert created.status_code in (200, 201), created.text
    schematic_id = page.locator("#schematic-id").inner_text()
    assert schematic_id == created.json()["id"]
    assert page.locator("#schematic-yaml").inner_text().strip() == created.json()["schematic"].strip()
    assert re.search(rf"/ui/schematics/{schematic_id}/{newest}\?", page.url)
    iso = "metal-amd64.iso"
    base = f"{stack.api.url}/image/{schematic_id}/{newest}/"
    hrefs = page.eval_on_selector_all("a.download", "as => as.map(a => a.href)")
    for path in (
        iso,
        "metal-amd64.raw.zst",
        "metal-amd64.qcow2",
        "metal-amd64-uki.efi",
        "kernel-amd64",
        "cmdline-metal-amd64",
        "initramfs-amd64.xz",
    ):
        assert base + path in hrefs
    assert page.locator("#installer").inner_text() == (
        f"localhost/metal-installer/{schematic_id}:{newest}"  # the host of http.externalURL
    )
    assert _asset_row(page, iso).get_attribute("data-state") == "absent"
    session.check("6-schematic")

    # 7. "build now" on the ISO: progress, then a download link; all by keyboard
    session.tab_to(f"tr[id='asset-{iso}'] .build-now button")
    session.press_and_load()
    page.wait_for_selector(f"tr[id='asset-{iso}'] [data-build-key]")
    assert _asset_row(page, iso).get_attribute("data-state") in ("queued", "running")
    assert page.locator(f"tr[id='asset-{iso}'] progress").count() == 1
    session.check("7-building")
    started = time.monotonic()
    page.wait_for_selector(f"tr[id='asset-{iso}'][data-state=cached]", timeout=BUILD_WAIT * 1000)
    print(f"UI: ISO built in {time.monotonic() - started:.1f} s after 'build now'")
    session.check("8-built")
    with page.expect_download(timeout=120_000) as download_info:
        page.locator(f"tr[id='asset-{iso}'] a.download").click()
    saved = tmp_path / iso
    download_info.value.save_as(saved)

    # 8. the ISO boots with the chosen extensions and argument
    result = boot(cdrom=saved, firmware="bios", timeout=BOOT_TIMEOUT)
    assert result.report is not None, result.describe()
    assert result.error is None and not result.timed_out, result.describe()
    report = result.report
    assert report["version"] == newest
    assert KERNEL_ARG in report["cmdline"].split()
    names = [layer["name"] for layer in report["extensions"]]
    for name in EXTENSIONS:
        assert name.split("/")[1] in " ".join(names), (names, report["extensions"])
    assert report["modules"] == [{"name": "dummy", "loaded": True}]
    assert any(path.endswith("test-firmware/nic.bin") for path in report["firmware"])
    assert {"name": "schematic", "version": schematic_id} in [
        {"name": layer["name"], "version": layer["version"]} for layer in report["extensions"]
    ]


# --- a cloud platform and a single-board computer ----------------------------------------------------


def _finish(session: Session, name: str) -> str:
    """From the customization step: create the schematic; the ID the final page shows."""
    page = session.page
    page.locator("#create").click()
    page.wait_for_selector("#schematic-id")
    session.check(f"{name}-schematic")
    return page.locator("#schematic-id").inner_text()


def _links(page: Page) -> list[str]:
    hrefs: list[str] = page.eval_on_selector_all("a.download", "as => as.map(a => a.getAttribute('href'))")
    return hrefs


def test_cloud_platform_run_links_the_platforms_disk_image(stack: Stack, session: Session) -> None:
    page = session.page
    newest = _newest_stable(stack)
    page.goto(f"{stack.api.url}/")
    page.locator("#target-cloud").check()
    page.locator("button.next").click()
    page.locator("button.next").click()  # the newest stable version
    assert session.step() == "Cloud platform"
    assert page.locator("#platform-aws").is_checked()  # upstream's default
    session.check("cloud-1-platform")
    page.locator("#platform-gcp").check()
    page.locator("button.next").click()
    assert session.step() == "Architecture"
    page.locator("#arch-arm64").check()
    page.locator("button.next").click()
    assert session.step() == "Extensions"
    page.locator("#extensions-next").click()  # none
    assert session.step() == "Customization"
    session.check("cloud-2-customization")
    schematic_id = _finish(session, "cloud")
    assert (
        schematic_id
        == requests.post(f"{stack.api.url}/schematics", data=b"customization: {}\n", timeout=30).json()["id"]
    )
    base = f"/image/{schematic_id}/{newest}/"
    links = _links(page)
    # GCP boots from its disk image only, a raw disk in a .tar.gz (upstream's platforms.go): no ISO, no PXE
    for path in ("gcp-arm64.raw.tar.gz", "cmdline-gcp-arm64", "kernel-arm64"):
        assert base + path in links, links
    assert base + "gcp-arm64.iso" not in links, links
    assert not any("metal-" in link for link in links), links
    assert f"/pxe/{schematic_id}/{newest}/gcp-arm64" not in page.content()
    assert page.locator("#installer").inner_text() == f"localhost/gcp-installer/{schematic_id}:{newest}"
    # every offered link is a path /image parses (the platform's own disk format)
    for link in links:
        parse_path(link.rsplit("/", 1)[1])


def test_single_board_computer_run_carries_the_overlay(stack: Stack, session: Session) -> None:
    page = session.page
    page.goto(f"{stack.api.url}/")
    page.locator("#target-sbc").check()
    page.locator("button.next").click()
    # boards exist from Talos 1.7: older versions are not offered
    offered = page.eval_on_selector_all("select#version option", "os => os.map(o => o.value)")
    assert offered and all(not v.startswith(("1.6.", "1.5.")) for v in offered), offered
    version = page.input_value("select#version")
    page.locator("button.next").click()
    assert session.step() == "Board"
    session.check("sbc-1-board")
    page.locator("#board-rpi_generic").check()
    page.locator("button.next").click()
    assert session.step() == "Extensions"  # boards are arm64: no architecture step
    page.locator("#extensions-next").click()
    page.locator("#overlay-options").fill("configTxtAppend: dtoverlay=vc4-kms-v3d\n")
    session.check("sbc-2-customization")
    schematic_id = _finish(session, "sbc")
    shown = yaml.safe_load(page.locator("#schematic-yaml").inner_text())
    assert shown["overlay"] == {
        "image": "siderolabs/sbc-raspberrypi",
        "name": "rpi_generic",
        "options": {"configTxtAppend": "dtoverlay=vc4-kms-v3d"},
    }
    links = _links(page)
    assert f"/image/{schematic_id}/v{version}/metal-arm64.raw.zst" in links, links
    assert all("amd64" not in link and ".iso" not in link for link in links), links
    assert "/pxe/" not in page.content()


# --- languages -----------------------------------------------------------------------------------------


def test_languages_switch_and_are_remembered(stack: Stack, session: Session) -> None:
    page = session.page
    page.goto(f"{stack.api.url}/?target=metal")
    page.get_by_role("link", name="Français").click()
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("h1").inner_text() == "Créer une image Talos Linux"
    assert "target=metal" in page.url  # the switcher keeps the step
    cookies = {c["name"]: c["value"] for c in session.context.cookies()}
    assert cookies["lang"] == "fr"
    page.goto(f"{stack.api.url}/")  # no ?lang=: the cookie decides
    assert page.locator("html").get_attribute("lang") == "fr"
    session.check("fr-1-target")
    for code, heading in (("pl", "Zbuduj obraz Talos Linux"), ("ru", "Создать образ Talos Linux")):
        page.goto(f"{stack.api.url}/?lang={code}")
        assert page.locator("h1").inner_text() == heading
        session.check(f"{code}-1-target")


# --- screenshots at phone size -------------------------------------------------------------------------


def test_every_step_at_phone_size(stack: Stack, browser: Browser, shots: Path) -> None:
    """Each step by deep link at 390x844 (also checked by axe-core: small screens reflow)."""
    newest = _newest_stable(stack).removeprefix("v")
    schematic_id = stack.create_schematic("customization:\n  extraKernelArgs: [console=ttyS0]\n")
    metal = f"/?target=metal&version={newest}&arch=amd64"
    steps = {
        "1-target": "/",
        "2-version": "/?target=metal",
        "3-arch": f"/?target=metal&version={newest}",
        "4-extensions": f"{metal}&search=firmware&search-go=1&extensions=-",
        "5-customization": f"{metal}&extensions=siderolabs/dummy-module",
        "6-schematic": f"/ui/schematics/{schematic_id}/v{newest}?target=metal&arch=amd64",
    }
    session = Session(browser, shots, MOBILE)
    try:
        for name, path in steps.items():
            session.page.goto(stack.api.url + path)
            session.check(f"mobile-{name}")
    finally:
        session.close()


# --- without JavaScript --------------------------------------------------------------------------------


def test_without_javascript_the_wizard_and_build_now_work(
    stack: Stack, browser: Browser, shots: Path
) -> None:
    """Plain forms and full pages: the wizard, the POST, and a build followed with the page's
    "refresh progress" link until the asset is ready."""
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{stack.api.url}/")
        page.locator("button.next").click()  # bare metal
        page.locator("button.next").click()  # newest stable
        page.locator("button.next").click()  # amd64
        page.locator("#search").fill("hello")
        page.locator("#search-go").click()
        page.locator("input[value='siderolabs/hello-world']").check()
        page.locator("#extensions-next").click()
        page.locator("#cmdline").fill("ui.test=no-javascript")
        page.locator("#create").click()
        schematic_id = page.locator("#schematic-id").inner_text()
        assert page.locator("button.copy").first.is_hidden()  # copying needs JavaScript: not offered
        path = "cmdline-metal-amd64"
        page.locator(f"tr[id='asset-{path}'] .build-now button").click()
        assert _asset_row(page, path).get_attribute("data-state") in ("queued", "running", "cached")
        deadline = time.monotonic() + BUILD_WAIT
        while _asset_row(page, path).get_attribute("data-state") != "cached":  # a link, not a timer
            assert time.monotonic() < deadline, "the build did not finish"
            time.sleep(2)
            page.locator(f"tr[id='asset-{path}'] a.refresh").click()
        href = page.locator(f"tr[id='asset-{path}'] a.download").get_attribute("href")
        assert href == f"/image/{schematic_id}/{_newest_stable(stack)}/{path}"
        cmdline = requests.get(f"{stack.api.url}{href}", timeout=60)
        assert cmdline.status_code == 200 and "ui.test=no-javascript" in cmdline.text.split()
        page.screenshot(path=str(shots / "nojs-schematic.png"), full_page=True)
    finally:
        context.close()
