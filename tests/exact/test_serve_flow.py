"""The one server-side ``exact`` flow (a402.exact.serve), run with scripted answers: what
it asks for, what it records, and what it decides, with no ledger, facilitator or app."""

from __future__ import annotations

import asyncio
from typing import Any, get_args

import pytest

from a402.exact.eip3009 import sign_authorization
from a402.exact.replay import Admission, Admit, LedgerState, PaymentKey, payment_fingerprint
from a402.exact.serve import (
    MAX_REMEMBERED_VALIDITY,
    Acquire,
    ExactPayment,
    Flow,
    MarkPending,
    MarkSettled,
    NotResumable,
    NotServed,
    NoVerdict,
    Operation,
    OtherTerms,
    Outcome,
    Paid,
    Rejected,
    Release,
    RequestRefused,
    Resumable,
    Reused,
    Serve,
    Settle,
    SettleFailed,
    SettlePending,
    Unanswered,
    Verify,
    drive,
    exact_flow,
)
from a402.exact.upto import sign_upto
from a402.wire.errors import SETTLEMENT_PENDING
from a402.wire.x402 import PaymentRequirements, SettleResponse, VerifyResponse

NOW = 1_750_000_000
PAYER_KEY = "0x" + "11" * 32
ASSET = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
KEY = PaymentKey.of("eip155:84532", "0xAsset", "0xPayer", "0xNonce")
PAYMENT = ExactPayment(KEY, "fingerprint", valid_before=NOW + 300, terms="terms")

VALID = VerifyResponse(is_valid=True, payer="0xpayer")
INVALID = VerifyResponse(is_valid=False, invalid_reason="insufficient_funds", payer="0xpayer")
SETTLED = SettleResponse(success=True, transaction="0xtx", network="eip155:84532")
PENDING = SettleResponse(success=False, error_reason=SETTLEMENT_PENDING, transaction="0xtx",
                         network="eip155:84532")
FAILED = SettleResponse(success=False, error_reason="transaction_failed", transaction="",
                        network="eip155:84532")
UNREACHABLE = NoVerdict("facilitator_unreachable", "connection refused", unavailable=True)
MALFORMED = NoVerdict("invalid_request", "bad body", unavailable=False, status=400)
NONSENSE = NoVerdict("invalid_response", "not JSON", unavailable=False, status=200)


def flow(**options: Any) -> Flow:
    return exact_flow(PAYMENT, now=NOW, retention=600, **options)


def run(flow: Flow, answers: dict[type, Any]) -> tuple[Outcome, list[Operation]]:
    """Run ``flow`` answering each operation from ``answers`` (by type; ledger writes answer
    None); an exception as an answer is thrown in at that operation."""
    asked: list[Operation] = []
    answer: Any = None
    throw: BaseException | None = None
    try:
        while True:
            operation = flow.throw(throw) if throw is not None else flow.send(answer)
            asked.append(operation)
            answer, throw = answers.get(type(operation)), None
            if isinstance(answer, BaseException):
                answer, throw = None, answer
    except StopIteration as done:
        return done.value, asked


def kinds(asked: list[Operation]) -> list[type]:
    return [type(operation) for operation in asked]


FRESH = {Acquire: Admit(Admission.FRESH)}


# ------------------------------------------------------------------ admission


def test_the_ledger_remembers_a_payment_until_retention_past_its_valid_before() -> None:
    first = next(flow())
    assert first == Acquire(KEY, "fingerprint", NOW + 300 + 600, "terms")


def test_a_far_future_valid_before_is_remembered_only_a_day_past_now() -> None:
    payment = ExactPayment(KEY, "fingerprint", valid_before=NOW + 10**9)
    first = next(exact_flow(payment, now=NOW, retention=600))
    assert isinstance(first, Acquire)
    assert first.expires_at == NOW + MAX_REMEMBERED_VALIDITY + 600


@pytest.mark.parametrize("state", list(LedgerState))
def test_a_payment_the_ledger_refuses_is_neither_verified_nor_changed(
    state: LedgerState,
) -> None:
    outcome, asked = run(flow(), {Acquire: Admit(Admission.REFUSED, state, SETTLED)})
    assert outcome == Reused(state, SETTLED)
    assert kinds(asked) == [Acquire]


def test_a_pending_payment_resent_for_other_terms_is_refused_and_stays_pending() -> None:
    outcome, asked = run(flow(), {Acquire: Admit(Admission.OTHER_TERMS, LedgerState.PENDING,
                                                 PENDING)})
    assert outcome == OtherTerms(PENDING)
    assert kinds(asked) == [Acquire]


# ------------------------------------------------------------------ a fresh payment


def test_a_valid_payment_is_verified_served_settled_and_recorded_as_settled() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: True, Settle: SETTLED})
    assert outcome == Paid(SETTLED, serve_now=False)
    assert kinds(asked) == [Acquire, Verify, Serve, Settle, MarkSettled]
    assert asked[-1] == MarkSettled(KEY, SETTLED)


def test_a_payment_the_facilitator_refuses_is_not_served_and_nothing_is_recorded() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: INVALID})
    assert outcome == Rejected(INVALID)
    assert kinds(asked) == [Acquire, Verify, Release]


def test_a_request_that_fails_to_serve_is_not_settled_and_its_payment_is_released() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: False})
    assert outcome == NotServed()
    assert kinds(asked) == [Acquire, Verify, Serve, Release]


def test_settle_first_settles_before_anything_is_served_and_asks_to_serve_after() -> None:
    outcome, asked = run(flow(settle_first=True), {**FRESH, Verify: VALID, Settle: SETTLED})
    assert outcome == Paid(SETTLED, serve_now=True)
    assert Serve not in kinds(asked)
    assert kinds(asked) == [Acquire, Verify, Settle, MarkSettled]


def test_an_unreachable_facilitator_at_verify_releases_the_payment() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: UNREACHABLE})
    assert outcome == Unanswered(UNREACHABLE, settle_attempted=False)
    assert kinds(asked) == [Acquire, Verify, Release]


def test_a_verify_request_the_facilitator_calls_malformed_is_refused_and_released() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: MALFORMED})
    assert outcome == RequestRefused(MALFORMED, settle_attempted=False)
    assert kinds(asked) == [Acquire, Verify, Release]


# ------------------------------------------------------------------ settling


def test_a_pending_settlement_is_recorded_pending_with_its_receipt() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: True, Settle: PENDING})
    assert outcome == SettlePending(PENDING)
    assert asked[-1] == MarkPending(KEY, PENDING)


def test_a_failed_settlement_releases_the_payment_and_delivers_nothing() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: True, Settle: FAILED})
    assert outcome == SettleFailed(FAILED)
    assert asked[-1] == Release(KEY)


@pytest.mark.parametrize("failure", [UNREACHABLE, NONSENSE])
def test_a_settle_without_a_verdict_leaves_the_payment_pending_as_it_may_have_gone_through(
    failure: NoVerdict,
) -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: True, Settle: failure})
    assert outcome == Unanswered(failure, settle_attempted=True)
    assert asked[-1] == MarkPending(KEY, None)


def test_a_settle_refused_as_malformed_releases_the_payment_as_nothing_moved() -> None:
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: True, Settle: MALFORMED})
    assert outcome == RequestRefused(MALFORMED, settle_attempted=True)
    assert asked[-1] == Release(KEY)


def test_a_settle_first_payment_refused_as_malformed_is_released_too() -> None:
    outcome, asked = run(flow(settle_first=True), {**FRESH, Verify: VALID, Settle: MALFORMED})
    assert outcome == RequestRefused(MALFORMED, settle_attempted=True)
    assert kinds(asked) == [Acquire, Verify, Settle, Release]


def test_a_settled_payment_the_ledger_fails_to_record_is_still_paid_and_not_made_pending(
) -> None:
    broken = RuntimeError("database down")
    outcome, asked = run(flow(), {**FRESH, Verify: VALID, Serve: True, Settle: SETTLED,
                                  MarkSettled: broken})
    assert outcome == Paid(SETTLED, serve_now=False, unrecorded=broken)
    assert kinds(asked) == [Acquire, Verify, Serve, Settle, MarkSettled]


# ------------------------------------------------------------------ resuming


def test_a_resumed_payment_is_settled_again_without_verify_and_served_after() -> None:
    outcome, asked = run(flow(), {Acquire: Admit(Admission.RESUMED, settlement=PENDING),
                                  Resumable: True, Settle: SETTLED})
    assert outcome == Paid(SETTLED, serve_now=True)
    assert kinds(asked) == [Acquire, Resumable, Settle, MarkSettled]
    assert asked[1] == Resumable(PENDING)


def test_a_resumed_payment_this_server_cannot_serve_is_left_pending_as_found() -> None:
    outcome, asked = run(flow(), {Acquire: Admit(Admission.RESUMED, settlement=PENDING),
                                  Resumable: False})
    assert outcome == NotResumable(PENDING)
    assert asked[-1] == MarkPending(KEY, PENDING)


def test_a_resumed_settle_refused_as_malformed_stays_pending_as_an_earlier_one_may_move_money(
) -> None:
    outcome, asked = run(flow(), {Acquire: Admit(Admission.RESUMED), Resumable: True,
                                  Settle: MALFORMED})
    assert outcome == Unanswered(MALFORMED, settle_attempted=True)
    assert asked[-1] == MarkPending(KEY, None)


# ------------------------------------------------------------------ interruptions


def test_a_request_interrupted_before_settling_releases_its_payment_and_reraises() -> None:
    with pytest.raises(asyncio.CancelledError):
        run(flow(), {**FRESH, Verify: VALID, Serve: asyncio.CancelledError()})


def test_an_interrupted_serve_asks_for_release_then_lets_the_error_through() -> None:
    asked: list[Operation] = []
    steps = flow()
    asked.append(next(steps))
    asked.append(steps.send(Admit(Admission.FRESH)))
    asked.append(steps.send(VALID))
    asked.append(steps.throw(RuntimeError("app crashed")))
    with pytest.raises(RuntimeError, match="app crashed"):
        steps.send(None)
    assert kinds(asked) == [Acquire, Verify, Serve, Release]


def test_a_request_interrupted_while_settling_leaves_its_payment_pending() -> None:
    steps = flow()
    next(steps)
    steps.send(Admit(Admission.FRESH))
    steps.send(VALID)
    assert steps.send(True) == Settle()
    assert steps.throw(asyncio.CancelledError()) == MarkPending(KEY, None)
    with pytest.raises(asyncio.CancelledError):
        steps.send(None)


def test_a_request_interrupted_while_recording_a_failed_settle_stays_pending_with_receipt(
) -> None:
    steps = flow()
    next(steps)
    steps.send(Admit(Admission.FRESH))
    steps.send(VALID)
    steps.send(True)
    assert steps.send(FAILED) == Release(KEY)
    assert steps.throw(OSError("ledger down")) == MarkPending(KEY, FAILED)
    with pytest.raises(OSError):
        steps.send(None)


def test_a_request_interrupted_while_recording_a_success_changes_nothing_more() -> None:
    steps = flow()
    next(steps)
    steps.send(Admit(Admission.FRESH))
    steps.send(VALID)
    steps.send(True)
    assert steps.send(SETTLED) == MarkSettled(KEY, SETTLED)
    with pytest.raises(asyncio.CancelledError):
        steps.throw(asyncio.CancelledError())


def test_an_abandoned_flow_closes_without_asking_for_anything() -> None:
    steps = flow()
    next(steps)
    steps.send(Admit(Admission.FRESH))
    steps.close()  # no "generator ignored GeneratorExit"


# ------------------------------------------------------------------ the driver


def test_the_driver_runs_each_operation_and_returns_the_outcome() -> None:
    answers: dict[type, Any] = {**FRESH, Verify: VALID, Serve: True, Settle: SETTLED}
    asked: list[Operation] = []

    async def perform(operation: Operation) -> Any:
        asked.append(operation)
        await asyncio.sleep(0)
        return answers.get(type(operation))

    outcome = asyncio.run(drive(flow(), perform))
    assert outcome == Paid(SETTLED, serve_now=False)
    assert kinds(asked) == [Acquire, Verify, Serve, Settle, MarkSettled]


def test_the_driver_throws_a_failing_operation_into_the_flow_and_reraises_after_cleanup(
) -> None:
    answers: dict[type, Any] = {**FRESH, Verify: VALID}
    asked: list[Operation] = []

    async def perform(operation: Operation) -> Any:
        asked.append(operation)
        if isinstance(operation, Serve):
            raise RuntimeError("app crashed")
        return answers.get(type(operation))

    with pytest.raises(RuntimeError, match="app crashed"):
        asyncio.run(drive(flow(), perform))
    assert kinds(asked) == [Acquire, Verify, Serve, Release]


def test_the_driver_returns_paid_when_the_ledger_fails_to_record_a_settlement() -> None:
    answers: dict[type, Any] = {**FRESH, Verify: VALID, Serve: True, Settle: SETTLED}

    async def perform(operation: Operation) -> Any:
        if isinstance(operation, MarkSettled):
            raise RuntimeError("database down")
        return answers.get(type(operation))

    outcome = asyncio.run(drive(flow(), perform))
    assert isinstance(outcome, Paid)
    assert isinstance(outcome.unrecorded, RuntimeError)


# ------------------------------------------------------------- what the ledger knows


def test_an_eip3009_payment_is_known_by_its_nonce_until_its_valid_before() -> None:
    requirements = PaymentRequirements(
        scheme="exact", network="eip155:84532", amount="1000", asset=ASSET, pay_to=PAY_TO,
        max_timeout_seconds=60, extra={"name": "USD Coin", "version": "2"})
    signed = sign_authorization(PAYER_KEY, requirements, now=NOW, nonce=b"\x07" * 32)
    payment = ExactPayment.of(signed, network="eip155:84532", asset=ASSET, terms="terms")
    auth = signed.authorization
    assert payment == ExactPayment(
        PaymentKey.of("eip155:84532", ASSET, auth.from_address, "0x" + "07" * 32),
        payment_fingerprint(signed.signature, auth.to_wire()), NOW + 60, "terms")


def test_an_upto_permit_is_known_in_its_own_nonce_space_until_its_deadline() -> None:
    requirements = PaymentRequirements(
        scheme="upto", network="eip155:84532", amount="1000", asset=ASSET, pay_to=PAY_TO,
        max_timeout_seconds=60, extra={"facilitatorAddress": PAY_TO})
    signed = sign_upto(PAYER_KEY, requirements, now=NOW, nonce=7)
    payment = ExactPayment.of(signed, network="eip155:84532", asset=ASSET)
    permit = signed.permit2_authorization
    assert payment.key == PaymentKey.of("eip155:84532", ASSET, permit.from_address, "permit2:7")
    assert payment.valid_before == NOW + 60
    assert payment.fingerprint == payment_fingerprint(signed.signature, permit.to_wire())


def test_each_outcome_says_what_became_of_the_money() -> None:
    labels = {kind.__name__: kind.label for kind in get_args(Outcome)}
    assert labels == {
        "Paid": "settled", "SettlePending": "pending", "SettleFailed": "failed",
        "Rejected": "rejected", "Reused": "refused", "OtherTerms": "refused",
        "NotResumable": "refused", "NotServed": "not_served", "RequestRefused": "error",
        "Unanswered": "error"}


def test_a_refusal_gives_the_facilitators_reason_or_a_generic_one() -> None:
    assert Rejected(INVALID).reason == "insufficient_funds"
    assert Rejected(VerifyResponse(is_valid=False)).reason == "invalid_payment"
    assert (SettleFailed(FAILED).reason, SettleFailed(FAILED).message) == (
        "transaction_failed", "nothing was charged: the settlement was refused "
        "(transaction_failed)")
    silent = SettleResponse(success=False, transaction="", network="eip155:84532",
                            error_message="reverted")
    assert (SettleFailed(silent).reason, SettleFailed(silent).message) == (
        "settlement_failed", "nothing was charged: reverted")


def test_a_refused_settle_says_nothing_was_charged_first_and_only_once() -> None:
    """The facilitator's own message follows the money truth; one that already says it
    first is not made to say it twice."""
    own = SettleResponse(success=False, transaction="", network="eip155:84532",
                         error_reason="x", error_message="Nothing was charged: gas spike")
    assert SettleFailed(own).message == "Nothing was charged: gas spike"
