"""A vault whose key never sends a transaction: it approves by signature, a gas payer sends.

Issue 12: the vault's on-chain address (``Channel.vault``) is the attested key of
its enclave, which signs but never sends; the vault's host pays gas from an
account of its own. So every step the vault must approve takes its plain ECDSA
signature in place of its sending: opening (over the channel id, the digest the
client signs, single, batch and by EIP-3009 authorization), a pool channel's
allowance (an EIP-2612 permit it signs), and starting a force close (its
``A402ForceClose(channelId, version)`` request). In every test here the vault's
account holds no ETH at all, so nothing it approves can have been sent by it,
and every test checks where the tokens went, not just statuses.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import (
    BalanceState,
    ChannelTerms,
    SignedState,
    force_close_digest,
    sign_channel_open,
    sign_state,
)
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, transact
from a402.crypto import EVM
from a402.evm.permit import permit_digest, token_domain_separator

from .helpers import (
    DISPUTE_WINDOW,
    Parties,
    balance,
    fresh_account,
    increase_time,
    reverts_with,
    selector,
)

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000
PAID = 250_000
TOKEN_NAME, TOKEN_VERSION = "USD Coin", "2"


def enclave_vault_parties(
    chain: Chain, token: Any, manager: ASCManager, *, pool: bool = False
) -> Parties:
    """A channel whose vault key has no ETH (it cannot send); the client is funded and, for
    ``pool``, is the vault itself (its tokens, no ETH either)."""
    vault: LocalAccount = Account.create()
    client = vault if pool else fresh_account(chain)
    provider = fresh_account(chain)
    transact(chain, chain.accounts[0], token.functions.mint(client.address, DEPOSIT))
    schnorr = EVM.generate_key()
    terms = ChannelTerms(
        client=client.address, vault=vault.address, provider=provider.address,
        provider_key=schnorr.public_key, deposit=DEPOSIT, salt=os.urandom(32),
    )
    return Parties(chain, token, manager, client, vault, provider, schnorr, terms)


def approved(p: Parties) -> bytes:
    """The client approves the manager and signs its consent to the channel id."""
    transact(p.chain, p.client, p.token.functions.approve(p.manager.address, DEPOSIT))
    return sign_channel_open(p.client_signer, p.manager.domain, p.terms)


def vault_approval(p: Parties, terms: ChannelTerms | None = None) -> bytes:
    return sign_channel_open(p.vault_signer, p.manager.domain, terms or p.terms)


def no_eth(p: Parties) -> None:
    assert p.chain.w3.eth.get_balance(p.vault.address) == 0  # it never sent anything


@pytest.fixture
def gas_payer(asc_chain: Chain) -> LocalAccount:
    """The vault's host account: pays gas, is no party of any channel."""
    return fresh_account(asc_chain)


# --------------------------------------------------------------------- open


def test_a_gas_payer_opens_a_channel_with_the_vaults_signature_and_the_deposit_moves(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    consent = approved(p)
    escrow = balance(usdc, manager.address)
    receipt = manager.create(gas_payer, p.terms, consent, vault_signature=vault_approval(p))
    assert balance(usdc, p.client.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    (event,) = manager.events("ChannelOpened", receipt)
    assert (event["channelId"], event["vault"]) == (p.cid, p.vault.address)
    no_eth(p)


def test_without_the_vaults_signature_no_one_opens_and_no_token_moves(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    consent = approved(p)
    escrow = balance(usdc, manager.address)
    other = dataclasses.replace(p.terms, salt=os.urandom(32))
    # The client sending its own channel is no approval of the vault either.
    for sender in (gas_payer, p.client, p.provider):
        with reverts_with("NotAuthorized()"):
            manager.create(sender, p.terms, consent)
    wrong = {
        "the client's consent": consent,
        "the provider's signature": sign_channel_open(p.provider_signer, manager.domain, p.terms),
        "the vault's, for other terms": vault_approval(p, other),
        "the vault's, tampered": vault_approval(p)[:64] + bytes([vault_approval(p)[64] ^ 1]),
        "the vault's, truncated": vault_approval(p)[:64],
    }
    for what, signature in wrong.items():
        with reverts_with("BadSignature(address)"):
            manager.create(gas_payer, p.terms, consent, vault_signature=signature)
            pytest.fail(what)
    assert balance(usdc, p.client.address) == DEPOSIT
    assert balance(usdc, manager.address) == escrow
    assert manager.channel(p.cid).status is OnChainStatus.NONE


def test_the_vaults_open_signature_is_good_for_one_channel_once(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    transact(asc_chain, p.client, usdc.functions.approve(manager.address, 3 * DEPOSIT))
    transact(asc_chain, asc_chain.accounts[0], usdc.functions.mint(p.client.address, DEPOSIT))
    approval = vault_approval(p)
    manager.create(gas_payer, p.terms, sign_channel_open(p.client_signer, manager.domain, p.terms),
                   vault_signature=approval)
    # Same approval, a second channel the client did consent to: not the vault's choice.
    second = dataclasses.replace(p.terms, salt=os.urandom(32))
    consent = sign_channel_open(p.client_signer, manager.domain, second)
    with reverts_with("BadSignature(address)"):
        manager.create(gas_payer, second, consent, vault_signature=approval)
    # And the first channel again: its id is spent.
    with reverts_with("ChannelExists(bytes32)"):
        manager.create(gas_payer, p.terms, b"", vault_signature=approval)
    assert balance(usdc, p.client.address) == DEPOSIT  # one deposit left, the second one
    assert manager.channel(second.channel_id(manager.domain)).status is OnChainStatus.NONE


def test_a_batch_opens_the_members_the_vault_signed_and_skips_the_others(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    members = [enclave_vault_parties(asc_chain, usdc, manager) for _ in range(4)]
    consents = [approved(m) for m in members]
    approvals = [
        vault_approval(members[0]),
        b"",  # none: NotAuthorized()
        vault_approval(members[0]),  # the vault's, but for member 0: BadSignature(vault)
        vault_approval(members[3]),
    ]
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(
        gas_payer, [m.terms for m in members], consents, vault_signatures=approvals
    )
    assert manager.skipped(receipt) == {
        1: bytes.fromhex(selector("NotAuthorized()")),
        2: bytes.fromhex(selector("BadSignature(address)")) + bytes(12)
        + bytes.fromhex(members[2].vault.address[2:]),
    }
    assert [balance(usdc, m.client.address) for m in members] == [0, DEPOSIT, DEPOSIT, 0]
    assert balance(usdc, manager.address) == escrow + 2 * DEPOSIT
    assert [manager.channel(m.cid).status for m in members] == [
        OnChainStatus.OPEN, OnChainStatus.NONE, OnChainStatus.NONE, OnChainStatus.OPEN]
    # Arrays of different lengths are a malformed batch: nothing happens.
    with reverts_with("LengthMismatch(uint256,uint256)"):
        manager.create_batch(gas_payer, [members[1].terms], [consents[1]], vault_signatures=[])


def test_a_gas_payer_opens_a_wallet_funded_channel_by_eip3009_with_the_vaults_signature(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    now = asc_chain.w3.eth.get_block("latest")["timestamp"]
    auth = manager.sign_receive_authorization(
        p.client, p.terms, token_name=TOKEN_NAME, token_version=TOKEN_VERSION,
        valid_after=0, valid_before=now + 3_600,
    )
    escrow = balance(usdc, manager.address)
    with reverts_with("NotAuthorized()"):
        manager.create_with_authorization(gas_payer, p.terms, auth)
    with reverts_with("BadSignature(address)"):
        manager.create_with_authorization(
            gas_payer, p.terms, auth, sign_channel_open(p.client_signer, manager.domain, p.terms))
    assert usdc.functions.authorizationState(p.client.address, p.cid).call() is False
    assert balance(usdc, p.client.address) == DEPOSIT

    manager.create_with_authorization(gas_payer, p.terms, auth, vault_approval(p))
    assert balance(usdc, p.client.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    no_eth(p)


# ------------------------------------------------------- pool (client == vault)


def test_a_pool_channel_draws_on_the_allowance_the_vault_permitted_by_signature(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    assert p.terms.client == p.terms.vault
    # Without an allowance the pool cannot be drawn on, whoever signed.
    with pytest.raises(TransactionFailed):
        manager.create(gas_payer, p.terms, vault_signature=vault_approval(p))
    deadline = asc_chain.w3.eth.get_block("latest")["timestamp"] + 3_600
    digest = manager.permit_digest(p.vault.address, DEPOSIT, deadline,
                                   token_name=TOKEN_NAME, token_version=TOKEN_VERSION)
    signature = p.vault_signer.sign_digest(digest)
    manager.permit(gas_payer, p.vault.address, DEPOSIT, deadline, signature)
    assert usdc.functions.allowance(p.vault.address, manager.address).call() == DEPOSIT

    escrow = balance(usdc, manager.address)
    with reverts_with("NotAuthorized()"):  # the vault's approval is the consent: needed once
        manager.create(gas_payer, p.terms)
    manager.create(gas_payer, p.terms, vault_signature=vault_approval(p))
    assert balance(usdc, p.vault.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert usdc.functions.allowance(p.vault.address, manager.address).call() == 0
    no_eth(p)


def test_a_pool_batch_opened_by_the_gas_payer_pulls_the_vaults_tokens_once(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    transact(asc_chain, asc_chain.accounts[0], usdc.functions.mint(p.vault.address, DEPOSIT))
    terms = [p.terms, dataclasses.replace(p.terms, salt=os.urandom(32))]
    deadline = asc_chain.w3.eth.get_block("latest")["timestamp"] + 3_600
    digest = manager.permit_digest(p.vault.address, 2 * DEPOSIT, deadline,
                                   token_name=TOKEN_NAME, token_version=TOKEN_VERSION)
    manager.permit(gas_payer, p.vault.address, 2 * DEPOSIT, deadline,
                   p.vault_signer.sign_digest(digest))
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(
        gas_payer, terms, vault_signatures=[vault_approval(p, t) for t in terms])
    assert manager.skipped(receipt) == {}
    assert balance(usdc, p.vault.address) == 0
    assert balance(usdc, manager.address) == escrow + 2 * DEPOSIT


def test_a_pool_channel_opens_by_the_vaults_own_eip3009_authorization_alone(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    now = asc_chain.w3.eth.get_block("latest")["timestamp"]
    auth = manager.sign_receive_authorization(
        p.vault, p.terms, token_name=TOKEN_NAME, token_version=TOKEN_VERSION,
        valid_after=0, valid_before=now + 3_600,
    )
    escrow = balance(usdc, manager.address)
    manager.create_with_authorization(gas_payer, p.terms, auth)  # no vault_signature
    assert balance(usdc, p.vault.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert manager.channel(p.cid).status is OnChainStatus.OPEN


def test_the_permit_digest_is_the_tokens_own(usdc: Any, manager: ASCManager) -> None:
    separator = token_domain_separator(TOKEN_NAME, TOKEN_VERSION, manager.chain.chain_id,
                                       usdc.address)
    assert separator == bytes(usdc.functions.DOMAIN_SEPARATOR().call())
    owner = Account.create().address
    assert manager.permit_digest(owner, 5, 7, token_name=TOKEN_NAME,
                                 token_version=TOKEN_VERSION) == permit_digest(
        token_name=TOKEN_NAME, token_version=TOKEN_VERSION, chain_id=manager.chain.chain_id,
        token=usdc.address, owner=owner, spender=manager.address, value=5, nonce=0, deadline=7)


# --------------------------------------------------------------- force close


def opened(asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount) -> Parties:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    manager.create(gas_payer, p.terms, approved(p), vault_signature=vault_approval(p))
    return p


def request(p: Parties, version: int) -> bytes:
    """The vault's signed request to force-close ``p``'s channel at ``version``."""
    return p.vault_signer.sign_digest(force_close_digest(p.manager.domain, p.cid, version))


def test_the_force_close_digest_is_the_contracts_own(manager: ASCManager) -> None:
    for cid, version in ((bytes(32), 0), (os.urandom(32), 1), (os.urandom(32), 2**64 - 1)):
        assert force_close_digest(manager.domain, cid, version) == manager.force_close_digest(
            cid, version)
    with pytest.raises(ValueError):
        force_close_digest(manager.domain, bytes(31), 0)
    with pytest.raises(ValueError):
        force_close_digest(manager.domain, bytes(32), 2**64)


def test_the_vaults_signed_request_lets_its_gas_payer_start_the_dispute(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = opened(asc_chain, usdc, manager, gas_payer)
    latest = p.signed(BalanceState(1, DEPOSIT - PAID, PAID))
    receipt = manager.init_force_close_for(gas_payer, p.terms, latest, request(p, 1))
    (event,) = manager.events("ForceCloseInitiated", receipt)
    assert (event["version"], event["providerBalance"]) == (1, PAID)
    on_chain = manager.channel(p.cid)
    assert (on_chain.status, on_chain.version) == (OnChainStatus.CLOSING, 1)
    # A request starts one force close: the channel is no longer open.
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.init_force_close_for(gas_payer, p.terms, latest, request(p, 1))

    increase_time(asc_chain, DISPUTE_WINDOW + 1)
    manager.final_force_close(gas_payer, p.terms)
    assert p.payouts() == (DEPOSIT - PAID, PAID)
    no_eth(p)


def test_no_state_signature_can_stand_in_for_the_vaults_force_close_request(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = opened(asc_chain, usdc, manager, gas_payer)
    state = BalanceState(1, DEPOSIT - PAID, PAID)
    latest = p.signed(state)
    stand_ins = {
        "the provider's state signature": latest.provider_signature,
        "the vault's state signature": latest.vault_signature,
        "a request for another version": request(p, 2),
        "the provider signing a request": p.provider_signer.sign_digest(
            force_close_digest(manager.domain, p.cid, 1)),
        "none": b"",
    }
    for what, signature in stand_ins.items():
        with reverts_with("BadSignature(address)"):
            manager.init_force_close_for(gas_payer, p.terms, latest, signature)
            pytest.fail(what)
    # The provider itself cannot send it with its own state signature either.
    with reverts_with("BadSignature(address)"):
        manager.init_force_close_for(p.provider, p.terms, latest, latest.provider_signature)
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    assert p.payouts() == (0, 0)


def test_a_request_for_a_version_does_not_start_a_state_of_it_the_vault_never_signed(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """A host holding the vault's request for version 1 and a provider colluding with it:
    the provider signs another version-1 state paying itself everything. The vault's state
    signature is still required, so the pair cannot start a dispute the vault could not
    challenge (no version above 1 exists for it to answer with)."""
    p = opened(asc_chain, usdc, manager, gas_payer)
    forged = BalanceState(1, 0, DEPOSIT)
    provider_only = sign_state(p.provider_signer, manager.domain, p.cid, forged)
    for vault_signature in (b"", sign_state(p.vault_signer, manager.domain, p.cid,
                                            BalanceState(1, DEPOSIT - PAID, PAID))):
        with reverts_with("BadSignature(address)"):
            manager.init_force_close_for(
                gas_payer, p.terms, SignedState(forged, vault_signature, provider_only),
                request(p, 1))
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    assert p.payouts() == (0, 0)


def test_the_vault_can_request_a_force_close_on_the_opening_state(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = opened(asc_chain, usdc, manager, gas_payer)
    opening = SignedState(p.terms.opening_state(), b"", b"")
    manager.init_force_close_for(gas_payer, p.terms, opening, request(p, 0))
    increase_time(asc_chain, DISPUTE_WINDOW + 1)
    manager.final_force_close(gas_payer, p.terms)
    assert p.payouts() == (DEPOSIT, 0)

