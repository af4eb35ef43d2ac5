"""The console script: subcommands, upstream flags and exit status 2 on bad configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from image_factory.cli import main
from tests.support.fixtures import (
    CONFIGURATION_REFERENCE,
    UPSTREAM_HEAD_CONFIGURATION,
    code_blocks,
    helm_chart_config_examples,
)


def test_config_merges_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("build:\n  maxConcurrency: 2\nhttp:\n  externalURL: https://f.example/\n")
    monkeypatch.setenv("IF_BUILD_MAXCONCURRENCY", "3")
    monkeypatch.setenv("IF_BUILD_MINTALOSVERSION", "1.6.0")
    assert main([f"--config=env=IF_,{cfg}", "config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["build"]["maxConcurrency"] == 2
    assert out["build"]["minTalosVersion"] == "1.6.0"
    assert out["http"]["externalURL"] == "https://f.example/"


def test_repeated_config_flag(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.yaml", tmp_path / "b.json"
    a.write_text("build: {maxConcurrency: 2}\n")
    b.write_text('{"build": {"maxConcurrency": 5}}')
    assert main(["--config", str(a), "--config", str(b), "config", "--format", "env"]) == 0
    assert "IF_BUILD_MAXCONCURRENCY=5\n" in capsys.readouterr().out


def test_bad_key_exits_2_with_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("bulid:\n  maxConcurrency: 2\n")
    assert main(["--config", str(cfg), "config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'bulid'" in err and str(cfg) in err and "did you mean 'build'?" in err


def test_invalid_log_level_is_refused() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--log-level", "verbose", "config"])
    assert exc.value.code == 2


def test_console_script_env_mapping_and_no_traceback() -> None:
    exe = Path(sys.executable).with_name("image-factory")
    ok = subprocess.run([exe, "config"], env={"IF_BUILD_MAXCONCURRENCY": "3"}, capture_output=True, text=True)
    assert ok.returncode == 0 and "maxConcurrency: 3" in ok.stdout
    bad = subprocess.run(
        [exe, "config"], env={"IF_BUILD_MAXCONCURRENCY": "x"}, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "build.maxConcurrency" in bad.stderr


def _console(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("image-factory")
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True)


def _warned(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("image-factory: warning: configuration key '") for line in lines), stderr
    return [line.split("'")[1] for line in lines]


def test_seed_examples_start_with_one_warning(tmp_path: Path) -> None:
    """Every `config:` example of the seed's Helm chart README in one file, the seed's env block set."""
    merged: dict[str, Any] = {}
    for example in helm_chart_config_examples():
        _merge(merged, example)
    cfg = tmp_path / "values-config.yaml"
    cfg.write_text(yaml.safe_dump(merged))
    block = code_blocks(CONFIGURATION_REFERENCE, "env", "## Default configuration")[0]
    env = dict(line.split("=", 1) for line in block.splitlines() if line.strip())
    run = _console([f"--config={cfg}", "config"], env)
    assert run.returncode == 0, run.stderr
    assert _warned(run.stderr) == ["cache.oci.enabled"]
    assert "has no effect" in run.stderr
    out = yaml.safe_load(run.stdout)
    assert out["http"]["allowedOrigins"] == ["*"]  # IF_HTTP_ALLOWEDORIGINS=[*]
    assert out["cache"]["s3"]["region"] == "us-east-1"


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def test_upstream_head_documented_configuration_starts_with_warnings(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "head.yaml"
    cfg.write_text(code_blocks(UPSTREAM_HEAD_CONFIGURATION, "yaml", "## Default Configuration")[0])
    assert main(["--config", str(cfg), "config", "--format", "env"]) == 0
    out, err = capsys.readouterr()
    warned = _warned(err)
    assert len(warned) == len(set(warned))
    assert {"audit.mode", "registry.jobs", "cache.gsa.tsaURL", "authentication.auth0.clientSecret"} <= set(
        warned
    )
    assert {"enterprise.vex.data.registry", "enterprise.scanner.databaseUpdateAt"} <= set(warned)
    assert "IF_REGISTRY_JOBS" not in out and 'IF_HTTP_ALLOWEDORIGINS=["*"]\n' in out


def test_typo_key_fails_with_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("cache:\n  oci:\n    registy: r:5000\n")
    run = _console(["--config", str(cfg), "config"], {})
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "unknown configuration key 'cache.oci.registy'" in run.stderr
    assert "did you mean 'cache.oci.registry'?" in run.stderr
    env = _console(["config"], {"IF_HTP_HTTPLISTENADDR": ":1"})
    assert env.returncode == 2
    assert "did you mean 'http.httpListenAddr' (IF_HTTP_HTTPLISTENADDR)?" in env.stderr


def test_explain_shows_sources_and_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("build:\n  maxConcurrency: 2\nauthentication:\n  auth0:\n    clientSecret: hunter2\n")
    env = {"IF_REDIS_URL": "redis://:hunter2@redis:6379/0", "IF_BUILD_MINTALOSVERSION": "1.8.0"}
    run = _console([f"--config={cfg}", "config", "--explain"], env)
    assert run.returncode == 0, run.stderr
    assert "hunter2" not in run.stdout + run.stderr
    lines = {line.split()[0]: line.split(None, 1)[1] for line in run.stdout.splitlines() if line.strip()}
    assert lines["build.maxConcurrency"].split() == ["file", str(cfg), "2"]
    assert lines["build.minTalosVersion"].split() == ["env", "IF_BUILD_MINTALOSVERSION", "1.8.0"]
    assert lines["redis.url"].split() == ["env", "IF_REDIS_URL", "redis://:***@redis:6379/0"]
    assert lines["metrics.addr"].split() == ["default", ":2122"]
    assert lines["authentication.auth0.clientSecret"].startswith(f"file {cfg}")
    assert _warned(run.stderr) == ["authentication.auth0.clientSecret"]


def test_explain_and_format_are_exclusive() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["config", "--explain", "--format", "env"])
    assert exc.value.code == 2


def test_service_commands_log_the_warnings_as_json(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("registry:\n  jobs: 64\n")
    code = (
        "import sys, image_factory.cli as cli\n"
        "cli._run_api = lambda config, level: 0\n"
        f"sys.exit(cli.main(['--config', {str(cfg)!r}, 'api']))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env={}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines()]
    assert [(r["level"], r["logger"]) for r in records] == [("WARNING", "common.config.loader")]
    assert "'registry.jobs'" in records[0]["msg"] and "has no effect" in records[0]["msg"]
