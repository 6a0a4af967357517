"""Deliberately faulty providers: the real runtime with one seam overridden each.

``commit`` makes the REPLY, ``outgoing`` sees every answer; nothing else
differs from the honest :class:`ProviderRuntime`, so each test isolates one
misbehaviour and what the vault does about it.
"""

from __future__ import annotations

import dataclasses

from eth_hash.auto import keccak

from a402.asc import Ack, Exec, Reply, Reveal, decode, encode
from a402.asc.messages import Message
from a402.crypto import ResultContext, generate_adaptor, seal
from a402.provider.a402_runtime import ProviderRuntime, Slot
from a402.wire.a402 import Envelope, Kind, Refusal


def _asc(answer: Envelope) -> Message | None:
    return decode(answer.body) if answer.kind is Kind.ASC else None


class WithholdingProvider(ProviderRuntime):
    """Takes σ_U and never reveals ``t`` off-chain (from request ``withhold_from`` on)."""

    withhold_from = 1

    def outgoing(self, slot: Slot, incoming: Message, answer: Envelope) -> Envelope:
        message = _asc(answer)
        if isinstance(message, Reveal) and message.request_id >= self.withhold_from:
            return Refusal("withheld", "this provider keeps t to itself").envelope()
        return answer


class WrongSecretProvider(ProviderRuntime):
    """Reveals a ``t`` that is not the discrete log of the ``T`` it committed to."""

    def outgoing(self, slot: Slot, incoming: Message, answer: Envelope) -> Envelope:
        message = _asc(answer)
        if isinstance(message, Reveal):
            wrong = dataclasses.replace(message, adaptor_secret=generate_adaptor()[0])
            return Envelope.asc(encode(wrong))
        return answer


class WrongHashProvider(ProviderRuntime):
    """Pre-signs m for the real result but announces another ``h``."""

    def commit(self, slot: Slot, exec_: Exec, result: bytes) -> Reply:
        reply = super().commit(slot, exec_, result)
        return dataclasses.replace(reply, result_hash=keccak(b"another result"))


class WrongPointProvider(ProviderRuntime):
    """Pre-signs under one ``T`` and announces another."""

    def commit(self, slot: Slot, exec_: Exec, result: bytes) -> Reply:
        reply = super().commit(slot, exec_, result)
        return dataclasses.replace(reply, adaptor_point=generate_adaptor()[1])


class MovedResultProvider(ProviderRuntime):
    """Seals the result under the right ``t`` but for another request of the channel."""

    def commit(self, slot: Slot, exec_: Exec, result: bytes) -> Reply:
        t, _ = generate_adaptor()
        reply = slot.channel.reply(exec_.request_id, result, adaptor_secret=t)
        moved = seal(t, result, ResultContext(slot.channel_id, exec_.request_id + 1))
        return dataclasses.replace(reply, sealed_result=moved.to_bytes())


class ReplayingProvider(ProviderRuntime):
    """Answers every EXEC after the first with the first REPLY."""

    first: Reply | None = None

    def commit(self, slot: Slot, exec_: Exec, result: bytes) -> Reply:
        reply = super().commit(slot, exec_, result)
        if self.first is None:
            self.first = reply
        return self.first


class AckLosingProvider(ProviderRuntime):
    """Loses the ACK riding on the next ``lose`` messages, as if its sender never sent it:
    the request it acknowledged stays authorised, so an EXEC is refused ``request_in_flight``.
    An ACK sent on its own is taken as usual."""

    lose = 0

    def _on_piggybacked_ack(self, slot: Slot, ack: Ack) -> bool:
        if self.lose > 0:
            self.lose -= 1
            return False
        return super()._on_piggybacked_ack(slot, ack)
