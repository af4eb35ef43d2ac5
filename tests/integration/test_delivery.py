"""The delivery use case (``common.delivery``) without HTTP: a real stack's Redis, registry and
Celery worker build what an in-test :class:`Delivery` asks for — one asset, or several at once as
the registry frontend will (one installer per architecture, one waiter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.builds.state import Status
from common.builds.waiter import Waiter
from common.config import load_config
from common.delivery.service import BuildFailedError, Delivery, Pending
from common.services import build_services
from devstack.factory import write_config
from devstack.release.release import Release
from devstack.services import RedisServer, RegistryServer
from tests.support.stack import Stack, factory_stack

pytestmark = pytest.mark.integration

VERSION = "v1.12.4"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    registry: RegistryServer,
    fixture_release: Release,
) -> Iterator[Stack]:
    with factory_stack(
        tmp_path_factory.mktemp("delivery"), redis_server, registry, fixture_release, apis=1, workers=1
    ) as s:
        yield s


@pytest.fixture(scope="module")
def delivery(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivery]:
    path = tmp_path_factory.mktemp("delivery-config") / "config.yaml"
    write_config(path, stack.config)
    services = build_services(load_config([str(path)]))
    waiter = Waiter(services.redis, services.builds, limit=2)
    yield Delivery(services, waiter)
    waiter.close()  # before the stack's Redis stops: no listener left retrying in this process


def read(asset: object) -> bytes:
    return b"".join(asset.read())  # type: ignore[attr-defined]


def test_obtain_all_builds_every_architecture_under_one_waiter(stack: Stack, delivery: Delivery) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=obtain-all\n")
    amd64 = delivery.locate(sid, VERSION, "kernel-amd64")
    arm64 = delivery.locate(sid, VERSION, "kernel-arm64")
    assert amd64.key != arm64.key

    found = delivery.obtain_all([amd64, arm64, amd64])

    assert not isinstance(found, Pending)
    kernels = [read(asset) for asset in found]
    assert kernels[0] == kernels[2]
    assert kernels[0][0x202:0x206] == b"HdrS"  # x86 Linux boot protocol header
    assert kernels[1][0x38:0x3C] == b"ARM\x64"  # arm64 Image header magic
    assert stack.runs(amd64.key) == 1 and stack.runs(arm64.key) == 1  # the duplicate built once
    assert delivery.waiter.waiting == 0  # the one waiting place was given back

    again = delivery.obtain_all([arm64, amd64], wait=False)
    assert not isinstance(again, Pending)
    assert [read(a) for a in again] == [kernels[1], kernels[0]]


def test_pending_then_progress_then_asset(stack: Stack, delivery: Delivery) -> None:
    sid = stack.create_schematic("customization:\n  extraKernelArgs:\n    - test=pending\n")
    target = delivery.locate(sid, VERSION, "cmdline-metal-amd64")

    pending = delivery.obtain(target, wait=False)

    assert isinstance(pending, Pending) and pending.key == target.key
    progress = delivery.progress(target.key)
    assert progress.asked == {"schematic": sid, "version": VERSION, "path": "cmdline-metal-amd64"}
    assert progress.status in (Status.QUEUED, Status.RUNNING, Status.SUCCEEDED)
    asset = delivery.obtain(target)
    assert not isinstance(asset, Pending)
    assert b"test=pending" in read(asset)
    assert delivery.progress(target.key).status is Status.SUCCEEDED
    assert stack.runs(target.key) == 1


def test_one_failed_build_fails_the_whole(stack: Stack, delivery: Delivery) -> None:
    """dual-boot disk images do not exist for arm64: the imager refuses with 400, after resolution."""
    sid = stack.create_schematic(
        "customization:\n  extraKernelArgs:\n    - test=one-fails\n  bootloader: dual-boot\n"
    )
    good = delivery.locate(sid, VERSION, "cmdline-metal-amd64")
    bad = delivery.locate(sid, VERSION, "metal-arm64.raw.xz")

    with pytest.raises(BuildFailedError) as failed:
        delivery.obtain_all([good, bad])

    assert failed.value.status == 400
    assert "dual-boot" in failed.value.message
    assert delivery.progress(bad.key).status is Status.FAILED
    assert delivery.waiter.waiting == 0


def test_unknown_build_is_not_found(delivery: Delivery, tmp_path: Path) -> None:
    from common.errors import NotFoundError

    with pytest.raises(NotFoundError):
        delivery.progress("0" * 64)
