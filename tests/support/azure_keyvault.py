"""A local HTTPS stand-in for Azure Key Vault: the calls the Azure SDK makes for Secure Boot signing, no more.

No Key Vault emulator exists, so the tests run the official SDK (``azure-keyvault-keys``,
``azure-keyvault-certificates``, ``azure-identity``) against this small server on a free loopback port.
It implements, as the Key Vault REST API (2025-07-01) answers them:

- the authentication challenge: a request without a bearer token gets ``401`` with
  ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="<resource>"``; the SDK
  then asks its credential for a token for ``<resource>/.default`` in ``<tenant>`` and repeats the
  request with it. The SDK checks that the vault's host ends with ``.<resource host>`` (real vaults:
  ``*.vault.azure.net`` and ``https://vault.azure.net``); the stand-in listens on ``127.0.0.1:<port>``,
  so it names ``https://0.0.1:<port>`` as its resource, which passes the same check;
- ``GET /certificates/{name}[/{version}]`` (``cer``, ``kid``, ``x5t`` …);
- ``GET /keys/{name}[/{version}]`` (the public JWK);
- ``POST /keys/{name}/{version}/sign`` (``RS256``/``RS384``/``RS512``/``ES256``/``ES384``/``ES512`` on a
  digest): real RSA and EC keys (``cryptography``) sign for real, so what the SDK gets verifies;
- an App Service managed-identity token endpoint (``GET /msi/token``, ``X-IDENTITY-HEADER``; the
  ``key_vault`` fixture sets :meth:`KeyVaultStandIn.managed_identity_env`), so
  ``DefaultAzureCredential`` itself gets its tokens here (through ``ManagedIdentityCredential``), with
  no request leaving the machine. Tests may instead hand the SDK a :class:`StaticCredential`.

TLS is mandatory (the SDK refuses bearer tokens over plain http): the server's certificate is
self-signed for ``IP:127.0.0.1`` and trusted by pointing ``REQUESTS_CA_BUNDLE`` at it (the SDK's
``requests`` transport reads it), so the production code needs no test hook for it. Private keys are
never served: there is no export operation, and :attr:`KeyVaultStandIn.requests` records every call.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from devstack.certificates import self_signed

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
#: The token a :class:`StaticCredential` presents and the managed-identity endpoint issues.
TOKEN = "stand-in-access-token"
IDENTITY_HEADER = "stand-in-identity-header"

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_ALGORITHM = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or (value.bit_length() + 7) // 8, "big")


@dataclass
class StoredKey:
    name: str
    version: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    operations: list[str]
    enabled: bool = True
    hsm: bool = False

    def jwk(self, kid: str) -> dict[str, Any]:
        if isinstance(self.private, rsa.RSAPrivateKey):
            numbers = self.private.public_key().public_numbers()
            return {
                "kid": kid,
                "kty": "RSA-HSM" if self.hsm else "RSA",
                "key_ops": self.operations,
                "n": b64url(_int_bytes(numbers.n)),
                "e": b64url(_int_bytes(numbers.e)),
            }
        point = self.private.public_key().public_numbers()
        size = (self.private.curve.key_size + 7) // 8
        crv = next(name for name, curve in _CURVES.items() if curve.name == self.private.curve.name)
        return {
            "kid": kid,
            "kty": "EC-HSM" if self.hsm else "EC",
            "key_ops": self.operations,
            "crv": crv,
            "x": b64url(_int_bytes(point.x, size)),
            "y": b64url(_int_bytes(point.y, size)),
        }


@dataclass
class StoredCertificate:
    name: str
    version: str
    der: bytes
    key: StoredKey


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None
    body: dict[str, Any] | None


@dataclass
class KeyVaultStandIn:
    """The running stand-in; its vault URL is :attr:`url` and its TLS certificate :attr:`ca_path`."""

    url: str
    ca_path: Path
    resource: str
    keys: dict[str, list[StoredKey]] = field(default_factory=dict)
    certificates: dict[str, list[StoredCertificate]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    tokens_issued: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------------------------ contents

    def create_key(
        self,
        name: str,
        kind: str = "rsa",
        *,
        size: int = 2048,
        curve: str = "P-256",
        operations: tuple[str, ...] = ("sign", "verify"),
        hsm: bool = False,
    ) -> StoredKey:
        """A new (latest) version of the key ``name``: RSA of ``size`` bits or EC on ``curve``."""
        private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        private = (
            rsa.generate_private_key(65537, size)
            if kind == "rsa"
            else ec.generate_private_key(_CURVES[curve])
        )
        key = StoredKey(name, uuid.uuid4().hex, private, list(operations), hsm=hsm)
        with self.lock:
            self.keys.setdefault(name, []).append(key)
        return key

    def create_certificate(self, name: str, kind: str = "rsa", **key_options: Any) -> StoredCertificate:
        """A new version of the certificate ``name``, self-signed, with a new version of the key ``name``.

        As Key Vault does it: a certificate's key is the key of the same name (its ``kid``).
        """
        key = self.create_key(name, kind, **key_options)
        cert = self_signed(key.private, f"Key Vault {name}")
        stored = StoredCertificate(name, uuid.uuid4().hex, cert.public_bytes(serialization.Encoding.DER), key)
        with self.lock:
            self.certificates.setdefault(name, []).append(stored)
        return stored

    def kid(self, key: StoredKey) -> str:
        return f"{self.url}/keys/{key.name}/{key.version}"

    def sign_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/sign") and r.body]

    # -------------------------------------------------------------------------------- credentials

    def managed_identity_env(self) -> dict[str, str]:
        """Environment under which ``DefaultAzureCredential`` gets tokens from this stand-in.

        ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` is how App Service announces its managed identity;
        ``ManagedIdentityCredential`` (third in ``DefaultAzureCredential``'s chain, after the environment
        service principal and workload identity, both left unconfigured) then asks that endpoint.
        """
        return {"IDENTITY_ENDPOINT": f"{self.url}/msi/token", "IDENTITY_HEADER": IDENTITY_HEADER}

    # ----------------------------------------------------------------------------------- serving

    def handle(
        self, method: str, target: str, headers: Any, raw_body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        path = parts.path
        body = json.loads(raw_body) if raw_body else None
        authorization = headers.get("Authorization")
        with self.lock:
            self.requests.append(Request(method, path, authorization, body))
        if path == "/msi/token":
            return self._token(parse_qs(parts.query), headers)
        if authorization != f"Bearer {TOKEN}":
            challenge = (
                f'Bearer authorization="https://login.stand-in.invalid/{TENANT}", resource="{self.resource}"'
            )
            return (
                401,
                {"WWW-Authenticate": challenge},
                {"error": {"code": "Unauthorized", "message": "no token"}},
            )
        segments = [unquote(s) for s in path.strip("/").split("/")]
        with self.lock:
            if method == "GET" and len(segments) in (2, 3) and segments[0] == "certificates":
                return self._get_certificate(*segments[1:])
            if method == "GET" and len(segments) in (2, 3) and segments[0] == "keys":
                return self._get_key(*segments[1:])
            if method == "POST" and len(segments) == 4 and segments[0] == "keys" and segments[3] == "sign":
                return self._sign(segments[1], segments[2], body or {})
        return _error(404, "NotFound", f"{method} {path} is not something this stand-in does")

    def _token(self, query: dict[str, list[str]], headers: Any) -> tuple[int, dict[str, str], Any]:
        if headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return 401, {}, {"error": "unauthorized", "error_description": "bad X-IDENTITY-HEADER"}
        resource = query.get("resource", [""])[0]
        with self.lock:
            self.tokens_issued.append({"resource": resource})
        expires = int(time.time()) + 3600
        return (
            200,
            {},
            {"access_token": TOKEN, "expires_on": str(expires), "resource": resource, "token_type": "Bearer"},
        )

    def _find_key(self, name: str, version: str = "") -> StoredKey | None:
        versions = self.keys.get(name, [])
        if not version:
            return versions[-1] if versions else None
        return next((k for k in versions if k.version == version), None)

    def _get_certificate(self, name: str, version: str = "") -> tuple[int, dict[str, str], Any]:
        versions = self.certificates.get(name, [])
        cert = (
            versions[-1]
            if versions and not version
            else next((c for c in versions if c.version == version), None)
        )
        if cert is None:
            return _error(
                404,
                "CertificateNotFound",
                f"A certificate with (name/id) {name} was not found in this key vault.",
            )
        now = int(time.time())
        return (
            200,
            {},
            {
                "id": f"{self.url}/certificates/{name}/{cert.version}",
                "kid": self.kid(cert.key),
                "sid": f"{self.url}/secrets/{name}/{cert.version}",
                "x5t": b64url(hashlib.sha1(cert.der).digest()),
                "cer": base64.b64encode(cert.der).decode(),
                "attributes": {
                    "enabled": True,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable",
                },
            },
        )

    def _get_key(self, name: str, version: str = "") -> tuple[int, dict[str, str], Any]:
        key = self._find_key(name, version)
        if key is None:
            return _error(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault.")
        now = int(time.time())
        return (
            200,
            {},
            {
                "key": key.jwk(self.kid(key)),
                "attributes": {
                    "enabled": key.enabled,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable",
                },
            },
        )

    def _sign(self, name: str, version: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        key = self._find_key(name, version)
        if key is None:
            return _error(
                404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault."
            )
        if not key.enabled:
            return _error(403, "Forbidden", "Operation sign is not allowed on a disabled key.")
        if "sign" not in key.operations:
            return _error(403, "Forbidden", "Operation sign is not permitted on this key.")
        algorithm, digest = str(body.get("alg", "")), b64url_decode(str(body.get("value", "")))
        hash_factory = _HASHES.get(algorithm[2:])
        if hash_factory is None or len(digest) != hash_factory.digest_size:
            return _error(
                400, "BadParameter", f"Invalid algorithm {algorithm!r} or digest length {len(digest)}."
            )
        prehashed = Prehashed(hash_factory())
        private = key.private
        if isinstance(private, rsa.RSAPrivateKey) and algorithm.startswith("RS"):
            signature = private.sign(digest, padding.PKCS1v15(), prehashed)
        elif (
            isinstance(private, ec.EllipticCurvePrivateKey)
            and algorithm
            == _CURVE_ALGORITHM[next(n for n, c in _CURVES.items() if c.name == private.curve.name)]
        ):
            r, s = decode_dss_signature(private.sign(digest, ec.ECDSA(prehashed)))
            size = (private.curve.key_size + 7) // 8
            signature = _int_bytes(r, size) + _int_bytes(s, size)  # JWS form: r || s
        else:
            return _error(400, "BadParameter", f"Algorithm {algorithm} does not fit the key.")
        return 200, {}, {"kid": self.kid(key), "value": b64url(signature)}


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], Any]:
    return status, {}, {"error": {"code": code, "message": message}}


def _server_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(
        key,
        "Key Vault stand-in",
        valid_for=datetime.timedelta(days=1),
        extensions=[
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
            (x509.BasicConstraints(ca=True, path_length=None), True),
        ],
    )
    cert_path, key_path = directory / "stand-in.pem", directory / "stand-in.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _handler(vault: KeyVaultStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, headers, payload = vault.handle(self.command, self.path, self.headers, raw)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def get_request(self) -> Any:
        sock, address = super().get_request()
        # the handshake happens on the handler's thread, at its first read
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


@pytest.fixture
def key_vault(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[KeyVaultStandIn]:
    """A running stand-in, trusted through ``REQUESTS_CA_BUNDLE``, with empty key and certificate stores.

    No Azure identity of the machine's environment is used: the service principal variables are
    removed for the test and the managed-identity ones point at the stand-in, so that
    ``DefaultAzureCredential`` gets its tokens here and never probes the instance metadata service
    (a link-local address); the process's memoised credential and certificates are forgotten before
    and after.
    """
    from common.profile import certificate_sources
    from common.profile.secureboot import clear_certificate_cache

    directory = tmp_path_factory.mktemp("keyvault")
    cert_path, key_path = _server_certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = _TLSServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.context = context
    port = server.server_address[1]
    vault = KeyVaultStandIn(
        url=f"https://127.0.0.1:{port}", ca_path=cert_path, resource=f"https://0.0.1:{port}"
    )
    server.RequestHandlerClass = _handler(vault)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="keyvault-stand-in", daemon=True
    )
    thread.start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
    for name in (
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_USERNAME",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "MSI_ENDPOINT",
        "IMDS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in vault.managed_identity_env().items():
        monkeypatch.setenv(name, value)
    certificate_sources.forget_azure_credential()
    clear_certificate_cache()
    try:
        yield vault
    finally:
        certificate_sources.forget_azure_credential()
        clear_certificate_cache()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class StaticCredential:
    """A ``TokenCredential`` that hands out ``token`` (:data:`TOKEN`) and records what it was asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.asked: list[tuple[tuple[str, ...], str | None]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.asked.append((scopes, tenant_id))
        return AccessToken(self.token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        self.asked.append((scopes, (options or {}).get("tenant_id")))
        return AccessTokenInfo(self.token, int(time.time()) + 3600)
