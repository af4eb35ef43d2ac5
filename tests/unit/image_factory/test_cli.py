"""The console script: subcommands, upstream flags and exit status 2 on bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from image_factory.cli import main


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
    assert "'bulid'" in err and str(cfg) in err


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
