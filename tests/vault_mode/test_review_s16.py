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
from web3.exceptions import ContractCustomError

from a402.chain.node import Chain, start_anvil
from a402.chain.rpc import RpcError
from a402.chain.tx import deploy_contract, transact
from a402.crypto.vault_messages import unpack_pulls
from a402.vault_accounts import MAX_PULLS

from .accounts_setup import PRICE
from .helpers import SETTLE_WINDOW, balance, funded, increase_time, selector
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


def _brick(h: Harness, chain: Chain, usdc: Any, keys: int = 70) -> None:
    """``keys`` keys, each holding 1 unit and no ETH, delegate their code (EIP-7702) to a
    contract whose ``isValidSignature`` burns all the gas it gets, ask the host for a 1-unit
    pull each and hand it 65 zero bytes as their authorization: the host takes them (an
    account with code is "checked by the token") and ``_check_funds`` passes."""
    deployer = chain.accounts[0]
    burner = deploy_contract(chain, deployer, "GasBurningWallet", deployer.address, 2**256 - 1)
    attackers = [Account.create() for _ in range(keys)]
    for a in attackers:
        transact(chain, deployer, usdc.functions.mint(a.address, 1))
    _delegate(chain, attackers, burner.address)
    for a in attackers:
        asked = h.service.prepare_pull(a.address, 1)
        queued = h.service.authorize_pull(a.address, int(asked["pull"]), bytes(65))
        assert queued["queued"] is True


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


def test_seventy_gas_burning_keys_cost_a_settlement_more_than_a_transaction_carries(
    capped_chain: Chain, tmp_path: Path
) -> None:
    """S16-1, the bug as it stands. Seventy such keys (:func:`_brick`) and Alice ask for
    pulls. The enclave puts every one (up to ``MAX_PULLS`` = 100) in the next settlement.
    Each costs the whole ``PULL_GAS`` (the token calls the account's EIP-1271 check whatever
    the bytes): the settlement needs more gas than any transaction may carry (EIP-7825:
    2^24), so it never lands, and neither does any later one (each follows it), until the
    attackers' deadlines pass a day later (then they do it again). Nothing moves."""
    usdc = _usdc(capped_chain)
    h = Harness(capped_chain, usdc, tmp_path)
    _brick(h, capped_chain, usdc)
    alice, pull = _alice_pulls(h, capped_chain, usdc)
    with pytest.raises(RpcError, match="gas_limit_cap"):  # 1.2 x the estimate: over the cap
        h.service.settle_now()
    signed = h.service.accounts.settlement_after(0)
    assert signed is not None and len(unpack_pulls(signed.pulls)) == 71 <= MAX_PULLS
    # No sender can carry it: at the cap it runs out (InsufficientGas) before its last pull.
    call = h.contract.contract.functions.settle(
        (signed.prev, signed.epoch, signed.claims, signed.not_before, signed.ledger),
        signed.payouts, signed.confirms, (signed.pulls, bytes(65 * 71), signed.pull_checks),
        b"", signed.signature)
    with pytest.raises(ContractCustomError, match=selector("InsufficientGas()")):
        call.call({"from": h.operator.address, "gas": TX_GAS_CAP})
    assert call.estimate_gas({"from": h.operator.address}) > TX_GAS_CAP  # about 17.8M
    with pytest.raises(RpcError):  # the worker's round tries again: nothing lands
        h.service.tick()
    assert h.contract.last_epoch() == 0
    assert balance(usdc, alice.address) == 5_000 and balance(usdc, h.contract.address) == 0
    assert not h.contract.pulled(pull)


@pytest.mark.xfail(strict=True, raises=RpcError,
                   reason="S16-1: MAX_PULLS x PULL_GAS is over EIP-7825's cap (fix pending)")
def test_pulls_from_gas_burning_keys_never_stop_a_settlement_landing_and_alice_is_pulled(
    capped_chain: Chain, tmp_path: Path
) -> None:
    """S16-1, what the fix must give: however many pulls of gas-burning keys wait, every
    settlement the enclave signs fits in one transaction and lands; the attackers' pulls
    are skipped, Alice's is made."""
    usdc = _usdc(capped_chain)
    h = Harness(capped_chain, usdc, tmp_path)
    _brick(h, capped_chain, usdc)
    alice, pull = _alice_pulls(h, capped_chain, usdc)
    for _ in range(6):
        h.service.settle_now()
        if h.contract.pulled(pull):
            break
    assert h.contract.last_epoch() == h.service.accounts.epoch
    assert balance(usdc, alice.address) == 0 and balance(usdc, h.contract.address) == 5_000


def test_a_settlement_that_cannot_land_does_not_stop_the_watchtower_answering_a_stale_exit(
    capped_chain: Chain, tmp_path: Path
) -> None:
    """S16-2. A client deposits 10,000 and keeps that statement, then pays a provider
    2,000. It bricks the next settlement (S16-1) and exits with the stale statement. The
    worker's round raises at landing (``RpcError`` is not what ``_land_quietly`` catches);
    before the fix the watchtower, which ran after landing in the same round, never
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
    _brick(h, capped_chain, usdc)
    h.contract.init_force_settle(client, stale.statement, stale.signature)
    for _ in range(3):
        with pytest.raises(RpcError):  # the settlement still cannot land (S16-1)
            h.service.tick()
    assert h.contract.last_epoch() == 1
    latest = h.service.statement(client.address).statement.nonce
    assert [a.answered_nonce for a in h.service.answers if a.tx_hash] == [latest]
    assert h.contract.force_settle(client.address).balance == 8_000
    increase_time(capped_chain, SETTLE_WINDOW)
    h.contract.final_force_settle(client, client.address)
    assert h.paid_to(client.address) == 8_000
    assert balance(usdc, h.contract.address) == 2_000  # the provider's


class _HostServedVault:
    """What ``deposit --pull`` talks to, played by a host: its ``GET /v1/info`` (unsigned)
    names an A402Vault and a vault key of the host's own; it answers the pull with a
    statement that key signed."""

    def __init__(self, key: LocalAccount, info: dict[str, Any], answer: dict[str, Any]) -> None:
        self.key, self.info, self.answer = key, info, answer
        self.posted: list[tuple[str, dict[str, Any]]] = []

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.posted.append((path, body))
        return self.answer if path == "/v1/vault/pull" else {"queued": True}


def test_deposit_pull_signs_for_whatever_vault_the_host_names_and_the_host_takes_it(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """S16-3. ``deposit --pull`` checks the statement counting the pull against the vault
    key and the A402Vault that ``GET /v1/info`` names, and that answer is the host's, unsigned
    (the participant CLI has no ``ExpectedVault``, no attestation check, no code check). A
    host deploys a genuine A402Vault whose vault key is its own plain key, names both in
    /info, and answers the pull with a statement that key signed: every check passes, Carol
    signs the token's authorization to the host's contract, and the host's own settlement
    pulls her 4,000 and pays them to the host. "No pull can take the money without a
    statement that counts it in the participant's hands": that statement is the host's."""
    from a402.crypto import EcdsaSigner
    from a402.crypto.vault_messages import (
        BalanceStatement,
        PullRecord,
        pack_payouts,
        pack_pull_signatures,
        pack_pulls,
        settlement_digest,
        statement_digest,
    )
    from a402.vault.mode import statement_json
    from a402.vault.mode_command import ParticipantFlags, _pull
    from a402.vault_accounts import SignedStatement
    from a402.vault_contract import A402Vault

    from .helpers import new_vault_key, now

    host_key: EcdsaSigner = new_vault_key()  # a plain key: no enclave
    fake = A402Vault.deploy(vault_chain, vault_chain.accounts[0], usdc.address,
                            "0x" + host_key.address.hex(), SETTLE_WINDOW)
    carol = funded(vault_chain, usdc, 4_000, eth=0)
    ledger = bytes(range(16))
    deadline = now(vault_chain) + 3_600
    st = BalanceStatement(carol.address, 1, 4_000, 0, 0, 1, 0, 1, 4_000)
    answer = {"pull": 1, "deadline": deadline, "statement": statement_json(SignedStatement(
        st, host_key.sign_digest(statement_digest(fake.domain, st, ledger))))}
    info = {"mode": "vault", "a402Vault": fake.address, "vault": "0x" + host_key.address.hex(),
            "ledger": "0x" + ledger.hex()}
    served = _HostServedVault(carol, info, answer)
    out = __import__("io").StringIO()
    flags = ParticipantFlags(key_file="unused", amount=4_000, pull=True)
    assert _pull(flags, served, fake, out) == 0  # type: ignore[arg-type]
    assert out.getvalue().startswith("nothing moved yet: 4000 will be pulled")
    authorization = bytes.fromhex(served.posted[-1][1]["signature"][2:])
    # The host lands a settlement of its own key: the pull, and a payout of it to the host.
    thief = funded(vault_chain, usdc, eth=0)
    records = pack_pulls([PullRecord(carol.address, 1, 4_000, 1, deadline)])
    payouts = pack_payouts([(thief.address, 2, 4_000)])
    signature = host_key.sign_digest(settlement_digest(
        fake.domain, 1, payouts, 0, packed_pulls=records, ledger=ledger))
    fake.settle(funded(vault_chain, usdc), payouts, 1, 0, signature, packed_pulls=records,
                pull_signatures=pack_pull_signatures([authorization]), ledger=ledger)
    assert balance(usdc, carol.address) == 0
    assert balance(usdc, thief.address) == 4_000
