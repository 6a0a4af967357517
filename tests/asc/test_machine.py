"""The channel state machine, both ends, without a chain.

Every valid path, and every invalid message or action rejected with its reason
and without any change to the channel (checked by snapshotting the whole
object before and after).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a402.asc import (
    Ack,
    Auth,
    BalanceState,
    ChannelTerms,
    Close,
    CloseAck,
    CloseReady,
    Exec,
    ExecuteRequest,
    ForceCloseDue,
    LocalProtocolError,
    Message,
    PaymentAcknowledged,
    PaymentAuthorized,
    ProviderChannel,
    Reason,
    RemoteProtocolError,
    Reply,
    RequestAbandoned,
    RequestExpired,
    ResultDelivered,
    Reveal,
    Status,
    VaultChannel,
    sign_state,
    state_signer,
)
from a402.crypto import (
    EVM,
    EcdsaSigner,
    PaymentDomain,
    ResultContext,
    SecretKey,
    answer_hash,
    generate_adaptor,
    payment_message,
    result_hash,
    seal,
    sign_authorization,
)
from a402.crypto._secp import N

from .helpers import wire

DEPOSIT = 1_000
LOCK = 30.0
#: The provider's Δ_lock ends before the vault's (network delay and clock skew).
PROVIDER_LOCK = LOCK - 1
ACK = 10.0


@dataclasses.dataclass
class World:
    domain: PaymentDomain
    terms: ChannelTerms
    vault_key: EcdsaSigner
    provider_key: EcdsaSigner
    schnorr: SecretKey
    vault: VaultChannel
    provider: ProviderChannel

    @property
    def cid(self) -> bytes:
        return self.vault.channel_id


def new_world(deposit: int = DEPOSIT) -> World:
    domain = PaymentDomain(31337, os.urandom(20))
    vault_key, provider_key, client_key = (EcdsaSigner(os.urandom(32)) for _ in range(3))
    schnorr = EVM.generate_key()
    terms = ChannelTerms(
        client_key.address,
        vault_key.address,
        provider_key.address,
        schnorr.public_key,
        deposit,
        os.urandom(32),
    )
    return World(
        domain,
        terms,
        vault_key,
        provider_key,
        schnorr,
        VaultChannel(terms, domain, vault_key, lock_timeout=LOCK),
        ProviderChannel(
            terms, domain, provider_key, schnorr, ack_timeout=ACK, lock_timeout=PROVIDER_LOCK
        ),
    )


@pytest.fixture
def w() -> World:
    return new_world()


def snapshot(channel: VaultChannel | ProviderChannel) -> dict[str, Any]:
    """Everything the channel holds, with mutable records copied."""
    return {
        key: dataclasses.replace(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type)
        else value
        for key, value in vars(channel).items()
    }


def rejects(
    channel: VaultChannel | ProviderChannel, message: Message, reason: Reason, now: float = 0.0
) -> None:
    """``message`` is refused with ``reason`` and the channel is untouched."""
    before = snapshot(channel)
    with pytest.raises(RemoteProtocolError) as info:
        channel.receive(message, now=now)
    assert info.value.reason is reason, info.value
    assert snapshot(channel) == before


def refuses(channel: VaultChannel | ProviderChannel, reason: Reason, action: Any) -> None:
    before = snapshot(channel)
    with pytest.raises(LocalProtocolError) as info:
        action()
    assert info.value.reason is reason, info.value
    assert snapshot(channel) == before


def to_reply(w: World, amount: int, result: bytes, t: bytes | None = None) -> tuple[Exec, Reply]:
    exec_ = w.vault.request(b"req", amount, now=0)
    w.provider.receive(wire(exec_), now=0)
    return exec_, w.provider.reply(exec_.request_id, result, adaptor_secret=t)


def to_auth(w: World, amount: int, result: bytes) -> tuple[Reply, Auth]:
    _, reply = to_reply(w, amount, result)
    auth = w.vault.receive(wire(reply), now=1).send[0]
    assert isinstance(auth, Auth)
    return reply, auth


def to_reveal(w: World, amount: int, result: bytes) -> tuple[Reply, Auth, Reveal]:
    reply, auth = to_auth(w, amount, result)
    reveal = w.provider.receive(wire(auth), now=2).send[0]
    assert isinstance(reveal, Reveal)
    return reply, auth, reveal


def complete(w: World, amount: int, result: bytes) -> Ack:
    _, _, reveal = to_reveal(w, amount, result)
    ack = w.vault.receive(wire(reveal), now=3).send[0]
    assert isinstance(ack, Ack)
    w.provider.receive(wire(ack), now=3)
    return ack


# -------------------------------------------------------------- valid paths


def test_one_paid_request_step_by_step(w: World) -> None:
    vault, provider = w.vault, w.provider
    exec_ = vault.request(b"GET /weather", 250, now=0)
    assert (exec_.request_id, exec_.version, exec_.amount) == (0, 0, 250)
    assert (vault.status, vault.free, vault.locked, vault.provider_balance) == (
        Status.LOCKED,
        750,
        250,
        0,
    )
    step = provider.receive(wire(exec_), now=0)
    assert step.events == (ExecuteRequest(0, 250, b"GET /weather"),)
    assert provider.status is Status.LOCKED

    reply = provider.reply(0, b"sunny")
    step = vault.receive(wire(reply), now=1)
    assert step.events == (PaymentAuthorized(0, 250),)
    assert vault.status is Status.PENDING and vault.locked == 250

    step = provider.receive(wire(step.send[0]), now=1)
    (reveal,) = step.send
    assert isinstance(reveal, Reveal)
    assert provider.status is Status.PENDING
    assert reveal.state == BalanceState(1, 750, 250)

    step = vault.receive(wire(reveal), now=2)
    assert step.events == (ResultDelivered(0, 250, b"sunny"),)
    (ack,) = step.send
    assert (vault.status, vault.free, vault.locked, vault.provider_balance) == (
        Status.OPEN,
        750,
        0,
        250,
    )
    step = provider.receive(wire(ack), now=2)
    assert step.events == (PaymentAcknowledged(0, 250, BalanceState(1, 750, 250)),)
    assert provider.status is Status.OPEN

    # Both now hold the same state with both signatures.
    for side in (vault, provider):
        signed = side.latest_state()
        assert signed.state == BalanceState(1, 750, 250)
        assert state_signer(w.domain, w.cid, signed.state, signed.vault_signature) == w.terms.vault
        assert (
            state_signer(w.domain, w.cid, signed.state, signed.provider_signature)
            == w.terms.provider
        )


def test_many_requests_conserve_the_deposit_on_both_sides(w: World) -> None:
    paid = 0
    for i, amount in enumerate((1, 99, 300, 600)):
        complete(w, amount, b"result %d" % i)
        paid += amount
        for side in (w.vault, w.provider):
            assert side.state == BalanceState(i + 1, DEPOSIT - paid, paid)
            assert side.state.total == DEPOSIT
    assert w.vault.free == 0
    refuses(w.vault, Reason.INSUFFICIENT_BALANCE, lambda: w.vault.request(b"", 1, now=9))


def test_cooperative_close(w: World) -> None:
    complete(w, 100, b"a")
    close = w.vault.close()
    assert w.vault.status is Status.CLOSED
    assert close.state == BalanceState(2, 900, 100, True)
    step = w.provider.receive(wire(close), now=5)
    (close_ack,) = step.send
    assert isinstance(step.events[-1], CloseReady)
    assert w.provider.status is Status.CLOSED
    # A retransmitted CLOSE gets the same answer.
    assert w.provider.receive(wire(close), now=6).send == (close_ack,)
    (ready,) = w.vault.receive(wire(close_ack), now=6).events
    assert isinstance(ready, CloseReady)
    assert ready.signed.state == close.state
    assert state_signer(w.domain, w.cid, close.state, ready.signed.provider_signature) == (
        w.terms.provider
    )
    rejects(w.vault, close_ack, Reason.REPLAYED)
    refuses(w.vault, Reason.CHANNEL_CLOSED, lambda: w.vault.request(b"", 1, now=7))
    refuses(w.vault, Reason.CHANNEL_CLOSED, w.vault.close)
    rejects(w.provider, Exec(w.cid, 2, 1, 10, b""), Reason.CHANNEL_CLOSED)


# ------------------------------------------------------------------ timeouts


def test_lock_timeout_reverts_to_open_and_burns_the_request_id(w: World) -> None:
    exec_ = w.vault.request(b"slow", 300, now=100)
    w.provider.receive(wire(exec_), now=100)
    assert w.vault.poll(now=100 + LOCK - 0.001).events == ()
    reply = w.provider.reply(0, b"late")
    rejects(w.vault, reply, Reason.LOCK_EXPIRED, now=100 + LOCK)  # before poll ran
    step = w.vault.poll(now=100 + LOCK)
    assert step.events == (RequestExpired(0, 300),)
    assert (w.vault.status, w.vault.free, w.vault.locked) == (Status.OPEN, DEPOSIT, 0)
    assert w.vault.poll(now=200).events == ()
    rejects(w.vault, reply, Reason.LOCK_EXPIRED, now=200)

    # The next request gets a fresh id; the provider abandons the old one.
    exec2 = w.vault.request(b"next", 200, now=200)
    assert (exec2.request_id, exec2.version) == (1, 0)
    step = w.provider.receive(wire(exec2), now=200)
    assert step.events == (RequestAbandoned(0), ExecuteRequest(1, 200, b"next"))
    refuses(w.provider, Reason.NOT_ALLOWED, lambda: w.provider.reply(0, b"late"))
    reply2 = w.provider.reply(1, b"on time")
    reveal = w.provider.receive(wire(w.vault.receive(wire(reply2), now=201).send[0]), now=201).send[
        0
    ]
    w.provider.receive(w.vault.receive(wire(reveal), now=202).send[0], now=202)
    # Completing request 1 yields version 2: the state covers every id below it.
    assert w.vault.state == w.provider.state == BalanceState(2, 800, 200)


def test_ack_timeout_signals_a_force_close_once_and_a_late_ack_still_counts(w: World) -> None:
    reply, auth = to_auth(w, 100, b"r")
    (reveal,) = w.provider.receive(wire(auth), now=50).send
    assert w.provider.poll(now=50 + ACK - 0.001).events == ()
    (due,) = w.provider.poll(now=50 + ACK).events
    assert isinstance(due, ForceCloseDue)
    claim = due.claim
    assert (claim.state, claim.request_id, claim.amount) == (BalanceState(0, DEPOSIT, 0), 0, 100)
    assert claim.vault_signature == b""  # the opening state needs none
    # The contract rebuilds m from the claim's result hash: the answer hash m commits to.
    assert claim.result_hash == answer_hash(b"req", result_hash(b"r"))
    m = payment_message(w.domain, w.cid, 0, 100, claim.result_hash)
    assert EVM.verify(w.terms.provider_key, m, claim.signature)
    assert claim.e == reply.presignature[:32]
    assert w.provider.poll(now=99).events == ()
    # The ACK arrives after all (before anything was sent on-chain): accepted.
    ack = w.vault.receive(wire(reveal), now=61).send[0]
    w.provider.receive(wire(ack), now=61)
    assert w.provider.status is Status.OPEN
    refuses(w.provider, Reason.NOT_ALLOWED, w.provider.claim)


# ---------------------------------------------------- one request in flight


def test_one_request_in_flight(w: World) -> None:
    _, reply = to_reply(w, 100, b"r")
    refuses(w.vault, Reason.REQUEST_IN_FLIGHT, lambda: w.vault.request(b"2nd", 1, now=0))
    refuses(w.vault, Reason.REQUEST_IN_FLIGHT, w.vault.close)
    # The provider is executing (LOCKED): a second EXEC or a CLOSE is refused while the
    # vault's lock on the first can still be running.
    second = Exec(w.cid, 1, 0, 10, b"2nd")
    final = BalanceState(2, DEPOSIT, 0, True)
    close = Close(w.cid, final, sign_state(w.vault_key, w.domain, w.cid, final))
    rejects(w.provider, second, Reason.REQUEST_IN_FLIGHT, now=PROVIDER_LOCK - 0.001)
    rejects(w.provider, close, Reason.REQUEST_IN_FLIGHT, now=PROVIDER_LOCK - 0.001)
    auth = w.vault.receive(wire(reply), now=1).send[0]
    refuses(w.vault, Reason.REQUEST_IN_FLIGHT, lambda: w.vault.request(b"2nd", 1, now=1))
    w.provider.receive(wire(auth), now=1)
    # The provider holds σ_U: a second EXEC or a CLOSE is refused however late it comes.
    rejects(w.provider, second, Reason.REQUEST_IN_FLIGHT, now=1_000)
    rejects(w.provider, close, Reason.REQUEST_IN_FLIGHT, now=1_000)


def test_a_lost_auth_is_recovered_by_resending_it(w: World) -> None:
    _, auth = to_auth(w, 100, b"r")  # the AUTH is lost on the way
    assert w.provider.pending_reveal() is None
    resent = w.vault.pending_auth()
    assert resent == auth
    (reveal,) = w.provider.receive(wire(resent), now=2).send
    rejects(w.provider, resent, Reason.REPLAYED)  # a second copy changes nothing
    w.provider.receive(w.vault.receive(wire(reveal), now=3).send[0], now=3)
    assert w.vault.pending_auth() is None
    assert w.provider.state == w.vault.state == BalanceState(1, 900, 100)


def test_a_lost_ack_is_recovered_by_resending_reveal_without_paying_twice(w: World) -> None:
    _, _, reveal = to_reveal(w, 100, b"r")
    w.vault.receive(wire(reveal), now=3)  # the ACK is lost
    exec2 = w.vault.request(b"next", 50, now=4)
    rejects(w.provider, exec2, Reason.REQUEST_IN_FLIGHT, now=4)
    resent = w.provider.pending_reveal()
    assert resent == reveal
    step = w.vault.receive(wire(resent), now=5)
    assert step.events == ()  # nothing delivered or credited again
    assert w.vault.state == BalanceState(1, 900, 100) and w.vault.free == 850
    w.provider.receive(wire(step.send[0]), now=5)
    assert w.provider.receive(wire(exec2), now=6).events[0] == ExecuteRequest(1, 50, b"next")


# ------------------------------------------------------------------- replays


def test_replayed_exec_reply_auth_ack_are_rejected(w: World) -> None:
    exec_, reply = to_reply(w, 100, b"r")
    rejects(w.provider, exec_, Reason.REPLAYED)
    auth = w.vault.receive(wire(reply), now=1).send[0]
    rejects(w.vault, reply, Reason.REPLAYED)
    reveal = w.provider.receive(wire(auth), now=1).send[0]
    rejects(w.provider, auth, Reason.REPLAYED)
    ack = w.vault.receive(wire(reveal), now=2).send[0]
    w.provider.receive(wire(ack), now=2)
    rejects(w.provider, ack, Reason.REPLAYED)
    # After completion, every message of request 0 is a replay on both sides.
    rejects(w.provider, exec_, Reason.REPLAYED)
    rejects(w.provider, auth, Reason.REPLAYED)
    rejects(w.vault, reply, Reason.REPLAYED)
    forged = dataclasses.replace(reveal, signature=b"\x00" * 65)
    rejects(w.vault, forged, Reason.REPLAYED)
    # ...and still once request 1 is in flight.
    to_reply(w, 10, b"s")
    rejects(w.provider, exec_, Reason.REPLAYED)
    rejects(w.vault, reply, Reason.REPLAYED)
    rejects(w.provider, auth, Reason.REPLAYED)


def test_messages_for_requests_never_issued_are_unknown(w: World) -> None:
    (
        _,
        reply,
    ) = to_reply(w, 100, b"r")
    rejects(w.vault, dataclasses.replace(reply, request_id=5), Reason.UNKNOWN_REQUEST)
    rejects(w.provider, Auth(w.cid, 5, b"\x00" * 65), Reason.UNKNOWN_REQUEST)
    rejects(
        w.provider, Ack(w.cid, 5, BalanceState(6, 0, DEPOSIT), b"\x00" * 65), Reason.UNKNOWN_REQUEST
    )


def test_messages_out_of_order_or_for_the_other_side(w: World) -> None:
    exec_ = w.vault.request(b"r", 100, now=0)
    w.provider.receive(wire(exec_), now=0)
    rejects(w.provider, Auth(w.cid, 0, b"\x00" * 65), Reason.UNEXPECTED_MESSAGE)  # before REPLY
    rejects(w.vault, exec_, Reason.UNEXPECTED_MESSAGE)  # the vault never receives EXEC
    rejects(
        w.provider,
        Reply(w.cid, 0, 100, bytes(32), b"\x02" + bytes(32), bytes(64), b""),
        Reason.UNEXPECTED_MESSAGE,
    )
    rejects(
        w.vault,
        CloseAck(w.cid, BalanceState(1, DEPOSIT, 0, True), bytes(65)),
        Reason.UNEXPECTED_MESSAGE,
    )
    other = dataclasses.replace(exec_, channel_id=os.urandom(32))
    rejects(w.provider, other, Reason.WRONG_CHANNEL)


# --------------------------------------------------------------------- EXEC


def test_invalid_exec_is_rejected(w: World) -> None:
    complete(w, 100, b"r")
    rejects(w.provider, Exec(w.cid, 1, 0, 10, b""), Reason.STATE_MISMATCH)  # stale version
    rejects(w.provider, Exec(w.cid, 1, 1, 0, b""), Reason.INVALID_AMOUNT)
    rejects(w.provider, Exec(w.cid, 1, 1, 901, b""), Reason.INSUFFICIENT_BALANCE)
    assert w.provider.receive(Exec(w.cid, 1, 1, 900, b""), now=0).events
    refuses(w.vault, Reason.INVALID_AMOUNT, lambda: w.vault.request(b"", 0, now=0))


# -------------------------------------------------------------------- REPLY


def test_reply_whose_presignature_does_not_match_h_or_t_is_rejected(w: World) -> None:
    _, reply = to_reply(w, 100, b"result")
    _, other_point = generate_adaptor()
    rejects(
        w.vault,
        dataclasses.replace(reply, result_hash=result_hash(b"other")),
        Reason.BAD_PRESIGNATURE,
    )
    rejects(w.vault, dataclasses.replace(reply, adaptor_point=other_point), Reason.BAD_PRESIGNATURE)
    # A pre-signature on m under T by a key other than the registered one.
    m = payment_message(w.domain, w.cid, 0, 100, answer_hash(b"req", reply.result_hash))
    stranger = EVM.pre_sign(EVM.generate_key(), m, reply.adaptor_point)
    rejects(
        w.vault,
        dataclasses.replace(reply, presignature=stranger.to_bytes()),
        Reason.BAD_PRESIGNATURE,
    )
    # A pre-signature for another amount (m binds δ).
    m_other = payment_message(w.domain, w.cid, 0, 99, answer_hash(b"req", reply.result_hash))
    cheaper = EVM.pre_sign(w.schnorr, m_other, reply.adaptor_point)
    rejects(
        w.vault,
        dataclasses.replace(reply, presignature=cheaper.to_bytes()),
        Reason.BAD_PRESIGNATURE,
    )
    # A completed (ordinary) signature is not a pre-signature under T.
    rejects(
        w.vault,
        dataclasses.replace(reply, presignature=EVM.sign(w.schnorr, m)),
        Reason.BAD_PRESIGNATURE,
    )
    rejects(
        w.vault,
        dataclasses.replace(reply, presignature=reply.presignature[:32] + N.to_bytes(32, "big")),
        Reason.MALFORMED,
    )
    rejects(
        w.vault, dataclasses.replace(reply, sealed_result=b"\x09" + bytes(40)), Reason.MALFORMED
    )
    assert w.vault.receive(reply, now=1).events == (PaymentAuthorized(0, 100),)


def test_a_reply_to_a_request_the_vault_did_not_send_gets_no_authorization(w: World) -> None:
    """A host rewrites the request inside the EXEC (same channel, id and δ): the provider
    runs the substitute and pre-signs the answer to it, which the vault, rebuilding m from
    the request it sent, refuses before any σ_U. Nothing is paid; δ stays locked until the
    vault gives the request up."""
    exec_ = w.vault.request(b"GET /weather", 100, now=0)
    swapped = dataclasses.replace(exec_, request=b"POST /echo")
    (run,) = w.provider.receive(wire(swapped), now=0).events
    assert run == ExecuteRequest(0, 100, b"POST /echo")
    reply = w.provider.reply(0, b"echo")
    rejects(w.vault, reply, Reason.BAD_PRESIGNATURE)
    assert (w.vault.status, w.vault.locked, w.vault.provider_balance) == (Status.LOCKED, 100, 0)
    # Nor does a pre-signature over m with H(result) alone (m as it was before it bound
    # the request) pass, whatever request was run.
    t, adaptor = generate_adaptor()
    bare = payment_message(w.domain, w.cid, 0, 100, result_hash(b"echo"))
    legacy = dataclasses.replace(
        reply, adaptor_point=adaptor,
        presignature=EVM.pre_sign(w.schnorr, bare, adaptor).to_bytes(),
        sealed_result=seal(t, b"echo", ResultContext(w.cid, 0)).to_bytes(),
    )
    rejects(w.vault, legacy, Reason.BAD_PRESIGNATURE)
    (expired,) = w.vault.abandon().events
    assert expired == RequestExpired(0, 100)
    assert (w.vault.free, w.vault.provider_balance) == (DEPOSIT, 0)


# --------------------------------------------------------------------- AUTH


def test_auth_not_from_the_vault_over_these_terms_is_rejected(w: World) -> None:
    reply, auth = to_auth(w, 100, b"r")
    m = payment_message(w.domain, w.cid, 0, 100, answer_hash(b"req", reply.result_hash))
    e = reply.presignature[:32]
    forged = [
        sign_authorization(w.provider_key, w.domain, m, 100, e),  # not the vault
        sign_authorization(w.vault_key, w.domain, m, 101, e),  # another amount
        sign_authorization(w.vault_key, w.domain, m, 100, os.urandom(32)),  # another challenge
        sign_authorization(w.vault_key, PaymentDomain(1, os.urandom(20)), m, 100, e),
        auth.authorization[:64] + b"\x1d",  # malformed v
    ]
    for signature in forged:
        rejects(w.provider, Auth(w.cid, 0, signature), Reason.BAD_AUTHORIZATION)
    assert w.provider.receive(auth, now=1).send


# ------------------------------------------------------------------- REVEAL


def test_reveal_whose_t_does_not_match_t_is_rejected(w: World) -> None:
    _, _, reveal = to_reveal(w, 100, b"r")
    rejects(
        w.vault,
        dataclasses.replace(reveal, adaptor_secret=generate_adaptor()[0]),
        Reason.BAD_ADAPTOR_SECRET,
    )
    rejects(
        w.vault, dataclasses.replace(reveal, adaptor_secret=bytes(32)), Reason.BAD_ADAPTOR_SECRET
    )
    rejects(
        w.vault, dataclasses.replace(reveal, state=BalanceState(1, 899, 101)), Reason.STATE_MISMATCH
    )
    bad = sign_state(w.vault_key, w.domain, w.cid, reveal.state)  # the vault's own, not S's
    rejects(w.vault, dataclasses.replace(reveal, signature=bad), Reason.BAD_STATE_SIGNATURE)
    assert w.vault.status is Status.PENDING
    assert w.vault.receive(reveal, now=3).events == (ResultDelivered(0, 100, b"r"),)


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("another request", Reason.RESULT_DOES_NOT_OPEN),
        ("another channel", Reason.RESULT_DOES_NOT_OPEN),
        ("another result", Reason.RESULT_HASH_MISMATCH),
    ],
)
def test_a_sealed_result_moved_to_another_request_does_not_open(
    w: World, variant: str, reason: Reason
) -> None:
    """EncRes is bound to (cid, rid); the vault only finds out at REVEAL, when it has t."""
    complete(w, 100, b"first result")
    t, _ = generate_adaptor()
    _, reply = to_reply(w, 100, b"second result", t)
    assert reply.request_id == 1
    context = {
        "another request": ResultContext(w.cid, 0),
        "another channel": ResultContext(os.urandom(32), 1),
        "another result": ResultContext(w.cid, 1),
    }[variant]
    plaintext = b"not what was hashed" if variant == "another result" else b"second result"
    swapped = dataclasses.replace(reply, sealed_result=seal(t, plaintext, context).to_bytes())
    auth = w.vault.receive(wire(swapped), now=1).send[0]
    reveal = w.provider.receive(wire(auth), now=1).send[0]
    rejects(w.vault, reveal, reason)
    assert (w.vault.status, w.vault.locked) == (Status.PENDING, 100)


# ---------------------------------------------------------------------- ACK


def test_invalid_ack_is_rejected(w: World) -> None:
    _, _, reveal = to_reveal(w, 100, b"r")
    ack = w.vault.receive(wire(reveal), now=3).send[0]
    assert isinstance(ack, Ack)
    rejects(
        w.provider, dataclasses.replace(ack, state=BalanceState(1, 901, 99)), Reason.STATE_MISMATCH
    )
    rejects(
        w.provider, dataclasses.replace(ack, signature=reveal.signature), Reason.BAD_STATE_SIGNATURE
    )
    assert w.provider.receive(ack, now=3).events


# -------------------------------------------------------------------- CLOSE


def test_invalid_close_is_rejected(w: World) -> None:
    complete(w, 100, b"r")

    def close(state: BalanceState, key: EcdsaSigner | None = None) -> Close:
        return Close(w.cid, state, sign_state(key or w.vault_key, w.domain, w.cid, state))

    rejects(w.provider, close(BalanceState(2, 900, 100)), Reason.STATE_MISMATCH)  # not final
    rejects(w.provider, close(BalanceState(2, 901, 99, True)), Reason.STATE_MISMATCH)
    rejects(w.provider, close(BalanceState(1, 900, 100, True)), Reason.STATE_MISMATCH)  # not newer
    rejects(
        w.provider,
        close(BalanceState(2, 900, 100, True), w.provider_key),
        Reason.BAD_STATE_SIGNATURE,
    )
    assert w.provider.receive(close(BalanceState(2, 900, 100, True)), now=0).send


def test_close_abandons_an_unauthorised_request_on_the_provider(w: World) -> None:
    exec_ = w.vault.request(b"r", 100, now=0)
    w.provider.receive(exec_, now=0)
    w.vault.poll(now=LOCK)
    close = w.vault.close()
    assert close.state.version == 2  # past the burnt request id 0 and one more for the close
    step = w.provider.receive(close, now=LOCK)
    assert step.events[0] == RequestAbandoned(0)
    assert isinstance(step.events[1], CloseReady)


# -------------------------------------------------------------- chain events


def test_the_vault_extracts_t_from_an_on_chain_claim_and_rejects_a_bogus_one(w: World) -> None:
    reply, auth, _ = to_reveal(w, 100, b"the result")
    claim = w.provider.claim()
    bogus = claim.signature[:32] + ((claim.s + 1) % N).to_bytes(32, "big")
    before = snapshot(w.vault)
    with pytest.raises(RemoteProtocolError) as info:
        w.vault.provider_force_closed(0, bogus)
    assert info.value.reason is Reason.BAD_COMPLETION
    assert snapshot(w.vault) == before
    (delivered,) = w.vault.provider_force_closed(0, claim.signature).events
    assert delivered == ResultDelivered(0, 100, b"the result", on_chain=True)
    assert w.vault.status is Status.CLOSED
    assert auth.request_id == reply.request_id == 0


def test_constructor_checks_keys_against_the_terms(w: World) -> None:
    with pytest.raises(ValueError, match="vault"):
        VaultChannel(w.terms, w.domain, w.provider_key, lock_timeout=LOCK)
    with pytest.raises(ValueError, match="provider address"):
        ProviderChannel(
            w.terms, w.domain, w.vault_key, w.schnorr, ack_timeout=ACK, lock_timeout=PROVIDER_LOCK
        )
    with pytest.raises(ValueError, match="Schnorr"):
        ProviderChannel(
            w.terms,
            w.domain,
            w.provider_key,
            EVM.generate_key(),
            ack_timeout=ACK,
            lock_timeout=PROVIDER_LOCK,
        )


# ----------------------------------------------------------- random schedules


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["pay", "expire", "lose_ack", "bad_reveal"]), st.integers(1, 300)
        ),
        max_size=8,
    )
)
def test_random_schedules_keep_both_sides_consistent(schedule: list[tuple[str, int]]) -> None:
    """Whatever is lost or expires, the two sides never disagree on a co-signed state,
    the deposit is conserved, and the vault never credits more than it delivered."""
    w = new_world()
    delivered = 0
    now = 0.0
    for action, amount in schedule:
        now += 1
        if amount > w.vault.free:
            continue
        exec_ = w.vault.request(b"q", amount, now=now)
        w.provider.receive(wire(exec_), now=now)
        if action == "expire":
            w.vault.poll(now=now + LOCK)
            now += LOCK
            continue
        reply = w.provider.reply(exec_.request_id, b"r%d" % exec_.request_id)
        reveal = w.provider.receive(
            wire(w.vault.receive(wire(reply), now=now).send[0]), now=now
        ).send[0]
        if action == "bad_reveal":
            with pytest.raises(RemoteProtocolError):
                w.vault.receive(
                    dataclasses.replace(reveal, adaptor_secret=generate_adaptor()[0]), now=now
                )
        step = w.vault.receive(wire(reveal), now=now)
        delivered += amount
        if action == "lose_ack":
            step = w.vault.receive(wire(w.provider.pending_reveal()), now=now)  # type: ignore[arg-type]
        w.provider.receive(wire(step.send[0]), now=now)
        assert w.vault.latest_state() == w.provider.latest_state()
    assert w.vault.state.total == DEPOSIT
    assert w.vault.provider_balance == delivered
    assert w.vault.status is Status.OPEN
    # A provider whose last request expired on the vault still thinks it is executing.
    assert w.provider.status in (Status.OPEN, Status.LOCKED)
    assert w.vault.state.version <= w.vault.next_request_id
