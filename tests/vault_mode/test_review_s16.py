"""Adversarial review, session 16: pulled deposits by EIP-3009 ``receiveWithAuthorization``.

Each test plays one attack on anvil against the real ``A402Vault``, TestUSDC, the vault
enclave's ledger and the vault-mode host service, and asserts token balances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.chain.node import Chain, start_anvil
from a402.chain.rpc import RpcError
from a402.chain.tx import deploy_contract, transact
from a402.vault.mode import VaultModeError
from a402.vault_accounts import MAX_PULLS

from .accounts_setup import PRICE
from .helpers import SETTLE_WINDOW, balance, funded, increase_time
from .test_service import Harness

pytestmark = pytest.mark.anvil

#: EIP-7825 (Osaka, on Ethereum mainnet since Fusaka): no transaction may ask for more gas.
TX_GAS_CAP = 2**24


@pytest.fixture(scope="module")
def capped_chain() -> Iterator[Chain]:
    """A chain enforcing EIP-7825's per-transaction gas cap (and EIP-7702)."""
    with start_anvil(accounts=4, extra_args=["--enable-tx-gas-limit"]) as chain:
        yield chain


def _delegate(chain: Chain, keys: list[LocalAccount], code: str) -> None:
    """Each key delegates its account's code to ``code`` (EIP-7702), one type-4 transaction
    sent by someone else (the keys hold no ETH)."""
    sender = chain.accounts[0]
    auths = [k.sign_authorization({"chainId": chain.chain_id, "address": code, "nonce": 0})
             for k in keys]
    w3 = chain.w3
    base = w3.eth.get_block("latest").get("baseFeePerGas", 0)
    tx = {"type": 4, "chainId": chain.chain_id, "nonce": w3.eth.get_transaction_count(
        sender.address), "to": sender.address, "value": 0, "data": b"",
        "gas": 30_000 * (len(keys) + 1), "maxFeePerGas": 2 * base + 10**9,
        "maxPriorityFeePerGas": 10**9, "authorizationList": auths}
    raw = sender.sign_transaction(tx).raw_transaction
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    assert receipt["status"] == 1
    for k in keys:
        assert w3.eth.get_code(k.address)  # 0xef0100 ‖ code


def _brick(h: Harness, chain: Chain, usdc: Any, keys: int = 70) -> list[LocalAccount]:
    """``keys`` keys, each holding 1 unit and no ETH, ask for a 1-unit pull each and sign a
    real authorization for it (the host takes a plain key's only), and only then delegate
    their code (EIP-7702, one type-4 transaction someone else sends) to a contract whose
    ``isValidSignature`` burns all the gas it gets: the token now runs that check instead of
    ``ecrecover``, so each of their pulls costs a settlement the whole ``PULL_GAS`` and is
    skipped."""
    deployer = chain.accounts[0]
    burner = deploy_contract(chain, deployer, "GasBurningWallet", deployer.address, 2**256 - 1)
    attackers = [Account.create() for _ in range(keys)]
    for a in attackers:
        transact(chain, deployer, usdc.functions.mint(a.address, 1))
        asked = h.service.prepare_pull(a.address, 1)
        pull = int(asked["pull"])
        h.service.authorize_pull(a.address, pull, h.contract.sign_pull(
            a, a.address, 1, pull, int(asked["deadline"]), h.service.accounts.ledger))
    _delegate(chain, attackers, burner.address)
    return attackers


def _usdc(chain: Chain) -> Any:
    deployer = chain.accounts[0]
    return deploy_contract(chain, deployer, "TestUSDC", "USD Coin", "USDC", "2",
                           deployer.address)


def _alice_pulls(h: Harness, chain: Chain, usdc: Any) -> tuple[LocalAccount, int]:
    """Alice, honest, holding 5,000 and no ETH, asks for a pull of all of it and signs."""
    alice = funded(chain, usdc, 5_000, eth=0)
    asked = h.service.prepare_pull(alice.address, 5_000)
    pull = int(asked["pull"])
    h.service.authorize_pull(alice.address, pull, h.contract.sign_pull(
        alice, alice.address, 5_000, pull, int(asked["deadline"]), h.service.accounts.ledger))
    return alice, pull


def test_a_key_with_code_is_refused_a_pull_before_the_vault_keeps_anything(
    capped_chain: Chain, tmp_path: Path
) -> None:
    """S16-1: a key delegated by EIP-7702 (or any contract wallet) is refused a pull when
    it asks (``pull_from_contract``): the token would run its code, at the vault's gas."""
    usdc = _usdc(capped_chain)
    h = Harness(capped_chain, usdc, tmp_path)
    burner = deploy_contract(capped_chain, capped_chain.accounts[0], "GasBurningWallet",
                             capped_chain.accounts[0].address, 2**256 - 1)
    mallory = funded(capped_chain, usdc, 1_000, eth=0)
    _delegate(capped_chain, [mallory], burner.address)
    with pytest.raises(VaultModeError) as refused:
        h.service.prepare_pull(mallory.address, 1_000)
    assert (refused.value.status, refused.value.reason) == (400, "pull_from_contract")
    assert h.service.accounts.pulling(mallory.address) == (0, 0)
    assert not h.service.accounts.pulls_due


def test_pulls_from_keys_delegated_to_gas_burning_code_after_asking_never_stop_a_settlement(
    capped_chain: Chain, tmp_path: Path
) -> None:
    """S16-1. Seventy keys ask for pulls as plain keys, then delegate their code to a
    contract that burns all the gas it gets (:func:`_brick`); Alice asks for hers. Each
    settlement makes at most ``MAX_PULLS`` pulls, so even one full of such keys costs less
    than a transaction may carry (EIP-7825: 2^24; before the fix all 71 rode in one, over
    it, and it never landed, nor any after it). Every settlement lands; the attackers' pulls
    are skipped (their unit stays theirs), Alice's is made."""
    usdc = _usdc(capped_chain)
    h = Harness(capped_chain, usdc, tmp_path)
    attackers = _brick(h, capped_chain, usdc)
    alice, pull = _alice_pulls(h, capped_chain, usdc)
    for _ in range(6):
        for landed in h.service.settle_now():
            receipt = capped_chain.w3.eth.get_transaction_receipt(landed.tx_hash)
            assert receipt["gasUsed"] < TX_GAS_CAP // 2
        if h.contract.pulled(pull):
            break
    assert h.contract.last_epoch() == h.service.accounts.epoch >= 3
    assert len(attackers) + 1 > MAX_PULLS * 2
    assert balance(usdc, alice.address) == 0 and balance(usdc, h.contract.address) == 5_000
    assert all(balance(usdc, a.address) == 1 for a in attackers)


def test_a_settlement_that_cannot_land_does_not_stop_the_watchtower_answering_a_stale_exit(
    capped_chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S16-2. A client deposits 10,000 and keeps that statement, then pays a provider
    2,000. The node now refuses every settlement the host sends (an ``RpcError``, which is
    not what ``_land_quietly`` catches: a settlement over the node's gas cap, as S16-1 made
    one, or the operator's key out of ETH), and the client exits with the stale statement.
    Before the fix the watchtower, which ran after landing in the same round, never
    answered, and the exit paid 10,000 (the provider's 2,000 in no pool). Now it answers
    every round whatever landing did: the exit pays 8,000."""
    usdc = _usdc(capped_chain)
    h = Harness(capped_chain, usdc, tmp_path)
    client = funded(capped_chain, usdc)
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()
    stale = h.service.statement(client.address)
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    for i in range(2):
        h.pay(cid, side, client, f"s{i}")
    h.service.close(cid)
    assert h.service.balance(client.address)["free"] == "8000"
    h.contract.init_force_settle(client, stale.statement, stale.signature)

    def refused() -> None:
        raise RpcError("the node refused the settlement")
    monkeypatch.setattr(h.service, "land", refused)
    for _ in range(3):
        with pytest.raises(RpcError):  # the settlement cannot land
            h.service.tick()
    assert h.contract.last_epoch() == 1
    latest = h.service.statement(client.address).statement.nonce
    assert [a.answered_nonce for a in h.service.answers if a.tx_hash] == [latest]
    assert h.contract.force_settle(client.address).balance == 8_000
    increase_time(capped_chain, SETTLE_WINDOW)
    h.contract.final_force_settle(client, client.address)
    assert h.paid_to(client.address) == 8_000
    assert balance(usdc, h.contract.address) == 2_000  # the provider's


def test_deposit_refuses_a_vault_whose_info_or_a402vault_is_not_the_one_expected(
    vault_chain: Chain, usdc: Any
) -> None:
    """S16-3. ``GET /v1/info`` is the host's word, unsigned. Before the fix ``deposit
    --pull`` checked the pull's statement against the key and the A402Vault the info named:
    a host that deployed a genuine A402Vault for a plain key of its own, named both and
    signed the statement with that key passed every check, and its own settlement then
    pulled Carol's 4,000 and paid them to itself (played on anvil in this test's first
    version). Now ``a402 vault deposit`` needs the vault's published address
    (``--vault-address``) and, before it signs or sends anything, checks that the info names
    it, that the A402Vault pays only on its signatures, and that this release's constructor
    created the A402Vault (its CREATE2 address with the salt the info publishes; a
    look-alike's getters may say anything)."""
    from a402.vault.mode_command import CommandError, _check_vault
    from a402.vault_contract import A402Vault

    from .helpers import new_vault_key

    deployer = vault_chain.accounts[0]
    published, host_key = new_vault_key(), new_vault_key()
    genuine = A402Vault.deploy(vault_chain, deployer, usdc.address,
                               "0x" + published.address.hex(), SETTLE_WINDOW)
    hosts = A402Vault.deploy(vault_chain, deployer, usdc.address,
                             "0x" + host_key.address.hex(), SETTLE_WINDOW)
    assert genuine.salt is not None and hosts.salt is not None
    expected = "0x" + published.address.hex()
    salt = "0x" + genuine.salt.hex()
    _check_vault(expected, {"vault": expected, "a402VaultSalt": salt}, genuine)  # no refusal
    lookalike = A402Vault(vault_chain, genuine.address)
    lookalike.settle_window += 1  # getters that answer what its creation did not hold
    for info, contract in (
            ({"vault": "0x" + host_key.address.hex(), "a402VaultSalt": salt}, hosts),
            ({"vault": expected, "a402VaultSalt": "0x" + hosts.salt.hex()}, hosts),
            ({"vault": expected, "a402VaultSalt": salt}, lookalike),
            ({"vault": expected, "a402VaultSalt": "0x" + bytes(32).hex()}, genuine),
            ({"vault": expected}, genuine)):  # no salt published: nothing to check it by
        with pytest.raises(CommandError) as refused:
            _check_vault(expected, info, contract)
        assert refused.value.reason == "unexpected_vault"
        assert refused.value.message.startswith("nothing moved")


def test_deposit_pull_signs_no_authorization_that_holds_longer_than_a_week(
    vault_chain: Chain, usdc: Any
) -> None:
    """A host asking for an authorization that would hold for a month (the vault asks for a
    day) gets none: ``deposit --pull`` checks the deadline against its own clock (or the
    chain's, if ahead) before it checks or signs anything, and says nothing moved."""
    from a402.vault.mode_command import MAX_PULL_LIFETIME, CommandError, ParticipantFlags, _pull
    from a402.vault_contract import A402Vault

    from .helpers import new_vault_key, now

    contract = A402Vault.deploy(vault_chain, vault_chain.accounts[0], usdc.address,
                                "0x" + new_vault_key().address.hex(), SETTLE_WINDOW)
    carol = funded(vault_chain, usdc, 4_000, eth=0)
    posted: list[str] = []

    class Asking:  # the vault as ``_pull`` talks to it: its answer to the pull asked
        key, info = carol, {"vault": contract.vault_signer, "ledger": "0x" + "00" * 16}

        def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
            posted.append(path)
            return {"pull": 1, "deadline": now(vault_chain) + 30 * 86_400, "statement": {}}

    flags = ParticipantFlags(key_file="unused", amount=4_000, pull=True)
    with pytest.raises(CommandError) as refused:
        _pull(flags, Asking(), contract, __import__("io").StringIO())  # type: ignore[arg-type]
    assert refused.value.reason == "bad_deadline" and MAX_PULL_LIFETIME == 7 * 86_400
    assert refused.value.message.startswith("nothing moved")
    assert posted == ["/v1/vault/pull"]  # no authorization handed in
    assert balance(usdc, carol.address) == 4_000
