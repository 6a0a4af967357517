"""The a402 HTTP framing: one encoding per value, and anything else refused."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.wire.a402 import (
    Envelope,
    FrameError,
    HttpRequest,
    HttpResponse,
    HttpResult,
    Kind,
    OpenChannel,
    PricedRoute,
    ProviderInfo,
    Refusal,
    binding_digest,
    provider_user_data,
    request_digest,
)

headers = st.lists(
    st.tuples(st.binary(min_size=1, max_size=20).map(bytes.lower), st.binary(max_size=40)),
    max_size=5,
).map(tuple)


@settings(deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.text(min_size=0, max_size=30).map(lambda p: "/" + p),
    query=st.binary(max_size=30),
    headers=headers,
    body=st.binary(max_size=200),
)
def test_requests_round_trip(method: str, path: str, query: bytes,
                             headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> None:
    request = HttpRequest(method, path, query, headers, body)
    assert HttpRequest.decode(request.encode()) == request


@settings(deadline=None)
@given(status=st.integers(100, 999), headers=headers, body=st.binary(max_size=200),
       digest=st.binary(min_size=32, max_size=32))
def test_results_round_trip(status: int, headers: tuple[tuple[bytes, bytes], ...],
                            body: bytes, digest: bytes) -> None:
    result = HttpResult(digest, HttpResponse(status, headers, body))
    assert HttpResult.decode(result.encode()) == result


def test_truncated_extended_or_foreign_bytes_are_refused() -> None:
    request = HttpRequest("POST", "/x", b"a=1", ((b"h", b"v"),), b"body").encode()
    for bad in (request[:-1], request + b"\x00", b"A402/RES\x01" + request[9:], b""):
        with pytest.raises(FrameError):
            HttpRequest.decode(bad)
    with pytest.raises(FrameError):
        Envelope.decode(b"A402/HTTP\x01\x09")
    with pytest.raises(FrameError):
        HttpResponse.decode(HttpResponse(200).encode()[:-1])
    with pytest.raises(ValueError):
        HttpRequest("G T", "/")
    with pytest.raises(ValueError):
        HttpRequest("GET", "relative")


def test_a_hostile_envelope_is_refused_with_what_is_wrong_with_it() -> None:
    for bad, reason in ((b"A402/HTTP\x01", "truncated at kind"),
                        (b"A402/HTTP\x01\x09body", "unknown envelope kind 9"),
                        (b"A402/HTTP\x01\x00", "unknown envelope kind 0"),
                        (b"A402/HTTQ\x01\x01", "not an a402 envelope"), (b"", "not an a402")):
        with pytest.raises(FrameError, match=reason):
            Envelope.decode(bad)
    for kind in Kind:  # every kind reads back, from any bytes-like frame
        frame = Envelope(kind, b"body").encode()
        assert Envelope.decode(bytearray(frame)) == Envelope.decode(memoryview(frame)) \
            == Envelope(kind, b"body")


def test_a_result_is_written_byte_for_byte_as_before() -> None:
    """Sealed results already stored and pre-signed were written in this layout: the tag,
    the request digest, then the response's own encoding."""
    result = HttpResult(b"\x11" * 32, HttpResponse(200, ((b"a", b"b"),), b"hi"))
    assert result.encode() == (b"A402/RESULT\x01" + b"\x11" * 32 + b"A402/RES\x01"
                               + b"\x00\xc8" + b"\x00\x01" + b"\x00\x01a" + b"\x00\x00\x00\x01b"
                               + b"\x00\x00\x00\x02hi")
    assert result.encode()[44:] == result.response.encode()
    assert HttpResult.decode(result.encode()) == result


def test_a_paid_request_cut_anywhere_is_refused_by_the_field_it_lacks() -> None:
    request = HttpRequest("POST", "/x", b"a=1", ((b"h", b"v"),), b"body").encode()
    seen = set()
    for end in range(len(b"A402/REQ\x01"), len(request)):
        with pytest.raises(FrameError, match=r"^truncated at ") as refused:
            HttpRequest.decode(request[:end])
        seen.add(str(refused.value))
    assert seen == {f"truncated at {what}" for what in (
        "method length", "method", "path length", "path", "query length", "query",
        "header count", "header name length", "header name", "header value length",
        "header value", "body length", "body")}


def test_envelopes_open_and_refusal_round_trip() -> None:
    opening = OpenChannel(os.urandom(20), os.urandom(20), os.urandom(20), os.urandom(32),
                          12345, os.urandom(32), os.urandom(65))
    envelope = Envelope.decode(opening.envelope().encode())
    assert envelope.kind is Kind.OPEN
    assert OpenChannel.from_body(envelope.body) == opening
    with pytest.raises(FrameError):
        OpenChannel.from_body(envelope.body[:-1])
    for refusal in (Refusal("replayed", "request 0 handled"),
                    Refusal("service_failed", "500", HttpResponse(500, (), b"kaput"))):
        decoded = Envelope.decode(refusal.envelope().encode())
        assert decoded.kind is Kind.ERROR and Refusal.from_body(decoded.body) == refusal


def test_an_ack_riding_on_a_message_round_trips_and_must_carry_both() -> None:
    ack, message = os.urandom(140), os.urandom(300)
    envelope = Envelope.decode(Envelope.acked(ack, message).encode())
    assert envelope.kind is Kind.ASC_ACKED and envelope.ack_and_message() == (ack, message)
    for body in (b"", b"\x00\x00\x00\x05abc", (0).to_bytes(4, "big") + message,
                 len(ack).to_bytes(4, "big") + ack):
        with pytest.raises(FrameError):
            Envelope(Kind.ASC_ACKED, body).ack_and_message()
    with pytest.raises(FrameError):
        Envelope.asc(message).ack_and_message()


def test_digests_are_domain_separated_and_over_the_bytes_sent() -> None:
    raw = HttpRequest("GET", "/w").encode()
    assert request_digest(raw) != request_digest(raw + b"\x00")
    binding, cid = os.urandom(32), os.urandom(32)
    assert binding_digest(binding, cid) != binding_digest(cid, binding)
    data = provider_user_data(1, b"\x01" * 20, b"\x02" * 20)
    assert data != provider_user_data(2, b"\x01" * 20, b"\x02" * 20)
    assert data != provider_user_data(1, b"\x02" * 20, b"\x01" * 20)


def test_info_round_trips_and_rejects_malformed_documents() -> None:
    info = ProviderInfo(
        network="eip155:31337", chain_id=31337, asc_manager=os.urandom(20), token=os.urandom(20),
        dispute_window=600, provider=os.urandom(20), provider_key=os.urandom(32),
        attestation_kind="simulated", evidence=os.urandom(100), nonce=os.urandom(32),
        lock_timeout=5.0, ack_timeout=30.0, routes=(PricedRoute("GET /w", 1000),),
    )
    document = info.to_json()
    assert ProviderInfo.from_json(document) == info
    for broken in (
        {**document, "version": 3},
        {**document, "providerKey": "0x00"},
        {**document, "ackTimeout": -1},
        {**document, "chainId": "31337"},
        {k: v for k, v in document.items() if k != "token"},
        {**document, "attestation": {"kind": "simulated", "evidence": "%%%"}},
    ):
        with pytest.raises(FrameError):
            ProviderInfo.from_json(broken)


def test_a_provider_of_the_release_before_payments_bound_the_request_is_told_to_upgrade() -> None:
    """Info version 1 is a provider whose pre-signed m does not name the request: no REPLY
    of it would pass this vault's check, so the vault stops at ``…/info``, saying why."""
    info = ProviderInfo(
        network="eip155:31337", chain_id=31337, asc_manager=os.urandom(20), token=os.urandom(20),
        dispute_window=600, provider=os.urandom(20), provider_key=os.urandom(32),
        attestation_kind="simulated", evidence=os.urandom(100), nonce=os.urandom(32),
        lock_timeout=5.0, ack_timeout=30.0,
    )
    with pytest.raises(FrameError, match="upgrade the provider and the vault together"):
        ProviderInfo.from_json({**info.to_json(), "version": 1})
