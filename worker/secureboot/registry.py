"""Secure Boot PE signing backends by name: the ``secureBoot`` configuration sections they serve.

The configuration is wired in :mod:`worker.secureboot.config` (file and AWS KMS, chosen as upstream
chooses); this table names the constructors for callers that pick a backend by name. Each returns a
:class:`~worker.secureboot.base.CertificateSigner` (a :class:`worker.imager.signing.PESigner`):

- ``file`` — :func:`~worker.secureboot.file.file_pe_signer` (``key_path``, ``cert_path``):
  ``secureBoot.file.signingKeyPath`` / ``signingCertPath``;
- ``awsKMS`` — :func:`~worker.secureboot.aws_kms.aws_kms_pe_signer` (``key_id``, ``region``,
  ``cert_path`` or ``cert_arn``): ``secureBoot.awsKMS.keyID`` / ``region`` / ``certPath`` / ``certARN``;
- ``pkcs11`` — :func:`~worker.secureboot.pkcs11.pkcs11_pe_signer` (``module_path``, ``token_label``,
  ``pin``, ``key_label``, ``cert_path``): the future ``secureBoot.pkcs11`` section.

Backends are imported on first use, so a worker without ``python-pkcs11``'s native module or without
AWS access only pays for the one it is configured with.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from worker.secureboot.base import CertificateSigner

__all__ = ["PE_SIGNER_BACKENDS", "constructor", "pe_signer"]

#: backend name -> (module, constructor name)
PE_SIGNER_BACKENDS: Mapping[str, tuple[str, str]] = {
    "file": ("worker.secureboot.file", "file_pe_signer"),
    "awsKMS": ("worker.secureboot.aws_kms", "aws_kms_pe_signer"),
    "pkcs11": ("worker.secureboot.pkcs11", "pkcs11_pe_signer"),
}


def constructor(backend: str) -> Callable[..., CertificateSigner]:
    """The constructor of the named backend (``KeyError`` for an unknown name)."""
    module, name = PE_SIGNER_BACKENDS[backend]
    factory: Callable[..., CertificateSigner] = getattr(importlib.import_module(module), name)
    return factory


def pe_signer(backend: str, **kwargs: Any) -> CertificateSigner:
    """A PE signer of the named backend, built from the constructor's keyword arguments."""
    return constructor(backend)(**kwargs)
