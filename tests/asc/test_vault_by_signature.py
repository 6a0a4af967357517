"""A vault whose key never sends a transaction: it approves by signature, a gas payer sends.

Issue 12: the vault's on-chain address (``Channel.vault``) is the attested key of
its enclave, which signs but never sends; the vault's host pays gas from an
account of its own. So every step the vault must approve takes its plain ECDSA
signature in place of its sending: opening (``A402Open(channelId, deadline)``,
single, batch and by EIP-3009 authorization), a pool channel's allowance (an
EIP-2612 permit it signs), and starting a force close (its
``A402ForceClose(channelId, version, deadline)`` request). The two lapse at
their deadline, so an open or a force close that failed or was withheld cannot
be replayed later by whoever saw it. In every test here the vault's account
holds no ETH at all, so nothing it approves can have been sent by it, and every
test checks where the tokens went, not just statuses.

A client may be a contract wallet (EIP-1271); in a batch its check gets a gas
stipend, so a wallet that burns all the gas it is given cannot make the batch
fail or cost more than that stipend (``contracts/GasBurningWallet.sol``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.exceptions import ContractCustomError
from web3.types import RPCEndpoint

from a402.asc import (
    BalanceState,
    ChannelTerms,
    SignedState,
    expiring_approval,
    force_close_digest,
    open_approval_digest,
    sign_channel_open,
    sign_open_approval,
    sign_state,
)
from a402.asc_manager import ASCManager, OnChainStatus, terms_tuple
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, deploy_contract, transact
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
#: How long the vault's approvals stay good in these tests, unless a test says otherwise.
LIFETIME = 600


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


def now(chain: Chain) -> int:
    """The chain's time: the latest block's timestamp (tests move it, so not the wall clock)."""
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def vault_approval(
    p: Parties, terms: ChannelTerms | None = None, *, deadline: int | None = None
) -> dict[str, Any]:
    """The vault's approval to open ``terms`` (``p``'s by default) as :meth:`ASCManager.create`'s
    keywords: its signature over A402Open(id, deadline), good until ``deadline`` (by default
    ``LIFETIME`` seconds from the chain's now)."""
    deadline = now(p.chain) + LIFETIME if deadline is None else deadline
    signature = sign_open_approval(p.vault_signer, p.manager.domain, terms or p.terms, deadline)
    return {"vault_signature": signature, "vault_deadline": deadline}


def batch_approvals(p: Parties, terms: list[ChannelTerms]) -> dict[str, Any]:
    """The vault's approvals of every member, as :meth:`ASCManager.create_batch`'s keywords."""
    approvals = [vault_approval(p, t) for t in terms]
    return {"vault_signatures": [a["vault_signature"] for a in approvals],
            "vault_deadlines": [a["vault_deadline"] for a in approvals]}


def each_vaults_approval(members: list[Parties]) -> dict[str, Any]:
    """Every member's approval by its own vault, as :meth:`ASCManager.create_batch`'s keywords."""
    approvals = [vault_approval(m) for m in members]
    return {"vault_signatures": [a["vault_signature"] for a in approvals],
            "vault_deadlines": [a["vault_deadline"] for a in approvals]}


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
    receipt = manager.create(gas_payer, p.terms, consent, **vault_approval(p))
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
    deadline = now(asc_chain) + LIFETIME
    good = vault_approval(p, deadline=deadline)["vault_signature"]
    wrong = {
        "the client's consent": consent,
        "the vault's signature over the bare id (no deadline)": sign_channel_open(
            p.vault_signer, manager.domain, p.terms),
        "the provider's signature": sign_open_approval(
            p.provider_signer, manager.domain, p.terms, deadline),
        "the vault's, for other terms": vault_approval(p, other, deadline=deadline)[
            "vault_signature"],
        "the vault's, for another deadline": vault_approval(p, deadline=deadline + 1)[
            "vault_signature"],
        "the vault's, tampered": good[:64] + bytes([good[64] ^ 1]),
        "the vault's, truncated": good[:64],
    }
    for what, signature in wrong.items():
        with reverts_with("BadSignature(address)"):
            manager.create(gas_payer, p.terms, consent, vault_signature=signature,
                           vault_deadline=deadline)
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
                   **approval)
    # Same approval, a second channel the client did consent to: not the vault's choice.
    second = dataclasses.replace(p.terms, salt=os.urandom(32))
    consent = sign_channel_open(p.client_signer, manager.domain, second)
    with reverts_with("BadSignature(address)"):
        manager.create(gas_payer, second, consent, **approval)
    # And the first channel again: its id is spent.
    with reverts_with("ChannelExists(bytes32)"):
        manager.create(gas_payer, p.terms, b"", **approval)
    assert balance(usdc, p.client.address) == DEPOSIT  # one deposit left, the second one
    assert manager.channel(second.channel_id(manager.domain)).status is OnChainStatus.NONE


def test_the_vaults_open_approval_holds_through_its_deadline_and_not_a_second_after(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    late, on_time = (enclave_vault_parties(asc_chain, usdc, manager) for _ in range(2))
    consents = [approved(late), approved(on_time)]
    escrow = balance(usdc, manager.address)
    deadline = now(asc_chain) + 30
    expired = vault_approval(late, deadline=deadline)
    increase_time(asc_chain, 31)
    assert now(asc_chain) > deadline
    with reverts_with("ApprovalExpired(uint256)"):
        manager.create(gas_payer, late.terms, consents[0], **expired)
    # The deadline itself is still good: block.timestamp <= deadline.
    last_second = vault_approval(on_time, deadline=now(asc_chain) + 5)
    asc_chain.w3.provider.make_request(
        RPCEndpoint("evm_setNextBlockTimestamp"), [last_second["vault_deadline"]])
    receipt = manager.create(gas_payer, on_time.terms, consents[1], **last_second)
    mined_at = asc_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert mined_at == last_second["vault_deadline"]
    assert [balance(usdc, p.client.address) for p in (late, on_time)] == [DEPOSIT, 0]
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert manager.channel(late.cid).status is OnChainStatus.NONE
    assert manager.channel(on_time.cid).status is OnChainStatus.OPEN


def test_a_failed_opens_approval_replayed_after_its_deadline_cannot_starve_the_vaults_new_channel(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """The review's F2. A pool open fails (no allowance yet), so its approval is public in the
    failed transaction's calldata. The vault waits out the deadline, sees the id unopened, and
    writes the channel off for good; it then permits exactly one deposit for a new channel. A
    stranger replaying the old approval first gets nothing: it lapsed, and the new channel opens
    with the allowance it was given. (A host that withheld an approval and asked for a new one
    is the same case: the vault re-approves only after the old deadline.)"""
    mev = fresh_account(asc_chain)
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    old = p.terms
    old_approval = vault_approval(p, old, deadline=now(asc_chain) + 60)
    with pytest.raises(TransactionFailed):
        manager.create(gas_payer, old, **old_approval)
    increase_time(asc_chain, 61)
    assert manager.channel(old.channel_id(manager.domain)).status is OnChainStatus.NONE

    new = dataclasses.replace(old, salt=os.urandom(32))
    permit(p, gas_payer, DEPOSIT)
    escrow = balance(usdc, manager.address)
    with reverts_with("ApprovalExpired(uint256)"):
        manager.create(mev, old, **old_approval)
    receipt = manager.create_batch(mev, [old], vault_signatures=[
        old_approval["vault_signature"]], vault_deadlines=[old_approval["vault_deadline"]])
    assert manager.skipped(receipt) == {0: bytes.fromhex(selector("ApprovalExpired(uint256)"))
                                        + old_approval["vault_deadline"].to_bytes(32, "big")}
    manager.create(gas_payer, new, **vault_approval(p, new))
    assert manager.channel(old.channel_id(manager.domain)).status is OnChainStatus.NONE
    assert manager.channel(new.channel_id(manager.domain)).status is OnChainStatus.OPEN
    assert balance(usdc, p.vault.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    no_eth(p)


def test_an_approval_for_one_manager_does_not_open_on_another(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    other = ASCManager.deploy(asc_chain, asc_chain.accounts[0], usdc.address, DISPUTE_WINDOW)
    p = enclave_vault_parties(asc_chain, usdc, other, pool=True)
    permit(p, gas_payer, DEPOSIT)
    # The same terms, the same vault key, the same token: only the manager differs.
    deadline = now(asc_chain) + LIFETIME
    for_manager = sign_open_approval(p.vault_signer, manager.domain, p.terms, deadline)
    with reverts_with("BadSignature(address)"):
        other.create(gas_payer, p.terms, vault_signature=for_manager, vault_deadline=deadline)
    assert balance(usdc, p.vault.address) == DEPOSIT
    assert other.channel(p.cid).status is OnChainStatus.NONE


def test_no_other_signature_of_the_vaults_stands_in_for_its_open_approval(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """A pool vault with an unlimited allowance signs many things; none of them opens."""
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    permit(p, gas_payer, 2**256 - 1)
    deadline = now(asc_chain) + LIFETIME
    signer, domain = p.vault_signer, manager.domain
    stand_ins = {
        "its opening-state signature": sign_state(signer, domain, p.cid, p.terms.opening_state()),
        "a force-close request": signer.sign_digest(
            force_close_digest(domain, p.cid, 0, deadline)),
        "a signature over the bare channel id": sign_channel_open(signer, domain, p.terms),
        "a withdrawal order": signer.sign_digest(bytes(manager.contract.functions.withdrawalDigest(
            p.vault.address, p.vault.address, DEPOSIT, 0, deadline).call())),
    }
    for what, signature in stand_ins.items():
        with reverts_with("BadSignature(address)"):
            manager.create(gas_payer, p.terms, vault_signature=signature, vault_deadline=deadline)
            pytest.fail(what)
    assert balance(usdc, p.vault.address) == DEPOSIT
    assert manager.channel(p.cid).status is OnChainStatus.NONE


def test_a_batch_opens_the_members_the_vault_signed_and_skips_the_others(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    members = [enclave_vault_parties(asc_chain, usdc, manager) for _ in range(5)]
    consents = [approved(m) for m in members]
    lapsed = now(asc_chain) + 1
    approvals = [
        vault_approval(members[0]),
        {"vault_signature": b"", "vault_deadline": 0},  # none: NotAuthorized()
        vault_approval(members[0]),  # the vault's, but for member 0: BadSignature(vault)
        vault_approval(members[3]),
        vault_approval(members[4], deadline=lapsed),  # ApprovalExpired(lapsed)
    ]
    increase_time(asc_chain, 2)
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(
        gas_payer, [m.terms for m in members], consents,
        vault_signatures=[a["vault_signature"] for a in approvals],
        vault_deadlines=[a["vault_deadline"] for a in approvals],
    )
    assert manager.skipped(receipt) == {
        1: bytes.fromhex(selector("NotAuthorized()")),
        2: bytes.fromhex(selector("BadSignature(address)")) + bytes(12)
        + bytes.fromhex(members[2].vault.address[2:]),
        4: bytes.fromhex(selector("ApprovalExpired(uint256)")) + lapsed.to_bytes(32, "big"),
    }
    assert [balance(usdc, m.client.address) for m in members] == [
        0, DEPOSIT, DEPOSIT, 0, DEPOSIT]
    assert balance(usdc, manager.address) == escrow + 2 * DEPOSIT
    assert [manager.channel(m.cid).status for m in members] == [
        OnChainStatus.OPEN, OnChainStatus.NONE, OnChainStatus.NONE, OnChainStatus.OPEN,
        OnChainStatus.NONE]
    # Arrays of different lengths are a malformed batch: nothing happens.
    with reverts_with("LengthMismatch(uint256,uint256)"):
        manager.create_batch(gas_payer, [members[1].terms], [consents[1]], vault_signatures=[])
    with pytest.raises(ValueError, match="deadline"):
        manager.create_batch(gas_payer, [members[1].terms], [consents[1]],
                             vault_signatures=[b""], vault_deadlines=[])


def test_a_gas_payer_opens_a_wallet_funded_channel_by_eip3009_with_the_vaults_signature(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    auth = manager.sign_receive_authorization(
        p.client, p.terms, token_name=TOKEN_NAME, token_version=TOKEN_VERSION,
        valid_after=0, valid_before=now(asc_chain) + 3_600,
    )
    escrow = balance(usdc, manager.address)
    with reverts_with("NotAuthorized()"):
        manager.create_with_authorization(gas_payer, p.terms, auth)
    with reverts_with("BadSignature(address)"):
        manager.create_with_authorization(
            gas_payer, p.terms, auth, sign_channel_open(p.client_signer, manager.domain, p.terms),
            now(asc_chain) + LIFETIME)
    expired = vault_approval(p, deadline=now(asc_chain))
    increase_time(asc_chain, 1)
    with reverts_with("ApprovalExpired(uint256)"):
        manager.create_with_authorization(gas_payer, p.terms, auth, **expired)
    assert usdc.functions.authorizationState(p.client.address, p.cid).call() is False
    assert balance(usdc, p.client.address) == DEPOSIT

    manager.create_with_authorization(gas_payer, p.terms, auth, **vault_approval(p))
    assert balance(usdc, p.client.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    no_eth(p)


# ------------------------------------------------------- pool (client == vault)


def permit(p: Parties, gas_payer: LocalAccount, value: int) -> None:
    """The vault permits the manager to pull ``value`` of its pool, by signature."""
    deadline = now(p.chain) + 3_600
    digest = p.manager.permit_digest(p.vault.address, value, deadline,
                                     token_name=TOKEN_NAME, token_version=TOKEN_VERSION)
    p.manager.permit(gas_payer, p.vault.address, value, deadline,
                     p.vault_signer.sign_digest(digest))


def test_a_pool_channel_draws_on_the_allowance_the_vault_permitted_by_signature(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    assert p.terms.client == p.terms.vault
    # Without an allowance the pool cannot be drawn on, whoever signed.
    with pytest.raises(TransactionFailed):
        manager.create(gas_payer, p.terms, **vault_approval(p))
    permit(p, gas_payer, DEPOSIT)
    assert usdc.functions.allowance(p.vault.address, manager.address).call() == DEPOSIT

    escrow = balance(usdc, manager.address)
    with reverts_with("NotAuthorized()"):  # the vault's approval is the consent: needed once
        manager.create(gas_payer, p.terms)
    manager.create(gas_payer, p.terms, **vault_approval(p))
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
    permit(p, gas_payer, 2 * DEPOSIT)
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(gas_payer, terms, **batch_approvals(p, terms))
    assert manager.skipped(receipt) == {}
    assert balance(usdc, p.vault.address) == 0
    assert balance(usdc, manager.address) == escrow + 2 * DEPOSIT


def test_a_pool_batch_with_one_member_the_vault_never_approved_pulls_only_the_approved_deposits(
    asc_chain: Chain, usdc: Any, manager: ASCManager
) -> None:
    """An attacker sends a batch against a pool with an unlimited allowance: two members the
    vault approved, and between them terms paying the attacker, carrying the vault's approval
    of another member. Only the two approved deposits leave the pool."""
    attacker = fresh_account(asc_chain)
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    transact(asc_chain, asc_chain.accounts[0], usdc.functions.mint(p.vault.address, 4 * DEPOSIT))
    permit(p, attacker, 2**256 - 1)
    evil = dataclasses.replace(p.terms, provider=bytes.fromhex(attacker.address[2:]),
                               salt=os.urandom(32))
    terms = [p.terms, evil, dataclasses.replace(p.terms, salt=os.urandom(32))]
    approvals = batch_approvals(p, [terms[0], terms[0], terms[2]])
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(attacker, terms, **approvals)
    assert manager.skipped(receipt) == {
        1: bytes.fromhex(selector("BadSignature(address)")) + bytes(12) + p.terms.vault}
    assert balance(usdc, p.vault.address) == 3 * DEPOSIT
    assert balance(usdc, manager.address) == escrow + 2 * DEPOSIT
    assert manager.channel(evil.channel_id(manager.domain)).status is OnChainStatus.NONE


def test_an_attacker_naming_itself_vault_cannot_draw_on_the_pool(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """Terms with the pool as client and the attacker as vault (and sender, so the vault
    approves): the pool is then a client like any other and must consent to the id, which
    no signature of the pool's vault key does."""
    attacker = fresh_account(asc_chain)
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    permit(p, gas_payer, 2**256 - 1)
    evil = dataclasses.replace(p.terms, vault=bytes.fromhex(attacker.address[2:]))
    approval = vault_approval(p, evil)  # the pool vault's open approval of these very terms
    for consent in (b"", approval["vault_signature"], vault_approval(p)["vault_signature"]):
        with reverts_with("BadSignature(address)"):
            manager.create(attacker, evil, client_signature=consent)
    assert balance(usdc, p.vault.address) == DEPOSIT
    assert manager.channel(evil.channel_id(manager.domain)).status is OnChainStatus.NONE


def test_a_pool_channel_opens_by_the_vaults_own_eip3009_authorization_alone(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = enclave_vault_parties(asc_chain, usdc, manager, pool=True)
    auth = manager.sign_receive_authorization(
        p.vault, p.terms, token_name=TOKEN_NAME, token_version=TOKEN_VERSION,
        valid_after=0, valid_before=now(asc_chain) + 3_600,
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


# ---------------------------------------------------- contract-wallet clients

#: ``ASCManager.CONSENT_CHECK_GAS``: what a client wallet's check gets in a batch.
STIPEND = 200_000
BURNS_EVERYTHING = 2**256 - 1


def wallet_parties(
    asc_chain: Chain, usdc: Any, manager: ASCManager, burn: int
) -> tuple[Parties, str]:
    """A channel whose client is a :file:`contracts/GasBurningWallet.sol` owned by a fresh
    key, funded and with an allowance for the manager: its EIP-1271 check burns ``burn``
    gas, then accepts the owner's signature. Returns the parties (``client`` is the owner's
    key, ``terms.client`` the wallet) and the wallet's address."""
    p = enclave_vault_parties(asc_chain, usdc, manager)
    wallet = deploy_contract(asc_chain, asc_chain.accounts[0], "GasBurningWallet",
                             p.client.address, burn)
    transact(asc_chain, asc_chain.accounts[0], usdc.functions.mint(wallet.address, DEPOSIT))
    transact(asc_chain, p.client, wallet.functions.approve(usdc.address, manager.address, DEPOSIT))
    p.terms = dataclasses.replace(p.terms, client=bytes.fromhex(wallet.address[2:]))
    return p, wallet.address


def test_a_client_wallet_that_burns_all_its_gas_is_skipped_and_the_batch_goes_through(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """The review's F4: two hostile wallets in one batch used to burn all the gas forwarded to
    them, so no gas limit got the batch through. Each now burns its stipend and is skipped."""
    hostile = [wallet_parties(asc_chain, usdc, manager, BURNS_EVERYTHING) for _ in range(2)]
    good = enclave_vault_parties(asc_chain, usdc, manager)
    members = [p for p, _ in hostile] + [good]
    consents = [sign_channel_open(p.client_signer, manager.domain, p.terms) for p, _ in hostile]
    consents.append(approved(good))
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(gas_payer, [m.terms for m in members], consents,
                                   **each_vaults_approval(members))
    assert manager.skipped(receipt) == {
        i: bytes.fromhex(selector("BadSignature(address)")) + bytes(12) + bytes.fromhex(w[2:])
        for i, (_, w) in enumerate(hostile)}
    assert [balance(usdc, w) for _, w in hostile] == [DEPOSIT, DEPOSIT]
    assert balance(usdc, good.client.address) == 0
    assert balance(usdc, manager.address) == escrow + DEPOSIT
    assert manager.channel(good.cid).status is OnChainStatus.OPEN
    # Each hostile member cost the gas payer its stipend, not the block.
    assert receipt["gasUsed"] < 2 * STIPEND + 200_000


def test_a_client_wallet_within_the_stipend_opens_in_a_batch_and_a_costlier_one_opens_alone(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    cheap, _ = wallet_parties(asc_chain, usdc, manager, STIPEND // 2)
    costly, costly_wallet = wallet_parties(asc_chain, usdc, manager, STIPEND + 50_000)
    members = [cheap, costly]
    consents = [sign_channel_open(m.client_signer, manager.domain, m.terms) for m in members]
    escrow = balance(usdc, manager.address)
    receipt = manager.create_batch(gas_payer, [m.terms for m in members], consents,
                                   **each_vaults_approval(members))
    assert set(manager.skipped(receipt)) == {1}
    assert manager.channel(cheap.cid).status is OnChainStatus.OPEN
    assert balance(usdc, costly_wallet) == DEPOSIT
    # createASC gives the wallet all the gas there is: the same consent opens it.
    manager.create(gas_payer, costly.terms, consents[1], **vault_approval(costly))
    assert balance(usdc, costly_wallet) == 0
    assert balance(usdc, manager.address) == escrow + 2 * DEPOSIT
    assert manager.channel(costly.cid).status is OnChainStatus.OPEN


def test_a_batch_without_gas_for_a_wallets_whole_stipend_reverts_instead_of_skipping_it(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """Else a gas limit just short of the stipend (one a gas estimate could find) would make a
    good wallet's check run out of gas and its member be skipped."""
    p, wallet = wallet_parties(asc_chain, usdc, manager, 10_000)
    consent = sign_channel_open(p.client_signer, manager.domain, p.terms)
    approval = vault_approval(p)
    call = manager.contract.functions.createASCBatch(
        [terms_tuple(p.terms)], [consent],
        [expiring_approval(approval["vault_signature"], approval["vault_deadline"])])
    with pytest.raises(ContractCustomError, match=selector("InsufficientGas()")):
        call.call({"from": gas_payer.address, "gas": 150_000})
    assert call.call({"from": gas_payer.address}) == [p.cid]  # with gas enough, it opens
    assert balance(usdc, wallet) == DEPOSIT


# --------------------------------------------------------------- force close


def opened(asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount) -> Parties:
    p = enclave_vault_parties(asc_chain, usdc, manager)
    manager.create(gas_payer, p.terms, approved(p), **vault_approval(p))
    return p


def request(p: Parties, version: int, *, deadline: int | None = None) -> dict[str, Any]:
    """The vault's signed request to force-close ``p``'s channel at ``version``, as
    :meth:`ASCManager.init_force_close_for`'s last arguments (good for ``LIFETIME`` s)."""
    deadline = now(p.chain) + LIFETIME if deadline is None else deadline
    digest = force_close_digest(p.manager.domain, p.cid, version, deadline)
    return {"vault_signature": p.vault_signer.sign_digest(digest), "deadline": deadline}


def test_the_open_approval_and_force_close_digests_are_the_contracts_own(
    manager: ASCManager,
) -> None:
    for cid, version, deadline in ((bytes(32), 0, 0), (os.urandom(32), 1, 1_700_000_000),
                                   (os.urandom(32), 2**64 - 1, 2**256 - 1)):
        assert force_close_digest(manager.domain, cid, version, deadline) == \
            manager.force_close_digest(cid, version, deadline)
        assert open_approval_digest(manager.domain, cid, deadline) == \
            manager.open_approval_digest(cid, deadline)
    for bad in ((bytes(31), 0, 0), (bytes(32), 2**64, 0), (bytes(32), 0, 2**256),
                (bytes(32), 0, -1)):
        with pytest.raises(ValueError):
            force_close_digest(manager.domain, *bad)
    for cid, deadline in ((bytes(31), 0), (bytes(32), 2**256), (bytes(32), -1)):
        with pytest.raises(ValueError):
            open_approval_digest(manager.domain, cid, deadline)
    # The types are the contract's.
    assert open_approval_digest(manager.domain, bytes(32), 5) != force_close_digest(
        manager.domain, bytes(32), 5, 5)
    assert expiring_approval(bytes(65), 7) == bytes(65) + (7).to_bytes(32, "big")
    with pytest.raises(ValueError):
        expiring_approval(bytes(64), 7)


def test_the_vaults_signed_request_lets_its_gas_payer_start_the_dispute(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = opened(asc_chain, usdc, manager, gas_payer)
    latest = p.signed(BalanceState(1, DEPOSIT - PAID, PAID))
    receipt = manager.init_force_close_for(gas_payer, p.terms, latest, **request(p, 1))
    (event,) = manager.events("ForceCloseInitiated", receipt)
    assert (event["version"], event["providerBalance"]) == (1, PAID)
    on_chain = manager.channel(p.cid)
    assert (on_chain.status, on_chain.version) == (OnChainStatus.CLOSING, 1)
    # A request starts one force close: the channel is no longer open.
    with reverts_with("WrongStatus(bytes32,uint8)"):
        manager.init_force_close_for(gas_payer, p.terms, latest, **request(p, 1))

    increase_time(asc_chain, DISPUTE_WINDOW + 1)
    manager.final_force_close(gas_payer, p.terms)
    assert p.payouts() == (DEPOSIT - PAID, PAID)
    no_eth(p)


def test_an_expired_force_close_request_is_refused_and_the_channel_stays_open(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    """A request that failed or was withheld cannot end, later, a channel the vault went on
    using: after its deadline nobody can send it."""
    p = opened(asc_chain, usdc, manager, gas_payer)
    latest = p.signed(BalanceState(1, DEPOSIT - PAID, PAID))
    withheld = request(p, 1, deadline=now(asc_chain) + 60)
    increase_time(asc_chain, 61)
    with reverts_with("ApprovalExpired(uint256)"):
        manager.init_force_close_for(gas_payer, p.terms, latest, **withheld)
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    assert p.payouts() == (0, 0)
    # A fresh request from the vault still works.
    manager.init_force_close_for(gas_payer, p.terms, latest, **request(p, 1))
    assert manager.channel(p.cid).status is OnChainStatus.CLOSING


def test_no_state_signature_can_stand_in_for_the_vaults_force_close_request(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = opened(asc_chain, usdc, manager, gas_payer)
    other = opened(asc_chain, usdc, manager, gas_payer)
    state = BalanceState(1, DEPOSIT - PAID, PAID)
    latest = p.signed(state)
    deadline = now(asc_chain) + LIFETIME
    stand_ins = {
        "the provider's state signature": latest.provider_signature,
        "the vault's state signature": latest.vault_signature,
        "a request for another version": request(p, 2, deadline=deadline)["vault_signature"],
        "a request with another deadline": request(p, 1, deadline=deadline + 1)[
            "vault_signature"],
        "a request for another channel of the vault's": request(other, 1, deadline=deadline)[
            "vault_signature"],
        "the vault's open approval": vault_approval(p, deadline=deadline)["vault_signature"],
        "the provider signing a request": p.provider_signer.sign_digest(
            force_close_digest(manager.domain, p.cid, 1, deadline)),
        "none": b"",
    }
    for what, signature in stand_ins.items():
        with reverts_with("BadSignature(address)"):
            manager.init_force_close_for(gas_payer, p.terms, latest, signature, deadline=deadline)
            pytest.fail(what)
    # The provider itself cannot send it with its own state signature either.
    with reverts_with("BadSignature(address)"):
        manager.init_force_close_for(p.provider, p.terms, latest, latest.provider_signature,
                                     deadline=deadline)
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    assert manager.channel(other.cid).status is OnChainStatus.OPEN
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
                **request(p, 1))
    assert manager.channel(p.cid).status is OnChainStatus.OPEN
    assert p.payouts() == (0, 0)


def test_the_vault_can_request_a_force_close_on_the_opening_state(
    asc_chain: Chain, usdc: Any, manager: ASCManager, gas_payer: LocalAccount
) -> None:
    p = opened(asc_chain, usdc, manager, gas_payer)
    opening = SignedState(p.terms.opening_state(), b"", b"")
    manager.init_force_close_for(gas_payer, p.terms, opening, **request(p, 0))
    increase_time(asc_chain, DISPUTE_WINDOW + 1)
    manager.final_force_close(gas_payer, p.terms)
    assert p.payouts() == (DEPOSIT, 0)
