"""A metered charge δ' ≤ δ inside a channel: bound in ``m`` with the result hash, checked by
the vault against the δ it locked, paid exactly off-chain and on-chain (issue 16, part 2).

The machines run with real secp256k1 and the real ``ASCManager`` on anvil; balances are
asserted on-chain after the channel settles.
"""

from __future__ import annotations

import dataclasses

import pytest

from a402.asc import Reason, RemoteProtocolError, Reply, ResultDelivered, Status
from a402.asc.errors import LocalProtocolError
from a402.asc_manager import ASCManager
from a402.crypto import (
    EVM,
    ResultContext,
    answer_hash,
    generate_adaptor,
    payment_message,
    result_hash,
    seal,
)

from .helpers import balance, reverts_with, wire
from .test_contract import DEPOSIT, MakeParties, final_state, opened, settle_and_check

pytestmark = pytest.mark.anvil


def _charged(vault, provider, delta: int, charge: int, result: bytes):  # type: ignore[no-untyped-def]
    exec_ = vault.request(b"metered request", delta, now=0)
    provider.receive(wire(exec_), now=0)
    reply = provider.reply(exec_.request_id, result, charge=charge)
    return exec_, reply


def test_the_vault_pays_exactly_the_charge_and_frees_the_rest_of_delta(
    parties: MakeParties, manager: ASCManager
) -> None:
    p, vault, provider = opened(parties)
    _, reply = _charged(vault, provider, 250_000, 1_234, b'{"usage":{"total_tokens":1234}}')
    assert reply.amount == 1_234
    step = vault.receive(wire(reply), now=0)
    assert vault.locked == 250_000  # δ stays locked until the request completes
    reveal = provider.receive(wire(step.send[0]), now=0).send[0]
    done = vault.receive(wire(reveal), now=0)
    (delivered,) = done.events
    assert isinstance(delivered, ResultDelivered) and delivered.amount == 1_234
    provider.receive(wire(done.send[0]), now=0)
    assert (vault.free, vault.locked, vault.provider_balance) == (DEPOSIT - 1_234, 0, 1_234)
    assert provider.state == vault.state
    signed = final_state(vault, provider)
    settle_and_check(p, lambda: manager.close(p.vault, p.terms, signed), DEPOSIT - 1_234, 1_234)


def test_a_charge_above_delta_is_refused_by_the_provider_machine_and_by_the_vault(
    parties: MakeParties,
) -> None:
    p, vault, provider = opened(parties)
    exec_ = vault.request(b"metered request", 1_000, now=0)
    provider.receive(wire(exec_), now=0)
    with pytest.raises(LocalProtocolError) as refused:
        provider.reply(exec_.request_id, b"r", charge=1_001)
    assert refused.value.reason is Reason.INVALID_AMOUNT
    # A faulty enclave that pre-signs m for δ + 1 anyway gets no σ_U.
    t, adaptor = generate_adaptor()
    h = result_hash(b"r")
    m = payment_message(p.manager.domain, p.cid, exec_.request_id, 1_001,
                        answer_hash(exec_.request, h))
    presignature = EVM.pre_sign(p.schnorr, m, adaptor)
    sealed = seal(t, b"r", ResultContext(p.cid, exec_.request_id))
    over = Reply(p.cid, exec_.request_id, 1_001, h, adaptor, presignature.to_bytes(),
                 sealed.to_bytes())
    with pytest.raises(RemoteProtocolError) as info:
        vault.receive(wire(over), now=0)
    assert info.value.reason is Reason.INVALID_AMOUNT
    assert (vault.status, vault.locked, vault.provider_balance) == (Status.LOCKED, 1_000, 0)


@pytest.mark.parametrize("altered", [0, 999, 1_000])
def test_a_host_altering_the_charge_in_the_reply_gets_no_authorisation(
    parties: MakeParties, altered: int
) -> None:
    """A host relaying the REPLY (the vault's reads the frames) rewrites δ': lower (the
    payer's host paying less), or up to δ (the provider's paying more). σ̂ is over
    ``m(cid, rid, δ', h)``, so any other δ' fails pre-verification and nothing is signed."""
    _, vault, provider = opened(parties)
    _, reply = _charged(vault, provider, 1_000, 400, b"the result")
    with pytest.raises(RemoteProtocolError) as info:
        vault.receive(wire(dataclasses.replace(reply, amount=altered)), now=0)
    assert info.value.reason is Reason.BAD_PRESIGNATURE
    assert (vault.status, vault.provider_balance) == (Status.LOCKED, 0)
    # The genuine REPLY still goes through, for exactly 400.
    auth = vault.receive(wire(reply), now=0).send[0]
    reveal = provider.receive(wire(auth), now=0).send[0]
    vault.receive(wire(reveal), now=0)
    assert vault.provider_balance == 400


def test_on_chain_the_provider_can_claim_the_charge_and_not_delta(
    parties: MakeParties, manager: ASCManager
) -> None:
    """The force-close claim of a metered payment pays δ'; the same claim rewritten to δ
    (what a provider host would like) does not verify against σ_U or σ̂."""
    p, vault, provider = opened(parties)
    _, reply = _charged(vault, provider, 250_000, 31_000, b"thirty-one thousand units")
    auth = vault.receive(wire(reply), now=0).send[0]
    provider.receive(wire(auth), now=0)  # REVEAL withheld from the vault
    claim = provider.claim()
    assert claim.amount == 31_000
    with reverts_with("InvalidPaymentSignature()"):
        manager.force_close(p.provider, p.terms, dataclasses.replace(claim, amount=250_000))
    provider_before = balance(p.token, p.provider.address)
    settle_and_check(p, lambda: manager.force_close(p.provider, p.terms, claim),
                     DEPOSIT - 31_000, 31_000)
    assert balance(p.token, p.provider.address) - provider_before == 31_000
    (delivered,) = vault.provider_force_closed(0, claim.signature).events
    assert isinstance(delivered, ResultDelivered)
    assert (delivered.amount, delivered.result) == (31_000, b"thirty-one thousand units")


def test_a_zero_charge_moves_nothing_but_completes_the_exchange(
    parties: MakeParties,
) -> None:
    _, vault, provider = opened(parties)
    _, reply = _charged(vault, provider, 500, 0, b"nothing used")
    auth = vault.receive(wire(reply), now=0).send[0]
    reveal = provider.receive(wire(auth), now=0).send[0]
    done = vault.receive(wire(reveal), now=0)
    provider.receive(wire(done.send[0]), now=0)
    assert (vault.free, vault.provider_balance, vault.version) == (DEPOSIT, 0, 1)
    assert done.events[0].result == b"nothing used"  # type: ignore[union-attr]


def _as_format_1(snapshot: bytes) -> bytes:
    """``snapshot`` as a vault written before format version 2 stored it: every message
    under version byte 1, and its pending REPLY without the charge (δ' was always δ)."""
    import json

    from a402.asc.messages import DOMAIN_TAG

    def old(hexed: str | None, reply: bool = False) -> str | None:
        if hexed is None:
            return None
        raw = bytearray.fromhex(hexed)
        assert raw[len(DOMAIN_TAG)] == 2
        raw[len(DOMAIN_TAG)] = 1
        if reply:
            at = len(DOMAIN_TAG) + 2 + 32 + 8
            del raw[at : at + 16]
        return raw.hex()

    doc = json.loads(snapshot)
    doc["lastReveal"], doc["lastAck"] = old(doc["lastReveal"]), old(doc["lastAck"])
    doc["pending"]["reply"] = old(doc["pending"]["reply"], reply=True)
    return json.dumps(doc).encode()


def test_a_vault_snapshot_from_before_the_charge_field_restores_and_settles(
    parties: MakeParties, manager: ASCManager
) -> None:
    """A vault upgraded to format 2 restores the channels it stored in format 1 (one paid
    request done, the next REPLY authorised): the REVEAL completes at δ and the channel
    settles exactly; before, every such channel was unreadable after the upgrade."""
    from a402.asc import VaultChannel

    from .helpers import pay

    p, vault, provider = opened(parties)
    pay(vault, provider, 1_000, b"first")
    exec_ = vault.request(b"second", 2_000, now=0)
    provider.receive(wire(exec_), now=0)
    auth = vault.receive(wire(provider.reply(exec_.request_id, b"second result")), now=0).send[0]
    restored = VaultChannel.restore(_as_format_1(vault.snapshot()), p.vault_signer)
    assert restored.state == vault.state and restored.status is Status.PENDING
    reveal = provider.receive(wire(auth), now=0).send[0]
    done = restored.receive(wire(reveal), now=0)
    assert [e.amount for e in done.events if isinstance(e, ResultDelivered)] == [2_000]
    provider.receive(wire(done.send[0]), now=0)
    signed = final_state(restored, provider)
    settle_and_check(p, lambda: manager.close(p.vault, p.terms, signed), DEPOSIT - 3_000, 3_000)
