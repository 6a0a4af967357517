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

A stream that ends before its end says so, truthfully (:class:`StreamEnd`: ``complete``
is False, :meth:`StreamEnd.message` says what was paid and received first): the provider
lost the stream (``stream_lost``: it restarted, or no group was bought within its idle
time; the next group was refused, nothing paid for it, and the rest of the response is
gone: a stream is not resumed, since running the service again gives another response),
or the provider's service failed mid-stream (``service_failed``: the last group, paid for
the units it holds, was cut short). Every group counted in ``paid`` was delivered.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from a402.client.vault import VaultCallError, VaultClient, VaultResult
from a402.wire import vault_api as api

GROUP_HEADER = b"a402-stream-group"
STREAM_HEADER = b"a402-stream"
END_HEADER = b"a402-stream-end"
STOP_HEADER = b"a402-stream-stop"
FAILED_HEADER = b"a402-stream-failed"


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
    """Why a stream ended and what it cost in all (filled in as the stream runs).

    ``reason``: ``end`` (the provider's last group came), ``free`` (the target asked
    nothing: its whole answer came as one group), ``max_total``, ``mandate_*`` (the client's
    limits: the provider was told to stop), ``stopped`` (the consumer stopped iterating),
    ``stream_lost``, ``service_failed``, or the reason the vault gave for a group not sold.
    ``paid`` (atomic units) and ``groups`` count only groups received. ``complete``: the
    whole response arrived. ``detail``: what the provider said, when it refused a group or
    cut the stream short."""

    reason: str = ""
    paid: int = 0
    groups: int = 0
    complete: bool = False
    detail: str | None = None
    #: The limit ``max_total`` came from, as the caller named it (``a402 pay``: "--budget"
    #: when the budget, not ``--max-total``, held the stream), so the message names the
    #: limit the person set.
    cap: str = "max_total"

    def message(self) -> str:
        """What happened, the money first: what was paid for what was received, then why
        the stream ended (one sentence, for a person)."""
        paid = (f"{self.paid} (atomic units) paid for the {self.groups} group"
                f"{'' if self.groups == 1 else 's'} received, each paid only with its delivery")
        if self.complete:
            return f"{paid}; the whole stream arrived"
        detail = f" ({self.detail})" if self.detail else ""
        nothing = "nothing was paid for it"
        why = {
            "max_total": f"stopped before a group that could have cost more than {self.cap} "
                         "allowed; the provider was told to stop",
            "stopped": "stopped by the caller; the provider was told to stop",
            "stream_lost": "the provider no longer has this stream (it restarted, or no group "
                           f"was bought within its idle time): the next group was refused and "
                           f"{nothing}; the rest of the response is lost (asking again starts "
                           "a new response)",
            "service_failed": "the provider's service failed before the response's end"
                              f"{detail}; only what arrived was paid for",
        }.get(self.reason)
        if why is None and self.reason.startswith("mandate_"):
            why = f"the vault refused the next group under the owner's mandate ({self.reason})"
            why += f"; {nothing}"
        if why is None:
            which = "the next group" if self.groups else "the stream's first group"
            why = f"{which} was not sold ({self.reason or 'unknown'}{detail}); {nothing}"
        return f"{paid}; the stream did not reach its end: {why}"


def _header(result: VaultResult, name: bytes) -> bytes | None:
    for k, v in result.headers:
        if k.lower() == name:
            return v
    return None


def _error(result: VaultResult) -> str | None:
    """The provider's ``{"error": …}`` in a refused group's answer, if it has one."""
    if len(result.content) > 4096:
        return None
    try:
        body = json.loads(result.content)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error[:200] if isinstance(error, str) else None


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
                end.reason, end.detail = e.reason, e.message or None
                if e.reason.startswith("mandate_"):
                    return
                raise
            if result.outcome != api.PAID:
                # the provider did not sell this group (it failed, lost the stream, or
                # asked nothing): nothing was paid for it
                end.reason = result.reason or result.outcome
                end.detail = _error(result)
                finished = sid is None
                if sid is None and result.outcome == api.FREE:
                    end.complete = True
                    yield StreamGroup(1, result.content, 0, True, result)
                elif sid is not None and result.status == 404 and end.detail == "unknown_stream":
                    end.reason, finished = "stream_lost", True  # nothing left to stop
                return
            end.paid += result.amount
            end.groups += 1
            sid = _header(result, STREAM_HEADER) or sid
            last = _header(result, END_HEADER) == b"1" or sid is None
            failed = _header(result, FAILED_HEADER) if last else None
            if last:  # before the yield: a consumer that stops at the last group sees it
                end.reason, finished = "end", True
                end.complete = failed is None
                if failed is not None:
                    end.reason, end.detail = "service_failed", failed.decode("latin-1")[:200]
            yield StreamGroup(end.groups, result.content, result.amount, last, result)
            if last:
                return
    except GeneratorExit:  # the consumer stopped iterating
        end.reason = end.reason or "stopped"
        raise
    except BaseException as e:  # raised to the consumer (a VaultCallError set its reason)
        end.reason = end.reason or f"error: {type(e).__name__}"
        raise
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
