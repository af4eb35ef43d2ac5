"""`image-factory config` output against the published reference, and the generated docs."""

from __future__ import annotations

import re

import yaml

from common.config import load_config
from common.config.render import reference_markdown, to_env, to_yaml
from tests.paths import REPO_ROOT
from tests.support.fixtures import CONFIGURATION_REFERENCE as SEED

# Keys upstream added after the published reference (siderolabs/image-factory:cmd/image-factory/cmd/options.go
# and CHANGELOG.md, v1.1 and later; listed in docs/configuration.md), and our own (*ours* there).
LATER_UPSTREAM = {
    "build.brokenTalosVersions",
    "artifacts.core.namespace",
    "cache.s3.presignedURLTTL",
    "cache.schematic.capacity",
    "cache.schematic.negativeTTL",
}
OURS = {
    "http.maxRequestBodySize",
    "http.maxRanges",
    "http.maxRequestLine",
    "http.maxHeaderFields",
    "http.maxHeaderFieldSize",
    "http.requestReadTimeout",
    "http.workers",
    "http.threads",
    "build.waitTimeout",
    "cache.recheckInterval",
    "build.scratchDir",
    "build.timeout",
    "build.maxQueueLength",
    "build.failureTTL",
    "build.retries",
    "build.registryWaitTimeout",
    "build.prebuildInstallers",
    "build.prebuildSchematics",
    "build.overlayInstaller.timeout",
    "build.overlayInstaller.memoryLimit",
    "build.overlayInstaller.maxOutputSize",
    "http.maxWaiters",
    "http.shutdownGracePeriod",
    "build.shutdownGracePeriod",
    "cache.redirectPXE",
    "redis.url",
    "artifacts.storageDir",
    "artifacts.storageMaxSize",
    "containerSignature.trustedRootFile",
    "secureBoot.pkcs11.modulePath",
    "secureBoot.pkcs11.tokenLabel",
    "secureBoot.pkcs11.pin",
    "secureBoot.pkcs11.pinFile",
    "secureBoot.pkcs11.signingKeyLabel",
    "secureBoot.pkcs11.signingCertPath",
    "secureBoot.pkcs11.pcrKeyLabel",
    *(
        f"artifacts.limits.{key}"
        for key in (
            "maxManifestSize",
            "idleTimeout",
            "maxReadTime",
            "maxLayerSize",
            "maxLayerEntries",
            "maxImageSize",
            "maxImageEntries",
            "maxBuildSize",
            "maxBuildEntries",
        )
    ),
}


def _seed_block(lang: str) -> str:
    text = SEED.read_text()
    section = text[text.index("## Default configuration") :]
    match = re.search(rf"```{lang}[^\n]*\n(.*?)```", section, re.S)
    assert match, lang
    return match.group(1)


def _flatten(tree: dict, prefix: str = "") -> dict:  # type: ignore[type-arg]
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_default_yaml_matches_the_published_reference() -> None:
    seed = _flatten(yaml.safe_load(_seed_block("yaml")))
    ours = _flatten(yaml.safe_load(to_yaml(load_config([], environ={}))))
    assert {k: ours[k] for k in seed} == seed
    assert set(ours) - set(seed) == LATER_UPSTREAM | OURS


def test_default_env_matches_the_published_reference() -> None:
    seed = dict(line.split("=", 1) for line in _seed_block("env").splitlines() if line.strip())
    ours = dict(line.split("=", 1) for line in to_env(load_config([], environ={})).splitlines())
    # The published reference prints `[*]`, which is not JSON (upstream would read it back as the origin
    # "[*]"; we read it as ["*"], test_compat.py); we print the JSON form, which upstream reads too.
    assert seed.pop("IF_HTTP_ALLOWEDORIGINS") == "[*]"
    assert ours.pop("IF_HTTP_ALLOWEDORIGINS") == '["*"]'
    assert {k: ours[k] for k in seed} == seed


def test_env_output_round_trips() -> None:
    env = {
        "IF_BUILD_MAXCONCURRENCY": "3",
        "IF_HTTP_ALLOWEDORIGINS": '["https://x"]',
        "IF_CACHE_S3_ENABLED": "true",
    }
    first = load_config([], environ=env)
    lines = dict(line.split("=", 1) for line in to_env(first).splitlines())
    assert load_config([], environ=lines) == first


def test_generated_reference_is_current() -> None:
    committed = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), "run `make docs` to regenerate docs/configuration.md"


def test_reference_documents_every_key() -> None:
    text = reference_markdown()
    for key in _flatten(yaml.safe_load(to_yaml(load_config([], environ={})))):
        env = "IF_" + key.replace(".", "_").upper()
        assert f"**`{key}`**" in text and f"`{env}`" in text, key
