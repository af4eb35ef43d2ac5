import pytest

from common.errors import InvalidInputError
from common.talos import version as v

V = v.Version.parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v1.5", "1.5.0"),
        ("1.5", "1.5.0"),
        (" v1.10.3 ", "1.10.3"),
        ("v1.13.0-alpha.1", "1.13.0-alpha.1"),
        ("v01.02.03", "1.2.3"),
        ("2", "2.0.0"),
    ],
)
def test_parse_tolerant_matches_blang(text: str, expected: str) -> None:
    assert str(v.parse_tolerant(text)) == expected


@pytest.mark.parametrize("text", ["latest", "v1.5-beta", "", "v1.x.0", "sha256-abc.sig"])
def test_parse_tolerant_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError):
        v.parse_tolerant(text)


def test_version_from_path_is_strict_and_says_why() -> None:
    assert v.version_from_path("v1.10.0") == V("1.10.0")
    assert v.version_from_path("1.10.0") == V("1.10.0")
    with pytest.raises(InvalidInputError, match="error parsing version"):
        v.version_from_path("v1.10")


def test_select_versions_follows_upstream_rules() -> None:
    tags = [
        "v1.1.0",  # below minimum
        "v1.2.0-alpha.0",  # below minimum (pre-release sorts before 1.2.0)
        "v1.2.0",
        "v1.9.5",
        "v1.12.0-rc.1",  # pre-release of an older minor
        "v1.12.4",
        "v1.13.0-alpha.1-5-gabcdef0",  # not alpha|beta|rc.N
        "v1.13.0-beta.x",  # second identifier not numeric
        "v1.13.0-pre.1",  # unknown kind
        "v1.13.0-beta.1",
        "v1.13.0-rc.0",
        "v1.11.2",  # broken
        "latest",
        "sha256-0123.sig",
    ]
    selected = v.select_versions(tags, V("1.2.0"), [V("1.11.2")])
    assert [v.tag(x) for x in selected] == ["v1.2.0", "v1.9.5", "v1.12.4", "v1.13.0-beta.1", "v1.13.0-rc.0"]


def test_newest_counts_prereleases_and_filtered_tags() -> None:
    # the newest minor is decided over all tags, so 1.12 pre-releases are dropped once 1.13 exists
    assert v.select_versions(["v1.12.0-beta.0", "v1.13.0-alpha.0"], V("1.2.0"), []) == [V("1.13.0-alpha.0")]
    assert v.select_versions(["v1.12.0-beta.0"], V("1.2.0"), []) == [V("1.12.0-beta.0")]
    assert v.select_versions([], V("1.2.0"), []) == []


def test_core_strips_prerelease() -> None:
    assert v.core(V("1.10.0-beta.1")) == V("1.10.0")
