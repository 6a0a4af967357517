"""The call the vault checks a signature over is the call as Starlette reads it: the same
path and query (``request.url``), the first of each authentication header."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from a402.vault.app import _signed_call
from a402.wire import vault_api as api


def _scope(path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {"type": "http", "method": "post", "path": path, "query_string": query,
            "headers": [(b"host", b"127.0.0.1:9000"), *headers],
            "server": ("127.0.0.1", 9000), "scheme": "http"}


def _as_starlette_reads_it(scope: dict[str, object]) -> str:
    url = Request(scope).url
    return url.path + (f"?{url.query}" if url.query else "")


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(path=st.text(max_size=30).map(lambda p: "/" + p) | st.sampled_from(
           ["/v1/invoke", "//v1", "/v1/requests/k?x#y\\z", "/v1/x\t", "/v1/x "]),
       query=st.binary(max_size=20) | st.sampled_from([b"", b"a=1&b=2", b"q=%20#f", b"a?b"]))
def test_a_call_is_checked_with_the_path_and_query_starlette_reads(path: str, query: bytes
                                                                    ) -> None:
    scope = _scope(path, query, [])
    try:
        expected = _as_starlette_reads_it(scope)
    except (ValueError, UnicodeDecodeError):
        return  # a request the old reading refused (answered 500): nothing to compare
    assert _signed_call(Request(scope), b"").path == expected


def test_the_first_of_each_authentication_header_is_the_one_checked() -> None:
    scope = _scope("/v1/invoke", b"", [
        (b"a402-client", b"0xA"), (b"content-type", b"application/json"),
        (b"a402-client", b"0xB"), (b"a402-nonce", b"n1"), (b"a402-life", b"\xe9")])
    call = _signed_call(Request(scope), b"{}")
    request = Request(scope)
    assert call.headers == {name: request.headers[name] for name in (
        api.CLIENT_HEADER, api.NONCE_HEADER, api.LIFE_HEADER)}
    assert (call.method, call.path, call.body) == ("POST", "/v1/invoke", b"{}")
