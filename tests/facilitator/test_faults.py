"""Faults around settlement: a dead RPC node, an RPC that fails some calls, a
chain that does not mine, a crash between claiming and journaling or between
journaling and broadcasting. Each must cost time (seconds), never money.

Every test here runs its own anvil, because it stops mining or kills the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from starlette.testclient import TestClient

import a402
from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.exact_transfer import authorization_used, transfer_calldata
from a402.chain.node import Chain, connect, start_anvil
from a402.chain.rpc import ChainUnavailable, RpcError
from a402.chain.tx import SignedTx, broadcast, pending_nonce, sign, transact
from a402.exact.checks import VALID_BEFORE_MARGIN
from a402.facilitator import core
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator, FacilitatorConfig
from a402.facilitator.store import (
    FINAL,
    Settlement,
    SettlementStore,
    State,
    payload_digest,
    settlement_key,
)
from a402.wire import errors as wire_errors
from tests.chain.faulty_rpc import Fault, faulty_rpc
from tests.facilitator.helpers import funded_payer, request_body, requirement
from tests.facilitator.test_settle_terms_and_resource import for_resource


@pytest.fixture
def own_chain() -> Iterator[tuple[Chain, Manifest]]:
    with start_anvil(accounts=5) as chain:
        yield chain, deploy_dev_stack(chain)


def until_finished(facilitator: Facilitator, key: str, within: float = 30.0) -> Settlement | None:
    """Reconcile until the settlement leaves the journal's unfinished states.

    anvil mines a broadcast transaction asynchronously, so the receipt may lag
    the broadcast by a moment on a loaded machine; a fixed count of passes
    would make the test depend on the scheduler.
    """
    deadline = time.monotonic() + within
    while True:
        record = facilitator.store.get(key)
        if record is None or record.state in FINAL:
            return record
        if time.monotonic() > deadline:
            return record
        facilitator.reconcile()
        time.sleep(0.05)


def test_settlement_on_a_chain_that_does_not_mine_is_pending_then_finished(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    chain, stack = own_chain
    payer = funded_payer(chain, stack, 5_000)
    facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(f"sqlite:///{tmp_path}/j.db"),
                              FacilitatorConfig(receipt_timeout=0.5))
    body = request_body(payer, requirement(stack, 2_000))
    chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]

    pending = facilitator.settle(body)
    assert not pending.success and pending.error_reason == wire_errors.SETTLEMENT_PENDING
    assert pending.transaction.startswith("0x")
    assert facilitator.settle(body) == pending  # still pending, no second transaction

    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    assert facilitator.reconcile() == 1
    final = facilitator.settle(body)
    assert final.success and final.transaction == pending.transaction
    assert token_balance(chain, stack.token.address, payer.address) == 3_000


def test_a_dead_rpc_node_gives_a_retryable_error_and_claims_nothing(tmp_path: Path) -> None:
    with start_anvil(accounts=5) as chain:
        stack = deploy_dev_stack(chain)
        payer = funded_payer(chain, stack, 5_000)
    # anvil is gone now
    store = SettlementStore(f"sqlite:///{tmp_path}/j.db")
    facilitator = Facilitator(chain, chain.accounts[1], store)
    body = request_body(payer, requirement(stack, 1_000))

    with pytest.raises(ChainUnavailable):
        facilitator.settle(body)
    assert store.unfinished() == []

    with TestClient(create_app(facilitator)) as http:
        response = http.post("/settle", json=body)
        assert response.status_code == 503
        assert response.json()["error"] == "chain_unavailable"
        assert response.headers["retry-after"]
        assert http.post("/verify", json=body).status_code == 503
        assert http.post("/verify", content=b"{not json").status_code == 400


def journal_unsent(
    chain: Chain, stack: Manifest, url: str, body: dict[str, Any], signer: LocalAccount
) -> tuple[str, SignedTx]:
    """What a process leaves when it dies after journaling a settlement's transaction
    and before broadcasting it: the journal key and the signed, unsent transaction."""
    evm = body["paymentPayload"]["payload"]
    auth, signature = evm["authorization"], evm["signature"]
    req = body["paymentRequirements"]
    journal = SettlementStore(url)
    key = settlement_key(stack.network, stack.token.address, auth["from"], auth["nonce"])
    holder = journal.claim(key=key, payload_hash=payload_digest(signature, auth),
                           network=stack.network, asset=stack.token.address, payer=auth["from"],
                           pay_to=req["payTo"], amount=int(req["amount"]),
                           valid_before=int(auth["validBefore"]))
    assert holder is not None
    calldata = transfer_calldata(auth, bytes.fromhex(signature[2:]))
    signed = sign(chain, signer, {"to": stack.token.address, "data": "0x" + calldata.hex()},
                  nonce=pending_nonce(chain, signer.address), gas=200_000)
    assert journal.record_submission(key, holder, signed.tx_hash, signed.raw)
    journal.close()  # ... and the process dies here, before broadcasting.
    return key, signed


def test_a_crash_after_journaling_is_finished_by_the_next_process(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """The first process journals a signed transaction and dies before sending it."""
    chain, stack = own_chain
    payer, payee = funded_payer(chain, stack, 5_000), stack.account("provider").address
    url = f"sqlite:///{tmp_path}/journal.db"
    body = request_body(payer, requirement(stack, 1_500))
    signer = chain.accounts[1]
    key, signed = journal_unsent(chain, stack, url, body, signer)

    restarted = Facilitator(chain, signer, SettlementStore(url))
    restarted.reconcile()  # re-broadcasts the journaled transaction ...
    record = until_finished(restarted, key)  # ... and records its receipt once mined
    assert record is not None and record.state == State.CONFIRMED
    assert record.tx_hash == signed.tx_hash
    assert restarted.settle(body).transaction == signed.tx_hash
    assert token_balance(chain, stack.token.address, payer.address) == 3_500
    assert token_balance(chain, stack.token.address, payee) == 1_500


def test_a_retry_after_the_authorization_expired_still_gets_the_settled_receipt(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """Mined while pending, asked again after validBefore: the answer is the receipt,
    not "expired" (which would tell the server no money moved when it did)."""
    chain, stack = own_chain
    payer = funded_payer(chain, stack, 1_000)
    facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(f"sqlite:///{tmp_path}/j.db"),
                              FacilitatorConfig(receipt_timeout=0.3))
    # validBefore = now + 12: settle's offline check (validBefore ≥ now + 6) passes with room.
    body = request_body(payer, requirement(stack, 1_000), valid_for=12)
    valid_before = int(body["paymentPayload"]["payload"]["authorization"]["validBefore"])
    chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    assert facilitator.settle(body).error_reason == wire_errors.SETTLEMENT_PENDING
    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    # Wait until validBefore < now + margin: the offline check alone would say expired.
    deadline = time.monotonic() + 30
    while valid_before >= int(time.time()) + VALID_BEFORE_MARGIN:
        assert time.monotonic() < deadline, "the authorization never neared its expiry"
        time.sleep(0.1)

    assert facilitator.verify(body).invalid_reason == wire_errors.VALID_BEFORE_EXPIRED
    final = facilitator.settle(body)
    assert final.success, final
    assert token_balance(chain, stack.token.address, payer.address) == 0


def test_a_reconciler_racing_the_broadcast_never_signs_a_second_transaction(
    own_chain: tuple[Chain, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler looked before the broadcast reached the node (no receipt, unknown
    transaction); by the time it re-sends, the transaction is mined and the node says
    "nonce too low". Re-signing would send a second transaction for the same authorization
    (which reverts, and would be journaled in place of the one that moved the money)."""
    chain, stack = own_chain
    payer, signer = funded_payer(chain, stack, 5_000), chain.accounts[1]
    facilitator = Facilitator(chain, signer, SettlementStore(f"sqlite:///{tmp_path}/j.db"),
                              FacilitatorConfig(receipt_timeout=0.3))
    body = request_body(payer, requirement(stack, 1_000))
    auth = body["paymentPayload"]["payload"]["authorization"]
    key = settlement_key(stack.network, stack.token.address, payer.address, auth["nonce"])
    chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    pending = facilitator.settle(body)
    assert pending.error_reason == wire_errors.SETTLEMENT_PENDING
    chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    chain.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    nonce = pending_nonce(chain, signer.address)

    stale = {"eth_getTransactionReceipt": 1, "eth_getTransactionByHash": 1}
    real_rpc = core.rpc

    def racing_rpc(chain_: Chain, method: str, params: list[object]) -> object:
        if stale.get(method):  # the reconciler's first look predates the broadcast
            stale[method] -= 1
            return None
        return real_rpc(chain_, method, params)

    monkeypatch.setattr(core, "rpc", racing_rpc)
    facilitator.reconcile()  # re-sends the mined transaction: "nonce too low"
    assert stale == {"eth_getTransactionReceipt": 0, "eth_getTransactionByHash": 0}
    assert pending_nonce(chain, signer.address) == nonce  # nothing signed, nothing sent
    record = until_finished(facilitator, key)
    assert record is not None and record.state == State.CONFIRMED
    assert record.tx_hash == pending.transaction
    assert token_balance(chain, stack.token.address, payer.address) == 4_000


@pytest.mark.parametrize(("path", "method", "fault"), [
    ("/settle", "eth_getTransactionCount", Fault.DROP),
    ("/settle", "eth_getTransactionCount", Fault.BAD_GATEWAY),
    ("/settle", "eth_getBlockByNumber", Fault.NOT_JSON),
    ("/settle", "eth_estimateGas", Fault.BAD_GATEWAY),
    ("/verify", "eth_call", Fault.NOT_JSON),
], ids=["nonce-dropped", "nonce-502", "fees-not-json", "estimate-502", "verify-not-json"])
def test_an_rpc_failing_mid_request_answers_503_and_the_retry_settles_at_once(
    own_chain: tuple[Chain, Manifest], tmp_path: Path, path: str, method: str, fault: Fault,
) -> None:
    """The node behind a proxy that fails one kind of call: the request gets 503 with
    a reason and Retry-After, nothing is claimed, signed or moved; once the node is
    back, the same request settles at once (no claim left to time out)."""
    chain, stack = own_chain
    payer, payee = funded_payer(chain, stack, 5_000), stack.account("provider").address
    body = request_body(payer, requirement(stack, 1_500))
    auth = body["paymentPayload"]["payload"]["authorization"]
    with faulty_rpc(chain.rpc_url) as (url, proxy):
        via_proxy = connect(url, [chain.accounts[1].key])
        store = SettlementStore(f"sqlite:///{tmp_path}/j.db")
        facilitator = Facilitator(via_proxy, via_proxy.accounts[0], store)
        with TestClient(create_app(facilitator), raise_server_exceptions=False) as http:
            proxy.fail(method, fault)
            refused = http.post(path, json=body)
            assert (method, fault) in proxy.injected
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "chain_unavailable"
            assert int(refused.headers["retry-after"]) > 0
            assert store.unfinished() == []
            assert token_balance(chain, stack.token.address, payer.address) == 5_000

            proxy.heal()
            started = time.monotonic()
            settled = http.post("/settle", json=body)
            # at once: no claim left to wait out (that would take claim_timeout, 10 s;
            # the margin below it is for a loaded host, not a promise of speed)
            assert time.monotonic() - started < facilitator.config.claim_timeout
    assert settled.status_code == 200 and settled.json()["success"], settled.text
    assert token_balance(chain, stack.token.address, payer.address) == 3_500
    assert token_balance(chain, stack.token.address, payee) == 1_500
    assert authorization_used(chain, stack.token.address, auth["from"], auth["nonce"])


_DIE_AFTER_CLAIMING = """
import json, pathlib, sys, time
from a402.chain.node import connect
from a402.facilitator import core
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore

rpc_url, key, db, body, ready = sys.argv[1:]

def stop_here(*_args, **_kwargs):  # claimed, nothing signed: wait for SIGKILL
    pathlib.Path(ready).touch()
    time.sleep(600)

core.pending_nonce = stop_here
chain = connect(rpc_url, [key])
Facilitator(chain, chain.accounts[0], SettlementStore(db)).settle(json.loads(body))
"""


def test_a_claim_left_by_a_killed_process_is_taken_over_within_seconds(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """A facilitator process is killed (SIGKILL) after claiming a payment and before
    signing it. The same request to a new process settles it as soon as the claim
    times out (seconds, default configuration), once."""
    chain, stack = own_chain
    payer, payee = funded_payer(chain, stack, 5_000), stack.account("provider").address
    body = request_body(payer, requirement(stack, 1_500))
    auth = body["paymentPayload"]["payload"]["authorization"]
    url, ready = f"sqlite:///{tmp_path}/journal.db", tmp_path / "claimed"
    signer = chain.accounts[1]
    env = os.environ | {"PYTHONPATH": str(Path(a402.__file__).parents[1])}
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DIE_AFTER_CLAIMING, chain.rpc_url or "", signer.key.hex(), url,
         json.dumps(body), str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert doomed.poll() is None and time.monotonic() < deadline, "never claimed"
            time.sleep(0.05)
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
    key = settlement_key(stack.network, stack.token.address, payer.address, auth["nonce"])
    store = SettlementStore(url)
    left = store.get(key)
    assert left is not None and left.state == State.CLAIMED and left.tx_hash is None

    restarted = Facilitator(chain, signer, store)
    started = time.monotonic()
    settled = restarted.settle(body)
    elapsed = time.monotonic() - started

    assert settled.success, settled
    assert elapsed < restarted.config.claim_timeout + 5
    assert restarted.config.claim_timeout <= 10
    assert token_balance(chain, stack.token.address, payer.address) == 3_500
    assert token_balance(chain, stack.token.address, payee) == 1_500
    assert restarted.settle(body) == settled


def test_the_reconciler_releases_a_dead_claim_but_not_a_live_one(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """The dead claim was last touched a minute ago (its row dated back, instead of a sleep
    past a 1 s timeout: the live claim then had to be reconciled within that second, which
    a loaded host does not promise); the live one is fresh, far within the 30 s timeout."""
    from sqlalchemy import text

    chain, stack = own_chain
    store = SettlementStore(f"sqlite:///{tmp_path}/j.db")
    facilitator = Facilitator(chain, chain.accounts[1], store, FacilitatorConfig(claim_timeout=30))
    claim = {"network": stack.network, "asset": stack.token.address, "payer": "0x" + "22" * 20,
             "pay_to": "0x" + "33" * 20, "amount": 1, "valid_before": 2**40}
    assert store.claim(key="dead", payload_hash="p", **claim)
    with store.engine.begin() as c:  # its holder died a minute ago
        c.execute(text("UPDATE a402_settlements SET updated_at = updated_at - 60 "
                       "WHERE key = 'dead'"))
    assert store.claim(key="live", payload_hash="q", **claim)
    facilitator.reconcile()
    assert [r.key for r in store.unfinished()] == ["live"]


def test_a_live_holder_presumed_dead_sends_nothing_and_pays_no_second_resource(
    own_chain: tuple[Chain, Manifest], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Request A (resource X) claims and stalls before signing, long enough for its
    claim to be presumed dead and cleaned up; request B (resource Y) claims the same
    authorization and stalls too. A wakes first: it must not journal under B's claim
    (which would hand B the payment A settled), so it sends nothing and is refused;
    B settles, once."""
    chain, stack = own_chain
    payer, payee = funded_payer(chain, stack, 5_000), stack.account("provider").address
    facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(f"sqlite:///{tmp_path}/j.db"),
                              FacilitatorConfig(claim_timeout=0.5))
    body = request_body(payer, requirement(stack, 1_500))
    from_x, from_y = (body | {"paymentPayload": body["paymentPayload"] | {"resource": {"url": u}}}
                      for u in ("https://x.example/", "https://y.example/"))
    entered = [threading.Event(), threading.Event()]
    go = [threading.Event(), threading.Event()]
    calls = iter(range(2))
    estimate = core.estimate_transfer_gas

    def stalled(*args: object) -> int:
        if (n := next(calls, None)) is not None:
            entered[n].set()
            assert go[n].wait(30)
        return estimate(*args)  # type: ignore[arg-type]

    nonce = pending_nonce(chain, chain.accounts[1].address)
    monkeypatch.setattr(core, "estimate_transfer_gas", stalled)
    answers: dict[str, object] = {}
    first = threading.Thread(target=lambda: answers.update(x=facilitator.settle(from_x)))
    first.start()
    assert entered[0].wait(30)
    time.sleep(0.6)
    facilitator.reconcile()  # A's claim is stale: released
    second = threading.Thread(target=lambda: answers.update(y=facilitator.settle(from_y)))
    second.start()
    assert entered[1].wait(30)
    go[0].set()
    first.join(30)
    go[1].set()
    second.join(30)

    x, y = answers["x"], answers["y"]
    assert not x.success and x.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE, x  # type: ignore[attr-defined]
    assert y.success, y  # type: ignore[attr-defined]
    assert token_balance(chain, stack.token.address, payer.address) == 3_500
    assert token_balance(chain, stack.token.address, payee) == 1_500
    assert pending_nonce(chain, chain.accounts[1].address) == nonce + 1  # one transaction


def test_two_reconcilers_re_signing_one_dropped_transaction_send_one_copy(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """A journaled transaction was never sent and its nonce went to another
    transaction. Two replicas' reconcilers read it before either acted; the first
    re-signs it with a fresh nonce, the second must then send nothing: its copy would
    revert (the authorization is used) and, journaled over the first, make the journal
    report "no funds moved" for a payment that moved them."""
    chain, stack = own_chain
    payer, payee = funded_payer(chain, stack, 5_000), stack.account("provider").address
    url = f"sqlite:///{tmp_path}/journal.db"
    body = request_body(payer, requirement(stack, 1_500))
    signer = chain.accounts[1]
    key, dropped = journal_unsent(chain, stack, url, body, signer)
    transact(chain, signer, {"to": chain.accounts[2].address}, value=1)  # takes its nonce
    replicas = [Facilitator(chain, signer, SettlementStore(url)) for _ in range(2)]
    seen = replicas[0].store.get(key)
    assert seen is not None

    for replica in replicas:
        replica._rebroadcast(seen)

    record = until_finished(replicas[0], key)
    assert record is not None and record.state == State.CONFIRMED
    assert record.tx_hash != dropped.tx_hash
    assert pending_nonce(chain, signer.address) == dropped.nonce + 2  # the taker and one copy
    assert token_balance(chain, stack.token.address, payer.address) == 3_500
    assert token_balance(chain, stack.token.address, payee) == 1_500


def test_an_authorization_expired_by_our_clock_but_not_the_chains_is_not_declared_unpaid(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """A journaled transaction is neither mined nor pending, and our clock is past its
    validBefore, but the chain's clock (the one the token checks) is not: a copy in
    flight (another node's mempool, a replica's rebroadcast) can still be mined and
    move the money. The journal must not record "no funds moved" for it."""
    chain, stack = own_chain
    chain_behind = int(time.time()) - 100
    chain.w3.provider.make_request("anvil_setTime", [chain_behind])  # type: ignore[arg-type]
    payer = funded_payer(chain, stack, 5_000)
    # validBefore: 40 s ago by our clock, 60 s ahead by the chain's.
    body = request_body(payer, requirement(stack, 1_500), now=chain_behind, valid_for=60)
    url = f"sqlite:///{tmp_path}/journal.db"
    key, signed = journal_unsent(chain, stack, url, body, chain.accounts[1])
    facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(url))

    facilitator.reconcile()
    with contextlib.suppress(RpcError):  # the copy in flight arrives (if not sent already)
        broadcast(chain, signed)
    record = until_finished(facilitator, key)

    assert token_balance(chain, stack.token.address, payer.address) == 3_500
    assert record is not None and record.state == State.CONFIRMED, record
    assert facilitator.settle(body).transaction == signed.tx_hash


def test_a_settlement_beaten_by_another_transaction_does_not_say_no_funds_moved(
    own_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    """Anyone may submit a signed authorization: a copy of our pending transaction's
    calldata (from the mempool), or another facilitator given the same payment. When
    theirs is mined first ours reverts, yet the payer's money did move, to the payee:
    the journal's answer must say so, not "no funds moved"."""
    chain, stack = own_chain
    payer, payee = funded_payer(chain, stack, 5_000), stack.account("provider").address
    facilitator = Facilitator(chain, chain.accounts[1], SettlementStore(f"sqlite:///{tmp_path}/j.db"),
                              FacilitatorConfig(receipt_timeout=0.3))
    body = request_body(payer, requirement(stack, 2_000))
    provider = chain.w3.provider
    provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    pending = facilitator.settle(body)
    assert pending.error_reason == wire_errors.SETTLEMENT_PENDING
    # The copy gets in first (ours left this node's mempool, as dropped ones do).
    provider.make_request("anvil_dropTransaction", [pending.transaction])  # type: ignore[arg-type]
    provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    evm = body["paymentPayload"]["payload"]
    calldata = transfer_calldata(evm["authorization"], bytes.fromhex(evm["signature"][2:]))
    transact(chain, chain.accounts[2], {"to": stack.token.address, "data": "0x" + calldata.hex()},
             gas=200_000)
    assert token_balance(chain, stack.token.address, payer.address) == 3_000

    key = settlement_key(stack.network, stack.token.address, payer.address,
                         evm["authorization"]["nonce"])
    record = until_finished(facilitator, key)  # ours is re-sent and reverts

    assert record is not None and record.state == State.FAILED and record.response is not None
    assert record.response["errorReason"] == wire_errors.NONCE_ALREADY_USED, record.response
    assert "no funds moved" not in record.response["errorMessage"]
    assert facilitator.settle(body).error_reason == wire_errors.NONCE_ALREADY_USED
    verdict = facilitator.verify(body)  # nor is a finished settlement "being settled"
    assert verdict.invalid_reason == wire_errors.NONCE_ALREADY_USED
    assert "failed" in (verdict.invalid_message or ""), verdict
    elsewhere = facilitator.verify(for_resource(body, "https://b.example/report"))
    assert elsewhere.invalid_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
    assert "no funds moved" not in (elsewhere.invalid_message or ""), elsewhere
    assert token_balance(chain, stack.token.address, payee) == 2_000
