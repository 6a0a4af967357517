"""Bounded JSON decoding: the limits hold whatever the interpreter's recursion limit."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.wire.errors import (
    INVALID_PAYLOAD,
    JSON_NUMBER_TOO_LONG,
    JSON_TOO_DEEP,
    REQUEST_TOO_LARGE,
    WireError,
)
from a402.wire.headers import decode_header, encode_header
from a402.wire.jsonstrict import (
    DEFAULT_LIMITS,
    JsonLimitError,
    JsonLimits,
    check_bounds,
    loads_object,
)


def _nested(depth: int, key: bool = False) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if key else "[" * depth + "]" * depth


def test_a_document_100000_deep_is_refused_without_recursing() -> None:
    """The exact crash of the finding, in a child process whose recursion limit is as high
    as py_ecc sets it (a402 caps it again, :data:`a402.RECURSION_LIMIT`; set back up here,
    a crash would be a SIGSEGV exit code, not a refusal)."""
    script = (
        "import sys, a402.facilitator.app\n"
        "sys.setrecursionlimit(100000)\n"
        "from a402.wire.jsonstrict import loads_object, JsonLimitError\n"
        "for doc in ('{\"a\":' + '[' * 100000 + ']' * 100000 + '}', '{\"a\":' * 100000):\n"
        "    try:\n"
        "        loads_object(doc.encode())\n"
        "    except JsonLimitError as e:\n"
        "        print(e.reason, e.status)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [JSON_TOO_DEEP, "400"] * 2


@pytest.mark.parametrize("key", [False, True])
def test_depth_up_to_the_limit_decodes_and_one_more_is_refused(key: bool) -> None:
    limits = JsonLimits(max_depth=10)
    loads_object("{\"x\":" + _nested(9, key) + "}", limits=limits)
    with pytest.raises(JsonLimitError) as refused:
        loads_object("{\"x\":" + _nested(10, key) + "}", limits=limits)
    assert (refused.value.reason, refused.value.status) == (JSON_TOO_DEEP, 400)


def test_a_wide_shallow_document_with_more_brackets_than_the_depth_limit_decodes() -> None:
    limits = JsonLimits(max_depth=4)  # {"a": [{"b": [2]}]} is 4 deep
    assert len(loads_object(json.dumps({"a": [[1], {"b": [2]}] * 50}), limits=limits)["a"]) == 100
    with pytest.raises(JsonLimitError):
        loads_object(json.dumps({"a": [[[[1]]]] + [[1]] * 50}), limits=limits)


def test_brackets_and_digits_inside_strings_are_not_structure() -> None:
    text = json.dumps({"a": "[" * 1000 + "9" * 1000 + '\\"[{', "b": "\\" * 10})
    assert loads_object(text)["a"].startswith("[[[")


def test_a_number_longer_than_the_limit_is_refused_and_uint256_is_not() -> None:
    assert loads_object(json.dumps({"v": 2**256 - 1}))["v"] == 2**256 - 1
    for number in ("1" * 101, "-0." + "1" * 100, "1e" + "9" * 100):
        with pytest.raises(JsonLimitError) as refused:
            loads_object('{"v":' + number + "}")
        assert (refused.value.reason, refused.value.status) == (JSON_NUMBER_TOO_LONG, 400)


def test_a_document_over_the_size_limit_is_refused_as_too_large() -> None:
    with pytest.raises(JsonLimitError) as refused:
        loads_object(json.dumps({"a": "x" * 100}), limits=JsonLimits(max_bytes=50))
    assert (refused.value.reason, refused.value.status) == (REQUEST_TOO_LARGE, 413)


def test_duplicate_keys_and_nan_are_still_refused_with_the_callers_reason() -> None:
    for text in ('{"a":1,"a":2}', '{"a":NaN}', '{"a":Infinity}', "[1]", '{"a":"\\ud800"'):
        with pytest.raises(WireError) as refused:
            loads_object(text, reason="mine")
        assert refused.value.reason == "mine" and not isinstance(refused.value, JsonLimitError)


def test_a_document_behind_a_byte_order_mark_is_refused_saying_so_as_json_does() -> None:
    for data in ("\ufeff{}", "\ufeff{}".encode()):
        with pytest.raises(WireError) as refused:
            loads_object(data, reason="mine")
        with pytest.raises(json.JSONDecodeError) as by_json:
            json.loads("\ufeff{}")
        assert refused.value.reason == "mine"
        assert refused.value.message == f"malformed JSON: {by_json.value}"
        assert "BOM" in refused.value.message


def test_a_deep_header_is_refused_with_the_x402_reason() -> None:
    value = {"a": json.loads(_nested(DEFAULT_LIMITS.max_depth))}
    with pytest.raises(WireError) as refused:
        decode_header(encode_header(value))
    assert refused.value.reason == INVALID_PAYLOAD and "deeper" in refused.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(value=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_every_document_within_the_limits_decodes_as_json_does(value: dict[str, Any]) -> None:
    text = json.dumps(value)
    assert loads_object(text) == json.loads(text)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(data=st.binary(max_size=300) | st.text(max_size=300))
def test_any_input_is_an_object_or_a_wire_error(data: bytes | str) -> None:
    with contextlib.suppress(WireError):
        assert isinstance(loads_object(data), dict)


def _measured(text: str, limits: JsonLimits) -> str | None:
    """The reason a document is refused, measured the long way round (every string blanked,
    the depth summed bracket by bracket, every number's length): the reference the
    service's shortcut for small documents must agree with."""
    import re

    structure = re.sub(r'"[^"\\]*(?:\\.[^"\\]*)*"', '""', text, flags=re.DOTALL)
    depth = deepest = 0
    for char in structure:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        deepest = max(deepest, depth)
    if deepest > limits.max_depth:
        return JSON_TOO_DEEP
    if any(len(run) > limits.max_number_chars for run in re.findall(r"[-+0-9.eE]+", structure)):
        return JSON_NUMBER_TOO_LONG
    return None


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=json_values, depth=st.integers(1, 6), digits=st.integers(1, 12))
def test_the_limits_are_judged_on_structure_never_on_the_text_inside_strings(
        value: Any, depth: int, digits: int) -> None:
    """Brackets and digits inside strings count for nothing, wherever they are and however
    many: a document is refused exactly when its structure is too deep or holds a number too
    long, whether or not the raw text alone would have passed."""
    limits = JsonLimits(max_depth=depth, max_number_chars=digits)
    for text in (json.dumps(value), json.dumps({"s": "[{" * depth + "9" * (digits + 1),
                                                "v": value})):
        expected = _measured(text, limits)
        try:
            check_bounds(text, limits)
            refused = None
        except JsonLimitError as e:
            refused = e.reason
        assert refused == expected
