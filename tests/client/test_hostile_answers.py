"""A paying client reads a server's answer to decide what became of its money: a hostile
server's answer (nested 100,000 deep, a number 10,000 digits long, not JSON, ambiguous)
is an unreadable answer, never a RecursionError in the payer's process."""

from __future__ import annotations

import sys

import httpx
import pytest

from a402.client.outcome import _json_body

DEEP = b'{"error":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("content", [
    DEEP, b"[" * 100_000, b'{"error":' + b"9" * 10_000 + b"}", b"\xff\xfe",
    b'{"error":"a","error":"b"}', b'{"error":NaN}', b"[]",
])
def test_a_hostile_answer_reads_as_no_answer_whatever_the_recursion_limit(
    content: bytes
) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)  # the client's default: the standard decoder raised here
    try:
        assert _json_body(httpx.Response(402, content=content)) == {}
    finally:
        sys.setrecursionlimit(limit)


def test_a_plain_answer_is_still_read() -> None:
    answer = httpx.Response(503, json={"error": "chain_unavailable",
                                       "settlementAttempted": False})
    assert _json_body(answer) == {"error": "chain_unavailable", "settlementAttempted": False}


@pytest.mark.parametrize("status", [200, 400, 503])
@pytest.mark.parametrize("content", [DEEP, b'{"error":' + b"9" * 10_000 + b"}"])
def test_a_vault_host_answering_hostile_json_is_a_vault_error_not_a_crash(
    status: int, content: bytes
) -> None:
    """The host that runs a vault is not trusted with the client's process: its info or
    call answered 100,000 deep (or with a 10,000-digit number) is a VaultCallError."""
    from eth_account import Account

    from a402.client.vault import VaultCallError, VaultClient

    transport = httpx.MockTransport(lambda _: httpx.Response(status, content=content))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1_000)
    try:
        with VaultClient("http://vault.test", Account.create(), trust_on_first_use=True,
                         http=httpx.Client(transport=transport)) as client, \
                pytest.raises(VaultCallError):
            client.info()
    finally:
        sys.setrecursionlimit(limit)
