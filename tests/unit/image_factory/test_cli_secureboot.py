"""Start-up refusals for ``secureBoot``: exit status 2 and one line naming the key and the reason."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.cache.signing import generate_key_pem
from image_factory import cli
from tests.support.azure_keyvault import KeyVaultStandIn
from tests.support.secureboot import make_key_pair


def _config(tmp_path: Path, **file: str) -> Path:
    cache_key = tmp_path / "cache.key"
    cache_key.write_bytes(generate_key_pem())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"cache": {"signingKeyPath": str(cache_key)}, "secureBoot": {"enabled": True, "file": file}}
        )
    )
    return cfg


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records which process would have started instead of starting it."""
    started: list[str] = []

    class FakeCelery:
        def worker_main(self, argv: list[str]) -> None:
            started.append("worker")

    monkeypatch.setattr("worker.app.create_celery", lambda config: FakeCelery())
    monkeypatch.setattr("api.server.serve", lambda config, level: started.append("api"))
    # nor the metrics listener and the worker heartbeat around them (image_factory.metrics)
    monkeypatch.setattr(
        "image_factory.metrics.process_metrics", lambda config, _role: contextlib.nullcontext()
    )
    return started


def _run(capsys: Any, cfg: Path, command: str) -> tuple[int, str]:
    code = cli.main(["--config", str(cfg), command])
    return code, capsys.readouterr().err


def test_valid_file_backend_starts_both(tmp_path: Path, no_start: list[str], capsys: Any) -> None:
    db, pcr = make_key_pair(tmp_path, "db"), make_key_pair(tmp_path, "pcr")
    cfg = _config(
        tmp_path,
        signingKeyPath=str(db.key_path),
        signingCertPath=str(db.cert_path),
        pcrKeyPath=str(pcr.key_path),
    )
    assert _run(capsys, cfg, "worker")[0] == 0
    assert _run(capsys, cfg, "api")[0] == 0
    assert no_start == ["worker", "api"]


def _refused(capsys: Any, cfg: Path, command: str, *needles: str) -> None:
    code, err = _run(capsys, cfg, command)
    assert code == 2, err
    # JSON log lines of other threads of this test process are not the CLI's answer
    err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith("{"))
    assert err.count("\n") == 1 and err.startswith("image-factory: secure boot: "), err
    for needle in needles:
        assert needle in err, err


def test_incomplete_backend_is_refused(tmp_path: Path, no_start: list[str], capsys: Any) -> None:
    cfg = _config(tmp_path, signingKeyPath="k.pem", signingCertPath="c.pem")
    _refused(capsys, cfg, "worker", "invalid SecureBoot configuration", "secureBoot.file.")
    _refused(capsys, cfg, "api", "invalid SecureBoot configuration")
    assert no_start == []


def test_unreadable_and_mismatched_keys_are_refused(tmp_path: Path, no_start: list[str], capsys: Any) -> None:
    db, other, pcr = (
        make_key_pair(tmp_path, "db"),
        make_key_pair(tmp_path, "other"),
        make_key_pair(tmp_path, "pcr"),
    )
    missing = tmp_path / "missing.key"
    cfg = _config(
        tmp_path, signingKeyPath=str(missing), signingCertPath=str(db.cert_path), pcrKeyPath=str(pcr.key_path)
    )
    _refused(capsys, cfg, "worker", "secureBoot.file.signingKeyPath", str(missing), "cannot read")

    cfg = _config(
        tmp_path,
        signingKeyPath=str(db.key_path),
        signingCertPath=str(other.cert_path),
        pcrKeyPath=str(pcr.key_path),
    )
    _refused(capsys, cfg, "worker", str(other.cert_path), "is not the signing key's")

    cfg = _config(
        tmp_path, signingKeyPath=str(db.key_path), signingCertPath=str(db.cert_path), pcrKeyPath=str(missing)
    )
    _refused(capsys, cfg, "worker", "secureBoot.file.pcrKeyPath", str(missing))

    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cfg = _config(
        tmp_path, signingKeyPath=str(db.key_path), signingCertPath=str(db.cert_path), pcrKeyPath=str(ec_key)
    )
    _refused(capsys, cfg, "worker", "secureBoot.file.pcrKeyPath", "must be RSA")

    cfg = _config(
        tmp_path, signingKeyPath=str(db.key_path), signingCertPath=str(missing), pcrKeyPath=str(pcr.key_path)
    )
    _refused(capsys, cfg, "api", "secureBoot.file.signingCertPath", str(missing))
    assert no_start == []


def _azure_config(tmp_path: Path, key_vault: KeyVaultStandIn, key_name: str = "pcr") -> Path:
    cfg = _config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data["secureBoot"] = {
        "enabled": True,
        "azureKeyVault": {"url": key_vault.url, "certificateName": "db", "keyName": key_name},
    }
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_azure_key_vault_starts_both(
    tmp_path: Path, key_vault: KeyVaultStandIn, no_start: list[str], capsys: Any
) -> None:
    """Both processes reach the vault with ``DefaultAzureCredential`` (here: managed identity)."""
    key_vault.create_certificate("db")
    key_vault.create_key("pcr")
    cfg = _azure_config(tmp_path, key_vault)
    assert _run(capsys, cfg, "worker")[0] == 0
    assert _run(capsys, cfg, "api")[0] == 0
    assert no_start == ["worker", "api"]
    assert key_vault.tokens_issued


def test_azure_key_vault_refusals(
    tmp_path: Path, key_vault: KeyVaultStandIn, no_start: list[str], capsys: Any
) -> None:
    cfg = _azure_config(tmp_path, key_vault)
    _refused(capsys, cfg, "worker", "secureBoot.azureKeyVault.certificateName db", "CertificateNotFound")
    _refused(capsys, cfg, "api", "secureBoot.azureKeyVault.certificateName db", "CertificateNotFound")
    key_vault.create_certificate("db")
    key_vault.create_key("pcr-ec", "ec")
    cfg = _azure_config(tmp_path, key_vault, "pcr-ec")
    _refused(capsys, cfg, "worker", "secureBoot.azureKeyVault.keyName pcr-ec", "must be RSA")
    assert no_start == []
