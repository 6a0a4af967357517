"""x402 ``upto`` payloads: the digest is the SDK's EIP-712, and the offline checks give
the SDK facilitator's reasons (pure, no chain)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from a402.chain import upto_settle
from a402.exact import upto
from a402.wire.x402 import PaymentRequirements

PAYER = Account.create()
FACILITATOR = Account.create().address
PAY_TO = Account.create().address
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
NOW = 1_800_000_000


def offer(amount: int = 1_000, facilitator: str = FACILITATOR) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="upto", network="eip155:31337", asset=TOKEN, amount=str(amount), pay_to=PAY_TO,
        max_timeout_seconds=60,
        extra={"assetTransferMethod": "permit2", "facilitatorAddress": facilitator})


def test_the_digest_is_permit2_typed_data_as_eth_account_hashes_it() -> None:
    signed = upto.sign_upto(PAYER.key, offer(), now=NOW, nonce=12345)
    auth = signed.permit2_authorization
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "PermitWitnessTransferFrom": [
                {"name": "permitted", "type": "TokenPermissions"},
                {"name": "spender", "type": "address"}, {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"}, {"name": "witness", "type": "Witness"}],
            "TokenPermissions": [{"name": "token", "type": "address"},
                                 {"name": "amount", "type": "uint256"}],
            "Witness": [{"name": "to", "type": "address"},
                        {"name": "facilitator", "type": "address"},
                        {"name": "validAfter", "type": "uint256"}]},
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {"name": "Permit2", "chainId": 31337,
                   "verifyingContract": upto.PERMIT2_ADDRESS},
        "message": {"permitted": {"token": TOKEN, "amount": 1_000},
                    "spender": upto.UPTO_PROXY_ADDRESS, "nonce": 12345,
                    "deadline": NOW + 60,
                    "witness": {"to": PAY_TO, "facilitator": FACILITATOR, "validAfter": 0}},
    }
    assert Account.recover_message(encode_typed_data(full_message=typed),
                                   signature=signed.signature) == PAYER.address
    assert auth.deadline == str(NOW + 60) and auth.witness.valid_after == "0"


def test_the_chain_module_and_the_pure_module_name_the_same_contracts() -> None:
    assert upto_settle.PERMIT2_ADDRESS == upto.PERMIT2_ADDRESS
    assert upto_settle.UPTO_PROXY_ADDRESS == upto.UPTO_PROXY_ADDRESS


def _check(payload_offer: PaymentRequirements, asked: PaymentRequirements, *,
           settling: bool, now: int = NOW, facilitators: tuple[str, ...] = (FACILITATOR,)
           ) -> upto.UptoCheck:
    payload = upto.build_upto_payload(payload_offer, PAYER.key, now=NOW)
    return upto.check_upto(payload, asked, facilitators=list(facilitators), now=now,
                           settling=settling)


def test_a_charge_up_to_the_maximum_passes_and_above_it_is_refused() -> None:
    for amount in (0, 1, 999, 1_000):
        verdict = _check(offer(), offer(amount), settling=True)
        assert verdict.ok and verdict.amount == amount and verdict.maximum == 1_000
    above = _check(offer(), offer(1_001), settling=True)
    assert above.reason == upto.SETTLEMENT_EXCEEDS_AMOUNT


@pytest.mark.parametrize(("asked", "kwargs", "reason"), [
    (offer(999), {"settling": False}, upto.AMOUNT_MISMATCH),
    (offer(), {"settling": False, "facilitators": (PAY_TO,)}, upto.FACILITATOR_MISMATCH),
    (offer(), {"settling": False, "now": NOW + 55}, upto.DEADLINE_EXPIRED),
    (offer().model_copy(update={"pay_to": FACILITATOR}), {"settling": False},
     upto.RECIPIENT_MISMATCH),
    (offer().model_copy(update={"asset": PAY_TO}), {"settling": False}, upto.TOKEN_MISMATCH),
    (offer().model_copy(update={"scheme": "exact"}), {"settling": False}, upto.INVALID_SCHEME),
])
def test_refusals_carry_the_sdk_reasons(asked: PaymentRequirements, kwargs: dict[str, object],
                                        reason: str) -> None:
    assert _check(offer(), asked, **kwargs).reason == reason  # type: ignore[arg-type]


def test_a_signature_by_another_key_is_refused() -> None:
    payload = upto.build_upto_payload(offer(), Account.create().key, now=NOW)
    inner = payload.payload
    inner["permit2Authorization"]["from"] = PAYER.address
    verdict = upto.check_upto(payload, offer(), facilitators=[FACILITATOR], now=NOW,
                              settling=False)
    assert verdict.reason == upto.INVALID_SIGNATURE and verdict.needs_contract_check


def test_an_offer_without_a_facilitator_cannot_be_signed() -> None:
    bare = offer().model_copy(update={"extra": {"assetTransferMethod": "permit2"}})
    with pytest.raises(Exception, match="facilitatorAddress"):
        upto.sign_upto(PAYER.key, bare)
