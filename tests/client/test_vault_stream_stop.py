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
