from api.cors import OriginMatcher
from api.responses import go_json


def test_origin_matching() -> None:
    assert OriginMatcher(["*"])("https://anything")
    exact = OriginMatcher(["https://UI.example"])
    assert exact("https://ui.example") and not exact("https://ui.example.evil")
    pattern = OriginMatcher(["https://*.example.com"])
    assert pattern("https://a.example.com")
    assert not pattern("https://example.com.evil") and not pattern("http://a.example.com")


def test_go_json_escapes_like_encoding_json() -> None:
    assert go_json({"id": "x", "schematic": "a: <b> & c\n"}) == (
        b'{"id":"x","schematic":"a: \\u003cb\\u003e \\u0026 c\\n"}\n'
    )
    assert go_json({"s": "caf\u00e9"}) == '{"s":"caf\u00e9"}\n'.encode()
