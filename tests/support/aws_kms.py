"""moto's in-process KMS, as real KMS signs (``MessageType=DIGEST``): the ``kms`` fixture.

moto 5.2's KMS ignores ``MessageType=DIGEST`` (``KmsBackend.sign`` hashes whatever it is given, as
for ``RAW``; its docstring says DIGEST is not implemented). Real KMS signs the digest as given, so the
fixture patches moto's ``sign`` to do that, and records every ``Sign`` request so tests can check that
each did say DIGEST. ACM (``boto3.client("acm", region_name=REGION)``) is mocked by the same fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from moto import mock_aws
from moto.kms.models import KmsBackend

REGION = "us-east-1"
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}


def _sign_digest(
    self: KmsBackend, key_id: str, message: bytes, signing_algorithm: str
) -> tuple[str, bytes, str]:
    """moto's ``KmsBackend.sign`` as KMS does it for ``MessageType=DIGEST``: the message is the digest."""
    key = self.describe_key(key_id)
    private: Any = key.private_key.private_key  # type: ignore[attr-defined]
    algorithm = Prehashed(_HASHES[signing_algorithm.rsplit("_", 1)[1]]())
    if signing_algorithm.startswith("RSASSA_PKCS1_V1_5_"):
        signature = private.sign(message, padding.PKCS1v15(), algorithm)
    elif signing_algorithm.startswith("ECDSA_"):
        signature = private.sign(message, ec.ECDSA(algorithm))
    else:
        raise AssertionError(f"the signer asked for {signing_algorithm}")
    return key.arn, signature, signing_algorithm


@dataclass
class KMS:
    client: Any
    requests: list[dict[str, Any]] = field(default_factory=list)

    def key(self, spec: str, usage: str = "SIGN_VERIFY") -> str:
        return str(self.client.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"])


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[KMS]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setattr(KmsBackend, "sign", _sign_digest)
    with mock_aws():
        kms = KMS(boto3.client("kms", region_name=REGION))

        def record(params: dict[str, Any], **_: Any) -> None:
            kms.requests.append(dict(params))

        kms.client.meta.events.register("provide-client-params.kms.Sign", record)
        yield kms
