"""Keys in Azure Key Vault: ``secureBoot.azureKeyVault`` (``url``, ``certificateName``, ``keyName``).

As upstream (``siderolabs/talos@v1.14.0-rc.1:pkg/imager/profile/internal/signer/azure``): the PE signer
is the certificate ``certificateName`` (its latest version) and the key its ``kid`` names; the PCR signer
is the key ``keyName``, latest version. The public key comes from ``GetKey`` (a JWK), and every
signature from the vault's ``sign`` operation on the digest (``RS256``/``RS384``/``RS512``: PKCS #1 v1.5
over the ``DigestInfo`` the vault builds), so the private key never leaves the vault. Credentials come
from :func:`common.profile.certificate_sources.default_azure_credential` (``DefaultAzureCredential``) unless
one is passed in.

Differences from upstream: EC keys sign too (``ES256``/``ES384``/``ES512`` with P-256/P-384/P-521, the
vault's raw ``r || s`` DER-encoded, as the other backends do; Talos only takes RSA for the PCR key, which
:mod:`worker.secureboot.config` checks), and a key named without a version is pinned to the version that
was latest when the signer was made, so its public key and its signatures cannot drift apart if the key
is rotated while the worker runs (upstream signs with "latest" each time, but also re-opens the signer
for every build).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError
from azure.keyvault.keys import KeyClient, KeyCurveName, KeyType, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from common.profile import certificate_sources
from common.profile.certificate_sources import CertificateSourceError, azure_error
from worker.secureboot.base import CertificateSigner, KeySigner, SignerError, hash_algorithm

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["AzureKeySigner", "azure_key_vault_pe_signer"]

_RSA_TYPES = (KeyType.rsa, KeyType.rsa_hsm)
_EC_TYPES = (KeyType.ec, KeyType.ec_hsm)
_RSA_ALGORITHMS = {
    "sha256": SignatureAlgorithm.rs256,
    "sha384": SignatureAlgorithm.rs384,
    "sha512": SignatureAlgorithm.rs512,
}
#: Key Vault pairs each curve with one hash (JWA ``ES256`` is P-256 with SHA-256, …).
_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str, SignatureAlgorithm]] = {
    KeyCurveName.p_256: (ec.SECP256R1(), "sha256", SignatureAlgorithm.es256),
    KeyCurveName.p_384: (ec.SECP384R1(), "sha384", SignatureAlgorithm.es384),
    KeyCurveName.p_521: (ec.SECP521R1(), "sha512", SignatureAlgorithm.es512),
}


class AzureKeySigner(KeySigner):
    """The key ``key_name`` (version ``key_version``, else the latest) in the vault ``vault_url``.

    ``credential`` overrides the process's ``DefaultAzureCredential`` (tests, other identities).
    """

    def __init__(
        self,
        vault_url: str,
        key_name: str,
        key_version: str = "",
        *,
        credential: TokenCredential | None = None,
    ) -> None:
        credential = credential or certificate_sources.default_azure_credential()
        self._what = f"Key Vault key {key_name!r} in {vault_url}"
        self._lock = threading.Lock()
        try:
            with KeyClient(vault_url, credential) as keys:
                key = keys.get_key(key_name, key_version or None)
        except (AzureError, ValueError) as exc:
            raise SignerError(f"{self._what}: cannot read its public key: {azure_error(exc)}") from exc
        self._version = key.properties.version or ""
        if key.properties.enabled is False:
            raise SignerError(f"{self._what} (version {self._version}) is disabled")
        operations = key.key_operations
        if operations is not None and "sign" not in operations:
            raise SignerError(f"{self._what} is not a signing key (operations {sorted(operations)})")
        self._public_key, self._algorithms = self._read_public_key(key)
        # Built from the KeyVaultKey, the client knows the key's version and never fetches it again; a
        # public key cannot sign locally, so ``sign`` always goes to the vault.
        self._crypto = CryptographyClient(key, credential)

    def _read_public_key(self, key: KeyVaultKey) -> tuple[bytes, dict[str, SignatureAlgorithm]]:
        # JsonWebKey sets its fields from the service's JSON (kty, n, e, crv, x, y …) as plain attributes
        jwk: dict[str, Any] = vars(key.key)
        kty, crv = jwk.get("kty"), jwk.get("crv")
        n, e, x, y = (jwk.get(name) for name in ("n", "e", "x", "y"))
        public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        if kty in _RSA_TYPES:
            if not n or not e:
                raise SignerError(f"{self._what}: its JWK has no modulus or exponent")
            public = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
            algorithms = dict(_RSA_ALGORITHMS)
        elif kty in _EC_TYPES:
            curve = _EC_CURVES.get(crv) if crv else None
            if curve is None or not x or not y:
                name = getattr(crv, "value", crv)
                raise SignerError(f"{self._what}: unsupported curve {name} (P-256, P-384 or P-521)")
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve[0]
            ).public_key()
            algorithms = {curve[1]: curve[2]}
        else:
            raise SignerError(f"{self._what}: unsupported key type {getattr(kty, 'value', kty)} (RSA or EC)")
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return der, algorithms

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def version(self) -> str:
        """The key version this signer signs with."""
        return self._version

    def sign_digest(self, digest: bytes, hash_name: str = "sha256") -> bytes:
        hash_algorithm(hash_name, digest)
        algorithm = self._algorithms.get(hash_name)
        if algorithm is None:
            raise SignerError(
                f"{self._what} cannot sign a {hash_name} digest (it signs {', '.join(self._algorithms)})"
            )
        try:
            with self._lock:  # one request in flight, as the other remote backends
                signature = self._crypto.sign(algorithm, digest).signature
        except (AzureError, ValueError) as exc:
            raise SignerError(f"{self._what} refused to sign: {azure_error(exc)}") from exc
        if algorithm in _RSA_ALGORITHMS.values():
            return bytes(signature)
        half = len(signature) // 2  # JWS: r || s, each as long as the curve's order
        return encode_dss_signature(
            int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        )

    def close(self) -> None:
        self._crypto.close()


def azure_key_vault_pe_signer(
    vault_url: str, certificate_name: str, *, credential: TokenCredential | None = None
) -> CertificateSigner:
    """The ``PESigner`` of ``secureBoot.azureKeyVault``: the certificate and the key version it names."""
    try:
        cert = certificate_sources.azure_certificate(vault_url, certificate_name, credential=credential)
    except CertificateSourceError as exc:
        raise SignerError(str(exc)) from exc
    key = AzureKeySigner(vault_url, cert.key_name, cert.key_version, credential=credential)
    try:
        return CertificateSigner(key, cert.der)
    except SignerError:
        key.close()
        raise
