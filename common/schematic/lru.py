"""Per-process memory of schematics: an LRU of known ones and short-lived "absent" entries.

Schematics are content-addressed, so a positive entry never goes stale. Negative entries are the
dangerous kind (upstream kept them forever per process, so a schematic created through one replica
stayed 404 on another); here they expire after ``negativeTTL``, and the service also consults Redis,
where every create is published, before trusting one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class SchematicLRU:
    def __init__(
        self, capacity: int, negative_ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = max(1, capacity)
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._entries: OrderedDict[str, bytes | float] = OrderedDict()  # bytes, or expiry of "absent"
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, schematic_id: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(schematic_id)
            if isinstance(entry, bytes):
                self._entries.move_to_end(schematic_id)
                return entry
            return None

    def known_absent(self, schematic_id: str) -> bool:
        with self._lock:
            entry = self._entries.get(schematic_id)
            if isinstance(entry, float):
                if entry > self._clock():
                    return True
                del self._entries[schematic_id]
            return False

    def put(self, schematic_id: str, data: bytes) -> None:
        self._store(schematic_id, data)

    def put_absent(self, schematic_id: str) -> None:
        if self.negative_ttl > 0:
            self._store(schematic_id, self._clock() + self.negative_ttl)

    def _store(self, schematic_id: str, entry: bytes | float) -> None:
        with self._lock:
            self._entries[schematic_id] = entry
            self._entries.move_to_end(schematic_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
