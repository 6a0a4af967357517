"""``settlement_pending``: a slow chain must cost the payer time, never a second payment.

anvil stops mining for the duration of the test, and a facilitator of our own
(with a short receipt wait) answers ``settlement_pending`` with the hash of the
transaction it broadcast. The payer resends the same header: while the chain
is still stuck it is told to wait again (without a second transfer being
made); once a block is mined, the same header buys the response.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.background import serve_in_thread
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.exact.eip3009 import build_payment_payload
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator, FacilitatorConfig
from a402.facilitator.store import SettlementStore
from a402.wire.headers import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    decode_header,
    decode_settle_response,
    encode_header,
)
from tests.provider.support import (
    ITEM_PRICE_ATOMIC,
    PRICE_ATOMIC,
    Balances,
    Calls,
    asgi_client,
    assert_mined_transfer,
    offer,
    paid_app,
    payload_header,
    v2_header,
)

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]


@pytest.fixture
def slow_facilitator_url(anvil_chain: Chain, tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[str]:
    """A facilitator that waits only half a second for a receipt, with a gas account of its own."""
    signer = Account.create()
    anvil_chain.w3.provider.make_request("anvil_setBalance", [signer.address, hex(10**20)])
    db = tmp_path_factory.mktemp("slow-facilitator") / "journal.db"
    facilitator = Facilitator(anvil_chain, signer, SettlementStore(f"sqlite:///{db}"),
                              FacilitatorConfig(receipt_timeout=0.5))
    with serve_in_thread(create_app(facilitator, reconcile_every=3600)) as url:
        yield url


@pytest.fixture
def mining_paused(anvil_chain: Chain) -> Iterator[Callable[[], None]]:
    """Stop automatic mining; yields a function that mines one block. Always restored."""
    rpc = anvil_chain.w3.provider.make_request
    rpc("evm_setAutomine", [False])
    try:
        yield lambda: rpc("evm_mine", [])
    finally:
        rpc("evm_setAutomine", [True])


async def test_pending_settlement_is_served_on_retry_of_the_same_header(
    anvil_chain: Chain, dev_stack: Manifest, slow_facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], request: pytest.FixtureRequest,
) -> None:
    payer = new_payer(10_000)  # minted before mining stops
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=slow_facilitator_url,
                   calls=calls)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        headers = v2_header(required, payer)
        mine: Callable[[], None] = request.getfixturevalue("mining_paused")

        pending = await client.get("/weather", headers=headers)
        again = await client.get("/weather", headers=headers)
        mine()
        served = await client.get("/weather", headers=headers)
        replay = await client.get("/weather", headers=headers)

    for stuck in (pending, again):
        assert stuck.status_code == 402, stuck.text
        assert PAYMENT_REQUIRED not in stuck.headers  # no invitation to pay twice
        receipt = decode_settle_response(stuck.headers[PAYMENT_RESPONSE])
        assert receipt.success is False and receipt.error_reason == "settlement_pending"
        body = stuck.json()
        assert body["error"] == "settlement_pending" and body["retrySamePayment"] is True
        assert body["transaction"] == receipt.transaction
        assert "accepts" not in body
        assert int(stuck.headers["retry-after"]) > 0
    tx = decode_settle_response(pending.headers[PAYMENT_RESPONSE]).transaction
    assert decode_settle_response(again.headers[PAYMENT_RESPONSE]).transaction == tx

    assert served.status_code == 200, served.text
    receipt = decode_settle_response(served.headers[PAYMENT_RESPONSE])
    assert receipt.success is True and receipt.transaction == tx
    assert_mined_transfer(anvil_chain, tx)
    # The identical resend gets the kept response again: not run, not charged again.
    assert replay.status_code == 200 and replay.content == served.content
    assert decode_settle_response(replay.headers[PAYMENT_RESPONSE]).transaction == tx
    # Serve-then-settle ran the handler once before the first settle; its response was
    # withheld, held in the ledger, and delivered when the pending payment resolved.
    assert calls["weather"] == 1
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_a_different_signature_cannot_ride_on_a_pending_payment(
    anvil_chain: Chain, dev_stack: Manifest, slow_facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], request: pytest.FixtureRequest,
) -> None:
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=slow_facilitator_url,
                   settle_before_serve=True)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        nonce = "0x" + "5a" * 32
        first = v2_header(required, payer, nonce=nonce)
        # Same payer and nonce, a different (validly signed) authorization.
        second = v2_header(required, payer, nonce=nonce, valid_for=120)
        mine: Callable[[], None] = request.getfixturevalue("mining_paused")
        pending = await client.get("/weather", headers=first)
        hijack = await client.get("/weather", headers=second)
        mine()
        served = await client.get("/weather", headers=first)

    assert pending.status_code == 402 and pending.json()["error"] == "settlement_pending"
    assert hijack.status_code == 402 and hijack.json()["error"] == "payment_already_used"
    assert served.status_code == 200, served.text
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_a_pending_payment_resent_to_a_dearer_route_with_its_amount_edited_is_refused(
    anvil_chain: Chain, dev_stack: Manifest, slow_facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], request: pytest.FixtureRequest,
) -> None:
    """The resumption of a pending payment skips ``/verify``, and ``accepted`` is unsigned:
    the 0.001 authorization must not buy the 0.0025 route by editing ``accepted.amount``."""
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    calls = Calls()
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=slow_facilitator_url,
                   calls=calls)
    async with asgi_client(app) as client:
        cheap, _ = await offer(client, "/weather")
        dear, _ = await offer(client, "/items/gold")
        payload = build_payment_payload(cheap.accepts[0], payer, resource=cheap.resource)
        edited = payload.model_copy(update={
            "accepted": payload.accepted.model_copy(update={"amount": str(ITEM_PRICE_ATOMIC)}),
            "resource": dear.resource,
        })
        assert edited.accepted == dear.accepts[0]  # it answers the dear offer to the letter
        mine: Callable[[], None] = request.getfixturevalue("mining_paused")
        pending = await client.get("/weather", headers=payload_header(payload))
        mine()
        dearer = await client.get("/items/gold", headers=payload_header(edited))
        # Another route at the same price is another resource: not resumed there either.
        same_price = await client.get("/boom", headers=payload_header(payload))
        served = await client.get("/weather", headers=payload_header(payload))

    assert pending.status_code == 402 and pending.json()["error"] == "settlement_pending"
    assert dearer.status_code == 402, dearer.text
    assert dearer.json()["error"] == "payment_terms_mismatch"
    assert same_price.status_code == 402, same_price.text
    assert same_price.json()["error"] == "payment_terms_mismatch"
    assert calls["item"] == calls["boom"] == 0
    # The pending payment is untouched by the refusal: resent as it was, it is served.
    assert served.status_code == 200, served.text
    assert calls["weather"] == 1  # the response held for it, not a second run
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC


async def test_a_pending_payment_resent_in_a_form_the_facilitator_refuses_stays_pending(
    anvil_chain: Chain, dev_stack: Manifest, slow_facilitator_url: str, pay_to: str,
    new_payer: Callable[..., LocalAccount], request: pytest.FixtureRequest,
) -> None:
    """The same signed payment resent with unsigned ``extensions`` nested as deep as the
    gateway takes (one level too deep for the facilitator, whose body wraps the payload):
    the facilitator refuses the settle as malformed, but an earlier settle of this payment
    is on its way, so the gateway must not say nothing moved nor forget it: the original
    header, resent once the block is mined, is served."""
    payer = new_payer(10_000)
    balances = Balances(anvil_chain, dev_stack, payer.address, pay_to)
    app = paid_app(pay_to=pay_to, manifest=dev_stack, facilitator=slow_facilitator_url,
                   settle_before_serve=True)
    async with asgi_client(app) as client:
        required, _ = await offer(client, "/weather")
        headers = v2_header(required, payer)
        wire = decode_header(headers[PAYMENT_SIGNATURE])
        wire["extensions"] = {"deep": json.loads("[" * 62 + "]" * 62)}  # 64 deep in all
        deep = {PAYMENT_SIGNATURE: encode_header(wire)}
        mine: Callable[[], None] = request.getfixturevalue("mining_paused")
        pending = await client.get("/weather", headers=headers)
        refused = await client.get("/weather", headers=deep)
        mine()
        served = await client.get("/weather", headers=headers)

    assert pending.status_code == 402 and pending.json()["error"] == "settlement_pending"
    assert refused.status_code == 502, refused.text
    body = refused.json()
    assert body["settlementAttempted"] is True and body["retrySamePayment"] is True
    assert "may or may not have gone through" in body["message"]
    assert PAYMENT_REQUIRED not in refused.headers  # no invitation to pay twice
    assert served.status_code == 200, served.text
    assert decode_settle_response(served.headers[PAYMENT_RESPONSE]).success
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(pay_to) == PRICE_ATOMIC
