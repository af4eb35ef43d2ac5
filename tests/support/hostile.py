"""Hostile schematic bodies (each at most ~256 KiB) that must be refused without expansion."""

HOSTILE = {
    "unclosed flow": b"[" * 262_144,
    "unclosed flow maps": b"{a: " * 65_536,
    "deep block nesting": b"".join(b"  " * i + b"a:\n" for i in range(300)),
    "alias bomb": b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + b"".join(
        b"%c: &%c [" % (98 + i, 98 + i) + b",".join([b"*%c" % (97 + i)] * 9) + b"]\n" for i in range(9)
    ),
    "late alias": b"overlay:\n  options:\n"
    + b"".join(b"    k%d: v\n" % i for i in range(18_000))[:262_000]
    + b"  z: *q\n",
    "duplicate keys": b"{" + b"a: 1, " * 43_690 + b"}",
    "unknown keys": b"".join(b"k%d: 1\n" % i for i in range(30_000))[:262_144],
    "tags": b"!!str " * 43_690,
    "nul bytes": b"\x00" * 262_144,
    "bad utf-8 at end": b"a: " + b"x" * 262_140 + b"\xff",
}
