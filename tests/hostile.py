"""Hostile inputs for the services' HTTP surfaces (hypothesis strategies) and the rule every
answer to them must keep: no 5xx but a 503 that says why, and a machine-readable reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: Bounded, deterministic runs: the same examples every time, no example database.
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=12,
)


def _deep(depth: int, opener: bytes, closer: bytes) -> bytes:
    return b'{"x402Version":2,"paymentPayload":' + opener * depth + b"1" + closer * depth + b"}"


def _mutate(valid: bytes, at: int, replacement: bytes, keep: bool) -> bytes:
    at %= max(len(valid), 1)
    return valid[:at] + replacement + (valid[at + len(replacement):] if keep else b"")


def hostile_bodies(valid: bytes, *, large: int) -> st.SearchStrategy[bytes]:
    """Bodies a peer might send instead of ``valid``: deep, huge numbers, long strings
    (``large`` bytes and more), unicode, wrong types, duplicate keys, random bytes, and
    ``valid`` itself replayed or mutated."""
    depth = st.sampled_from([65, 1_000, 30_000, 100_000])
    return st.one_of(
        depth.map(lambda n: _deep(n, b"[", b"]")),
        depth.map(lambda n: _deep(n, b'{"a":', b"}")),
        depth.map(lambda n: b"[" * n),  # unbalanced: deep and malformed at once
        st.integers(101, 20_000).map(lambda n: b'{"x402Version":' + b"9" * n + b"}"),
        st.integers(20, 400).map(lambda n: b'{"x402Version":1e' + b"9" * n + b"}"),
        st.sampled_from([large // 2, large + 1, 4 * large]).map(
            lambda n: b'{"x402Version":2,"s":"' + b"x" * n + b'"}'),
        st.text().map(lambda t: json.dumps({"x402Version": 2, "paymentPayload": t},
                                           ensure_ascii=False).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.text(max_size=12), json_values, max_size=4).map(
            lambda v: json.dumps(v).encode()),
        st.sampled_from([b'{"x402Version":2,"x402Version":1}', b'{"a":NaN}', b'{"a":-Infinity}',
                         b"", b"null", b"[]", b'"x"', b"\xff\xfe", b'{"a":"\\ud800"}']),
        st.binary(max_size=2_000),
        st.just(valid),
        st.builds(_mutate, st.just(valid), st.integers(0, len(valid)),
                  st.binary(min_size=1, max_size=16), st.booleans()),
        st.builds(lambda v, k, x: _replace_leaf(v, k, x), st.just(valid),
                  st.integers(0, 10_000), json_values),
    )


def _replace_leaf(valid: bytes, pick: int, value: Any) -> bytes:
    """``valid`` with one of its values (chosen by ``pick``) replaced by ``value``."""
    document = json.loads(valid)
    paths: list[tuple[Any, Any]] = []
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            paths.append((node, key))
            if isinstance(child, dict | list):
                stack.append(child)
    if paths:
        node, key = paths[pick % len(paths)]
        node[key] = value
    return json.dumps(document).encode()


def hostile_headers(valid: str) -> st.SearchStrategy[bytes]:
    """Header values instead of ``valid``: garbage, oversize, ``valid`` replayed or mutated
    (every byte a legal header byte) and, if ``valid`` is base64 JSON (an x402 header),
    base64 of hostile JSON and of ``valid`` with a value replaced."""
    legal = st.binary(max_size=300).map(
        lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128))
    raw = valid.encode()
    values = [
        legal, st.just(raw), st.just(b"A" * 70_000),
        st.builds(_mutate, st.just(raw), st.integers(0, len(raw)),
                  st.binary(min_size=1, max_size=4).map(
                      lambda b: bytes(33 + c % 94 for c in b)), st.booleans()),
    ]
    try:
        document = base64.b64decode(valid, validate=True)
        json.loads(document)
    except ValueError:
        return st.one_of(values)
    return st.one_of(
        *values, hostile_bodies(document, large=50_000).map(base64.b64encode),
        st.builds(lambda k, x: base64.b64encode(_replace_leaf(document, k, x)),
                  st.integers(0, 10_000), json_values),
    )


def assert_answered(response: httpx.Response, *, reason_key: str | None = "error") -> None:
    """No 5xx but a 503 that gives its reason; an error answer names its reason in JSON."""
    status = response.status_code
    assert status < 500 or status == 503, (status, response.text[:300])
    if reason_key is not None and status >= 400:
        assert response.headers.get("content-type", "").startswith("application/json"), \
            response.text[:300]
        assert isinstance(response.json().get(reason_key), str), response.text[:300]
