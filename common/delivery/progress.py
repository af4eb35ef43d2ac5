"""How far a build is: what ``/builds/<key>``, a ``202`` and (later) the UI show, without the HTTP.

ETAs come from the median of the last builds of the same (version, kind, arch)
(:meth:`common.builds.state.BuildState.typical_seconds`); the position counts the builds ahead in
the cluster-wide queue, served ``build.maxConcurrency`` at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common.builds.state import BuildRecord, BuildState, Status


@dataclass(frozen=True)
class Progress:
    status: Status
    stage: str
    progress: float
    queue_position: int | None = None
    eta_seconds: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    asked: dict[str, str] = field(default_factory=dict)  # the build's request: schematic, version, path

    @property
    def finished(self) -> bool:
        return self.status in (Status.SUCCEEDED, Status.FAILED)

    @classmethod
    def done(cls) -> Progress:
        """A build whose record expired: its asset is (or was) in the cache."""
        return cls(Status.SUCCEEDED, "done", 1.0)

    @classmethod
    def queued(cls) -> Progress:
        """A build just queued whose record cannot be read back (yet)."""
        return cls(Status.QUEUED, "queued", 0.0)


def eta(state: BuildState, slots: int, record: BuildRecord | None) -> float | None:
    """Seconds until the build is expected to finish; None when finished or nothing is known."""
    if record is None or record.finished:
        return None
    typical = state.typical_seconds(record.version, record.kind, record.arch)
    if typical is None:
        return None
    if record.status is Status.RUNNING and record.started_at:
        return max(1.0, typical - (time.time() - record.started_at))
    position = state.queue_position(record.key) or 1
    return typical * (1 + (position - 1) // max(1, slots)) + typical


def progress_of(state: BuildState, slots: int, record: BuildRecord) -> Progress:
    remaining = eta(state, slots, record)
    return Progress(
        status=record.status,
        stage=record.stage,
        progress=_fraction(record, remaining),
        queue_position=state.queue_position(record.key) if record.status is not Status.SUCCEEDED else None,
        eta_seconds=remaining,
        started_at=record.started_at,
        finished_at=record.finished_at,
        error=record.error,
        asked=dict(record.request),
    )


def _fraction(record: BuildRecord, remaining: float | None) -> float:
    if record.status is Status.SUCCEEDED:
        return 1.0
    if record.status is not Status.RUNNING:
        return 0.0
    if record.stage == "signing and uploading":
        return 0.9
    if record.stage == "building" and record.started_at:
        if remaining is None:
            return 0.1
        elapsed = time.time() - record.started_at
        return round(min(0.85, 0.05 + 0.8 * elapsed / max(1.0, elapsed + remaining)), 2)
    return 0.05
