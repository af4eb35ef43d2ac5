"""The decoder: go-yaml v4 Decoder + KnownFields(true) (schematic-id.md §3.1, §3.4), refusals, speed."""

from __future__ import annotations

import pytest

from common.errors import InvalidInputError
from common.schematic import (
    Customization,
    GoTime,
    MetaValue,
    Overlay,
    Schematic,
    SchematicDecodeError,
    SecureBoot,
    marshal,
    parse_schematic,
)
from common.schematic import decode as decode_module
from tests.support.hostile import HOSTILE


def parse(body: str) -> Schematic:
    return parse_schematic(body.encode())


def error_of(body: str | bytes) -> str:
    with pytest.raises(SchematicDecodeError) as info:
        parse_schematic(body.encode() if isinstance(body, str) else body)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.status == 400
    return str(info.value)


def canonical(body: str) -> str:
    return marshal(parse(body)).decode()


# Whole-document rules --------------------------------------------------------------------------------------


def test_decodes_every_field() -> None:
    s = parse(
        """
overlay:
  image: siderolabs/sbc-raspberrypi
  name: rpi_generic
  options: {configTxt: x}
customization:
  embeddedMachineConfiguration: "a: b"
  extraKernelArgs: [a, b]
  meta: [{key: 1, value: v}]
  systemExtensions: {officialExtensions: [siderolabs/gvisor]}
  bootloader: grub
  secureboot: {enrollKeys: force, includeWellKnownCertificates: true}
  diskImage: {sectorSize: 4096}
"""
    )
    assert s == Schematic(
        overlay=Overlay("siderolabs/sbc-raspberrypi", "rpi_generic", {"configTxt": "x"}),
        customization=Customization(
            embedded_machine_configuration="a: b",
            extra_kernel_args=("a", "b"),
            meta=(MetaValue(1, "v"),),
            official_extensions=("siderolabs/gvisor",),
            bootloader="grub",
            secureboot=SecureBoot("force", True),
            sector_size=4096,
        ),
    )


def test_unknown_field_error_matches_upstream_text() -> None:
    assert error_of("something:\n") == (
        "yaml: construct errors: line 1: field something not found in type schematic.Schematic"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("overlay: {x: 1}", "line 1: field x not found in type schematic.Overlay"),
        ("customization:\n  x: 1", "line 2: field x not found in type schematic.Customization"),
        ("customization: {meta: [{key: 1, x: 1}]}", "line 1: field x not found in type schematic.MetaValue"),
        ("customization: {systemExtensions: {x: 1}}", "line 1: field x not found in type schematic.SystemExtensions"),  # noqa: E501
        ("customization: {secureboot: {x: 1}}", "line 1: field x not found in type schematic.SecureBootCustomization"),  # noqa: E501
        ("customization: {diskImage: {x: 1}}", "line 1: field x not found in type schematic.DiskImageCustomization"),  # noqa: E501
        ("customization: {extraKernelArgs: ok}", "line 1: cannot construct !!str `ok` into []string"),
        ("customization: {meta: {a: b}}", "line 1: cannot construct !!map into []schematic.MetaValue"),
        ("customization: 5", "line 1: cannot construct !!int `5` into schematic.Customization"),
        ("overlay: [a]", "line 1: cannot construct !!seq into schematic.Overlay"),
        ("overlay: {options: [1]}", "line 1: cannot construct !!seq into map[string]interface {}"),
        ("overlay: {options: x}", "line 1: cannot construct !!str `x` into map[string]interface {}"),
        ("customization: {extraKernelArgs: [{a: b}]}", "line 1: cannot construct !!map into string"),
        ("overlay: {name: [a]}", "line 1: cannot construct !!seq into string"),
        ("[1]", "line 1: cannot construct !!seq into schematic.Schematic"),
        ("just text", "line 1: cannot construct !!str `just text` into schematic.Schematic"),
        ("customization: {extraKernelArgs: [2020-01-02]}", "line 1: cannot construct !!timestamp `2020-01-02` into string"),  # noqa: E501
        ("{a: b}: c", "line 1: cannot construct !!map into string"),
    ],
)  # fmt: skip
def test_type_errors_use_go_yaml_wording(body: str, expected: str) -> None:
    assert error_of(body) == "yaml: construct errors: " + expected


def test_several_errors_are_joined_in_document_order() -> None:
    assert error_of("a: 1\ncustomization:\n  meta:\n    - key: 300\n  b: 2\n") == (
        "yaml: construct errors: line 1: field a not found in type schematic.Schematic; "
        "line 4: cannot construct !!int `300` into uint8; "
        "line 5: field b not found in type schematic.Customization"
    )


def test_long_values_are_shortened_in_errors_like_go_yaml() -> None:
    assert error_of("customization: {meta: [{key: '12345678901'}]}") == (
        "yaml: construct errors: line 1: cannot construct !!str `1234567...` into uint8"
    )


def test_duplicate_keys_are_refused() -> None:
    assert error_of("customization: {}\ncustomization: {}\n") == (
        'yaml: construct errors: line 2: mapping key "customization" already defined at line 1'
    )


def test_duplicate_detection_compares_source_text_not_style() -> None:
    assert "already defined" in error_of("overlay: {options: {'1': a, 1: b}}")
    s = parse("overlay: {options: {i: {1: a, 0x1: b}}}")  # different text, same Go key: last wins
    assert s.overlay.options == {"i": {1: "b"}}


def test_duplicate_errors_follow_go_order() -> None:
    assert error_of("a: 1\nb: 2\nb: 3\na: 4\n") == (
        'yaml: construct errors: line 4: mapping key "a" already defined at line 1; '
        'line 3: mapping key "b" already defined at line 2'
    )


@pytest.mark.parametrize("body", ["", "   \n\n", "# just a comment\n", "# a\n\n# b\n", "...\n"])
def test_no_document_is_an_eof_error(body: str) -> None:
    assert error_of(body) == "invalid schematic: empty document (EOF)"


@pytest.mark.parametrize(
    "body", ["null", "~", "---\n", "--- null\n...\n", "{}", "customization: ~", "customization:"]
)
def test_null_document_or_sections_are_the_empty_schematic(body: str) -> None:
    assert canonical(body) == "customization: {}\n"


def test_leading_document_end_markers_are_skipped_like_go_yaml() -> None:
    assert (
        canonical("...\n# c\n...\ncustomization: {bootloader: grub}\n")
        == "customization:\n    bootloader: grub\n"
    )


def test_only_the_first_document_is_read() -> None:
    assert canonical("customization: {bootloader: grub}\n---\n: : [ not yaml\n") == (
        "customization:\n    bootloader: grub\n"
    )
    assert canonical("{}\n---\nsomething: else\n") == "customization: {}\n"


def test_json_bodies_are_yaml() -> None:
    assert canonical('{"customization": {"meta": [{"key": 10, "value": "foo"}]}}') == (
        "customization:\n    meta:\n        - key: 10\n          value: foo\n"
    )


def test_comments_and_key_order_disappear() -> None:
    body = (
        "customization: # c\n  systemExtensions: {officialExtensions: [b]}  # c\n"
        "  extraKernelArgs:\n    - a # c\n"
    )
    assert canonical(body) == (
        "customization:\n    extraKernelArgs:\n        - a\n    systemExtensions:\n"
        "        officialExtensions:\n            - b\n"
    )


def test_lists_keep_order_and_duplicates() -> None:
    s = parse("customization: {systemExtensions: {officialExtensions: [b, a, b]}}")
    assert s.customization.official_extensions == ("b", "a", "b")


# Strings keep their source text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("10", "10"),
        ("'10'", "10"),
        ("0x0A", "0x0A"),
        ("1.50", "1.50"),
        ("true", "true"),
        ("off", "off"),
        ('"yes"', "yes"),
        ("'a: b'", "a: b"),
        ("-console", "-console"),
        ("~", ""),
        ("null", ""),
        ("Null", ""),
        ("NULL", ""),
        ("", ""),
        ("'~'", "~"),
        ("<<", "<<"),
        ('"\\t\\u00e9"', "\té"),
    ],
)
def test_string_fields_keep_scalar_source_text(scalar: str, value: str) -> None:
    assert parse(f"customization:\n  meta:\n    - key: 1\n      value: {scalar}\n").customization.meta == (
        MetaValue(1, value),
    )


def test_plain_number_in_string_field_is_double_quoted_on_output() -> None:
    assert canonical("customization: {meta: [{key: 1, value: 10}]}") == (
        'customization:\n    meta:\n        - key: 1\n          value: "10"\n'
    )


def test_null_list_items_are_dropped_like_go() -> None:
    assert parse("customization: {extraKernelArgs: [a, ~, '', b, null]}").customization.extra_kernel_args == (
        "a",
        "",
        "b",
    )


def test_null_meta_item_is_dropped_and_empty_item_is_kept() -> None:
    assert parse("customization: {meta: [~, {}]}").customization.meta == (MetaValue(0, ""),)


# Integers into uint8 / uint --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scalar",
    ["10", "0xa", "0x0A", "012", "0o12", "0b1010", "+10", "1_0", "10.0", "1e1", "0x_0a", "00012"],
)
def test_meta_key_accepts_go_integer_forms(scalar: str) -> None:
    assert parse(f"customization: {{meta: [{{key: {scalar}, value: foo}}]}}").customization.meta == (
        MetaValue(10, "foo"),
    )


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("256", "cannot construct !!int `256` into uint8"),
        ("-1", "cannot construct !!int `-1` into uint8"),
        ("'10'", "cannot construct !!str `10` into uint8"),
        ('"10"', "cannot construct !!str `10` into uint8"),
        ("10.5", "cannot construct !!float `10.5` into uint8"),
        (".inf", "cannot construct !!float `.inf` into uint8"),
        ("true", "cannot construct !!bool `true` into uint8"),
        ("ten", "cannot construct !!str `ten` into uint8"),
        ("2020-01-01", "cannot construct !!timestamp `2020-01-01` into uint8"),
        ("[1]", "cannot construct !!seq into uint8"),
    ],
)
def test_meta_key_rejections(scalar: str, expected: str) -> None:
    assert (
        error_of(f"customization:\n  meta:\n    - key: {scalar}\n")
        == f"yaml: construct errors: line 3: {expected}"
    )


def test_meta_key_negative_zero_is_zero() -> None:
    assert parse("customization: {meta: [{key: -0}]}").customization.meta == (MetaValue(0, ""),)


def test_meta_key_invalid_octal_falls_back_to_float_like_go() -> None:
    """``09`` is not octal, so Go's resolver makes it the float 9, which converts losslessly."""
    assert parse("customization: {meta: [{key: 09}]}").customization.meta == (MetaValue(9, ""),)


def test_meta_key_null_is_zero_like_go() -> None:
    assert parse("customization: {meta: [{key: ~, value: x}]}").customization.meta == (MetaValue(0, "x"),)


def test_sector_size_is_uint64() -> None:
    assert parse("customization: {diskImage: {sectorSize: 0x1000}}").customization.sector_size == 4096
    big = parse("customization: {diskImage: {sectorSize: 18446744073709551615}}")
    assert big.customization.sector_size == 2**64 - 1
    assert error_of("customization: {diskImage: {sectorSize: 18446744073709551616}}") == (
        "yaml: construct errors: line 1: cannot construct !!float `1844674...` into uint"
    )
    assert error_of("customization: {diskImage: {sectorSize: -512}}") == (
        "yaml: construct errors: line 1: cannot construct !!int `-512` into uint"
    )
    assert error_of("customization: {diskImage: {sectorSize: '4096'}}") == (
        "yaml: construct errors: line 1: cannot construct !!str `4096` into uint"
    )


# Bool ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("true", True), ("True", True), ("TRUE", True), ("false", False), ("FALSE", False),
        ("yes", True), ("on", True), ("y", True), ("ON", True), ("no", False), ("off", False), ("N", False),
        ("'yes'", True),  # v4 constructStr: YAML 1.1 words are accepted even quoted
        ("~", False),
    ],
)  # fmt: skip
def test_bool_field_accepts_go_yaml_forms(scalar: str, value: bool) -> None:
    s = parse(f"customization: {{secureboot: {{includeWellKnownCertificates: {scalar}}}}}")
    assert s.customization.secureboot.include_well_known_certificates is value


@pytest.mark.parametrize(
    ("scalar", "tag"),
    [("'true'", "!!str `true`"), ('"false"', "!!str `false`"), ("1", "!!int `1`"), ("tRue", "!!str `tRue`")],
)
def test_bool_field_rejections(scalar: str, tag: str) -> None:
    assert error_of(f"customization: {{secureboot: {{includeWellKnownCertificates: {scalar}}}}}") == (
        f"yaml: construct errors: line 1: cannot construct {tag} into bool"
    )


# Bootloader / enrollKeys / owner ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "stored"),
    [("grub", "grub"), ("GRUB", "grub"), ("SD-BOOT", "sd-boot"), ("Dual-Boot", "dual-boot"), ("none", ""),
     ("None", ""), ("'grub'", "grub"), ("~", "")],
)  # fmt: skip
def test_bootloader_is_case_insensitive(scalar: str, stored: str) -> None:
    assert parse(f"customization: {{bootloader: {scalar}}}").customization.bootloader == stored


def test_bootloader_canonical_output_is_lower_case() -> None:
    assert canonical("customization: {bootloader: SD-BOOT}") == "customization:\n    bootloader: sd-boot\n"
    assert canonical("customization: {bootloader: none}") == "customization: {}\n"


@pytest.mark.parametrize("scalar", ["auto", "uefi", "1", "''"])
def test_bootloader_rejects_unknown_names(scalar: str) -> None:
    value = "" if scalar == "''" else scalar
    assert error_of(f"customization:\n  bootloader: {scalar}\n") == (
        f"yaml: construct errors: line 2: {value} does not belong to BootloaderKind values "
        "(allowed: none, dual-boot, sd-boot, grub)"
    )


def test_bootloader_rejects_collections() -> None:
    assert error_of("customization: {bootloader: [grub]}") == (
        "yaml: construct errors: line 1: "
        "cannot construct !!seq into imageropts.BootloaderKind (TextUnmarshaler)"
    )


@pytest.mark.parametrize("value", ["off", "manual", "if-safe", "force", "OFF", "If-Safe"])
def test_enroll_keys_accepts_known_values_case_insensitively_and_keeps_text(value: str) -> None:
    assert parse(
        f"customization: {{secureboot: {{enrollKeys: {value}}}}}"
    ).customization.secureboot == SecureBoot(enroll_keys=value)


def test_enroll_keys_off_is_hashed_single_quoted() -> None:
    assert canonical("customization: {secureboot: {enrollKeys: off}}") == (
        "customization:\n    secureboot:\n        enrollKeys: 'off'\n"
    )


def test_enroll_keys_rejects_unknown_values() -> None:
    assert error_of("customization: {secureboot: {enrollKeys: auto}}") == (
        'invalid secureboot enrollKeys value "auto": auto does not belong to SDBootEnrollKeys values '
        "(allowed: off, manual, if-safe, force)"
    )


def test_owner_is_enterprise_only() -> None:
    assert error_of("owner: bob\n") == "owner field is only supported in Enterprise edition"
    assert canonical("owner: ~\n") == "customization: {}\n"
    s = parse_schematic(b"owner: bob\n", allow_owner=True)
    assert marshal(s) == b"owner: bob\ncustomization: {}\n"


# overlay.options typing ------------------------------------------------------------------------------------


def test_option_values_use_go_resolution() -> None:
    s = parse(
        """
overlay:
  options:
    hex: 0x1F
    oct: 010
    oct2: 0o17
    bin: 0b101
    under: 1_000
    plus: +5
    big: 9223372036854775808
    huge: 18446744073709551616
    neg: -9223372036854775809
    float: 1.50
    exp: 1e3
    dot: .5
    eight: 08
    inf: -.inf
    negzero: -0
    yes11: yes
    on11: on
    bool: True
    nothing: ~
    null: dropped because a null key cannot become a Go string
    empty:
    quoted: "10"
    date: 2024-01-02
    when: 2001-12-14t21:59:43.10-05:00
    text: hello world
    merge: <<
    nested: {1: a, b: [1, x, ~], c: {d: e}}
"""
    )
    opts = s.overlay.options
    assert opts == {
        "hex": 31,
        "oct": 8,
        "oct2": 15,
        "bin": 5,
        "under": 1000,
        "plus": 5,
        "big": 2**63,
        "huge": 1.8446744073709552e19,
        "neg": -9.223372036854776e18,
        "float": 1.5,
        "exp": 1000.0,
        "dot": 0.5,
        "eight": 8.0,
        "inf": float("-inf"),
        "negzero": -0.0,
        "yes11": "yes",
        "on11": "on",
        "bool": True,
        "nothing": None,
        "empty": None,
        "quoted": "10",
        "date": GoTime("2024-01-02T00:00:00Z"),
        "when": GoTime("2001-12-14T21:59:43.1-05:00"),
        "text": "hello world",
        "nested": {1: "a", "b": [1, "x", None], "c": {"d": "e"}},
    }
    assert isinstance(opts["eight"], float) and isinstance(opts["big"], int)


def test_option_values_canonical_text() -> None:
    assert canonical(
        "overlay: {name: x, options: {b: 2.0, a: 1e6, c: 0.00001, d: '1', e: yes, f: 2024-01-02}}"
    ) == (
        'overlay:\n    image: ""\n    name: x\n    options:\n'
        "        a: 1e+06\n        b: 2\n        c: 1e-05\n"
        "        d: \"1\"\n        e: 'yes'\n        f: 2024-01-02T00:00:00Z\ncustomization: {}\n"
    )


def test_option_top_level_keys_are_raw_strings() -> None:
    s = parse("overlay: {options: {1: a, true: b, 0x10: c, ~: dropped}}")
    assert s.overlay.options == {"1": "a", "true": "b", "0x10": "c"}


def test_option_timestamp_key_is_an_error_like_go() -> None:
    assert error_of("overlay: {options: {2024-01-02: a}}") == (
        "yaml: construct errors: line 1: cannot construct !!timestamp `2024-01-02` into string"
    )


def test_option_null_is_empty() -> None:
    assert parse("overlay: {name: x, options: ~}").overlay == Overlay(name="x")


def test_nested_maps_with_only_string_keys_stay_string_keyed() -> None:
    s = parse("overlay: {options: {a: {'1': x, b: y}}}")
    assert s.overlay.options == {"a": {"1": "x", "b": "y"}}
    assert canonical("overlay: {options: {a: {'1': x, b: y}}}").endswith(
        "        a:\n            \"1\": x\n            b: 'y'\ncustomization: {}\n"
    )


def test_nested_keys_colliding_only_in_python_are_refused() -> None:
    assert "another type" in error_of("overlay: {options: {a: {1: x, 1.0: y}}}")
    assert "another type" in error_of("overlay: {options: {a: {true: x, 1: y}}}")
    assert "NaN" in error_of("overlay: {options: {a: {.nan: x}}}")


def test_collection_as_nested_map_key_is_refused() -> None:
    assert (
        error_of("overlay: {options: {a: {[1]: x}}}")
        == "yaml: line 1: cannot use a mapping or sequence as a map key"
    )


# Refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a: &x 1\n", "yaml: line 1: anchors and aliases are not supported in schematics"),
        ("a: *x\n", "yaml: line 1: anchors and aliases are not supported in schematics"),
        ("customization:\n  extraKernelArgs: !!str 10\n", "yaml: line 2: explicit tags are not supported in schematics (found !!str)"),  # noqa: E501
        ("a: !foo x\n", "yaml: line 1: explicit tags are not supported in schematics (found !foo)"),
        ("a: ! x\n", "yaml: line 1: explicit tags are not supported in schematics (found !)"),
        ("<<: {customization: {}}\n", "yaml: line 1: merge keys (<<) are not supported in schematics"),
        ("overlay: {options: {a: [{<<: x}]}}\n", "yaml: line 1: merge keys (<<) are not supported in schematics"),  # noqa: E501
    ],
)  # fmt: skip
def test_refuses_anchors_tags_and_merge_keys(body: str, expected: str) -> None:
    assert error_of(body) == expected


def test_quoted_merge_key_is_an_ordinary_string() -> None:
    assert parse("overlay: {options: {'<<': x}}").overlay.options == {"<<": "x"}


def test_nesting_limit() -> None:
    assert error_of("overlay: {options: " + "[" * 40 + "]" * 40 + "}") == (
        "yaml: line 1: nesting deeper than 32 levels is not supported"
    )
    assert parse_schematic(b"overlay: {options: {a: " + b"[" * 29 + b"]" * 29 + b"}}").overlay.options
    with pytest.raises(SchematicDecodeError):
        parse_schematic(b"overlay: {options: {a: [[]]}}", max_depth=4)


def test_node_limit() -> None:
    body = b"customization: {extraKernelArgs: [" + b"a," * 50 + b"]}"
    assert len(parse_schematic(body).customization.extra_kernel_args) == 50
    with pytest.raises(SchematicDecodeError, match="more than 40 YAML nodes"):
        parse_schematic(body, max_nodes=40)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff", "invalid schematic: input is not valid UTF-8 (at byte 0)"),
        (b"customization: {}\n\xc3", "invalid schematic: input is not valid UTF-8 (at byte 18)"),
        (b"a: \xed\xa0\x80", "invalid schematic: input is not valid UTF-8 (at byte 3)"),
    ],
)
def test_invalid_utf8_is_refused(body: bytes, expected: str) -> None:
    assert error_of(body) == expected


def test_boms_are_understood() -> None:
    assert canonical("\ufeffcustomization: {bootloader: grub}") == "customization:\n    bootloader: grub\n"
    body = "customization: {bootloader: grub}".encode("utf-16-le")
    assert marshal(parse_schematic(b"\xff\xfe" + body)) == b"customization:\n    bootloader: grub\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("a: b: c\n", "yaml: line 1: mapping values are not allowed in this context"),
        ("a: [1, 2\n", "yaml: line 2: did not find expected ',' or ']' (while parsing a flow sequence)"),
        ("a: \x01\n", "yaml: line 1: invalid character U+0001: control characters are not allowed"),
        ('a: "\\ud800"\n', "yaml: line 1: found invalid Unicode character escape code (while parsing a quoted scalar)"),  # noqa: E501
    ],
)  # fmt: skip
def test_syntax_errors_are_one_line(body: str, expected: str) -> None:
    assert error_of(body) == expected


# Hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_bodies_are_refused(name: str) -> None:
    """Refused, not expanded; how fast is measured by bench/hostile_schematics.py (target < 100 ms)."""
    body = HOSTILE[name]
    assert len(body) <= 300_000
    with pytest.raises(SchematicDecodeError):
        parse_schematic(body)


# Without libyaml --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "customization:\n  meta:\n    - key: 0x0a\n      value: foo\n",
            "customization:\n    meta:\n        - key: 10\n          value: foo\n",
        ),
        ("...\n{}\n---\n: : [\n", "customization: {}\n"),
    ],
)  # fmt: skip
def test_pure_python_parser_fallback_decodes_the_same(
    monkeypatch: pytest.MonkeyPatch, body: str, expected: str
) -> None:
    monkeypatch.setattr(decode_module, "_FAST_PARSER", None)
    assert canonical(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('a: "\\ud800"\n', "yaml: line 1: found invalid Unicode character escape code"),
        ("a: \x01\n", "yaml: line 1: invalid character U+0001: special characters are not allowed"),
        ("a: &x 1\n", "yaml: line 1: anchors and aliases are not supported in schematics"),
    ],
)
def test_pure_python_parser_fallback_refuses_the_same(
    monkeypatch: pytest.MonkeyPatch, body: str, expected: str
) -> None:
    monkeypatch.setattr(decode_module, "_FAST_PARSER", None)
    assert error_of(body) == expected
