"""The provider's frame driver: one tunnel frame in, one answer frame out, in a straight line.

Whatever carried the frame (``POST …/message``, the ``…/stream`` WebSocket,
or an :class:`~a402.wire.transport.InMemoryTransport`), :meth:`FrameDriver.handle_frame`
does the same, in this order:

1. **Tunnel.** Look the tunnel up (:mod:`a402.provider.a402_tunnels`) and hold
   its lock: one frame of a tunnel is in the enclave at a time.
2. **Enclave.** Hand the ciphertext to the provider enclave's code
   (:meth:`ProviderEnclave.receive <a402.provider_enclave.ProviderEnclave.receive>`),
   which decrypts it and answers, or says what the host must do first.
3. **Channel.** For :class:`~a402.provider_enclave.ChannelNeeded`: bring the
   channel in (:mod:`a402.provider.a402_channels`; for an OPEN of a channel
   stored nowhere, with its on-chain status), hold its lock, and call ``found``.
   For :class:`~a402.provider_enclave.EpochNeeded` (a vault-mode AUTH whose record
   names a settlement not seen landed yet): read the A402Vault's landed epoch
   again, still under the lock, and call ``found`` once more.
4. **Execute.** For :class:`~a402.provider_enclave.Execute`: run the paid
   request (:mod:`a402.provider.a402_execute`) and hand the enclave the
   response (``executed``: it builds the result, draws ``t``, seals, builds
   ``m``, pre-signs and encrypts the REPLY) or the failure (``failed``).
5. **Persist, then answer.** If the answer changed the channel, store the
   enclave's sealed export *before* the answer frame is returned.

Safety argument. The host only relays ciphertext and does what the enclave
asks; it has no call that pre-signs, signs a digest, or reads or writes
tunnel plaintext. Step 5 is the write-ahead rule: an answer never leaves
before the state it reports is durable, so a retransmitted message is
answered from the enclave's record without running or charging twice.

Failures outside the channel are raised, never answered inside it:
:class:`~a402.wire.transport.UnknownTunnel` (the vault handshakes again) and
:class:`~a402.wire.transport.FrameRefused` for a frame that does not
authenticate (tampered, replayed, reordered; the tunnel stays usable).

Seams for tests: :meth:`FrameDriver.relay` returns every answer frame (a
*malicious host* rewrites frames there), :meth:`FrameDriver.before_send` sees
every recorded answer (as ciphertext) before it is stored and sent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from a402.observe import Observer
from a402.provider.a402_channels import Channels, Slot
from a402.provider.a402_execute import Executor, ServiceFailed
from a402.provider.a402_tunnels import Tunnels
from a402.provider_enclave import (
    Answer,
    ChannelNeeded,
    EpochNeeded,
    Execute,
    Outcome,
    ProviderEnclave,
)
from a402.tee import ChannelError
from a402.wire.transport import FrameRefused

#: The on-chain status name of a channel (``"OPEN"``, ``"CLOSING"``, …), read from the chain.
ChainStatus = Callable[[bytes], Awaitable[str]]


class FrameDriver:
    """Drives the provider enclave with the frames a transport brings (see the module)."""

    def __init__(
        self,
        provider_enclave: ProviderEnclave,
        *,
        tunnels: Tunnels,
        channels: Channels,
        executor: Executor,
        chain_status: ChainStatus,
        clock: Callable[[], float],
        read_ledger: Callable[[], Awaitable[None]] | None = None,
        read_epoch: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.provider_enclave = provider_enclave
        self.tunnels = tunnels
        self.channels = channels
        self.executor = executor
        self.chain_status = chain_status
        self.clock = clock
        #: Reads the A402Vault's pinned ledger until it is pinned (vault mode; the enclave
        #: reveals for a vault-mode AUTH only if its record names that life).
        self.read_ledger = read_ledger
        #: Reads the A402Vault's landed epoch until it reaches the one given, for a while
        #: (vault mode; the enclave reveals only for a record whose epoch has landed).
        self.read_epoch = read_epoch
        #: Where each EXEC's log line and metrics go (set by ``A402Payments``), and the
        #: price of a route (what the EXEC locked).
        self.observer: Observer | None = None
        self.price: Callable[[str, str], int | None] = lambda method, path: None

    async def handle_frame(
        self, tunnel_id: str, frame: bytes, scope: Mapping[str, Any] | None = None
    ) -> bytes:
        """One encrypted envelope in, one encrypted envelope out (the enclave reads and
        writes both; this relays them, and does what the enclave asks in between).

        ``scope`` is the ASGI scope of the request that carried the frame, if any: the
        paid request's scope is built from it. Raises
        :class:`~a402.wire.transport.UnknownTunnel` or
        :class:`~a402.wire.transport.FrameRefused` (see the module).
        """
        tunnel = self.tunnels.get(tunnel_id)
        async with tunnel.lock:
            try:
                outcome = self.provider_enclave.receive(tunnel.handle, frame)
            except ChannelError as e:
                raise FrameRefused(e.reason, e.detail) from None
            tunnel.last_used = self.clock()
            if not isinstance(outcome, ChannelNeeded):
                return await self.relay(None, outcome)
            if outcome.opening:
                return await self._open(tunnel.handle, outcome.channel_id)
            return await self._message(tunnel.handle, outcome.channel_id, scope)

    async def _open(self, handle: str, channel_id: bytes) -> bytes:
        """OPEN: bind the channel to the tunnel; admit it first if it is stored nowhere
        (only a channel OPEN on-chain is admitted, and stored before it is answered)."""
        async with self.channels.admitting:
            slot = await self.channels.load(channel_id)
            if slot is not None:
                return await self.relay(slot, self.provider_enclave.found(handle))
            on_chain = await self.chain_status(channel_id)
            outcome = self.provider_enclave.found(handle, on_chain=on_chain)
            if not (isinstance(outcome, Answer) and outcome.persist):
                return await self.relay(None, outcome)  # refused: nothing to keep
            slot = self.channels.new(channel_id)
            frame = await self.relay(slot, outcome)
            self.channels.add(slot)
            return frame

    async def _message(self, handle: str, channel_id: bytes,
                       scope: Mapping[str, Any] | None) -> bytes:
        """An ASC message for a bound channel: under the channel's lock, handled by the
        enclave; an EXEC runs the paid request before the enclave answers it."""
        slot = await self.channels.load(channel_id)
        if slot is None:
            return await self.relay(None, self.provider_enclave.found(handle))
        if self.read_ledger is not None and slot.channel.terms.vault_mode:
            await self.read_ledger()  # no I/O once pinned
        async with slot.lock:
            outcome = self.provider_enclave.found(handle)
            if isinstance(outcome, EpochNeeded):
                if self.read_epoch is not None:
                    await self.read_epoch(outcome.epoch)
                outcome = self.provider_enclave.found(handle)
            if isinstance(outcome, Execute):
                started = time.perf_counter()
                paid = outcome
                outcome, failed = await self._execute(handle, paid, scope)
                self._observe(slot, paid, failed, time.perf_counter() - started,
                              outcome.charge)
            return await self.relay(slot, outcome)

    def _observe(self, slot: Slot, paid: Execute, failed: str | None, latency: float,
                 charge: int | None = None) -> None:
        """An EXEC's log line: ``executed`` means the service ran and its REPLY went back
        (the payment completes with the vault's AUTH and the REVEAL, not before);
        ``service_failed`` that the service did not answer and the enclave refused the
        EXEC (nothing is paid for it). ``amount``: the charge the REPLY committed to (a
        metered route's, at most its price), else the route's price."""
        if self.observer is None:
            return
        terms = slot.channel.terms
        request = paid.request
        self.observer.paid(
            request_id=f"0x{paid.channel_id.hex()}:{paid.request_id}",
            payer="0x" + terms.client.hex(),
            amount=charge if charge is not None else self.price(request.method, request.path),
            scheme="a402", outcome="executed" if failed is None else "service_failed",
            latency=latency, payee="0x" + terms.provider.hex(), reason=failed,
            channelId="0x" + paid.channel_id.hex(), method=request.method, path=request.path)

    async def _execute(self, handle: str, paid: Execute, scope: Mapping[str, Any] | None
                       ) -> tuple[Answer, str | None]:
        """Run the paid request; the enclave turns the response into a REPLY (or a
        refusal, with the service's failure reason beside it)."""
        response = await self.executor.run(paid, scope)
        if isinstance(response, ServiceFailed):
            return (self.provider_enclave.failed(handle, response.reason, response.detail),
                    response.reason)
        return self.provider_enclave.executed(handle, response), None

    async def relay(self, slot: Slot | None, outcome: Outcome) -> bytes:
        """Store what the enclave sealed (if the answer changed the channel), then relay."""
        if not isinstance(outcome, Answer):
            raise TypeError(f"the enclave asked for {type(outcome).__name__} out of turn")
        if slot is not None and outcome.incoming and not outcome.replayed:
            self.before_send(slot, outcome)
        if slot is not None and outcome.persist:
            await self.channels.persist(slot)
        return outcome.frame

    def before_send(self, slot: Slot, answer: Answer) -> None:
        """Every recorded answer passes here (ciphertext) before it is stored and sent."""


__all__ = ["ChainStatus", "FrameDriver"]
