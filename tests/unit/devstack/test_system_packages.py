import re

from devstack.debian import SYSTEM_PACKAGES
from tests.paths import REPO_ROOT


def test_make_installs_every_package_the_fixture_builder_needs() -> None:
    """`make run`/`make test` install the Makefile's list; it must cover devstack.debian's."""
    text = (REPO_ROOT / "Makefile").read_text()
    match = re.search(r"^SYSTEM_PACKAGES := ((?:.*\\\n)*.*)$", text, re.M)
    assert match, "SYSTEM_PACKAGES not found in the Makefile"
    listed = set(match.group(1).replace("\\\n", " ").split())
    assert set(SYSTEM_PACKAGES) <= listed, sorted(set(SYSTEM_PACKAGES) - listed)
