"""x402 ``upto`` settles exactly once across retries and processes (PostgreSQL journal,
anvil), and nobody but the facilitator the payer named can move its money."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import text

from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.node import Chain, connect, start_anvil
from a402.chain.rpc import Reverted, rpc
from a402.chain.tx import contract_at, transact
from a402.chain.upto_settle import (
    UPTO_PROXY_ADDRESS,
    classify_upto_revert,
    permit2_nonce_used,
    settle_calldata,
)
from a402.client import approve_permit2
from a402.exact.upto import build_upto_payload
from a402.facilitator.core import Facilitator, FacilitatorConfig
from a402.facilitator.store import Base, SettlementStore
from a402.wire.x402 import PaymentRequirements, ResourceInfo
from tests.interop.official_upto import upto_payer

pytestmark = [pytest.mark.anvil]

MAXIMUM = 30_000
FUNDS = 100_000


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SettlementStore]:
    store = SettlementStore(postgres_url)
    with store.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {Base.metadata.sorted_tables[0].name}"))
    yield store
    store.close()


def _offer(manifest: Manifest, pay_to: str, facilitator: str) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="upto", network=manifest.network, asset=manifest.token.address,
        amount=str(MAXIMUM), pay_to=pay_to, max_timeout_seconds=60,
        extra={"assetTransferMethod": "permit2", **manifest.token.eip712_extra(),
               "facilitatorAddress": facilitator})


def _body(payer: LocalAccount, offer: PaymentRequirements, amount: int) -> dict[str, Any]:
    payload = build_upto_payload(offer, payer.key, ResourceInfo(url="http://p.example/llm"))
    return {"x402Version": 2, "paymentPayload": payload.to_wire(),
            "paymentRequirements": offer.model_copy(update={"amount": str(amount)}).to_wire()}


def _replicas(chain: Chain, pg_store: SettlementStore, postgres_url: str) -> list[Facilitator]:
    """Two processes' worth of facilitator: own chain connections and engines, one key
    (the one the payer's witness names) and one journal."""
    key = chain.accounts[6].key
    out = []
    for store in (pg_store, SettlementStore(postgres_url)):
        own = connect(chain.rpc_url or "", [key])
        out.append(Facilitator(own, own.accounts[0], store))
    return out


@pytest.mark.postgres
@pytest.mark.parametrize("amount", [12_345, 0])
def test_two_replicas_asked_six_times_charge_one_upto_payment_once(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    pg_store: SettlementStore, postgres_url: str, amount: int,
) -> None:
    replicas = _replicas(anvil_chain, pg_store, postgres_url)
    signer = replicas[0].signer.address
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = Account.create().address
    body = _body(payer, _offer(dev_stack, pay_to, signer), amount)
    sent_before = anvil_chain.w3.eth.get_transaction_count(signer)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda i: replicas[i % 2].settle(body), range(6)))

    assert all(r.success for r in results), results
    assert len({r.transaction for r in results}) == 1
    assert anvil_chain.w3.eth.get_transaction_count(signer) == sent_before + (1 if amount else 0)
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - amount
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == amount
    assert pg_store.count_by_state() == {"confirmed": 1}
    # Another amount under the same authorization is a second charge: refused by both.
    for replica in replicas:
        again = replica.settle(_body_with(body, amount + 1))
        assert not again.success
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == amount


def _body_with(body: dict[str, Any], amount: int) -> dict[str, Any]:
    return {**body, "paymentRequirements": {**body["paymentRequirements"], "amount": str(amount)}}


def test_a_copied_upto_signature_moves_nothing_for_anyone_but_its_facilitator(
    anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
    facilitator: Facilitator,
) -> None:
    payer = upto_payer(anvil_chain, dev_stack, new_payer, FUNDS)
    pay_to = Account.create().address
    body = _body(payer, _offer(dev_stack, pay_to, facilitator.signer.address), MAXIMUM)
    inner = body["paymentPayload"]["payload"]
    permit = inner["permit2Authorization"]
    calldata = settle_calldata(permit, MAXIMUM, bytes.fromhex(inner["signature"][2:]))
    thief = anvil_chain.accounts[7].address
    with pytest.raises(Reverted) as refused:
        rpc(anvil_chain, "eth_call", [{"from": thief, "to": UPTO_PROXY_ADDRESS,
                                       "data": "0x" + calldata.hex()}, "latest"])
    assert classify_upto_revert(refused.value.reason) == "upto_unauthorized_facilitator"
    over = settle_calldata(permit, MAXIMUM + 1, bytes.fromhex(inner["signature"][2:]))
    with pytest.raises(Reverted) as above:
        rpc(anvil_chain, "eth_call", [{"from": facilitator.signer.address,
                                       "to": UPTO_PROXY_ADDRESS, "data": "0x" + over.hex()},
                                      "latest"])
    assert classify_upto_revert(above.value.reason) == "upto_amount_exceeds_permitted"

    settled = facilitator.settle(body)
    assert settled.success
    assert permit2_nonce_used(anvil_chain, payer.address, int(permit["nonce"]))
    with pytest.raises(Reverted) as spent:  # the chain refuses a second settlement too
        rpc(anvil_chain, "eth_call", [{"from": facilitator.signer.address,
                                       "to": UPTO_PROXY_ADDRESS,
                                       "data": "0x" + calldata.hex()}, "latest"])
    assert classify_upto_revert(spent.value.reason) == "permit2_invalid_nonce"
    assert token_balance(anvil_chain, dev_stack.token.address, pay_to) == MAXIMUM
    assert token_balance(anvil_chain, dev_stack.token.address, payer.address) == FUNDS - MAXIMUM


def test_an_upto_settlement_the_chain_has_not_mined_is_pending_then_finished_once(
    tmp_path: Path,
) -> None:
    """The receipt does not come in time: the answer is pending (with the amount being
    charged, so a resource server's retry asks the same); the retry sends nothing new;
    once mined, the reconciler finishes it and the retry gets the outcome."""
    with start_anvil(accounts=5) as chain:
        stack = deploy_dev_stack(chain)
        payer = Account.create()
        chain.w3.provider.make_request("anvil_setBalance", [payer.address, hex(10**18)])
        transact(chain, chain.accounts[0], contract_at(chain, "TestUSDC", stack.token.address)
                 .functions.mint(payer.address, FUNDS))
        approve_permit2(chain.rpc_url or "", payer.key, stack.token.address)
        facilitator = Facilitator(chain, chain.accounts[1],
                                  SettlementStore(f"sqlite:///{tmp_path}/j.db"),
                                  FacilitatorConfig(receipt_timeout=0.5))
        pay_to = Account.create().address
        body = _body(payer, _offer(stack, pay_to, facilitator.signer.address), 4_321)
        chain.w3.provider.make_request("evm_setAutomine", [False])

        pending = facilitator.settle(body)
        assert not pending.success and pending.error_reason == "settlement_pending"
        assert pending.amount == "4321" and pending.transaction.startswith("0x")
        assert facilitator.settle(body) == pending  # no second transaction
        assert chain.w3.eth.get_transaction_count(facilitator.signer.address) == 0

        chain.w3.provider.make_request("evm_mine", [])
        deadline = time.monotonic() + 30
        while facilitator.reconcile() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        final = facilitator.settle(body)
        assert final.success and final.transaction == pending.transaction
        assert final.amount == "4321"
        assert token_balance(chain, stack.token.address, pay_to) == 4_321
        assert token_balance(chain, stack.token.address, payer.address) == FUNDS - 4_321
