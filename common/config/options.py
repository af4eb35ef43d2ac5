"""Every configuration key, its type, default and meaning: the one place they are declared.

Field names are the upstream koanf keys verbatim (camelCase), so ``config.http.httpListenAddr`` reads
like the YAML it came from. The marshmallow schema, the environment mapping and the generated
reference (``docs/configuration.md``) are all derived from these classes, so they cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

DEFAULT_SUBJECT_REGEXP = r"(@siderolabs\.com$|^releasemgr-svc@talos-production\.iam\.gserviceaccount\.com$)"


def opt(default: Any, doc: str, *, ours: bool = False) -> Any:
    """A leaf key with its documentation; ``ours`` marks keys upstream does not have."""
    meta = {"doc": doc, "ours": ours}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, doc: str, **kwargs: Any) -> Any:
    """A nested section; keyword arguments override the section's own defaults."""
    return field(default_factory=lambda: cls(**kwargs), metadata={"doc": doc, "ours": False})


@dataclass
class HTTPOptions:
    httpListenAddr: str = opt(":8080", "ListenAddr is the local address to bind the HTTP frontend to.")
    certFile: str = opt("", "CertFile is the path to the TLS certificate for the HTTP frontend (optional).")
    keyFile: str = opt("", "KeyFile is the path to the TLS key for the HTTP frontend (optional).")
    externalURL: str = opt(
        "https://localhost/",
        "ExternalURL is the public URL for the image factory HTTP frontend, used in links and redirects.",
    )
    externalPXEURL: str = opt(
        "",
        "ExternalPXEURL is the public URL for the PXE frontend, used for booting nodes via PXE "
        "(defaults to externalURL).",
    )
    allowedOrigins: list[str] = opt(
        ["*"], "AllowedOrigins configures the frontend API CORS with custom origins list."
    )
    maxRequestBodySize: int = opt(
        262144,
        "Largest request body (bytes) the API accepts, e.g. for POST /schematics; larger → 413.",
        ours=True,
    )
    maxRanges: int = opt(
        16,
        "Most byte ranges one Range header may ask of a streamed asset; more get 416 (RFC 9110 "
        "§15.5.17). Ranges are never answered as multipart: overlapping or adjacent ones are merged, "
        "and ranges that stay apart get the whole asset (200).",
        ours=True,
    )
    maxRequestLine: int = opt(
        4094,
        "Longest request line (method, URL and version, in bytes) the API reads (gunicorn's "
        "limit_request_line); longer → 414.",
        ours=True,
    )
    maxHeaderFields: int = opt(
        100,
        "Most header fields one request may carry (gunicorn's limit_request_fields); more → 431.",
        ours=True,
    )
    maxHeaderFieldSize: int = opt(
        8190,
        "Longest header field (name and value, in bytes; gunicorn's limit_request_field_size); longer → 431.",
        ours=True,
    )
    requestReadTimeout: timedelta = opt(
        timedelta(seconds=30),
        "How long the API waits for one request's line, headers and body, from the request's first "
        "byte (or from a kept-alive connection turning readable) to its body's last; a client slower "
        "than that gets 408 and its connection is closed, so no trickling client holds a thread longer. "
        "Responses (downloads) are not bounded by it.",
        ours=True,
    )
    workers: int = opt(2, "Number of gunicorn worker processes serving the API.", ours=True)
    threads: int = opt(
        128,
        "Number of threads per gunicorn worker process. A request waiting for a build holds one, so "
        "this bounds the waiting clients a process serves at once.",
        ours=True,
    )
    maxWaiters: int = opt(
        0,
        "Most requests per API process that may wait at once for builds no other request of the process "
        "waits for; more get 503 with Retry-After so cached downloads keep their threads. Requests for a "
        "build the process already waits for always join it (they cost only their thread). 0 means "
        "`threads` minus 8.",
        ours=True,
    )
    shutdownGracePeriod: timedelta = opt(
        timedelta(seconds=60),
        "How long a stopping API process (SIGTERM) has to finish: it refuses new connections at once, "
        "lets downloads in flight finish, answers requests waiting for a build with 503 and Retry-After "
        "by half this period (the build goes on), and exits when nothing is left in flight or the "
        "period ends. The Helm chart sets the API pods' terminationGracePeriodSeconds from it.",
        ours=True,
    )


@dataclass
class OverlayInstallerOptions:
    """Bounds of one run of an overlay's installer (third-party code, run sandboxed by the worker)."""

    timeout: timedelta = opt(
        timedelta(seconds=60),
        "Longest one `get-options` or `install` run of an overlay installer may take; longer → 504 "
        "naming the overlay, nothing published.",
        ours=True,
    )
    memoryLimit: int = opt(
        1024**3,
        "Address space (bytes, RLIMIT_AS) each process of an overlay installer may map.",
        ours=True,
    )
    maxOutputSize: int = opt(
        256 * 1024**2,
        "Most bytes of files an overlay installer may leave for the EFI partition; more → 502.",
        ours=True,
    )


@dataclass
class BuildOptions:
    minTalosVersion: str = opt(
        "1.2.0", "MinTalosVersion specifies the minimum supported Talos version for assets."
    )
    maxConcurrency: int = opt(
        6, "MaxConcurrency sets the maximum number of simultaneous asset build operations (cluster-wide)."
    )
    brokenTalosVersions: list[str] = opt(
        [], "Talos versions hidden from /versions (listed by /versions?broken=true) and not built."
    )
    waitTimeout: timedelta = opt(
        timedelta(minutes=20),
        "How long an asset request waits for a build; then it gets 503 with Retry-After (the build goes "
        "on, the retry joins it). Only requests with `Prefer: respond-async` get 202 with the build's "
        "status, at once.",
        ours=True,
    )
    timeout: timedelta = opt(
        timedelta(minutes=20),
        "Hard time limit of one build (upstream's detached build context); the soft limit, which lets "
        "the build clean up, is 30 s earlier.",
        ours=True,
    )
    shutdownGracePeriod: timedelta = opt(
        timedelta(minutes=5),
        "How long a stopping worker (SIGTERM, Celery's warm shutdown) lets its running builds go on; "
        "builds not finished by then, and builds not yet started, are handed back to the queue (scratch "
        "removed, nothing published) and built by another worker. The Helm chart sets the worker pods' "
        "terminationGracePeriodSeconds from it.",
        ours=True,
    )
    maxQueueLength: int = opt(
        100,
        "Builds that may wait in the queue cluster-wide; beyond it, requests for new (uncached) assets "
        "get 503 with Retry-After, while cached assets and builds already queued are served.",
        ours=True,
    )
    failureTTL: timedelta = opt(
        timedelta(minutes=1),
        "How long a build's permanent failure (bad extension, unavailable version) is remembered and "
        "answered to identical requests without building again.",
        ours=True,
    )
    retries: int = opt(
        3,
        "How many times a build is retried, with backoff, after a transient registry or S3 error.",
        ours=True,
    )
    registryWaitTimeout: timedelta = opt(
        timedelta(seconds=75),
        "How long a registry manifest request for an installer waits for its builds before answering "
        "503 with Retry-After (the builds go on). Talos aborts a pull connection that reads nothing "
        "for 90 s and retries; answering first turns a stalled pull into a clean retry.",
        ours=True,
    )
    prebuildInstallers: list[str] = opt(
        [],
        "Talos versions (or `latest`) whose installer images, every architecture, are built as soon as "
        "a schematic is created (and, for `prebuildSchematics`, when a worker starts), so the first "
        "install or upgrade pull of `<factory>/<platform>-installer/<id>:<version>` only publishes.",
        ours=True,
    )
    prebuildSchematics: list[str] = opt(
        [],
        "Schematic IDs whose installers for `prebuildInstallers` are queued whenever a worker starts.",
        ours=True,
    )
    overlayInstaller: OverlayInstallerOptions = section(
        OverlayInstallerOptions,
        "Bounds of the sandboxed overlay installer runs (single-board computer images).",
    )
    scratchDir: str = opt(
        "",
        "Directory for the per-build working folders (removed after each build, and swept of abandoned "
        "ones when a worker starts); empty means `$TMPDIR/image-factory-builds`.",
        ours=True,
    )


@dataclass
class ContainerSignatureOptions:
    subjectRegExp: str = opt(
        DEFAULT_SUBJECT_REGEXP,
        "SubjectRegExp is a regular expression used to validate the subject in container signatures. "
        "Set explicitly to empty string to disable subject validation; keyless verification does not "
        "work in air-gapped environments.",
    )
    issuerRegExp: str = opt(
        "", "IssuerRegExp is a regular expression used to validate the issuer in container signatures."
    )
    issuer: str = opt(
        "https://accounts.google.com",
        "Issuer is the expected issuer for container signatures (overrides RegExp if set).",
    )
    publicKeyFile: str = opt(
        "",
        "PublicKeyFile is the path to the public key used for signature verification, an alternative to "
        "keyless verification.",
    )
    publicKeyHashAlgo: str = opt(
        "sha256", "PublicKeyHashAlgo specifies the hash algorithm used for verifying the public key."
    )
    disabled: bool = opt(False, "Disabled disables signature verification.")
    trustedRootFile: str = opt(
        "",
        "Sigstore trusted root (trusted_root.json or a client trust config) for keyless verification; "
        "empty means the public-good root embedded in the factory (no network needed). Set it for "
        "air-gapped sites with their own Fulcio and Rekor.",
        ours=True,
    )


@dataclass
class RepositoryOptions:
    registry: str = opt("", "Registry is the hostname of the container registry, e.g., `ghcr.io`.")
    namespace: str = opt("", "Namespace is the repository namespace or organization within the registry.")
    repository: str = opt("", "Repository is the name of the repository inside the namespace.")
    insecure: bool = opt(
        False, "Insecure allows connections to registries over HTTP or with invalid TLS certificates."
    )

    @property
    def path(self) -> str:
        """``namespace/repository`` without the registry, as used in registry API URLs."""
        return "/".join(p for p in (self.namespace, self.repository) if p)

    @property
    def reference(self) -> str:
        return "/".join(p for p in (self.registry, self.namespace, self.repository) if p)


@dataclass
class CDNOptions:
    enabled: bool = opt(False, "Enabled enables the CDN cache.")
    host: str = opt("", "Host is the CDN URL used to serve cached assets.")
    trimPrefix: str = opt("", "TrimPrefix removes a prefix from asset paths before redirecting to the CDN.")


@dataclass
class S3Options:
    bucket: str = opt("image-factory", "Bucket is the S3 bucket name where cached assets are stored.")
    endpoint: str = opt("", "Endpoint is the S3 endpoint URL (without scheme or trailing slash).")
    region: str = opt("", "Region is the S3 region for the bucket.")
    insecure: bool = opt(False, "Insecure allows connecting to S3 without TLS or with invalid certificates.")
    enabled: bool = opt(False, "Enabled enables S3 cache.")
    presignedURLTTL: timedelta = opt(timedelta(hours=1), "How long presigned S3 download URLs stay valid.")


@dataclass
class SchematicCacheOptions:
    capacity: int = opt(100000, "Maximum number of schematics kept in each API process's memory (LRU).")
    negativeTTL: timedelta = opt(
        timedelta(seconds=30),
        "How long a process remembers that a schematic does not exist (creates through any replica are "
        "seen at once regardless, through Redis).",
    )


@dataclass
class CacheOptions:
    oci: RepositoryOptions = section(
        RepositoryOptions,
        "OCI contains configuration for using OCI Registry to store cached assets.",
        registry="ghcr.io",
        namespace="siderolabs/image-factory",
        repository="cache",
    )
    signingKeyPath: str = opt("", "SigningKeyPath is the path to the ECDSA key used to sign cached assets.")
    cdn: CDNOptions = section(
        CDNOptions, "CDN contains configuration for using a CDN to serve cached assets."
    )
    s3: S3Options = section(S3Options, "S3 contains configuration for using S3 to store cached assets.")
    redirectPXE: bool = opt(
        False,
        "Redirect PXE clients (requests on the externalPXEURL host, and iPXE) to S3/CDN too; upstream "
        "always streams to them.",
        ours=True,
    )
    schematic: SchematicCacheOptions = section(SchematicCacheOptions, "In-process cache of schematics.")
    recheckInterval: timedelta = opt(
        timedelta(seconds=30),
        "How long an API process serves a cache entry it verified (signature, S3 object) before checking "
        "again: the longest it keeps redirecting clients to an S3 that went down, or serving an entry "
        "removed from the cache. 0 checks on every request.",
        ours=True,
    )


@dataclass
class MetricsOptions:
    addr: str = opt(
        ":2122", "Addr is the bind address for the metrics HTTP server. Leave empty to disable metrics."
    )


@dataclass
class SecureBootFileOptions:
    signingKeyPath: str = opt(
        "", "SigningKeyPath is the path to the private key used for signing boot assets."
    )
    signingCertPath: str = opt(
        "", "SigningCertPath is the path to the certificate used for signing boot assets."
    )
    pcrKeyPath: str = opt("", "PCRKeyPath is the path to the key used for PCR measurement.")


@dataclass
class AzureKeyVaultOptions:
    url: str = opt("", "URL is the Key Vault endpoint.")
    certificateName: str = opt("", "CertificateName is the name of the certificate in Key Vault.")
    keyName: str = opt("", "KeyName is the name of the key in Key Vault.")


@dataclass
class AWSKMSOptions:
    keyID: str = opt("", "KeyID is the AWS KMS Key ID used for signing boot assets.")
    pcrKeyID: str = opt("", "PCRKeyID is the AWS KMS Key ID used for PCR measurement.")
    certPath: str = opt("", "CertPath is the path to the certificate used with AWS KMS.")
    certARN: str = opt("", "CertARN is the ARN of the ACM certificate used with AWS KMS.")
    region: str = opt("", "Region is the AWS region containing the KMS keys.")


@dataclass
class PKCS11Options:
    modulePath: str = opt(
        "", "Path to the token's PKCS #11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).", ours=True
    )
    tokenLabel: str = opt("", "Label of the token holding the keys.", ours=True)
    pin: str = opt(
        "",
        "User PIN to log in to the token with (or set `pinFile`, or the environment variable, to keep "
        "it out of configuration files). Empty, with an empty `pinFile`: no login.",
        ours=True,
    )
    pinFile: str = opt(
        "", "File holding the user PIN (trailing newline ignored); used when `pin` is empty.", ours=True
    )
    signingKeyLabel: str = opt(
        "", "Label (`CKA_LABEL`) of the private key that signs boot assets (UKI, systemd-boot).", ours=True
    )
    signingCertPath: str = opt(
        "",
        "Path to the signing key's certificate; empty means the token's certificate object labelled "
        "like the signing key.",
        ours=True,
    )
    pcrKeyLabel: str = opt(
        "", "Label of the RSA private key that signs the PCR policy (may be the signing key).", ours=True
    )


@dataclass
class SecureBootOptions:
    enabled: bool = opt(False, "Enabled enables SecureBoot asset generation.")
    file: SecureBootFileOptions = section(
        SecureBootFileOptions, "File-based SecureBoot keys and certificates."
    )
    azureKeyVault: AzureKeyVaultOptions = section(AzureKeyVaultOptions, "SecureBoot keys in Azure Key Vault.")
    awsKMS: AWSKMSOptions = section(AWSKMSOptions, "SecureBoot keys in AWS KMS.")
    pkcs11: PKCS11Options = section(
        PKCS11Options,
        "SecureBoot keys in a PKCS #11 token: an HSM, a smart card, SoftHSM2 (ours: upstream has no "
        "PKCS #11). Used when no upstream backend is complete.",
    )


@dataclass
class ComponentsOptions:
    installerBase: str = opt(
        "siderolabs/installer-base", "InstallerBase is the base image for installer images."
    )
    installer: str = opt("siderolabs/installer", "Installer is the main installer image.")
    imager: str = opt("siderolabs/imager", "Imager is the image builder used by the factory.")
    extensionManifest: str = opt(
        "siderolabs/extensions", "ExtensionManifest is the image manifest for extensions."
    )
    overlayManifest: str = opt("siderolabs/overlays", "OverlayManifest is the image manifest for overlays.")
    talosctl: str = opt("siderolabs/talosctl-all", "Talosctl is the image containing the Talos CLI tool.")


@dataclass
class CoreOptions:
    registry: str = opt(
        "ghcr.io", "Registry is the OCI registry host for base images, extensions and overlays."
    )
    namespace: str = opt(
        "",
        "Path prefix for all core, extension and overlay pulls (for pull-through caches); "
        "identities unchanged.",
    )
    insecure: bool = opt(
        False, "Insecure allows connections to the registry over HTTP or with invalid TLS certificates."
    )
    components: ComponentsOptions = section(
        ComponentsOptions, "Names of the images used by the image factory."
    )


@dataclass
class InstallerOptions:
    internal: RepositoryOptions = section(
        RepositoryOptions,
        "Internal OCI registry the image factory pushes installer images to.",
        registry="ghcr.io",
        namespace="siderolabs",
    )
    external: RepositoryOptions = section(
        RepositoryOptions,
        "Public OCI registry for redirects to installer images; "
        "unset means the factory proxies the internal one.",
    )


@dataclass
class SourceLimitsOptions:
    """Bounds on what a source registry may make the factory read and unpack (hostile sources)."""

    maxManifestSize: int = opt(
        4 * 1024 * 1024,
        "Largest manifest, index or signature manifest (bytes) read from a source registry; larger → "
        "502. containerd refuses manifests above about the same size (`MaxManifestSize`, "
        "`containerd/containerd@v2.0.0:core/remotes/docker/resolver.go`).",
        ours=True,
    )
    idleTimeout: timedelta = opt(
        timedelta(seconds=30),
        "How long a source registry may send nothing while a manifest or blob is being read; longer → "
        "503 (unavailable).",
        ours=True,
    )
    maxReadTime: timedelta = opt(
        timedelta(minutes=30),
        "Longest time one manifest or blob may take to arrive from a source registry, however steadily "
        "it trickles; longer → 502. A blob that sends more bytes than its descriptor's size is refused "
        "(502) as soon as it does.",
        ours=True,
    )
    maxLayerSize: int = opt(
        8 * 1024**3,
        "Most uncompressed bytes (the tar stream, headers included) one source image layer may unpack "
        "to; more → 502 naming the image and the layer (decompression bombs). Checked against each "
        "entry's declared size before it is written.",
        ours=True,
    )
    maxLayerEntries: int = opt(
        1_000_000,
        "Most tar entries (files, directories, links, whiteouts) one source image layer may hold; "
        "more → 502.",
        ours=True,
    )
    maxImageSize: int = opt(
        16 * 1024**3,
        "Most uncompressed bytes all the layers of one source image may unpack to together; more → 502.",
        ours=True,
    )
    maxImageEntries: int = opt(
        2_000_000,
        "Most tar entries all the layers of one source image may hold together; more → 502.",
        ours=True,
    )
    maxBuildSize: int = opt(
        32 * 1024**3,
        "Most unpacked bytes the extension and overlay images of one build may add up to; more → 502 "
        "naming the images.",
        ours=True,
    )
    maxBuildEntries: int = opt(
        4_000_000,
        "Most tar entries the extension and overlay images of one build may add up to; more → 502.",
        ours=True,
    )


@dataclass
class ArtifactsOptions:
    core: CoreOptions = section(CoreOptions, "Core images used by the image factory.")
    schematic: RepositoryOptions = section(
        RepositoryOptions,
        "OCI repository used to store schematic blobs.",
        registry="ghcr.io",
        namespace="siderolabs/image-factory",
        repository="schematics",
    )
    installer: InstallerOptions = section(InstallerOptions, "Storing and accessing installer images.")
    talosVersionRecheckInterval: timedelta = opt(
        timedelta(minutes=15), "Interval at which the image factory rechecks available Talos versions."
    )
    refreshInterval: timedelta = opt(
        timedelta(minutes=5), "How often to refresh the connection to registries."
    )
    storageDir: str = opt(
        "",
        "Directory for pulled and unpacked source images (content-addressed, shared by all processes "
        "on the host); empty means `$TMPDIR/image-factory-artifacts`.",
        ours=True,
    )
    storageMaxSize: int = opt(
        20 * 1024**3,
        "Bytes of local source-image storage kept before least-recently-used entries are evicted.",
        ours=True,
    )
    limits: SourceLimitsOptions = section(
        SourceLimitsOptions,
        "Bounds on what a source registry may make the factory read and unpack (ours: upstream has none "
        "of its own); exceeding one is refused with 502 naming the image and the reason.",
    )


@dataclass
class RedisOptions:
    url: str = opt(
        "redis://127.0.0.1:6379/0",
        "Redis URL used as Celery broker and result backend, and for locks and shared caches.",
        ours=True,
    )


@dataclass
class Config:
    http: HTTPOptions = section(HTTPOptions, "HTTP configuration for the image factory frontend.")
    build: BuildOptions = section(BuildOptions, "Options for building assets.")
    containerSignature: ContainerSignatureOptions = section(
        ContainerSignatureOptions, "Verification of source container image signatures."
    )
    cache: CacheOptions = section(CacheOptions, "Storing and retrieving boot assets.")
    metrics: MetricsOptions = section(MetricsOptions, "Prometheus metrics endpoint.")
    secureBoot: SecureBootOptions = section(SecureBootOptions, "Generating SecureBoot-enabled assets.")
    artifacts: ArtifactsOptions = section(
        ArtifactsOptions, "Names and references of the images the factory uses."
    )
    redis: RedisOptions = section(RedisOptions, "Redis connection (ours: upstream has no Redis).")
