"""The canonical emitter, one test per rule of /work/shared/reference/schematic-id.md (§ numbers below).

Expected texts are literals: from the spec, from upstream image-factory vectors, or transcribed from
go-yaml's own test suite (yaml_test.go / testdata/encode.yaml at go-yaml HEAD), never produced by the code
under test.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from common.schematic import (
    Customization,
    GoTime,
    MetaValue,
    Overlay,
    Schematic,
    SecureBoot,
    marshal,
    marshal_value,
    schematic_id,
)
from common.schematic.emit import go_format_float, go_resolve


def text(s: Schematic, **kwargs: bool) -> str:
    return marshal(s, **kwargs).decode()


def args(*values: str) -> Schematic:
    return Schematic(customization=Customization(extra_kernel_args=values))


def emc(value: str) -> str:
    return text(Schematic(customization=Customization(embedded_machine_configuration=value)))


def options(value: dict[str, object]) -> str:
    return text(Schematic(overlay=Overlay(options=dict(value))))


# §0 --------------------------------------------------------------------------------------------------------


def test_empty_schematic_is_customization_braces_and_known_id() -> None:
    assert text(Schematic()) == "customization: {}\n"
    assert schematic_id(Schematic()) == "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"


def test_id_is_sha256_of_exact_bytes() -> None:
    s = args("vga=791")
    assert (
        schematic_id(s)
        == hashlib.sha256(b"customization:\n    extraKernelArgs:\n        - vga=791\n").hexdigest()
    )
    assert schematic_id(s) == "eea1f9534c46d95c4715a2f13d17eacb927c13a42ef087c79b22c3bd0c49d073"


# §1 struct order and omitempty -----------------------------------------------------------------------------


def test_full_schematic_field_order_is_struct_order() -> None:
    s = Schematic(
        owner="alice",
        overlay=Overlay(image="siderolabs/sbc-raspberrypi", name="rpi_generic", options={"a": 1}),
        customization=Customization(
            embedded_machine_configuration="x: 1\n",
            extra_kernel_args=("console=ttyS0",),
            meta=(MetaValue(10, "foo"),),
            official_extensions=("siderolabs/gvisor",),
            bootloader="sd-boot",
            secureboot=SecureBoot(enroll_keys="force", include_well_known_certificates=True),
            sector_size=4096,
        ),
    )
    assert text(s) == (
        "owner: alice\n"
        "overlay:\n"
        "    image: siderolabs/sbc-raspberrypi\n"
        "    name: rpi_generic\n"
        "    options:\n"
        "        a: 1\n"
        "customization:\n"
        "    embeddedMachineConfiguration: |\n"
        "        x: 1\n"
        "    extraKernelArgs:\n"
        "        - console=ttyS0\n"
        "    meta:\n"
        "        - key: 10\n"
        "          value: foo\n"
        "    systemExtensions:\n"
        "        officialExtensions:\n"
        "            - siderolabs/gvisor\n"
        "    bootloader: sd-boot\n"
        "    secureboot:\n"
        "        enrollKeys: force\n"
        "        includeWellKnownCertificates: true\n"
        "    diskImage:\n"
        "        sectorSize: 4096\n"
    )


def test_zero_values_are_omitted() -> None:
    s = Schematic(
        overlay=Overlay(options={}),
        customization=Customization(bootloader="none", secureboot=SecureBoot(), sector_size=0),
    )
    assert text(s) == "customization: {}\n"


def test_overlay_image_and_name_are_not_omitempty() -> None:
    assert text(Schematic(overlay=Overlay(name="rpi_generic"))) == (
        'overlay:\n    image: ""\n    name: rpi_generic\ncustomization: {}\n'
    )


def test_overlay_with_only_options_is_not_empty() -> None:
    assert (
        options({"a": 1})
        == 'overlay:\n    image: ""\n    name: ""\n    options:\n        a: 1\ncustomization: {}\n'
    )


def test_meta_value_is_not_omitempty_inside_an_item() -> None:
    s = Schematic(customization=Customization(meta=(MetaValue(0, ""),)))
    assert text(s) == 'customization:\n    meta:\n        - key: 0\n          value: ""\n'


def test_secureboot_enroll_keys_alone() -> None:
    s = Schematic(customization=Customization(secureboot=SecureBoot(enroll_keys="force")))
    assert text(s) == "customization:\n    secureboot:\n        enrollKeys: force\n"


# §2 layout -------------------------------------------------------------------------------------------------


def test_sequences_are_indented_under_their_key() -> None:
    assert (
        text(args("noapic", "nolapic"))
        == "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n"
    )


def test_mapping_in_sequence_starts_on_dash_line_and_aligns_two_further() -> None:
    s = Schematic(customization=Customization(meta=(MetaValue(10, "foo"), MetaValue(11, "bar"))))
    assert text(s) == (
        "customization:\n    meta:\n"
        "        - key: 10\n          value: foo\n        - key: 11\n          value: bar\n"
    )


def test_sequence_inside_sequence_is_inline() -> None:
    assert options({"a": [["x", "y"], ["z"]]}) == (
        'overlay:\n    image: ""\n    name: ""\n    options:\n        a:\n'
        "            - - x\n              - 'y'\n            - - z\ncustomization: {}\n"
    )


def test_empty_collections_in_options_use_flow_braces() -> None:
    assert options({"a": {}, "b": [], "c": [{}, []]}) == (
        'overlay:\n    image: ""\n    name: ""\n    options:\n'
        "        a: {}\n        b: []\n        c:\n            - {}\n            - []\ncustomization: {}\n"
    )


def test_mapping_in_sequence_in_mapping_in_sequence() -> None:
    assert marshal_value([{"a": [1], "b": {"c": [{"d": 1, "e": 2}]}}]) == (
        b"- a:\n    - 1\n  b:\n    c:\n        - d: 1\n          e: 2\n"
    )


def test_embedded_machine_configuration_literal_at_8() -> None:
    assert emc("apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: worker-33") == (
        "customization:\n    embeddedMachineConfiguration: |-\n"
        "        apiVersion: v1alpha1\n        kind: HostnameConfig\n        hostname: worker-33\n"
    )


def test_meta_value_literal_at_12() -> None:
    s = Schematic(customization=Customization(meta=(MetaValue(10, "a: b\nc: d\n"),)))
    assert text(s) == (
        "customization:\n    meta:\n"
        "        - key: 10\n          value: |\n            a: b\n            c: d\n"
    )


def test_overlay_option_literal_at_12() -> None:
    s = Schematic(
        overlay=Overlay(
            image="siderolabs/sbc-raspberrypi",
            name="rpi_generic",
            options={"configTxtAppend": "dtoverlay=vc4-kms-v3d\n"},
        )
    )
    assert text(s) == (
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\n    options:\n"
        "        configTxtAppend: |\n            dtoverlay=vc4-kms-v3d\ncustomization: {}\n"
    )


def test_multiline_kernel_arg_literal_at_dash_plus_two() -> None:
    assert (
        text(args("a\nb")) == "customization:\n    extraKernelArgs:\n        - |-\n          a\n          b\n"
    )


def test_document_has_no_markers_and_one_final_newline() -> None:
    out = text(args("x"))
    assert not out.startswith("---")
    assert out.endswith("- x\n") and not out.endswith("\n\n")


def test_keep_chomped_literal_at_end_has_no_document_end_marker() -> None:
    """go-yaml's Marshal clears the open-ended flag before STREAM-END, so no ``...`` ever follows."""
    assert emc("a\n\n") == "customization:\n    embeddedMachineConfiguration: |+\n        a\n\n"
    # go-yaml TestUnicodeWhitespaceHandling: a root literal with keep chomping, no "..." either.
    assert marshal_value("hello\u2028\n") == "|+\n    hello\u2028\n".encode()


# §3.1 non-strings ------------------------------------------------------------------------------------------


def test_integers_are_decimal() -> None:
    s = Schematic(customization=Customization(meta=(MetaValue(0x0A, "foo"),), sector_size=0o10000))
    assert text(s) == (
        "customization:\n    meta:\n        - key: 10\n          value: foo\n"
        "    diskImage:\n        sectorSize: 4096\n"
    )


def test_bootloader_is_lower_case_name() -> None:
    assert (
        text(Schematic(customization=Customization(bootloader="GRUB")))
        == "customization:\n    bootloader: grub\n"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.0, "2"),
        (1e6, "1e+06"),
        (0.00001, "1e-05"),
        (0.0001, "0.0001"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (0.1, "0.1"),
        (-0.1, "-0.1"),
        (1.5e300, "1.5e+300"),
        (5e-324, "5e-324"),
        (float("inf"), ".inf"),
        (float("-inf"), "-.inf"),
        (float("nan"), ".nan"),
        (-0.0, "-0"),
        (0.0, "0"),
        (685230.15, "685230.15"),
    ],
)
def test_floats_use_go_format_float_g(value: float, expected: str) -> None:
    assert go_format_float(value) == expected


def test_option_scalars_of_every_type() -> None:
    assert options(
        {"b": True, "f": 1.5, "i": -7, "n": None, "t": GoTime("2024-01-02T00:00:00Z"), "u": 2**64 - 1}
    ) == (
        'overlay:\n    image: ""\n    name: ""\n    options:\n'
        "        b: true\n        f: 1.5\n        i: -7\n        'n': null\n"
        "        t: 2024-01-02T00:00:00Z\n        u: 18446744073709551615\ncustomization: {}\n"
    )


def test_nested_option_maps_and_lists_are_block_style() -> None:
    assert options({"a": {"b": [1, {"c": "d"}]}}) == (
        'overlay:\n    image: ""\n    name: ""\n    options:\n'
        "        a:\n            b:\n                - 1\n                - c: d\ncustomization: {}\n"
    )


# §3.2 strings ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "-talos.halt_if_installed",
        "--x=1",
        "a#b",
        "quote'single",
        "a:b",
        "?x",
        "pci=realloc=off",
        "talos.events.sink=[fdae:41e4:649b:9303::1]:8090",
        "dtoverlay=disable-bt, dtoverlay=disable-wifi, gpu_mem=16, enable_uart=1",
        "siderolabs/amd-ucode",
        "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0",
        "a?bc",
        "<foo>",
        "你好",
        "a b",
        "1.2.3.4",
    ],
)
def test_strings_that_stay_plain(value: str) -> None:
    assert text(args(value)) == f"customization:\n    extraKernelArgs:\n        - {value}\n"


@pytest.mark.parametrize(
    "value",
    [
        "y",
        "Y",
        "yes",
        "Yes",
        "YES",
        "on",
        "On",
        "ON",
        "n",
        "N",
        "no",
        "No",
        "NO",
        "off",
        "Off",
        "OFF",
        "1:30",
        "<<",
    ],
)
def test_yaml11_bools_base60_and_merge_are_single_quoted(value: str) -> None:
    assert text(args(value)) == f"customization:\n    extraKernelArgs:\n        - '{value}'\n"


@pytest.mark.parametrize("value", ["off", "yes", "1:30", "-1:20:30.5", "<<"])
def test_legacy_quotes_double_quote_yaml11_bools(value: str) -> None:
    assert (
        text(args(value), legacy_quotes=True)
        == f'customization:\n    extraKernelArgs:\n        - "{value}"\n'
    )


def test_legacy_quotes_change_only_those_strings() -> None:
    s = Schematic(customization=Customization(secureboot=SecureBoot(enroll_keys="off")))
    assert text(s) == "customization:\n    secureboot:\n        enrollKeys: 'off'\n"
    assert text(s, legacy_quotes=True) == 'customization:\n    secureboot:\n        enrollKeys: "off"\n'
    other = args("10", "{}", "a\nb")
    assert marshal(other) == marshal(other, legacy_quotes=True)


@pytest.mark.parametrize(
    "value",
    [
        "true", "True", "TRUE", "false", "False", "FALSE", "", "~", "null", "Null", "NULL",
        ".inf", ".Inf", ".INF", "+.inf", "-.inf", ".nan", ".NaN", ".NAN", "-0", "-0.0",
        "123", "0x1F", "0o17", "0b1", "010", "+5", "-5", "1_000", "1.20", "08", "1e3", ".5", "1.",
        "9223372036854775808", "18446744073709551616", "2020-01-02", "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10",
    ],
)  # fmt: skip
def test_strings_resolving_to_other_types_are_double_quoted(value: str) -> None:
    assert text(args(value)) == f'customization:\n    extraKernelArgs:\n        - "{value}"\n'


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("{}", "'{}'"),
        ('{"externalIPs":["1.2.3.4"]}', '\'{"externalIPs":["1.2.3.4"]}\''),
        ("a: b", "'a: b'"),
        ("a:", "'a:'"),
        ("-", "'-'"),
        ("- a", "'- a'"),
        ("? a", "'? a'"),
        (": a", "': a'"),
        ("*star", "'*star'"),
        ("&anchor", "'&anchor'"),
        ("!tag", "'!tag'"),
        ("|pipe", "'|pipe'"),
        (">fold", "'>fold'"),
        ("%pct", "'%pct'"),
        ("@at", "'@at'"),
        ("`tick", "'`tick'"),
        ("#hash", "'#hash'"),
        (",comma", "',comma'"),
        ("[x]", "'[x]'"),
        ("]x", "']x'"),
        ("tail ", "'tail '"),
        (" lead", "' lead'"),
        ("a #b", "'a #b'"),
        ("---x", "'---x'"),
        ("...x", "'...x'"),
        ("'quoted'", "'''quoted'''"),
        ('"dq"', "'\"dq\"'"),
        ("a\u2028b", "'a\u2028          b'"),
    ],
)
def test_strings_not_allowed_plain_are_single_quoted(value: str, quoted: str) -> None:
    assert text(args(value)) == f"customization:\n    extraKernelArgs:\n        - {quoted}\n"


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("a\tb", '"a\\tb"'),
        ("\x00\x07\x08\x0b\x0c\x1b", '"\\0\\a\\b\\v\\f\\e"'),
        ("\x01\x7f\x9f", '"\\x01\\x7F\\x9F"'),
        ("nel\x85", '"nel\\N"'),
        ("a\r", '"a\\r"'),
        ("emoji \U0001f600", '"emoji \\U0001F600"'),
        ("bom\ufeff", '"bom\\uFEFF"'),
        ("\ufeffab", '"\\uFEFF\\x61\\x62"'),
        ("nbsp\xa0\tx", '"nbsp\xa0\\tx"'),
        ('tab"q\\\t', '"tab\\"q\\\\\\t"'),
        ("\ufffe", '"\\uFFFE"'),
    ],
)
def test_strings_not_allowed_single_quoted_are_double_quoted_with_escapes(value: str, quoted: str) -> None:
    assert text(args(value)) == f"customization:\n    extraKernelArgs:\n        - {quoted}\n"


def test_literal_chomping_indicators() -> None:
    assert emc("a\nb") == "customization:\n    embeddedMachineConfiguration: |-\n        a\n        b\n"
    assert emc("a\nb\n") == "customization:\n    embeddedMachineConfiguration: |\n        a\n        b\n"
    assert emc("a\nb\n\n") == "customization:\n    embeddedMachineConfiguration: |+\n        a\n        b\n\n"


def test_literal_indentation_indicator_for_leading_space() -> None:
    assert emc(" a\nb\n") == "customization:\n    embeddedMachineConfiguration: |4\n         a\n        b\n"
    assert emc(" a\nb") == "customization:\n    embeddedMachineConfiguration: |4-\n         a\n        b\n"


def test_literal_indentation_indicator_is_always_4_even_where_content_is_2_in() -> None:
    """Upstream quirk reproduced on purpose: libyaml/go-yaml write ``|4`` from the configured indent, but a
    sequence item's (or META value's) content is only 2 columns in, so this canonical text does not even
    parse back. It is still what upstream hashes."""
    assert (
        text(args(" a\nb"))
        == "customization:\n    extraKernelArgs:\n        - |4-\n           a\n          b\n"
    )
    meta = Schematic(customization=Customization(meta=(MetaValue(1, " x\n"),)))
    assert text(meta) == "customization:\n    meta:\n        - key: 1\n          value: |4\n             x\n"


def test_literal_leading_line_break_keeps_first_empty_line() -> None:
    assert emc("\nfoo\n") == "customization:\n    embeddedMachineConfiguration: |\n\n        foo\n"


def test_literal_empty_lines_are_not_indented() -> None:
    assert (
        emc("a\n\n\nb\n") == "customization:\n    embeddedMachineConfiguration: |\n        a\n\n\n        b\n"
    )


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("a \nb", '"a \\nb"'),  # space before a line break
        ("a\nb ", '"a\\nb "'),  # trailing space
        ("a\r\nb", '"a\\r\\nb"'),  # CR is not printable
        ("a\n\x01", '"a\\n\\x01"'),
        (" \n", '" \\n"'),  # whitespace-only multi-line
        ("\n", '"\\n"'),
        ("\t\n", '"\\t\\n"'),
        ("\u3000\n", '"\u3000\\n"'),
    ],
)
def test_multiline_strings_that_cannot_be_literal_are_double_quoted(value: str, quoted: str) -> None:
    assert emc(value) == f"customization:\n    embeddedMachineConfiguration: {quoted}\n"


def test_literal_allows_tabs_and_unicode_line_separators() -> None:
    assert emc("\tx\ny") == "customization:\n    embeddedMachineConfiguration: |-\n        \tx\n        y\n"
    assert emc("a\u2028\n") == "customization:\n    embeddedMachineConfiguration: |+\n        a\u2028\n"


# go-yaml's own Marshal expectations (yaml_test.go TestScalarStyleWithTabs / TestUnicodeWhitespaceHandling /
# TestNewLinePreserved / TestMarshal, testdata/encode.yaml), transcribed.
GO_YAML_MARSHAL_CASES: list[tuple[object, str]] = [
    ("\t\n", '"\\t\\n"\n'),
    ("\t", '"\\t"\n'),
    ("hello\tworld", '"hello\\tworld"\n'),
    ("\tB\n\tC\n", "|\n    \tB\n    \tC\n"),
    ("\t\nhello", "|-\n    \t\n    hello\n"),
    ("hello\u00a0\n", "|\n    hello\u00a0\n"),
    ("\u00a0\n", '"\u00a0\\n"\n'),
    ("\u2028\n", '"\\L\\n"\n'),
    ("hello\u2029\n", "|+\n    hello\u2029\n"),
    ("hello \u00a0\t\n", "|\n    hello \u00a0\t\n"),
    (" \u00a0\t\n", '" \u00a0\\t\\n"\n'),
    (" This starts with space\nand is long enough\nfor literal style", "|4-\n     This starts with space\n"
     "    and is long enough\n    for literal style\n"),
    (" a\n", "|4\n     a\n"),
    ("\n\n", '"\\n\\n"\n'),
    ("\n \n", '"\\n \\n"\n'),
    ("  hello  \n", '"  hello  \\n"\n'),
    ("hello\n  ", '"hello\\n  "\n'),
    (" \nhello", '" \\nhello"\n'),
    ({"_": "\na:\n        b:\n                c: d\n"}, "_: |\n\n    a:\n            b:\n                    c: d\n"),  # noqa: E501
    ({"foo": {"bar": "a?bc"}}, "foo:\n    bar: a?bc\n"),
    ({"a": "1:1"}, "a: '1:1'\n"),
    ({"a": "\x00"}, 'a: "\\0"\n'),
    ({"a": "b: c"}, "a: 'b: c'\n"),
    ({"a": "Hello #comment"}, "a: 'Hello #comment'\n"),
    ({"a": "\t\n\t\n"}, 'a: "\\t\\n\\t\\n"\n'),
    ({"<<": []}, "'<<': []\n"),
    ({"a": "2015-02-24T18:19:39Z"}, 'a: "2015-02-24T18:19:39Z"\n'),
    ({"v": 0.99}, "v: 0.99\n"),
    ({"v": ""}, 'v: ""\n'),
    ({"v": None}, "v: null\n"),
    ({}, "{}\n"),
    (-0.0, "-0\n"),
    ({"a": GoTime("2015-02-24T18:19:39.123456789-03:00")}, "a: 2015-02-24T18:19:39.123456789-03:00\n"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), GO_YAML_MARSHAL_CASES)
def test_go_yaml_marshal_expectations(value: object, expected: str) -> None:
    assert marshal_value(value).decode() == expected


# §3.3 map key order ----------------------------------------------------------------------------------------

# go-yaml TestSortedOutput (string part), with the quoting Marshal applies to each key.
SORTED_KEYS = [
    '""', '".1"', '".2"', ".a", '"1"', '"2"', "a!10", "a/0001", "a/002", "a/3", "a/10", "a/11", "a/0012",
    "a/100", "a~10", "ab/1", "b/1", "b/01", "b/2", "b/02", "b/3", "b/03", "b1", "b01", "b3", "c2.10",
    "c10.2", "d1", "d7", "d7abc", "d12", "d12a", "e2b", "e4b", "e21a",
]  # fmt: skip


def test_natural_key_order_matches_go_yaml_sorted_output() -> None:
    raw = [k.strip('"') for k in SORTED_KEYS]
    for seed in range(5):
        shuffled = raw[:]
        random.Random(seed).shuffle(shuffled)
        assert marshal_value({k: 1 for k in shuffled}).decode() == "".join(f"{k}: 1\n" for k in SORTED_KEYS)


def test_natural_order_small_maps_use_go_insertion_sort() -> None:
    keys = ["configTxtAppend", "config_txt", "configTxt", "b", "1", "a/10", "a/2"]
    assert marshal_value(dict.fromkeys(keys, 0)) == (
        b'"1": 0\na/2: 0\na/10: 0\nb: 0\nconfig_txt: 0\nconfigTxt: 0\nconfigTxtAppend: 0\n'
    )


def test_typed_keys_sort_numbers_before_null_before_strings() -> None:
    value = {"b": 1, None: 2, 2.5: 3, 1: 4, False: 5, 2**63: 6, GoTime("2024-01-02T00:00:00Z"): 7}
    assert marshal_value(value) == (
        b"false: 5\n1: 4\n2.5: 3\n9223372036854775808: 6\nnull: 2\nb: 1\n2024-01-02T00:00:00Z: 7\n"
    )


def test_top_level_option_keys_are_strings() -> None:
    assert options({"1": "a", "true": "b"}) == (
        'overlay:\n    image: ""\n    name: ""\n    options:\n'
        '        "1": a\n        "true": b\ncustomization: {}\n'
    )


def test_long_keys_use_complex_key_syntax() -> None:
    short, long = "k" * 128, "k" * 129
    assert marshal_value({short: 1}) == f"{short}: 1\n".encode()
    assert marshal_value({long: 1}) == f"? {long}\n: 1\n".encode()
    assert marshal_value({"\u00e9" * 65: 1}) == ("? " + "\u00e9" * 65 + "\n: 1\n").encode()  # 130 bytes


def test_multiline_key_is_a_complex_literal_key() -> None:
    assert marshal_value({"a\nb": 2}) == b"? |-\n    a\n    b\n: 2\n"


# go_resolve (the typing the emitter quotes against, shared with the decoder) -------------------------------


@pytest.mark.parametrize(
    ("plain", "tag", "value"),
    [
        ("10", "int", 10),
        ("0x0A", "int", 10),
        ("0o12", "int", 10),
        ("012", "int", 10),
        ("0b1010", "int", 10),
        ("+10", "int", 10),
        ("1_0", "int", 10),
        ("-0x10", "int", -16),
        ("0", "int", 0),
        ("9223372036854775807", "int", 2**63 - 1),
        ("9223372036854775808", "int", 2**63),
        ("-9223372036854775809", "float", -9.223372036854776e18),
        ("18446744073709551616", "float", 1.8446744073709552e19),
        ("08", "float", 8.0),
        ("1e3", "float", 1000.0),
        ("685.230_15e+03", "float", 685230.15),
        (".5", "float", 0.5),
        ("1e400", "str", "1e400"),
        ("0x", "str", "0x"),
        ("yes", "str", "yes"),
        ("on", "str", "on"),
        ("True", "bool", True),
        ("tRUE", "str", "tRUE"),
        ("~", "null", None),
        ("", "null", None),
        ("<<", "merge", "<<"),
        ("1:30", "str", "1:30"),
        ("-", "str", "-"),
        ("2001-12-14", "timestamp", GoTime("2001-12-14T00:00:00Z")),
        ("2001-12-14t21:59:43.10-05:00", "timestamp", GoTime("2001-12-14T21:59:43.1-05:00")),
        ("2001-12-14T21:59:43.123456789012Z", "timestamp", GoTime("2001-12-14T21:59:43.123456789Z")),
        ("2001-12-14   1:2:3", "timestamp", GoTime("2001-12-14T01:02:03Z")),
        ("2001-2-3T04:05:06+00:00", "timestamp", GoTime("2001-02-03T04:05:06Z")),
        ("2023-02-29", "str", "2023-02-29"),
        ("2024-02-29", "timestamp", GoTime("2024-02-29T00:00:00Z")),
        ("2001-12-14T21:59:43", "str", "2001-12-14T21:59:43"),
        ("20011-12-14", "str", "20011-12-14"),
    ],
)
def test_go_resolve(plain: str, tag: str, value: object) -> None:
    assert go_resolve(plain) == (tag, value)
