"""ASCManager batches on anvil: ``createASCBatch`` and ``closeASCBatch``.

A batch runs each channel through the checks and effects of ``createASC`` and
``closeASC`` and then moves tokens aggregated, one transfer per run of
consecutive channels with the same payer or payee. Checked here: exact
conservation for every account, the aggregation itself (the token's Transfer
logs), that a channel that cannot proceed is skipped while the others settle (only a
malformed batch reverts, and then changes nothing), and that a token calling back
into the manager finds it locked.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3.logs import DISCARD

from a402.asc import BalanceState, ChannelTerms, CloseReady, SignedState, sign_channel_open
from a402.asc_manager import ASCManager, OnChainStatus, terms_tuple
from a402.chain.node import Chain
from a402.chain.tx import deploy_contract, transact
from a402.crypto import EVM, SecretKey

from .helpers import (
    DISPUTE_WINDOW,
    Parties,
    balance,
    fresh_account,
    machines,
    pay,
    reverts_with,
    selector,
    wire,
)

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000
GUARD = selector("ReentrancyGuardReentrantCall()")


class Batch:
    """Two clients, two providers and one vault (also a client from its own pool)."""

    def __init__(self, chain: Chain, token: Any, manager: ASCManager) -> None:
        self.chain, self.token, self.manager = chain, token, manager
        self.a, self.b, self.vault, self.p, self.q = (fresh_account(chain) for _ in range(5))
        self.keys: dict[str, SecretKey] = {
            self.p.address: EVM.generate_key(),
            self.q.address: EVM.generate_key(),
        }
        for client in (self.a, self.b, self.vault):
            transact(chain, chain.accounts[0], token.functions.mint(client.address, 10 * DEPOSIT))
            transact(chain, client, token.functions.approve(manager.address, 2**256 - 1))

    @property
    def accounts(self) -> list[str]:
        return [x.address for x in (self.a, self.b, self.vault, self.p, self.q)]

    def parties(
        self, client: LocalAccount, provider: LocalAccount, deposit: int = DEPOSIT
    ) -> Parties:
        schnorr = self.keys[provider.address]
        terms = ChannelTerms(
            client=client.address,
            vault=self.vault.address,
            provider=provider.address,
            provider_key=schnorr.public_key,
            deposit=deposit,
            salt=os.urandom(32),
        )
        return Parties(
            self.chain, self.token, self.manager, client, self.vault, provider, schnorr, terms
        )

    def consents(self, channels: Sequence[Parties]) -> list[bytes]:
        """Each client's signature, empty where the client is the vault (the sender)."""
        return [
            b""
            if p.client.address == self.vault.address
            else sign_channel_open(p.client_signer, self.manager.domain, p.terms)
            for p in channels
        ]

    def open(self, channels: Sequence[Parties]) -> Any:
        terms = [p.terms for p in channels]
        return self.manager.create_batch(self.vault, terms, self.consents(channels))

    def balances(self) -> dict[str, int]:
        return {who: balance(self.token, who) for who in [*self.accounts, self.manager.address]}

    def statuses(self, channels: Sequence[Parties]) -> list[OnChainStatus]:
        return [self.manager.channel(p.cid).status for p in channels]

    def transfers(self, receipt: Any) -> list[tuple[str, str, int]]:
        found = self.token.events.Transfer().process_receipt(receipt, errors=DISCARD)
        return [(ev["args"]["from"], ev["args"]["to"], ev["args"]["value"]) for ev in found]


@pytest.fixture
def batch(asc_chain: Chain, usdc: Any, manager: ASCManager) -> Batch:
    return Batch(asc_chain, usdc, manager)


def paid_and_final(p: Parties, amounts: Sequence[int]) -> SignedState:
    """Pay ``amounts`` through ``p``'s channel with the real state machines; the final state."""
    vault, provider = machines(p)
    for amount in amounts:
        pay(vault, provider, amount, os.urandom(16))
    close_ack = provider.receive(wire(vault.close()), now=0).send[0]
    ready = vault.receive(wire(close_ack), now=0).events[0]
    assert isinstance(ready, CloseReady)
    return ready.signed


def final(p: Parties, provider_balance: int, version: int = 1) -> SignedState:
    state = BalanceState(version, p.terms.deposit - provider_balance, provider_balance, True)
    return p.signed(state)


# ------------------------------------------------------------------ success


def test_a_batch_opens_and_closes_many_channels_with_aggregated_transfers(
    batch: Batch, manager: ASCManager
) -> None:
    a, b, v, p, q = batch.a, batch.b, batch.vault, batch.p, batch.q
    # Clients run a, a, a, b, b, v; providers run p, p, q, q, p, p.
    channels = [
        batch.parties(a, p, 100_000),
        batch.parties(a, p, 200_000),
        batch.parties(a, q, 300_000),
        batch.parties(b, q, 400_000),
        batch.parties(b, p, 500_000),
        batch.parties(v, p, 600_000),  # the vault's own pool: no consent signature
    ]
    ids = [p_.cid for p_ in channels]
    call = manager.contract.functions.createASCBatch(
        [terms_tuple(c.terms) for c in channels], batch.consents(channels), [b""] * len(channels)
    )
    assert call.call({"from": v.address}) == ids  # the contract agrees on every id

    before = batch.balances()
    receipt = batch.open(channels)
    opened = batch.balances()
    deposits = {a.address: 600_000, b.address: 900_000, v.address: 600_000}
    for who, paid in deposits.items():
        assert opened[who] == before[who] - paid
    assert opened[manager.address] == before[manager.address] + sum(deposits.values())
    assert opened[p.address] == before[p.address] and opened[q.address] == before[q.address]
    events = manager.events("ChannelOpened", receipt)
    assert [e["channelId"] for e in events] == ids
    assert [(e["client"], e["provider"], e["deposit"]) for e in events] == [
        (c.client.address, c.provider.address, c.terms.deposit) for c in channels
    ]
    # One transferFrom per run of consecutive channels of the same client.
    assert batch.transfers(receipt) == [
        (who, manager.address, paid) for who, paid in deposits.items()
    ]
    assert batch.statuses(channels) == [OnChainStatus.OPEN] * 6

    payments = [[10_000], [20_000, 5_000], [], [40_000], [50_000, 1], [60_000]]
    items = [
        (c.terms, paid_and_final(c, amounts)) for c, amounts in zip(channels, payments, strict=True)
    ]
    # The vault sends, so it approves by sending: its signatures may be left out.
    items[0] = (items[0][0], SignedState(items[0][1].state, b"", items[0][1].provider_signature))
    receipt = manager.close_batch(v, items)
    after = batch.balances()

    to_provider = [sum(amounts) for amounts in payments]
    to_client = [c.terms.deposit - paid for c, paid in zip(channels, to_provider, strict=True)]
    assert [s.state.provider_balance for _, s in items] == to_provider
    expected_client = {
        a.address: sum(to_client[0:3]),
        b.address: sum(to_client[3:5]),
        v.address: to_client[5],
    }
    expected_provider = {p.address: sum(to_provider[0:2]) + sum(to_provider[4:6])}
    expected_provider[q.address] = sum(to_provider[2:4])
    for who, got in {**expected_client, **expected_provider}.items():
        assert after[who] == opened[who] + got
    # Conservation: the escrow is back where it was; every token is accounted for.
    assert after[manager.address] == before[manager.address]
    assert sum(after.values()) == sum(before.values())
    events = manager.events("ChannelClosed", receipt)
    assert [(e["channelId"], e["clientPayout"], e["providerPayout"]) for e in events] == list(
        zip(ids, to_client, to_provider, strict=True)
    )
    # One transfer per run of equal clients (a, b, v) and per run of equal providers
    # (p, q, p); q's run is 0 + 40,000, p's first run 10,000 + 25,000.
    sent = batch.transfers(receipt)
    assert sorted(sent) == sorted(
        [(manager.address, who, amount) for who, amount in expected_client.items()]
        + [
            (manager.address, p.address, 35_000),
            (manager.address, q.address, 40_000),
            (manager.address, p.address, 110_001),
        ]
    )
    assert batch.statuses(channels) == [OnChainStatus.CLOSED] * 6


def test_a_batch_of_one_is_createasc_and_closeasc(batch: Batch, manager: ASCManager) -> None:
    c = batch.parties(batch.a, batch.q)
    before = batch.balances()
    batch.open([c])
    receipt = manager.close_batch(batch.q, [(c.terms, final(c, DEPOSIT))])  # the provider sends
    after = batch.balances()
    assert after[batch.q.address] == before[batch.q.address] + DEPOSIT
    assert after[batch.a.address] == before[batch.a.address] - DEPOSIT
    # Zero payouts are skipped: only the provider's transfer.
    assert batch.transfers(receipt) == [(manager.address, batch.q.address, DEPOSIT)]


def test_a_final_state_in_a_batch_settles_a_pending_dispute_only_if_newer(
    batch: Batch, manager: ASCManager
) -> None:
    c, d = batch.parties(batch.a, batch.p), batch.parties(batch.b, batch.q)
    batch.open([c, d])
    manager.init_force_close(batch.a, c.terms, c.signed(BalanceState(2, DEPOSIT - 7, 7)))
    stale = manager.close_batch(batch.vault, [(c.terms, final(c, 9, 2)), (d.terms, final(d, 3))])
    skips_only(batch, stale, [c, d], {0: "StaleState(uint256,uint256)"})
    assert batch.statuses([c, d]) == [OnChainStatus.CLOSING, OnChainStatus.CLOSED]
    manager.close_batch(batch.vault, [(c.terms, final(c, 9, 3))])
    assert batch.statuses([c, d]) == [OnChainStatus.CLOSED] * 2


# ------------------------------------------------------------------ refusal


def unchanged(
    batch: Batch, channels: Sequence[Parties], action: Callable[[], Any], error: str
) -> None:
    """``action`` reverts with ``error`` and leaves every balance and channel as it was."""
    balances, statuses = batch.balances(), batch.statuses(channels)
    with reverts_with(error):
        action()
    assert batch.balances() == balances
    assert batch.statuses(channels) == statuses


def skips_only(
    batch: Batch, receipt: Any, channels: Sequence[Parties], bad: dict[int, str]
) -> None:
    """The batch skipped exactly the members ``bad`` names (index → the error its single
    call would revert with) and no other."""
    reasons = batch.manager.skipped(receipt)
    assert {i: r[:4].hex() for i, r in reasons.items()} == {
        i: selector(error) for i, error in bad.items()
    }


def test_a_bad_channel_in_an_open_is_skipped_and_the_others_open(
    batch: Batch, manager: ASCManager
) -> None:
    a, b, v = batch.a, batch.b, batch.vault
    spent = batch.parties(b, batch.p)
    batch.open([spent])
    foreign = dataclasses.replace(batch.parties(a, batch.p).terms, vault=b.address)

    def good() -> list[Parties]:
        return [batch.parties(a, batch.p), batch.parties(b, batch.q), batch.parties(a, batch.q)]

    def bad_consent(g: list[Parties]) -> tuple[list[ChannelTerms], list[bytes]]:
        consents = batch.consents(g)
        return [c.terms for c in g], [consents[0], consents[2], consents[1]]  # swapped

    def twice(g: list[Parties]) -> tuple[list[ChannelTerms], list[bytes]]:
        consents = batch.consents(g)
        return [*(c.terms for c in g), g[0].terms], [*consents, consents[0]]

    def another_vaults(g: list[Parties]) -> tuple[list[ChannelTerms], list[bytes]]:
        return [*(c.terms for c in g), foreign], [*batch.consents(g), b""]

    def already_open(g: list[Parties]) -> tuple[list[ChannelTerms], list[bytes]]:
        return [*(c.terms for c in g), spent.terms], [*batch.consents(g),
                                                      *batch.consents([spent])]

    cases: list[tuple[Callable[[list[Parties]], Any], dict[int, str], list[int]]] = [
        (bad_consent, {1: "BadSignature(address)", 2: "BadSignature(address)"}, [0]),
        (twice, {3: "ChannelExists(bytes32)"}, [0, 1, 2]),
        (another_vaults, {3: "NotAuthorized()"}, [0, 1, 2]),
        (already_open, {3: "ChannelExists(bytes32)"}, [0, 1, 2]),
    ]
    for build, bad, opened in cases:
        channels = good()
        terms, consents = build(channels)
        before = batch.balances()
        receipt = manager.create_batch(v, terms, consents)
        skips_only(batch, receipt, channels, bad)
        assert [batch.statuses([c])[0] == OnChainStatus.OPEN for c in channels] == [
            i in opened for i in range(3)
        ]
        after = batch.balances()
        escrowed = sum(channels[i].terms.deposit for i in opened)
        assert after[manager.address] - before[manager.address] == escrowed
        assert sum(after.values()) == sum(before.values())
    # Only a malformed batch reverts, and then nothing changes.
    channels = good()
    terms, consents = [c.terms for c in channels], batch.consents(channels)
    unchanged(batch, channels, lambda: manager.create_batch(v, terms, consents[:2]),
              "LengthMismatch(uint256,uint256)")
    unchanged(batch, channels, lambda: manager.create_batch(v, [], []), "EmptyBatch()")


def test_a_client_whose_deposit_cannot_be_pulled_is_skipped_with_its_run(
    batch: Batch, manager: ASCManager, asc_chain: Chain
) -> None:
    """A client that revoked its approval: its run of channels stays unopened, the other
    clients' open and pay in."""
    a, b = batch.a, batch.b
    channels = [batch.parties(a, batch.p), batch.parties(a, batch.q), batch.parties(b, batch.p)]
    transact(asc_chain, a, batch.token.functions.approve(manager.address, 0))
    before = batch.balances()
    receipt = batch.open(channels)
    skips_only(batch, receipt, channels, {0: "DepositNotReceived(uint256,uint256)",
                                          1: "DepositNotReceived(uint256,uint256)"})
    assert batch.statuses(channels) == [OnChainStatus.NONE, OnChainStatus.NONE,
                                        OnChainStatus.OPEN]
    after = batch.balances()
    assert after[a.address] == before[a.address]
    assert before[b.address] - after[b.address] == DEPOSIT
    assert after[manager.address] - before[manager.address] == DEPOSIT
    transact(asc_chain, a, batch.token.functions.approve(manager.address, 2**256 - 1))
    batch.open(channels[:2])  # skipped, so never used: they open later
    assert batch.statuses(channels[:2]) == [OnChainStatus.OPEN] * 2


def test_a_bad_channel_in_a_close_is_skipped_and_the_others_settle(
    batch: Batch, manager: ASCManager, asc_chain: Chain
) -> None:
    a, b, v = batch.a, batch.b, batch.vault
    closed = batch.parties(b, batch.p)
    batch.open([closed])
    manager.close(v, closed.terms, final(closed, 5))

    def opened() -> tuple[list[Parties], list[tuple[ChannelTerms, SignedState]]]:
        channels = [batch.parties(a, batch.p), batch.parties(b, batch.q),
                    batch.parties(a, batch.q)]
        batch.open(channels)
        return channels, [(c.terms, final(c, 1_000 * (i + 1))) for i, c in enumerate(channels)]

    def with_last(items: list[Any], signed: SignedState) -> list[Any]:
        return [*items[:2], (items[2][0], signed)]

    cases: list[tuple[Callable[[list[Parties], list[Any]], Any], dict[int, str]]] = [
        # the provider's signature over another state; no provider signature at all
        (lambda ch, it: manager.close_batch(v, with_last(it, SignedState(
            final(ch[2], 999).state, b"", it[2][1].provider_signature))),
         {2: "BadSignature(address)"}),
        (lambda ch, it: manager.close_batch(v, with_last(it, SignedState(it[2][1].state, b"",
                                                                         b""))),
         {2: "BadSignature(address)"}),
        (lambda ch, it: manager.close_batch(v, with_last(it, ch[2].signed(
            BalanceState(1, DEPOSIT - 1_000, 1_000)))), {2: "NotFinal()"}),
        (lambda ch, it: manager.close_batch(v, with_last(it, ch[2].signed(
            BalanceState(1, DEPOSIT, 1, True)))), {2: "BalanceMismatch()"}),
        (lambda ch, it: manager.close_batch(v, [*it, (closed.terms, final(closed, 5))]),
         {3: "WrongStatus(bytes32,uint8)"}),
        (lambda ch, it: manager.close_batch(v, [*it, it[1]]), {3: "WrongStatus(bytes32,uint8)"}),
        # p is a party of channel 0 only: anyone may send what both parties approved
        (lambda ch, it: manager.close_batch(batch.p, it), {}),
    ]
    for action, bad in cases:
        channels, items = opened()
        before = batch.balances()
        receipt = action(channels, items)
        skips_only(batch, receipt, channels, bad)
        settled = [i for i in range(3) if i not in bad]
        assert [s == OnChainStatus.CLOSED for s in batch.statuses(channels)] == [
            i in settled for i in range(3)]
        after = batch.balances()
        paid = {i: 1_000 * (i + 1) for i in settled}
        assert after[batch.p.address] - before[batch.p.address] == paid.get(0, 0)
        assert after[batch.q.address] - before[batch.q.address] == paid.get(1, 0) + paid.get(2, 0)
        assert before[manager.address] - after[manager.address] == DEPOSIT * len(settled)
        assert sum(after.values()) == sum(before.values())
    channels, items = opened()
    nobody = fresh_account(asc_chain)
    unsigned = [(t, SignedState(s.state, b"", s.provider_signature)) for t, s in items]
    receipt = manager.close_batch(nobody, unsigned)  # a stranger needs both approvals
    skips_only(batch, receipt, channels, dict.fromkeys(range(3), "BadSignature(address)"))
    assert batch.statuses(channels) == [OnChainStatus.OPEN] * 3
    functions = manager.contract.functions
    states = [s.state.as_tuple() for _, s in items]
    vault_sigs = [s.vault_signature for _, s in items]
    provider_sigs = [s.provider_signature for _, s in items]

    def raw(states: list[Any], vault_sigs: list[bytes], provider_sigs: list[bytes]) -> Any:
        call = functions.closeASCBatch([terms_tuple(t) for t, _ in items], states, vault_sigs,
                                       provider_sigs)
        return transact(asc_chain, v, call)

    for action in (lambda: raw(states[:2], vault_sigs, provider_sigs),
                   lambda: raw(states, vault_sigs[:2], provider_sigs),
                   lambda: raw(states, vault_sigs, [*provider_sigs, b""])):
        unchanged(batch, channels, action, "LengthMismatch(uint256,uint256)")
    unchanged(batch, channels, lambda: manager.close_batch(v, []), "EmptyBatch()")


def test_the_calldata_hashes_refuse_dirty_words(batch: Batch, manager: ASCManager) -> None:
    """``channelId`` and ``stateDigest`` hash calldata words directly; like the ABI decoder,
    they refuse an address with dirty upper bits or a bool that is not 0 or 1."""
    c = batch.parties(batch.a, batch.p)
    functions = manager.contract.functions
    w3 = batch.chain.w3
    data = bytes.fromhex(functions.channelId(terms_tuple(c.terms))._encode_transaction_data()[2:])
    assert w3.eth.call({"to": manager.address, "data": data}) == c.cid
    for word in range(3):  # client, vault, provider
        dirty = bytearray(data)
        dirty[4 + 32 * word] = 1
        with pytest.raises(Exception, match="revert"):
            w3.eth.call({"to": manager.address, "data": bytes(dirty)})
    state = BalanceState(1, 2, 3, True)
    data = bytes.fromhex(
        functions.stateDigest(c.cid, state.as_tuple())._encode_transaction_data()[2:]
    )
    assert w3.eth.call({"to": manager.address, "data": data}) == state.digest(manager.domain, c.cid)
    dirty = bytearray(data)
    dirty[-1] = 2
    with pytest.raises(Exception, match="revert"):
        w3.eth.call({"to": manager.address, "data": bytes(dirty)})


# --------------------------------------------------------------- reentrancy


@pytest.fixture(scope="module")
def hostile(asc_chain: Chain) -> tuple[Any, ASCManager]:
    token = deploy_contract(asc_chain, asc_chain.accounts[0], "ReentrantToken")
    return token, ASCManager.deploy(asc_chain, asc_chain.accounts[0], token.address, DISPUTE_WINDOW)


def test_a_token_calling_back_during_batch_transfers_finds_the_manager_locked(
    asc_chain: Chain, hostile: tuple[Any, ASCManager]
) -> None:
    token, manager = hostile
    batch = Batch(asc_chain, token, manager)
    channels = [batch.parties(batch.a, batch.p), batch.parties(batch.b, batch.q)]
    terms = [c.terms for c in channels]
    # During the first deposit pull, the token opens the same channels again.
    nested = manager.contract.functions.createASCBatch(
        [terms_tuple(t) for t in terms], batch.consents(channels), [b""] * len(channels)
    )._encode_transaction_data()
    transact(asc_chain, asc_chain.accounts[0], token.functions.arm(manager.address, nested))
    escrow = balance(token, manager.address)
    batch.open(channels)
    assert token.functions.attempted().call() is True
    assert token.functions.reentrySucceeded().call() is False
    assert token.functions.reentryResult().call().hex() == GUARD
    assert balance(token, manager.address) == escrow + 2 * DEPOSIT

    # During the first payout, the token tries to close the same batch again.
    items = [(c.terms, final(c, 250_000)) for c in channels]
    again = manager.contract.functions.closeASCBatch(
        [terms_tuple(t) for t, _ in items],
        [s.state.as_tuple() for _, s in items],
        [s.vault_signature for _, s in items],
        [s.provider_signature for _, s in items],
    )._encode_transaction_data()
    transact(asc_chain, asc_chain.accounts[0], token.functions.arm(manager.address, again))
    before = batch.balances()
    manager.close_batch(batch.vault, items)
    after = batch.balances()
    assert token.functions.reentrySucceeded().call() is False
    assert token.functions.reentryResult().call().hex() == GUARD
    assert after[manager.address] == before[manager.address] - 2 * DEPOSIT
    for who in (batch.a, batch.b):
        assert after[who.address] == before[who.address] + DEPOSIT - 250_000
    for who in (batch.p, batch.q):
        assert after[who.address] == before[who.address] + 250_000
    assert batch.statuses(channels) == [OnChainStatus.CLOSED] * 2
