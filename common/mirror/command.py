"""One mirror run: which images, verify each, copy in parallel, report, and print the factory config.

The source is the factory's own configuration (``artifacts.core``: registry, namespace, component
names; ``containerSignature``: how signatures are checked; ``build.minTalosVersion`` and
``build.brokenTalosVersions``: which versions are offered), so the mirror copies exactly what that
factory would pull, verified exactly as it would verify it. Each image's signature is checked before
anything of it is copied; an image that fails is refused (named, with the reason) and the run goes on
with the others, exiting 1 at the end. stdout carries only the result (the configuration, or the
references with ``--list``) so that it can be redirected into a file; progress goes to stderr.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, TextIO

import requests
import yaml

from common.artifacts.manager import ArtifactsManager
from common.config import Config
from common.config.options import ComponentsOptions, ContainerSignatureOptions, RepositoryOptions
from common.cosign.types import SignatureError
from common.errors import FactoryError
from common.mirror.copier import ImageCopier, Tally
from common.mirror.needs import NeededImage, Needs, needed_images
from common.registry.client import RegistryClient
from common.talos import version as v


@dataclass(frozen=True)
class MirrorRequest:
    """What ``image-factory mirror`` was asked for."""

    registry: str  # destination host[:port]
    namespace: str = ""  # destination path prefix: the mirror factory's artifacts.core.namespace
    insecure: bool = False  # plain HTTP (or unverified TLS) to the destination
    versions: tuple[str, ...] = ()  # empty: every version the source factory offers
    jobs: int = 4
    list_only: bool = False


@dataclass
class Outcome:
    image: NeededImage
    status: str  # "copied", "present", "refused", "failed"
    tally: Tally
    detail: str = ""


class Destination:
    """Registry clients for the mirror, one per repository, created on first use (thread-safe)."""

    def __init__(self, request: MirrorRequest) -> None:
        self.request = request
        self._clients: dict[str, RegistryClient] = {}
        self._lock = threading.Lock()

    def __call__(self, repository: str) -> RegistryClient:
        with self._lock:
            if repository not in self._clients:
                self._clients[repository] = RegistryClient(
                    RepositoryOptions(
                        registry=self.request.registry,
                        namespace=self.request.namespace,
                        repository=repository,
                        insecure=self.request.insecure,
                    )
                )
            return self._clients[repository]


def select_versions(manager: ArtifactsManager, wanted: tuple[str, ...]) -> list[v.Version]:
    """The requested versions (each must be offered by the source), or all offered ones."""
    offered = manager.talos_versions()
    if not wanted:
        return list(offered)
    chosen = []
    for text in wanted:
        version = v.parse_tolerant(text)
        manager.require(version)
        chosen.append(version)
    return chosen


def run_mirror(
    config: Config, manager: ArtifactsManager, request: MirrorRequest, out: TextIO, err: TextIO
) -> int:
    """Runs one mirror (or ``--list``); returns the exit status (0 ok, 1 something refused or failed)."""
    started = time.monotonic()
    versions = select_versions(manager, request.versions)
    say = _printer(err)
    say(f"mirror: Talos {', '.join(v.tag(x) for x in versions)} from {_prefix(manager)}")
    needs = needed_images(manager, versions)
    for refusal in needs.refused:
        say(f"refused: {refusal}")
    if request.list_only:
        for image in needs.images:
            out.write(image.reference(_prefix(manager)) + "\n")
        return 1 if needs.refused else 0
    if manager.verifier.disabled:
        say("warning: containerSignature.disabled is set: images are copied without verifying them")
    destination = Destination(request)
    copier = ImageCopier(manager.client, destination)
    outcomes = _copy_all(manager, copier, needs, request.jobs, say)
    _summary(outcomes, needs, time.monotonic() - started, say)
    out.write(mirror_configuration(config, request, versions))
    failed = needs.refused or any(o.status in ("refused", "failed") for o in outcomes)
    return 1 if failed else 0


def _copy_all(
    manager: ArtifactsManager, copier: ImageCopier, needs: Needs, jobs: int, say: Callable[[str], None]
) -> list[Outcome]:
    prefix = _prefix(manager)

    def one(image: NeededImage) -> Outcome:
        tally = Tally()
        try:
            manager.verifier.verify(manager.client(image.repository), image.digest)
        except SignatureError as exc:
            return Outcome(image, "refused", tally, exc.message)
        try:
            copier.copy(image.repository, image.digest, image.tags, tally)
        except FactoryError as exc:
            return Outcome(image, "failed", tally, exc.message)
        except (requests.RequestException, ValueError) as exc:  # oras: "Cannot respond to … authentication"
            return Outcome(image, "failed", tally, f"{image.reference(prefix)}: {exc}")
        return Outcome(image, "copied" if tally.copied_anything else "present", tally)

    outcomes = []
    total = len(needs.images)
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="mirror") as pool:
        futures = [pool.submit(one, image) for image in needs.images]
        for done, future in enumerate(as_completed(futures), 1):
            outcome = future.result()
            outcomes.append(outcome)
            t = outcome.tally
            line = f"[{done}/{total}] {outcome.status} {outcome.image.reference(prefix)}"
            if outcome.status == "copied":
                line += f" ({t.manifests_copied} manifests, {t.blobs_copied} blobs, {_size(t.bytes_copied)})"
            elif outcome.detail:
                line += f": {outcome.detail}"
            say(line)
    return outcomes


def _summary(outcomes: list[Outcome], needs: Needs, seconds: float, say: Callable[[str], None]) -> None:
    total = Tally()
    for outcome in outcomes:
        t = outcome.tally
        total.add(
            manifests_copied=t.manifests_copied,
            blobs_copied=t.blobs_copied,
            blobs_present=t.blobs_present,
            bytes_copied=t.bytes_copied,
            tags_set=t.tags_set,
        )
    count = {s: sum(o.status == s for o in outcomes) for s in ("copied", "present", "refused", "failed")}
    say(
        f"summary: {len(outcomes)} images: {count['copied']} copied, {count['present']} already mirrored, "
        f"{count['refused']} refused, {count['failed']} failed; {total.manifests_copied} manifests, "
        f"{total.blobs_copied} blobs ({_size(total.bytes_copied)}) and {total.tags_set} tags copied, "
        f"{total.blobs_present} blobs already there; {seconds:.1f} s"
    )
    for outcome in outcomes:
        if outcome.status in ("refused", "failed"):
            say(f"{outcome.status}: {outcome.detail}")
    for refusal in needs.refused:
        say(f"refused: {refusal}")


def mirror_configuration(config: Config, request: MirrorRequest, versions: list[v.Version]) -> str:
    """The configuration (YAML) that points a factory at the mirror, verifying as the source did."""
    core: dict[str, Any] = {"registry": request.registry, "namespace": request.namespace}
    if request.insecure:
        core["insecure"] = True
    components = _changed(config.artifacts.core.components, ComponentsOptions())
    if components:
        core["components"] = components
    signature: dict[str, Any] = {"disabled": config.containerSignature.disabled}
    signature.update(_changed(config.containerSignature, ContainerSignatureOptions()))
    document = {"artifacts": {"core": core}, "containerSignature": signature}
    header = (
        f"# image-factory configuration for the mirror {request.registry}/{request.namespace} "
        f"(Talos {', '.join(v.tag(x) for x in versions)})\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _changed(value: Any, default: Any) -> dict[str, Any]:
    return {
        f.name: getattr(value, f.name)
        for f in dataclasses.fields(value)
        if getattr(value, f.name) != getattr(default, f.name)
    }


def _prefix(manager: ArtifactsManager) -> str:
    return "/".join(p for p in (manager.core.registry, manager.core.namespace) if p)


def _printer(err: TextIO) -> Callable[[str], None]:
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            err.write(f"image-factory: {line}\n")
            err.flush()

    return say


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
