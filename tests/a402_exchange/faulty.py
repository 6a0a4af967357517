"""Deliberately faulty providers: the real runtime running faulty *enclave code*.

The provider's host cannot make a REPLY or a REVEAL (the enclave encrypts
them), so each misbehaviour here is a :class:`ProviderEnclaveCode` with one
seam overridden — ``commit`` makes the REPLY, ``outgoing`` sees every
answer, ``on_piggybacked_ack`` takes an ACK riding on the next message — and
a :class:`ProviderRuntime` that starts it (what another enclave measurement
would run). Nothing else differs from the honest provider, so each test
isolates one misbehaviour and what the vault does about it.
"""

from __future__ import annotations

import dataclasses
from typing import cast

from eth_hash.auto import keccak

from a402.asc import Ack, Exec, Reply, Reveal, decode, encode
from a402.asc.messages import Message
from a402.crypto import ResultContext, generate_adaptor, seal
from a402.provider.a402_runtime import ProviderRuntime
from a402.provider_enclave import HeldChannel, ProviderEnclaveBoundary, ProviderEnclaveCode
from a402.wire.a402 import Envelope, Kind, Refusal


def _asc(answer: Envelope) -> Message | None:
    return decode(answer.body) if answer.kind is Kind.ASC else None


class WithholdingCode(ProviderEnclaveCode):
    """Takes σ_U and never reveals ``t`` off-chain (from request ``withhold_from`` on)."""

    withhold_from = 1

    def outgoing(self, held: HeldChannel, incoming: Message, answer: Envelope) -> Envelope:
        message = _asc(answer)
        if isinstance(message, Reveal) and message.request_id >= self.withhold_from:
            return Refusal("withheld", "this provider keeps t to itself").envelope()
        return answer


class WithholdingProvider(ProviderRuntime):
    enclave_code = WithholdingCode


class WrongSecretCode(ProviderEnclaveCode):
    """Reveals a ``t`` that is not the discrete log of the ``T`` it committed to."""

    def outgoing(self, held: HeldChannel, incoming: Message, answer: Envelope) -> Envelope:
        message = _asc(answer)
        if isinstance(message, Reveal):
            wrong = dataclasses.replace(message, adaptor_secret=generate_adaptor()[0])
            return Envelope.asc(encode(wrong))
        return answer


class WrongSecretProvider(ProviderRuntime):
    enclave_code = WrongSecretCode


class WrongHashCode(ProviderEnclaveCode):
    """Pre-signs m for the real result but announces another ``h``."""

    def commit(self, held: HeldChannel, exec_: Exec, result: bytes,
               charge: int | None = None) -> Reply:
        reply = super().commit(held, exec_, result)
        return dataclasses.replace(reply, result_hash=keccak(b"another result"))


class WrongHashProvider(ProviderRuntime):
    enclave_code = WrongHashCode


class WrongPointCode(ProviderEnclaveCode):
    """Pre-signs under one ``T`` and announces another."""

    def commit(self, held: HeldChannel, exec_: Exec, result: bytes,
               charge: int | None = None) -> Reply:
        reply = super().commit(held, exec_, result)
        return dataclasses.replace(reply, adaptor_point=generate_adaptor()[1])


class WrongPointProvider(ProviderRuntime):
    enclave_code = WrongPointCode


class MovedResultCode(ProviderEnclaveCode):
    """Seals the result under the right ``t`` but for another request of the channel."""

    def commit(self, held: HeldChannel, exec_: Exec, result: bytes,
               charge: int | None = None) -> Reply:
        t, _ = generate_adaptor()
        reply = held.channel.reply(exec_.request_id, result, adaptor_secret=t)
        moved = seal(t, result, ResultContext(held.channel.channel_id, exec_.request_id + 1))
        return dataclasses.replace(reply, sealed_result=moved.to_bytes())


class MovedResultProvider(ProviderRuntime):
    enclave_code = MovedResultCode


class ReplayingCode(ProviderEnclaveCode):
    """Answers every EXEC after the first with the first REPLY."""

    first: Reply | None = None

    def commit(self, held: HeldChannel, exec_: Exec, result: bytes,
               charge: int | None = None) -> Reply:
        reply = super().commit(held, exec_, result)
        if self.first is None:
            self.first = reply
        return self.first


class ReplayingProvider(ProviderRuntime):
    enclave_code = ReplayingCode


class AckLosingCode(ProviderEnclaveCode):
    """Loses the ACK riding on the next ``lose`` messages, as if its sender never sent it:
    the request it acknowledged stays authorised, so an EXEC is refused ``request_in_flight``.
    An ACK sent on its own is taken as usual."""

    lose = 0

    def on_piggybacked_ack(self, held: HeldChannel, ack: Ack) -> bool:
        if self.lose > 0:
            self.lose -= 1
            return False
        return super().on_piggybacked_ack(held, ack)


class AckLosingProvider(ProviderRuntime):
    enclave_code = AckLosingCode

    @property
    def lose(self) -> int:
        """How many riding ACKs the enclave code still loses."""
        return self._code.lose

    @lose.setter
    def lose(self, count: int) -> None:
        self._code.lose = count

    @property
    def _code(self) -> AckLosingCode:
        """The code behind the boundary: a test reaching into its own faulty enclave."""
        boundary = cast(ProviderEnclaveBoundary, self.provider_enclave)
        return cast(AckLosingCode, boundary._code)
