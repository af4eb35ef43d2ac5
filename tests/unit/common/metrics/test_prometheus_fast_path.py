"""The Prometheus backend's fast path (``PrometheusMetrics._record``): a label combination seen before
is recorded without checking its definition again, so it must land where the checked path would, and
misuse must still raise however often the right use came first."""

from __future__ import annotations

import pytest

from common.metrics import definitions as d
from common.metrics.prometheus import PrometheusMetrics
from tests.unit.common.metrics.test_prometheus import samples

LABELS = {"talos_version": "1.12.4", "output_kind": "iso", "arch": "amd64"}
KEY = ("image_factory_assets_built_total", tuple(sorted(LABELS.items())))


def test_repeats_and_label_order_reach_one_series() -> None:
    backend = PrometheusMetrics()
    for _ in range(3):
        backend.inc(d.ASSETS_BUILT, **LABELS)
    backend.inc(d.ASSETS_BUILT, **dict(reversed(LABELS.items())))  # another memo entry, same series
    backend.inc(d.ASSETS_BUILT, 2, **LABELS)
    assert samples(backend)[KEY] == 6


def test_misuse_after_use_still_raises() -> None:
    backend = PrometheusMetrics()
    backend.inc(d.ASSETS_BUILT, **LABELS)
    backend.inc(d.SCHEMATIC_GET)
    with pytest.raises(ValueError, match="takes labels"):
        backend.inc(d.ASSETS_BUILT, **{**LABELS, "extra": "x"})
    with pytest.raises(ValueError, match="only be incremented"):
        backend.inc(d.SCHEMATIC_GET, -1)  # the remembered child refuses it as the checked path does
    with pytest.raises(ValueError, match="is a histogram"):
        backend.inc(d.ASSETS_BUILD_LATENCY)
    assert samples(backend)[KEY] == 1


def test_a_failing_write_on_the_fast_path_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = PrometheusMetrics()
    backend.inc(d.SCHEMATIC_GET)  # remembered

    def full(_amount: float = 1.0) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backend._metrics[d.SCHEMATIC_GET.name], "inc", full)
    backend.inc(d.SCHEMATIC_GET)
    backend.inc(d.SCHEMATIC_GET)
    assert [r.getMessage() for r in caplog.records].count("cannot record a metric") == 1
