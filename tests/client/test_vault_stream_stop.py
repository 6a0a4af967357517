"""The client's side of a paid stream, alone: what it asks its vault for, and when it
stops (the money paths are in tests/vault/test_paid_stream.py, on anvil)."""

from __future__ import annotations

from typing import Any

from a402.client.vault import VaultResult
from a402.client.vault_stream import StreamEnd, paid_stream
from a402.wire import vault_api as api

PAYEE = "0x" + "ab" * 20


class RecordingVault:
    """Answers every paid group with one group of 100, never the last; records each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def invoke(self, url: str, **kwargs: Any) -> VaultResult:
        self.calls.append({"url": url, **kwargs})
        if kwargs.get("max_price") == 0:
            return VaultResult(api.FREE, "stop", 200, (), b"{}")
        return VaultResult(api.PAID, f"k{len(self.calls)}", 200,
                           ((b"a402-stream", b"s1"), (b"a402-stream-end", b"0")), b"data: x\n\n",
                           payment={"amount": "100"})


def test_a_stream_stopped_at_max_total_stops_the_provider_naming_the_streams_payee() -> None:
    """At ``max_total`` the stop is sent as a free call with the payee every group named
    (a vault in vault mode refuses any call without one, so the provider never heard it)."""
    vault = RecordingVault()
    end = StreamEnd()
    groups = list(paid_stream(vault, "http://p/s", group=1, max_price=100, max_total=250,  # type: ignore[arg-type]
                              pay_to=PAYEE, end=end))
    assert (len(groups), end.paid, end.reason) == (2, 200, "max_total")
    *paid, stop = vault.calls
    assert all(c["pay_to"] == PAYEE and c["max_price"] == 100 for c in paid)
    assert (stop["method"], stop["max_price"], stop["pay_to"]) == ("DELETE", 0, PAYEE)
    assert stop["headers"] == [(b"a402-stream-stop", b"s1")]


def test_a_lost_stream_ends_saying_what_was_paid_then_that_the_rest_is_lost() -> None:
    """The provider answers the third group 404 ``unknown_stream`` (it restarted): the
    stream ends, not complete, as ``stream_lost``; no stop is sent (nothing is left to
    stop); the message names the money first."""

    class LosingVault(RecordingVault):
        def invoke(self, url: str, **kwargs: Any) -> VaultResult:
            if len(self.calls) == 2:
                self.calls.append({"url": url, **kwargs})
                return VaultResult(api.UNPAID, "k3", 404, (), b'{"error":"unknown_stream"}',
                                   reason="service_failed")
            return super().invoke(url, **kwargs)

    vault = LosingVault()
    end = StreamEnd()
    groups = list(paid_stream(vault, "http://p/s", group=1, max_price=100, end=end))  # type: ignore[arg-type]
    assert (len(groups), end.paid, end.reason, end.complete) == (2, 200, "stream_lost", False)
    assert len(vault.calls) == 3  # no stop
    assert end.message().startswith("200 (atomic units) paid for the 2 groups received, each "
                                    "paid only with its delivery; the stream did not reach its "
                                    "end: the provider no longer has this stream")


def test_a_consumer_that_stops_early_is_told_apart_from_a_stream_that_ended() -> None:
    vault = RecordingVault()
    end = StreamEnd()
    stream = paid_stream(vault, "http://p/s", group=1, max_price=100, end=end)  # type: ignore[arg-type]
    next(stream)
    stream.close()
    assert (end.reason, end.complete, end.paid) == ("stopped", False, 100)
    assert vault.calls[-1]["method"] == "DELETE"
