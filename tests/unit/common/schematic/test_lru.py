from common.schematic.lru import SchematicLRU


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_positive_entries_are_evicted_least_recently_used_first() -> None:
    lru = SchematicLRU(capacity=2, negative_ttl=30)
    lru.put("a", b"A")
    lru.put("b", b"B")
    assert lru.get("a") == b"A"  # a is now the most recent
    lru.put("c", b"C")
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (b"A", None, b"C")
    assert len(lru) == 2


def test_negative_entries_expire() -> None:
    clock = Clock()
    lru = SchematicLRU(capacity=10, negative_ttl=30, clock=clock)
    lru.put_absent("x")
    assert lru.known_absent("x")
    clock.now += 29.9
    assert lru.known_absent("x")
    clock.now += 0.2
    assert not lru.known_absent("x")
    assert len(lru) == 0


def test_bogus_ids_cannot_grow_memory_without_bound() -> None:
    lru = SchematicLRU(capacity=100, negative_ttl=30)
    for i in range(10_000):
        lru.put_absent(f"{i:064x}")
    assert len(lru) == 100


def test_a_create_replaces_an_absent_entry() -> None:
    lru = SchematicLRU(capacity=10, negative_ttl=30)
    lru.put_absent("x")
    lru.put("x", b"X")
    assert not lru.known_absent("x") and lru.get("x") == b"X"


def test_zero_negative_ttl_disables_negative_caching() -> None:
    lru = SchematicLRU(capacity=10, negative_ttl=0)
    lru.put_absent("x")
    assert not lru.known_absent("x")
