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
    legal = st.binary(max_size=300).map(  # no space or tab at either end: HTTP strips them
        lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128).strip(b" \t"))
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


#: Request methods a fuzzer sends to every path, the unknown ones included.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW")


def hostile_queries(valid: str = "") -> st.SearchStrategy[str]:
    """Query strings (percent-encoded, so any client sends them as written): hostile
    numbers for the filters the services read, unknown and repeated keys, invalid UTF-8,
    an oversized one, and ``valid`` mutated."""
    from urllib.parse import quote

    keys = st.sampled_from(["limit", "since", "until", "payer", "payee", "status", "nonce",
                            "session", "q", "skill", "max_price", "min_reputation", "cursor",
                            "active", "registry", "asset", "network", "x"])
    values = st.one_of(
        st.sampled_from(["", "0", "-1", "1e400", "nan", "-inf", "9" * 5_000, "1" * 80,
                         "%ff%fe", "%00", "%", "0x" + "zz" * 32, "true", "[]", "{}"]),
        st.text(max_size=40).map(lambda t: quote(t, safe="")),
        st.binary(max_size=20).map(lambda b: quote(b, safe="")),
    )
    pairs = st.lists(st.tuples(keys, values), max_size=4).map(
        lambda items: "&".join(f"{k}={v}" for k, v in items))
    return st.one_of(pairs, st.just(valid), st.just("limit=1&" * 3_000),
                     st.builds(lambda v, n: v[:n] + "%" + v[n:], st.just(valid),
                               st.integers(0, max(len(valid), 1))))


def hostile_requests(paths: list[str], *, token: str = "") -> st.SearchStrategy[
        tuple[str, str, dict[str, bytes], bytes]]:
    """(method, path with query, headers, body) for a service's ``paths``: any method, a
    path mutated or extended, a hostile query, hostile Authorization / Cookie /
    X-Request-Id / Content-Type / Origin headers (``token`` among their seeds), a hostile
    body."""
    from urllib.parse import quote

    path = st.one_of(
        st.sampled_from(paths),
        st.builds(lambda p, t: p.rstrip("/") + "/" + quote(t, safe=""), st.sampled_from(paths),
                  st.text(min_size=1, max_size=30)),
        st.sampled_from(paths).map(lambda p: p + "/" + "a" * 6_000),
        st.sampled_from(paths).map(lambda p: p + "/%ff%fe%00/.."),
    )
    header_names = st.sampled_from([b"authorization", b"cookie", b"x-request-id",
                                    b"content-type", b"origin", b"accept", b"x-forwarded-for",
                                    b"payment-signature", b"x-payment", b"a402-session",
                                    b"a402-client", b"a402-signature", b"a402-nonce",
                                    b"a402-timestamp", b"a402-life", b"a2a-extensions"])
    headers = st.dictionaries(
        header_names.map(lambda n: n.decode()),
        st.one_of(hostile_headers("Bearer " + token if token else "Bearer x"),
                  st.just(("Bearer " + token).encode()),
                  st.just(b"a402_console=" + b"0" * 64)),
        max_size=3)
    forms = st.one_of(  # the console's sign-in form, with the token, junk, or oversized
        st.just(b"token=" + token.encode()), st.binary(max_size=200).map(lambda b: b"token=" + b),
        st.just(b"token=" + b"%ff" * 5_000), st.just(b"token=a&token=b&" * 500))
    body = st.one_of(st.just(b""), forms, hostile_bodies(b'{"a":1}', large=300_000))
    return st.tuples(st.sampled_from(METHODS),
                     st.builds(lambda p, q: p + ("?" + q if q else ""), path, hostile_queries()),
                     headers, body)
