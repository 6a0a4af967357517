"""ASCManager.sol on anvil: every path, who may call it, and conservation.

Conservation is checked exactly in every path that settles: what the client and
the provider receive sums to the deposit, and the manager's escrow drops by
exactly the deposit. Signatures and claims are produced by the real state
machines (:mod:`a402.asc.machine`) wherever the protocol would produce them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import pytest
from eth_account.messages import _hash_eip191_message, encode_typed_data

from a402.asc import (
    BalanceState,
    ChannelTerms,
    CloseReady,
    ForceCloseDue,
    ProviderChannel,
    SignedState,
    VaultChannel,
    sign_channel_open,
    sign_state,
)
from a402.asc_manager import ASCManager, OnChainStatus, terms_tuple
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact
from a402.crypto import (
    EVM,
    answer_hash,
    authorization_digest,
    generate_adaptor,
    payment_message,
    result_hash,
    sign_authorization,
)
from a402.crypto._secp import HALF_N, N

from .helpers import (
    DISPUTE_WINDOW,
    Parties,
    acknowledge,
    authorise,
    balance,
    fresh_account,
    increase_time,
    machines,
    make_parties,
    pay,
    reverts_with,
    selector,
    wire,
)

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000
MakeParties = Callable[..., Parties]


def settle_and_check(p: Parties, action: Callable[[], Any], client: int, provider: int) -> Any:
    """Run a settling transaction; assert exact payouts and that the escrow fell by the deposit."""
    escrow = balance(p.token, p.manager.address)
    client_before, provider_before = p.payouts()
    receipt = action()
    client_after, provider_after = p.payouts()
    assert (client_after - client_before, provider_after - provider_before) == (client, provider)
    assert client + provider == p.terms.deposit
    assert balance(p.token, p.manager.address) == escrow - p.terms.deposit
    assert p.manager.channel(p.cid).status is OnChainStatus.CLOSED
    return receipt


def opened(parties: MakeParties, **kwargs: Any) -> tuple[Parties, VaultChannel, ProviderChannel]:
    p = parties(**kwargs)
    p.open()
    vault, provider = machines(p)
    return p, vault, provider


def final_state(vault: VaultChannel, provider: ProviderChannel) -> SignedState:
    close_ack = provider.receive(wire(vault.close()), now=0).send[0]
    ready = vault.receive(wire(close_ack), now=0).events[0]
    assert isinstance(ready, CloseReady)
    return ready.signed


# ------------------------------------------------------------------ digests


def test_python_and_the_contract_agree_on_ids_and_digests(
    manager: ASCManager, parties: MakeParties
) -> None:
    p = parties()
    functions = manager.contract.functions
    assert functions.domainSeparator().call() == manager.domain.separator
    assert functions.channelId(terms_tuple(p.terms)).call() == p.cid
    for state in (BalanceState(0, DEPOSIT, 0), BalanceState(2**64 - 1, 1, DEPOSIT - 1, True)):
        assert manager.state_digest(p.cid, state) == state.digest(manager.domain, p.cid)
    h = result_hash(b"result")
    m = payment_message(manager.domain, p.cid, 7, 250, h)
    assert functions.paymentMessage(p.cid, 7, 250, h).call() == m
    assert functions.authorizationDigest(m, 250, b"\x01" * 32).call() == authorization_digest(
        manager.domain, m, 250, b"\x01" * 32
    )


def test_the_typed_data_is_what_an_eip712_wallet_signs(
    manager: ASCManager, parties: MakeParties
) -> None:
    """eth-account's independent EIP-712 encoder produces the same digests."""
    p = parties()
    domain = {
        "name": "A402",
        "version": "1",
        "chainId": manager.domain.chain_id,
        "verifyingContract": manager.address,
    }
    channel = encode_typed_data(
        domain_data=domain,
        message_types={
            "A402Channel": [
                {"name": "client", "type": "address"},
                {"name": "vault", "type": "address"},
                {"name": "provider", "type": "address"},
                {"name": "providerKey", "type": "bytes32"},
                {"name": "deposit", "type": "uint256"},
                {"name": "salt", "type": "bytes32"},
            ]
        },
        message_data=dict(
            zip(
                ("client", "vault", "provider", "providerKey", "deposit", "salt"),
                terms_tuple(p.terms),
                strict=True,
            )
        ),
    )
    assert _hash_eip191_message(channel) == p.cid
    state = BalanceState(3, 400, DEPOSIT - 400, True)
    signable = encode_typed_data(
        domain_data=domain,
        message_types={
            "A402ChannelState": [
                {"name": "channelId", "type": "bytes32"},
                {"name": "version", "type": "uint256"},
                {"name": "clientBalance", "type": "uint256"},
                {"name": "providerBalance", "type": "uint256"},
                {"name": "isFinal", "type": "bool"},
            ]
        },
        message_data={
            "channelId": p.cid,
            "version": 3,
            "clientBalance": 400,
            "providerBalance": DEPOSIT - 400,
            "isFinal": True,
        },
    )
    assert _hash_eip191_message(signable) == state.digest(manager.domain, p.cid)


# --------------------------------------------------------------------- open


def test_create_escrows_the_deposit_with_the_clients_consent(
    manager: ASCManager, parties: MakeParties, usdc: Any
) -> None:
    p = parties(deposit=DEPOSIT)
    escrow = balance(usdc, manager.address)
    receipt = p.open()
    assert balance(usdc, p.client.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    (event,) = manager.events("ChannelOpened", receipt)
    assert event["channelId"] == p.cid
    assert (event["client"], event["provider"], event["vault"]) == (
        p.client.address,
        p.provider.address,
        p.vault.address,
    )
    assert event["providerKey"] == p.terms.provider_key
    assert (event["deposit"], event["salt"]) == (DEPOSIT, p.terms.salt)
    assert manager.channel(p.cid).status is OnChainStatus.OPEN


def test_create_needs_the_vault_and_the_clients_consent_to_these_terms(
    manager: ASCManager, parties: MakeParties, usdc: Any, asc_chain: Chain
) -> None:
    p = parties()
    transact(asc_chain, p.client, usdc.functions.approve(manager.address, 10 * DEPOSIT))
    consent = sign_channel_open(p.client_signer, manager.domain, p.terms)
    for sender in (p.provider, p.client, fresh_account(asc_chain)):
        with reverts_with("NotAuthorized()"):
            manager.create(sender, p.terms, consent)
    other_terms = dataclasses.replace(p.terms, salt=os.urandom(32))
    wrong = [
        b"",
        sign_channel_open(p.client_signer, manager.domain, other_terms),  # other terms
        sign_channel_open(p.vault_signer, manager.domain, p.terms),  # not the client
        consent[:64] + bytes([consent[64] ^ 1]),  # tampered
    ]
    for signature in wrong:
        with reverts_with("BadSignature(address)"):
            manager.create(p.vault, p.terms, signature)
    assert balance(usdc, p.client.address) == DEPOSIT
    assert manager.channel(p.cid).status is OnChainStatus.NONE

    manager.create(p.vault, p.terms, consent)
    with reverts_with("ChannelExists(bytes32)"):
        manager.create(p.vault, p.terms, consent)  # the approval is there, the id is spent


def test_invalid_terms_are_refused(manager: ASCManager, parties: MakeParties) -> None:
    p = parties()
    good = list(terms_tuple(p.terms))
    bad = {
        "zero key": (3, b"\x00" * 32),
        "key above (N-1)/2": (3, (HALF_N + 1).to_bytes(32, "big")),
        "zero deposit": (4, 0),
        "deposit of 2^128": (4, 2**128),
        "provider is the client": (2, p.client.address),
    }
    for what, (index, value) in bad.items():
        terms = list(good)
        terms[index] = value
        with reverts_with("InvalidTerms()"):
            transact(p.chain, p.vault, manager.contract.functions.createASC(tuple(terms), b"", b""))
            pytest.fail(what)
    provider_is_vault = list(good)
    provider_is_vault[2] = p.vault.address
    with reverts_with("InvalidTerms()"):
        call = manager.contract.functions.createASC(tuple(provider_is_vault), b"", b"")
        transact(p.chain, p.vault, call)


def test_create_with_an_eip3009_authorization_bound_to_the_channel_id(
    manager: ASCManager, parties: MakeParties, usdc: Any, asc_chain: Chain
) -> None:
    p = parties()
    now = asc_chain.w3.eth.get_block("latest")["timestamp"]
    auth = manager.sign_receive_authorization(
        p.client,
        p.terms,
        token_name="USD Coin",
        token_version="2",
        valid_after=0,
        valid_before=now + 3_600,
    )
    # The client's one signature fixes every term: it does not open a channel with another salt.
    other = dataclasses.replace(p.terms, salt=os.urandom(32))
    with pytest.raises(TransactionFailed, match="invalid signature"):
        manager.create_with_authorization(p.vault, other, auth)
    escrow = balance(usdc, manager.address)
    manager.create_with_authorization(p.vault, p.terms, auth)
    assert balance(usdc, p.client.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert usdc.functions.authorizationState(p.client.address, p.cid).call() is True
    with reverts_with("ChannelExists(bytes32)"):
        manager.create_with_authorization(p.vault, p.terms, auth)


def test_a_client_acting_as_its_own_vault_needs_no_consent_signature(
    manager: ASCManager, parties: MakeParties, usdc: Any, asc_chain: Chain
) -> None:
    p = parties()
    terms = dataclasses.replace(p.terms, vault=p.client.address)
    transact(asc_chain, p.client, usdc.functions.approve(manager.address, DEPOSIT))
    manager.create(p.client, terms, b"")
    assert manager.channel(terms.channel_id(manager.domain)).status is OnChainStatus.OPEN


# -------------------------------------------------------------- cooperative


def test_cooperative_close_pays_the_final_state(parties: MakeParties, manager: ASCManager) -> None:
    p, vault, provider = opened(parties)
    for amount in (100_000, 50_000, 25_000):
        pay(vault, provider, amount, os.urandom(64))
    signed = final_state(vault, provider)
    assert signed.state == BalanceState(4, DEPOSIT - 175_000, 175_000, True)
    receipt = settle_and_check(
        p, lambda: manager.close(p.vault, p.terms, signed), DEPOSIT - 175_000, 175_000
    )
    (event,) = manager.events("ChannelClosed", receipt)
    assert event == {
        "channelId": p.cid,
        "version": 4,
        "clientPayout": DEPOSIT - 175_000,
        "providerPayout": 175_000,
    }


def test_close_needs_a_final_state_approved_by_both_from_a_party(
    parties: MakeParties, manager: ASCManager, asc_chain: Chain
) -> None:
    p, vault, provider = opened(parties)
    pay(vault, provider, 300_000, b"x")
    intermediate = vault.latest_state()
    # The vault replaying an earlier co-signed state to refund the client: not final.
    with reverts_with("NotFinal()"):
        manager.close(p.vault, p.terms, intermediate)
    with reverts_with("NotFinal()"):
        manager.close(p.vault, p.terms, p.signed(p.terms.opening_state()))

    final = BalanceState(2, DEPOSIT - 300_000, 300_000, True)
    both = p.signed(final)
    with reverts_with("BadSignature(address)"):  # the vault alone
        manager.close(p.vault, p.terms, SignedState(final, b"", b""))
    with reverts_with("BadSignature(address)"):  # the provider alone
        manager.close(p.provider, p.terms, SignedState(final, b"", b""))
    with reverts_with("BadSignature(address)"):  # a version-0 final state is not implicit
        manager.close(p.vault, p.terms, SignedState(BalanceState(0, DEPOSIT, 0, True), b"", b""))
    other = BalanceState(2, DEPOSIT - 1, 1, True)
    with reverts_with("BadSignature(address)"):  # signatures over another state
        manager.close(
            p.vault, p.terms, SignedState(other, both.vault_signature, both.provider_signature)
        )
    with reverts_with("BalanceMismatch()"):
        manager.close(p.vault, p.terms, p.signed(BalanceState(2, DEPOSIT, 1, True)))
    with reverts_with("BadSignature(address)"):  # a stranger needs both signatures
        manager.close(fresh_account(asc_chain), p.terms,
                      SignedState(final, b"", both.provider_signature))

    # The vault approves by sending; the client may also submit the co-signed state.
    settle_and_check(
        p,
        lambda: manager.close(p.vault, p.terms, SignedState(final, b"", both.provider_signature)),
        DEPOSIT - 300_000,
        300_000,
    )
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.close(p.client, p.terms, both)


# -------------------------------------------------------- client force-close


def test_client_force_close_a_newer_state_wins_the_dispute(
    parties: MakeParties, manager: ASCManager, asc_chain: Chain
) -> None:
    p, vault, provider = opened(parties)
    pay(vault, provider, 100_000, b"one")
    v1 = vault.latest_state()
    pay(vault, provider, 200_000, b"two")
    v2 = vault.latest_state()
    assert (v1.state.version, v2.state.version) == (1, 2)

    for stranger in (p.provider, fresh_account(asc_chain)):
        with reverts_with("NotAuthorized()"):
            manager.init_force_close(
                stranger, p.terms, SignedState(p.terms.opening_state(), b"", b"")
            )
    # The client claims the opening state: no signatures needed.
    receipt = manager.init_force_close(
        p.client, p.terms, SignedState(p.terms.opening_state(), b"", b"")
    )
    (event,) = manager.events("ForceCloseInitiated", receipt)
    deadline = asc_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"] + DISPUTE_WINDOW
    assert event["deadline"] == deadline
    assert manager.channel(p.cid).status is OnChainStatus.CLOSING
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.init_force_close(p.vault, p.terms, v1)

    # The provider answers with v1 (approving by sending); a watchtower then with v2.
    manager.challenge(p.provider, p.terms, SignedState(v1.state, v1.vault_signature, b""))
    with reverts_with("StaleState(uint256,uint256)"):
        manager.challenge(p.provider, p.terms, v1)
    watchtower = fresh_account(asc_chain)
    with reverts_with("BadSignature(address)"):
        manager.challenge(watchtower, p.terms, SignedState(v2.state, v2.vault_signature, b""))
    receipt = manager.challenge(watchtower, p.terms, v2)
    (event,) = manager.events("ForceCloseChallenged", receipt)
    assert event["version"] == 2
    assert manager.channel(p.cid).deadline == deadline  # challenges do not extend the window
    with reverts_with("StaleState(uint256,uint256)"):
        manager.challenge(p.provider, p.terms, v1)

    with reverts_with("DisputeWindowOpen(uint256)"):
        manager.final_force_close(p.client, p.terms)
    increase_time(asc_chain, DISPUTE_WINDOW)
    with reverts_with("DisputeWindowClosed(uint256)"):
        manager.challenge(p.provider, p.terms, p.signed(BalanceState(3, 1, DEPOSIT - 1)))
    receipt = settle_and_check(
        p, lambda: manager.final_force_close(watchtower, p.terms), DEPOSIT - 300_000, 300_000
    )
    (event,) = manager.events("ForceCloseFinalized", receipt)
    assert (event["version"], event["providerPayout"]) == (2, 300_000)


def test_a_final_state_settles_a_pending_dispute_only_if_newer(
    parties: MakeParties, manager: ASCManager
) -> None:
    p, vault, provider = opened(parties)
    pay(vault, provider, 10_000, b"one")
    manager.init_force_close(p.vault, p.terms, vault.latest_state())
    with reverts_with("StaleState(uint256,uint256)"):
        manager.close(p.vault, p.terms, p.signed(BalanceState(1, DEPOSIT - 10_000, 10_000, True)))
    signed = final_state(vault, provider)
    settle_and_check(
        p, lambda: manager.close(p.provider, p.terms, signed), DEPOSIT - 10_000, 10_000
    )


# ------------------------------------------------------ provider force-close


def test_provider_force_close_publishes_s_and_the_vault_extracts_t(
    parties: MakeParties, manager: ASCManager
) -> None:
    p, vault, provider = opened(parties)
    pay(vault, provider, 100_000, b"first")
    t, adaptor = generate_adaptor()
    result = b'{"answer": 42}' * 50
    reply, _ = authorise(vault, provider, 250_000, result, t, now=100)
    assert provider.poll(now=109).events == ()
    (due,) = provider.poll(now=110).events
    assert isinstance(due, ForceCloseDue)
    assert provider.poll(now=111).events == ()  # signalled once
    claim = due.claim

    receipt = settle_and_check(
        p,
        lambda: manager.force_close(p.provider, p.terms, claim),
        DEPOSIT - 350_000,
        350_000,
    )
    presignature = EVM.presignature_from_bytes(reply.presignature)
    from_calldata = manager.signature_from_calldata(receipt["transactionHash"])
    (from_log,) = manager.signatures_from_logs(receipt)
    for published in (from_calldata, from_log):
        assert (published.channel_id, published.request_id) == (p.cid, 1)
        assert EVM.extract(presignature, published.signature, adaptor) == t
    # The vault's state machine does the same and still gets the result.
    (delivered,) = vault.provider_force_closed(from_log.request_id, from_log.signature).events
    assert (delivered.result, delivered.on_chain) == (result, True)
    (event,) = manager.events("ProviderForceClosed", receipt)
    # The h of m: the result as the answer to the request (``authorise`` sends b"request").
    assert event["resultHash"] == answer_hash(b"request", result_hash(result))
    assert (event["version"], event["amount"]) == (1, 250_000)


def test_a_tampered_or_stale_claim_is_refused(
    parties: MakeParties, manager: ASCManager, asc_chain: Chain
) -> None:
    p, vault, provider = opened(parties)
    # Request 0: keep its claim, then complete it, so state 1 already contains it.
    _, reveal = authorise(vault, provider, 100_000, b"zero", generate_adaptor()[0])
    claim0 = provider.claim()
    acknowledge(vault, provider, reveal)
    authorise(vault, provider, 200_000, b"one", generate_adaptor()[0])
    claim = provider.claim()
    assert (claim.state.version, claim.request_id) == (1, 1)

    m = payment_message(manager.domain, p.cid, claim.request_id, claim.amount, claim.result_hash)
    fresh_signature = EVM.sign(p.schnorr, m)  # valid Schnorr, but not the pre-signed one
    e, s = claim.e, claim.s
    bad_auth = sign_authorization(p.provider_signer, manager.domain, m, claim.amount, e)
    replace = dataclasses.replace
    cases = {
        "InvalidPaymentSignature()": [
            replace(claim, signature=e + ((s + 1) % N).to_bytes(32, "big")),
            replace(claim, signature=bytes([e[0] ^ 1]) + e[1:] + s.to_bytes(32, "big")),
            replace(claim, amount=claim.amount - 1),
            replace(claim, result_hash=result_hash(b"another result")),
            replace(claim, request_id=2),
        ],
        # The provider signs m afresh to be paid without revealing t: σ_U fixes e.
        "BadSignature(address)": [
            replace(claim, signature=fresh_signature),
            replace(claim, authorization=bad_auth),
            replace(claim, state=BalanceState(1, DEPOSIT - 100_001, 100_001)),
        ],
        "PaymentAlreadyIncluded(uint256,uint256)": [
            replace(claim0, state=claim.state, vault_signature=claim.vault_signature)
        ],
        "PaymentExceedsBalance(uint256,uint256)": [replace(claim, amount=DEPOSIT)],
        "BalanceMismatch()": [replace(claim, state=BalanceState(1, DEPOSIT, 100_000))],
    }
    for error, claims in cases.items():
        for bad in claims:
            with reverts_with(error):
                manager.force_close(p.provider, p.terms, bad)
    for sender in (p.vault, p.client, fresh_account(asc_chain)):
        with reverts_with("NotAuthorized()"):
            manager.force_close(sender, p.terms, claim)

    # A provider may build on an older state than the latest; that only costs it.
    older = replace(claim, state=p.terms.opening_state(), vault_signature=b"")
    settle_and_check(
        p, lambda: manager.force_close(p.provider, p.terms, older), DEPOSIT - 200_000, 200_000
    )


def test_the_provider_answers_a_stale_client_force_close_by_claiming(
    parties: MakeParties, manager: ASCManager
) -> None:
    p, vault, provider = opened(parties)
    pay(vault, provider, 100_000, b"one")
    authorise(vault, provider, 50_000, b"two", generate_adaptor()[0])
    opening = SignedState(p.terms.opening_state(), b"", b"")
    manager.init_force_close(p.client, p.terms, opening)
    settle_and_check(
        p,
        lambda: manager.force_close(p.provider, p.terms, provider.claim()),
        DEPOSIT - 150_000,
        150_000,
    )


def test_a_claim_older_than_the_recorded_state_is_refused_and_nothing_is_counted_twice(
    parties: MakeParties, manager: ASCManager, asc_chain: Chain
) -> None:
    p, vault, provider = opened(parties)
    _, reveal = authorise(vault, provider, 100_000, b"zero", generate_adaptor()[0])
    claim = provider.claim()  # state 0 + payment 0
    acknowledge(vault, provider, reveal)  # state 1 = state 0 + payment 0
    manager.init_force_close(p.vault, p.terms, vault.latest_state())
    with reverts_with("StaleState(uint256,uint256)"):
        manager.force_close(p.provider, p.terms, claim)
    increase_time(asc_chain, DISPUTE_WINDOW)
    settle_and_check(
        p, lambda: manager.final_force_close(p.client, p.terms), DEPOSIT - 100_000, 100_000
    )


def test_a_provider_that_never_reveals_is_not_paid(
    parties: MakeParties, manager: ASCManager, asc_chain: Chain
) -> None:
    """PENDING forever: the client force-closes; if the provider lets the window pass, the
    payment is void (abort: the vault has no result, the provider no money)."""
    p, vault, provider = opened(parties)
    pay(vault, provider, 100_000, b"one")
    authorise(vault, provider, 50_000, b"two", generate_adaptor()[0])
    manager.init_force_close(p.vault, p.terms, vault.latest_state())
    increase_time(asc_chain, DISPUTE_WINDOW)
    with reverts_with("DisputeWindowClosed(uint256)"):
        manager.force_close(p.provider, p.terms, provider.claim())
    settle_and_check(
        p, lambda: manager.final_force_close(p.provider, p.terms), DEPOSIT - 100_000, 100_000
    )


def test_whichever_close_lands_first_wins_and_ids_are_never_reused(
    parties: MakeParties, manager: ASCManager
) -> None:
    p, vault, provider = opened(parties)
    _, reveal = authorise(vault, provider, 100_000, b"zero", generate_adaptor()[0])
    claim = provider.claim()
    acknowledge(vault, provider, reveal)
    signed = final_state(vault, provider)
    settle_and_check(p, lambda: manager.close(p.vault, p.terms, signed), DEPOSIT - 100_000, 100_000)
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.force_close(p.provider, p.terms, claim)
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.init_force_close(p.client, p.terms, SignedState(p.terms.opening_state(), b"", b""))
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.final_force_close(p.client, p.terms)
    # Re-opening the same id would let old states replay against a new deposit: refused.
    transact(p.chain, p.chain.accounts[0], p.token.functions.mint(p.client.address, DEPOSIT))
    with reverts_with("ChannelExists(bytes32)"):
        p.open()


# --------------------------------------------------------------- reentrancy


@pytest.fixture(scope="module")
def hostile(asc_chain: Chain) -> tuple[Any, ASCManager]:
    token = deploy_contract(asc_chain, asc_chain.accounts[0], "ReentrantToken")
    return token, ASCManager.deploy(asc_chain, asc_chain.accounts[0], token.address, DISPUTE_WINDOW)


GUARD = selector("ReentrancyGuardReentrantCall()")


def test_a_token_calling_back_during_a_payout_cannot_settle_twice(
    asc_chain: Chain, hostile: tuple[Any, ASCManager]
) -> None:
    token, manager = hostile
    p = make_parties(asc_chain, token, manager, DEPOSIT)
    p.open()
    vault, provider = machines(p)
    pay(vault, provider, 400_000, b"paid")
    manager.init_force_close(p.client, p.terms, vault.latest_state())
    increase_time(asc_chain, DISPUTE_WINDOW)
    # During the first payout the token calls finalForceClose again (anyone may call it).
    again = manager.contract.functions.finalForceClose(
        terms_tuple(p.terms)
    )._encode_transaction_data()
    transact(asc_chain, asc_chain.accounts[0], token.functions.arm(manager.address, again))
    settle_and_check(p, lambda: manager.final_force_close(p.client, p.terms), 600_000, 400_000)
    assert token.functions.attempted().call() is True
    assert token.functions.reentrySucceeded().call() is False
    assert token.functions.reentryResult().call().hex() == GUARD


def test_a_token_calling_back_during_the_deposit_cannot_reenter(
    asc_chain: Chain, hostile: tuple[Any, ASCManager]
) -> None:
    token, manager = hostile
    p = make_parties(asc_chain, token, manager, DEPOSIT)
    q = make_parties(asc_chain, token, manager, DEPOSIT)
    transact(asc_chain, q.client, token.functions.approve(manager.address, DEPOSIT))
    consent = sign_channel_open(q.client_signer, manager.domain, q.terms)
    nested = manager.contract.functions.createASC(
        terms_tuple(q.terms), consent, b""
    )._encode_transaction_data()
    transact(asc_chain, asc_chain.accounts[0], token.functions.arm(manager.address, nested))
    p.open()
    assert token.functions.reentrySucceeded().call() is False
    assert token.functions.reentryResult().call().hex() == GUARD
    assert manager.channel(q.cid).status is OnChainStatus.NONE
    assert balance(token, manager.address) >= DEPOSIT


def test_states_from_one_manager_do_not_verify_on_another(
    asc_chain: Chain, hostile: tuple[Any, ASCManager], parties: MakeParties, manager: ASCManager
) -> None:
    """Domain separation: the same terms on another manager are another channel."""
    _, other = hostile
    p = parties()
    terms: ChannelTerms = p.terms
    assert terms.channel_id(other.domain) != terms.channel_id(manager.domain)
    state = BalanceState(1, 1, DEPOSIT - 1)
    signature = sign_state(p.vault_signer, manager.domain, p.cid, state)
    cid_other = terms.channel_id(other.domain)
    assert other.state_digest(cid_other, state) != manager.state_digest(p.cid, state)
    assert signature != sign_state(p.vault_signer, other.domain, cid_other, state)
