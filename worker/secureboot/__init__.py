"""Secure Boot signing: Authenticode for PE images, and the key backends that sign for it.

- :mod:`worker.secureboot.authenticode` — signs a PE/COFF file (a UKI, systemd-boot) in place around
  a ``sign_digest`` callback, so the private key never has to be local.
- :mod:`worker.secureboot.base` — :class:`~worker.secureboot.base.KeySigner` (a key that signs SHA-256
  digests: also the PCR signing primitive) and :class:`~worker.secureboot.base.CertificateSigner`
  (a key plus its certificate: the :class:`worker.imager.signing.PESigner` builds are handed).
- backends, one per module: :mod:`~worker.secureboot.file` (PEM files, ``secureBoot.file``),
  :mod:`~worker.secureboot.azure` (Azure Key Vault, ``secureBoot.azureKeyVault``),
  :mod:`~worker.secureboot.aws_kms` (AWS KMS, ``secureBoot.awsKMS``) and
  :mod:`~worker.secureboot.pkcs11` (a PKCS #11 token, ``secureBoot.pkcs11``, ours).
- :mod:`worker.secureboot.registry` — the backend table: how each is recognised, opened and named.
- :mod:`worker.secureboot.config` — the ``secureBoot`` configuration → the worker's signers.
"""
