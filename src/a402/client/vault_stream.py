"""A paid stream through the vault: one signed call per group, each one channel exchange.

:func:`paid_stream` asks the provider for its streamed response in groups of ``group``
units (``A402-Stream-Group``; :mod:`a402.provider.a402_streams` says what a unit is),
then buys each next group with the next call (``A402-Stream: <id>``), and yields each
group as it is released. Every group is an ordinary paid call of the vault (its own
idempotency key, signature, ``maxPrice`` and mandate check), so the vault's and the
channel's guarantees hold per group: the client pays exactly for the groups it
received, and a group it paid for but did not get (its process died during that call)
is in the vault's record of that call, under its key (``GET /v1/requests/{key}``).

The stream stops cleanly:

* when the provider marks a group the last (``A402-Stream-End: 1``);
* before a group the client's ``max_total`` could not cover at ``max_price`` (the
  most a group may cost), or when the vault refuses a group under the client's
  mandate (``mandate_*``): the provider is then told to stop
  (``A402-Stream-Stop``, a free call through the vault), so it closes its upstream;
* when the consumer stops iterating (``close()`` on the generator): the provider is
  told to stop too.

Any other refusal is raised (:class:`~a402.client.vault.VaultCallError`) after the
provider was told to stop; nothing was paid for the group refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from a402.client.vault import VaultCallError, VaultClient, VaultResult
from a402.wire import vault_api as api

GROUP_HEADER = b"a402-stream-group"
STREAM_HEADER = b"a402-stream"
END_HEADER = b"a402-stream-end"
STOP_HEADER = b"a402-stream-stop"


@dataclass(frozen=True, slots=True)
class StreamGroup:
    """One group received: its bytes, what it cost, and the call that bought it."""

    seq: int
    content: bytes
    amount: int
    last: bool
    result: VaultResult


@dataclass
class StreamEnd:
    """Why a stream ended and what it cost in all (filled in as the stream runs)."""

    reason: str = ""
    paid: int = 0
    groups: int = 0


def _header(result: VaultResult, name: bytes) -> bytes | None:
    for k, v in result.headers:
        if k.lower() == name:
            return v
    return None


def paid_stream(
    client: VaultClient, url: str, *, group: int, max_price: int, max_total: int | None = None,
    method: str = "GET", headers: Sequence[tuple[bytes, bytes]] = (), content: bytes = b"",
    pay_to: str | None = None, end: StreamEnd | None = None, deposit: int | None = None,
) -> Iterator[StreamGroup]:
    """Yield the stream's groups as they are bought (see the module). ``end`` (optional)
    is filled in with why the stream ended and its total cost. ``deposit``: the channel
    deposit the calls allow, if one must be opened (every group must ride the channel
    the stream started on: size it for the whole stream)."""
    end = end if end is not None else StreamEnd()
    sid: bytes | None = None
    base = [(k, v) for k, v in headers if k.lower() not in (GROUP_HEADER, STREAM_HEADER)]
    finished = False
    try:
        while True:
            if max_total is not None and end.paid + max_price > max_total:
                end.reason = "max_total"
                return
            extra = [(GROUP_HEADER, str(group).encode())] if sid is None else [
                (STREAM_HEADER, sid)]
            try:
                result = client.invoke(url, method=method, headers=[*base, *extra],
                                       content=content if sid is None else b"",
                                       max_price=max_price, pay_to=pay_to, deposit=deposit)
            except VaultCallError as e:
                if e.reason.startswith("mandate_"):
                    end.reason = e.reason
                    return
                raise
            if result.outcome != api.PAID:
                # the provider did not sell this group (it failed, or asked nothing)
                end.reason = result.reason or result.outcome
                finished = sid is None
                if sid is None and result.outcome == api.FREE:
                    yield StreamGroup(1, result.content, 0, True, result)
                return
            end.paid += result.amount
            end.groups += 1
            sid = _header(result, STREAM_HEADER) or sid
            last = _header(result, END_HEADER) == b"1" or sid is None
            yield StreamGroup(end.groups, result.content, result.amount, last, result)
            if last:
                end.reason, finished = "end", True
                return
    finally:
        if sid is not None and not finished:
            stop(client, url, sid, pay_to=pay_to)


def stop(client: VaultClient, url: str, sid: bytes, *, pay_to: str | None = None) -> None:
    """Tell the provider to end stream ``sid`` (a free call through the vault; best effort:
    an unbought stream also ends on its own after the provider's idle time). ``pay_to``:
    the payee the stream's calls named (a vault in vault mode sends no call without one,
    even a free one)."""
    with contextlib.suppress(VaultCallError, OSError):
        client.invoke(url, method="DELETE", headers=[(STOP_HEADER, sid)], max_price=0,
                      pay_to=pay_to)


__all__ = ["StreamEnd", "StreamGroup", "paid_stream", "stop"]
