"""The journal answers only the request it recorded: an authorization already settled
is not settled again, nor reported settled, under other terms or for another resource.

A settled authorization resent with edited requirements (amount, payTo, network,
asset) must get the refusal /verify gives, not the first settlement's receipt; and
one settlement must not buy a second resource (the resource is what the request
names: ``paymentRequirements.resource`` in v1, ``paymentPayload.resource.url`` in v2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest, deploy_dev_stack, token_balance
from a402.chain.exact_transfer import authorization_used
from a402.chain.node import Chain, start_anvil
from a402.exact.eip3009 import build_payment_payload_v1
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.wire import errors as wire_errors
from a402.wire.convert import requirements_v2_to_v1
from a402.wire.x402 import PaymentRequirements
from tests.facilitator.helpers import funded_payer, request_body, requirement

NewPayer = Callable[..., LocalAccount]
REPORT_A = "https://a.example/report"
REPORT_B = "https://b.example/report"
BASE_SEPOLIA_CHAIN_ID = 84532


def resent_with(body: dict[str, Any], req: PaymentRequirements) -> dict[str, Any]:
    """The same signed payload sent with other requirements, its unsigned ``accepted``
    edited to match them (what a client replaying it elsewhere would do)."""
    payload = body["paymentPayload"] | {"accepted": req.to_wire()}
    return body | {"paymentPayload": payload, "paymentRequirements": req.to_wire()}


def for_resource(body: dict[str, Any], url: str | None) -> dict[str, Any]:
    """A v2 body naming ``url`` as its resource (None: naming none)."""
    payload = {k: v for k, v in body["paymentPayload"].items() if k != "resource"}
    if url is not None:
        payload["resource"] = {"url": url}
    return body | {"paymentPayload": payload}


def balance(chain: Chain, stack: Manifest, owner: str) -> int:
    return token_balance(chain, stack.token.address, owner)


@pytest.mark.parametrize(("change", "reason"), [
    ({"amount": "2000"}, wire_errors.AUTHORIZATION_VALUE_MISMATCH),
    ({"payTo": "0x000000000000000000000000000000000000dEaD"}, wire_errors.RECIPIENT_MISMATCH),
    ({"network": "eip155:8453"}, wire_errors.INVALID_NETWORK),
    # The asset is part of the journal's key, so this one never met the journal.
    ({"asset": "0x000000000000000000000000000000000000bEEF"}, wire_errors.INVALID_SIGNATURE),
], ids=["amount", "payTo", "network", "asset"])
def test_a_settled_authorization_resent_with_other_terms_is_refused(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer,
    change: dict[str, str], reason: str,
) -> None:
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    req = requirement(dev_stack, 1_000)
    body = request_body(payer, req)
    first = facilitator.settle(body)
    assert first.success
    after_first = balance(anvil_chain, dev_stack, payer.address), balance(
        anvil_chain, dev_stack, payee)

    resent = resent_with(body, PaymentRequirements.model_validate(req.to_wire() | change))
    refused = facilitator.settle(resent)

    assert not refused.success and refused.error_reason == reason, refused
    assert refused.transaction == ""
    verdict = facilitator.verify(resent)
    assert not verdict.is_valid and verdict.invalid_reason == reason
    assert (balance(anvil_chain, dev_stack, payer.address),
            balance(anvil_chain, dev_stack, payee)) == after_first == (4_000, after_first[1])
    assert facilitator.settle(body) == first  # the real retry still gets its receipt


def test_a_settlement_is_not_handed_to_a_second_resource(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    payee_before = balance(anvil_chain, dev_stack, payee)
    body = request_body(payer, requirement(dev_stack, 1_000))
    for_a, for_b = for_resource(body, REPORT_A), for_resource(body, REPORT_B)

    first = facilitator.settle(for_a)
    second = facilitator.settle(for_b)

    assert first.success
    assert not second.success and second.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
    assert second.transaction == "" and first.transaction in (second.error_message or "")
    verdict = facilitator.verify(for_b)
    assert not verdict.is_valid
    assert verdict.invalid_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
    assert facilitator.verify(for_a).invalid_reason == wire_errors.NONCE_ALREADY_USED
    assert facilitator.settle(for_a) == first  # the same resource's retry: idempotent
    assert balance(anvil_chain, dev_stack, payer.address) == 4_000
    assert balance(anvil_chain, dev_stack, payee) == payee_before + 1_000


def test_a_request_naming_no_resource_is_another_resource(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    """Resources compare as values: naming none matches only a claim that named none."""
    payer = new_payer(5_000)
    body = request_body(payer, requirement(dev_stack, 1_000))
    unnamed = facilitator.settle(for_resource(body, None))
    named = facilitator.settle(for_resource(body, REPORT_A))
    assert unnamed.success
    assert not named.success and named.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
    assert facilitator.settle(for_resource(body, None)) == unnamed
    assert balance(anvil_chain, dev_stack, payer.address) == 4_000


def test_two_resources_racing_for_one_authorization_get_one_settlement(
    anvil_chain: Chain, dev_stack: Manifest, facilitator: Facilitator, new_payer: NewPayer
) -> None:
    payer, payee = new_payer(5_000), dev_stack.account("provider").address
    payee_before = balance(anvil_chain, dev_stack, payee)
    body = request_body(payer, requirement(dev_stack, 1_000))
    bodies = [for_resource(body, (REPORT_A, REPORT_B)[i % 2]) for i in range(8)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(facilitator.settle, bodies))

    by_resource = {url: [r for b, r in zip(bodies, results, strict=True)
                         if b["paymentPayload"]["resource"]["url"] == url]
                   for url in (REPORT_A, REPORT_B)}
    winners = [url for url, rs in by_resource.items() if all(r.success for r in rs)]
    assert len(winners) == 1, results
    loser = REPORT_B if winners == [REPORT_A] else REPORT_A
    assert all(r.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
               for r in by_resource[loser])
    assert len({r.transaction for r in by_resource[winners[0]]}) == 1
    assert balance(anvil_chain, dev_stack, payer.address) == 4_000
    assert balance(anvil_chain, dev_stack, payee) == payee_before + 1_000


@pytest.fixture
def v1_chain() -> Iterator[tuple[Chain, Manifest]]:
    """An anvil posing as Base Sepolia: x402 v1 names networks, and names only real ones."""
    with start_anvil(chain_id=BASE_SEPOLIA_CHAIN_ID, accounts=4) as chain:
        yield chain, deploy_dev_stack(chain)


def test_a_v1_settlement_is_not_handed_to_a_second_resource(
    v1_chain: tuple[Chain, Manifest], tmp_path: Path
) -> None:
    chain, stack = v1_chain
    facilitator = Facilitator(chain, chain.accounts[1],
                              SettlementStore(f"sqlite:///{tmp_path}/journal.db"))
    payer = funded_payer(chain, stack, 5_000)
    req = requirement(stack, 1_000)
    payload = build_payment_payload_v1(requirements_v2_to_v1(req, REPORT_A), payer.key).to_wire()

    def v1_body(url: str) -> dict[str, Any]:
        return {"x402Version": 1, "paymentPayload": payload,
                "paymentRequirements": requirements_v2_to_v1(req, url).to_wire()}

    first = facilitator.settle(v1_body(REPORT_A))
    second = facilitator.settle(v1_body(REPORT_B))
    assert first.success
    assert not second.success and second.error_reason == wire_errors.NONCE_USED_FOR_ANOTHER_RESOURCE
    assert facilitator.settle(v1_body(REPORT_A)) == first
    assert balance(chain, stack, payer.address) == 4_000
    auth = payload["payload"]["authorization"]
    assert authorization_used(chain, stack.token.address, auth["from"], auth["nonce"])
