"""The web UI over plain HTTP (no JavaScript, as a text browser or a script sees it) against a real
API with Redis, the registry and the fixture release, and no worker: a build started with "build now"
stays queued, so its progress is shown deterministically.

What a browser cannot show easily is checked here: every page carries the strict CSP; a ``GET``
never creates a schematic (only the form's ``POST`` does, answered ``303``); deep links land on the
step they describe; bad input is a 4xx; languages come from ``?lang=``, the cookie, then
``Accept-Language``. About 15 s with the session's release already built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
import yaml

from api.ui.routes import CSP
from common.schematic import canonicalize
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer
from tests.support.secureboot import make_key_pair
from tests.support.stack import Stack, factory_stack

pytestmark = [pytest.mark.integration]

VERSION = "1.12.4"
METAL = f"target=metal&version={VERSION}&arch=amd64"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    keys = tmp_path_factory.mktemp("ui-keys")
    db, pcr = make_key_pair(keys, "db"), make_key_pair(keys, "pcr")
    secureboot = {  # on here; the browser tests see a factory with it off
        "secureBoot.enabled": True,
        "secureBoot.file.signingKeyPath": str(db.key_path),
        "secureBoot.file.signingCertPath": str(db.cert_path),
        "secureBoot.file.pcrKeyPath": str(pcr.key_path),
    }
    with factory_stack(
        tmp_path_factory.mktemp("ui-pages"), redis_server, registry, fixture_release, workers=0, **secureboot
    ) as s:
        yield s


def _get(stack: Stack, path: str, **kwargs: object) -> requests.Response:
    return requests.get(f"{stack.api.url}{path}", timeout=30, allow_redirects=False, **kwargs)  # type: ignore[arg-type]


def _step(page: requests.Response) -> str:
    found = re.search(r'aria-current="step">([^<]+)<', page.text)
    assert found, page.text[:2000]
    return found.group(1)


def test_every_page_has_the_strict_csp_and_no_inline_script_or_style(stack: Stack) -> None:
    for path in ("/", "/?target=metal", f"/?{METAL}", f"/?{METAL}&extensions=-"):
        page = _get(stack, path)
        assert page.status_code == 200, page.text
        assert page.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "inline script"
        assert "<style" not in page.text and " style=" not in page.text, "inline style"
    head = requests.head(f"{stack.api.url}/", timeout=30)
    assert head.status_code == 200 and head.content == b""


def test_deep_links_open_their_step(stack: Stack) -> None:
    assert _step(_get(stack, "/")) == "Hardware type"
    assert _step(_get(stack, "/?target=metal")) == "Version"
    assert _step(_get(stack, "/?target=cloud&version=" + VERSION)) == "Cloud platform"
    assert _step(_get(stack, "/?target=sbc&version=" + VERSION)) == "Board"
    assert _step(_get(stack, f"/?target=metal&version={VERSION}")) == "Architecture"
    assert _step(_get(stack, f"/?{METAL}")) == "Extensions"
    assert _step(_get(stack, f"/?{METAL}&extensions=-")) == "Customization"
    # a version that is not offered, or an unknown target, goes back to that step
    assert _step(_get(stack, "/?target=metal&version=9.9.9")) == "Version"
    assert _step(_get(stack, "/?target=nonsense")) == "Hardware type"
    # boards start with Talos 1.7: 1.6.7 is not offered for them, but is for bare metal
    assert _step(_get(stack, "/?target=sbc&version=1.6.7")) == "Version"
    assert _step(_get(stack, "/?target=metal&version=1.6.7")) == "Architecture"
    # an extension the version does not have is named
    unknown = _get(stack, f"/?{METAL}&extensions=siderolabs/nope")
    assert _step(unknown) == "Extensions" and "siderolabs/nope" in unknown.text


def test_versions_are_grouped_newest_stable_preselected_prereleases_marked(stack: Stack) -> None:
    page = _get(stack, "/?target=metal").text
    groups = re.findall(r'<optgroup label="([^"]+)">', page)
    assert groups[0] == "1.13 (pre-release)" and groups[1] == "1.12", groups
    assert re.search(rf'<option value="{re.escape(VERSION)}" selected>', page)
    assert "v1.13.0-beta.1 (pre-release)" in page


def test_search_filters_by_name_or_description_and_keeps_the_chosen(stack: Stack) -> None:
    page = _get(stack, f"/?{METAL}&extensions=-&search-go=1&search=MICROCODE").text
    listed = re.findall(r'type="checkbox" id="ext-\d+" name="extensions" value="([^"]+)"', page)
    assert listed == ["siderolabs/amd-ucode"]  # matched by its description, case-insensitively
    page = _get(stack, f"/?{METAL}&extensions=siderolabs/hello-world&search-go=1&search=dummy").text
    listed = re.findall(r'type="checkbox" id="ext-\d+" name="extensions" value="([^"]+)"', page)
    assert sorted(listed) == ["siderolabs/dummy-module", "siderolabs/hello-world"]
    assert "by Sidero Labs" in page  # the catalog's author


def test_get_creates_nothing_and_the_post_redirects_to_the_schematics_page(stack: Stack) -> None:
    args = "console=ttyS0 ui.test=get-creates-nothing"
    body = {
        "customization": {
            "extraKernelArgs": args.split(),
            "systemExtensions": {"officialExtensions": ["siderolabs/hello-world"]},
        }
    }
    expected = requests.post(
        f"{stack.api.url}/schematics", data=yaml.safe_dump(body).encode(), timeout=30
    )  # the ID the form's POST must reach
    assert expected.status_code == 201
    fresh_args = "ui.test=never-posted"
    deep = _get(stack, f"/?{METAL}&extensions=siderolabs/hello-world&cmdline={fresh_args}")
    assert _step(deep) == "Customization" and fresh_args in deep.text
    fresh = yaml.safe_dump(
        {
            "customization": {
                "extraKernelArgs": [fresh_args],
                "systemExtensions": {"officialExtensions": ["siderolabs/hello-world"]},
            }
        }
    )
    fresh_id, _ = canonicalize(fresh.encode())
    assert _get(stack, f"/schematics/{fresh_id}").status_code == 404  # the GET created nothing

    form = {
        "target": "metal",
        "version": VERSION,
        "arch": "amd64",
        "extensions": "siderolabs/hello-world",
        "cmdline": args,
    }
    created = requests.post(f"{stack.api.url}/ui/schematics", data=form, timeout=30, allow_redirects=False)
    assert created.status_code == 303
    sid = expected.json()["id"]
    assert created.headers["Location"] == f"/ui/schematics/{sid}/v{VERSION}?target=metal&arch=amd64"
    page = _get(stack, created.headers["Location"])
    assert page.status_code == 200 and page.headers["Content-Security-Policy"] == CSP
    assert f'<code id="schematic-id">{sid}</code>' in page.text
    assert expected.json()["schematic"] in page.text.replace("&#34;", '"')
    assert f'href="/image/{sid}/v{VERSION}/metal-amd64.iso"' in page.text
    assert f"localhost/metal-installer/{sid}:v{VERSION}" in page.text
    assert f"talosctl cluster create qemu --schematic-id={sid} --talos-version=v{VERSION}" in page.text


def test_bad_input_is_a_4xx(stack: Stack) -> None:
    bad_yaml = {
        "target": "sbc",
        "version": VERSION,
        "board": "rpi_generic",
        "extensions": "-",
        "overlay-options": "a: [b",
    }
    answer = requests.post(f"{stack.api.url}/ui/schematics", data=bad_yaml, timeout=30)
    assert answer.status_code == 400 and "overlay options are not valid YAML" in answer.text
    assert answer.headers["Content-Security-Policy"] == CSP  # the form again, with the error
    unfinished = requests.post(f"{stack.api.url}/ui/schematics", data={"target": "metal"}, timeout=30)
    assert unfinished.status_code == 400 and "not finished" in unfinished.text
    assert _get(stack, "/ui/schematics/" + "0" * 64 + f"/v{VERSION}").status_code == 404
    assert _get(stack, "/?lang=").status_code == 400
    sid = stack.create_schematic("customization: {}\n")
    assert _get(stack, f"/ui/schematics/{sid}/v{VERSION}?target=cloud").status_code == 400  # no platform
    assert _get(stack, f"/ui/schematics/{sid}/v{VERSION}?arch=mips").status_code == 400
    assert requests.post(f"{stack.api.url}/ui/builds", data={"schematic": sid}, timeout=30).status_code == 400


def test_build_now_queues_without_waiting_and_shows_progress(stack: Stack) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs: [ui.test=build-now]\n")
    page = f"/ui/schematics/{sid}/v{VERSION}?target=metal&arch=amd64"
    before = _get(stack, page).text
    assert re.search(r'id="asset-metal-amd64.iso" class="asset state-absent"', before)
    form = {
        "schematic": sid,
        "version": f"v{VERSION}",
        "path": "metal-amd64.iso",
        "target": "metal",
        "arch": "amd64",
    }
    started = requests.post(f"{stack.api.url}/ui/builds", data=form, timeout=30, allow_redirects=False)
    assert started.status_code == 303
    assert started.headers["Location"] == f"{page}#asset-metal-amd64.iso"
    after = _get(stack, page).text  # no worker in this stack: the build stays queued
    row = re.search(r'<tr id="asset-metal-amd64.iso".*?</tr>', after, re.S)
    assert row and 'data-state="queued"' in row.group(0), after
    key = re.search(r'data-build-key="([0-9a-f]{64})"', row.group(0))
    assert key, row.group(0)
    status = requests.get(f"{stack.api.url}/builds/{key.group(1)}", timeout=30).json()
    assert status["status"] == "queued"
    assert "<progress" in row.group(0)
    escaped = page.replace("&", "&amp;")
    assert f'class="refresh" href="{escaped}"' in row.group(0)  # a full reload (not a same-page fragment)


def test_languages_from_param_cookie_then_accept_language(stack: Stack) -> None:
    french = _get(stack, "/?lang=fr")
    assert '<html lang="fr">' in french.text and "Créer une image Talos Linux" in french.text
    cookie = french.headers["Set-Cookie"]
    assert cookie.startswith("lang=fr;") and "Max-Age=31536000" in cookie and "HttpOnly" in cookie
    assert "Créer une image" in _get(stack, "/", cookies={"lang": "fr"}).text
    assert "Zbuduj obraz" in _get(stack, "/", headers={"Accept-Language": "pl-PL,pl;q=0.9"}).text
    # the cookie wins over Accept-Language, ?lang= over both
    assert "Создать образ" in _get(stack, "/", cookies={"lang": "ru"}, headers={"Accept-Language": "pl"}).text
    both = _get(stack, "/?lang=en", cookies={"lang": "ru"}, headers={"Accept-Language": "pl"})
    assert "Build a Talos Linux image" in both.text
    # an unknown language is English
    assert "Build a Talos Linux image" in _get(stack, "/", headers={"Accept-Language": "xx"}).text


def test_llms_txt(stack: Stack) -> None:
    answer = _get(stack, "/llms.txt")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    for needle in (
        "POST",
        "/schematics",
        "/image/<id>/<version>/<path>",
        "officialExtensions",
        "Prefer: respond-async",
    ):
        assert needle in answer.text


def test_secure_boot_where_offered_and_its_assets(stack: Stack) -> None:
    arch = _get(stack, f"/?target=metal&version={VERSION}").text
    assert re.search(
        r'<input type="checkbox" id="secureboot" name="secureboot" value="true" aria-describedby', arch
    )
    assert "not enabled on this factory" not in arch
    # a platform without Secure Boot images has no such choice; one with them has
    assert 'id="secureboot"' not in _get(stack, f"/?target=cloud&version={VERSION}&platform=aws").text
    assert 'id="secureboot"' in _get(stack, f"/?target=cloud&version={VERSION}&platform=nocloud").text
    # Secure Boot starts with Talos 1.5: the fixture release's oldest (1.6.7) has it
    assert 'id="secureboot"' in _get(stack, "/?target=metal&version=1.6.7").text
    # GRUB cannot boot Secure Boot images: not offered with it
    custom = _get(stack, f"/?{METAL}&secureboot=true&extensions=-").text
    assert 'value="sd-boot"' in custom and 'value="grub"' not in custom
    assert 'value="grub"' in _get(stack, f"/?{METAL}&extensions=-").text

    form = {"target": "metal", "version": VERSION, "arch": "amd64", "secureboot": "true", "extensions": "-"}
    created = requests.post(
        f"{stack.api.url}/ui/schematics",
        data={**form, "bootloader": "sd-boot"},
        timeout=30,
        allow_redirects=False,
    )
    assert created.status_code == 303 and created.headers["Location"].endswith(
        "?target=metal&arch=amd64&secureboot=true"
    )
    page = _get(stack, created.headers["Location"]).text
    assert "bootloader: sd-boot" in page
    links = re.findall(r'class="download" href="([^"]+)"', page)
    names = [link.rsplit("/", 1)[1] for link in links]
    assert names == [
        "metal-amd64-secureboot.iso",
        "metal-amd64-secureboot.raw.zst",
        "metal-amd64-secureboot-uki.efi",
    ]
    assert (
        "/metal-installer-secureboot/" in page and "/metal-amd64-secureboot</code>" in page
    )  # installer, PXE
    grub = requests.post(f"{stack.api.url}/ui/schematics", data={**form, "bootloader": "grub"}, timeout=30)
    assert grub.status_code == 400 and "not offered" in grub.text
