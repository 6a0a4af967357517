"""AP2 v0.2 open payment mandates (SD-JWT VC) as a second encoding of an a402 mandate.

Real secp256k1 keys, real ES256K signatures, the ``sd-jwt`` package for issuing
and verifying. What is checked: a round trip keeps every limit (the EIP-712
hash, which covers them all, is unchanged); whatever a402 could not enforce is
refused with a machine-readable reason; both encodings share one budget.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import pytest
from sd_jwt.common import SDObj

from a402.mandate import MandateError, ProposedPayment, decide
from a402.mandate.ap2 import (
    Ap2SignedMandate,
    export_open,
    issue,
    load_sd_jwt,
    open_claims,
    read_closed,
    read_open,
    write_closed,
)
from a402.mandate.spend import SpendStore

from .helpers import DOMAIN, NETWORK, PAYEE, REGISTRY, USDC, Keys, make_mandate, signed

OTHER_USDC = "0x" + "ab" * 20


def every_limit(keys: Keys) -> Any:
    """A mandate with every a402 limit away from its default."""
    now = int(time.time())
    return signed(
        keys, max_per_payment=25_000, budget=1_234_567, period_budget=500_000, period=86_400,
        payees=(PAYEE, keys.owner.address), origins=("https://api.example.com",),
        url_patterns=("https://api.example.com/v1/*",), skills=("translate", "summarize"),
        networks=(NETWORK, "eip155:8453"), assets=(USDC, OTHER_USDC),
        schemes=("exact", "a402"), valid_after=now - 60, valid_before=now + 7 * 86_400,
        confirm_above=20_000)


def owner_key(keys: Keys) -> bytes:
    return bytes(keys.owner.key)


def claims_of(keys: Keys, **overrides: Any) -> dict[str, Any]:
    s = signed(keys, payees=(PAYEE,), **overrides)
    return open_claims(s.mandate, s.domain)


def reason(token: str, **kw: Any) -> str:
    with pytest.raises(MandateError) as e:
        read_open(token, **kw)
    return e.value.reason


# ---------------------------------------------------------------- round trip


def test_a402_to_ap2_to_a402_keeps_every_limit_and_the_hash() -> None:
    keys = Keys()
    original = every_limit(keys)
    token = export_open(original.mandate, original.domain, owner_key(keys))
    back = read_open(token)
    assert back.mandate == original.mandate
    assert back.domain == original.domain
    assert back.mandate.digest(back.domain) == original.hash
    as_ap2 = load_sd_jwt(token)
    assert isinstance(as_ap2, Ap2SignedMandate)
    assert as_ap2.hash == original.hash and as_ap2.dumps() == token
    # The standard constraints carry the standard limits.
    by_type = {c["type"]: c for c in back.claims["constraints"]}
    assert back.claims["vct"] == "mandate.payment.open.1"
    assert back.claims["cnf"] == {"kid": f"did:pkh:eip155:84532:{keys.agent.address}"}
    assert by_type["payment.amount_range"] == {
        "type": "payment.amount_range", "currency": "USDC", "max": 25_000}
    assert by_type["payment.budget"]["max"] == 1.234567  # major units, exact
    assert len(by_type["payment.allowed_payment_instruments"]["allowed"]) == 2 * 2 * 2
    assert by_type["payment.agent_recurrence"] == {
        "type": "payment.agent_recurrence", "frequency": "ON_DEMAND"}


def test_a_budget_that_no_json_number_of_major_units_states_exactly_is_not_exported() -> None:
    keys = Keys()
    s = signed(keys, budget=10**30 + 1, max_per_payment=1)
    with pytest.raises(MandateError) as e:
        export_open(s.mandate, s.domain, owner_key(keys))
    assert e.value.reason == "mandate_ap2_unmappable"


def test_only_the_owner_exports() -> None:
    keys = Keys()
    s = signed(keys)
    with pytest.raises(MandateError) as e:
        export_open(s.mandate, s.domain, bytes(keys.agent.key))
    assert e.value.reason == "mandate_bad_signature"


# ---------------------------------------------------------------- fail closed


def test_an_unknown_constraint_is_refused() -> None:
    keys = Keys()
    claims = claims_of(keys)
    claims["constraints"].append({"type": "payment.loyalty_points", "max": 5})
    assert reason(issue(claims, owner_key(keys))) == "mandate_ap2_unknown_constraint"
    # ... and so is an unknown field inside a known one.
    claims = claims_of(keys)
    for c in claims["constraints"]:
        if c["type"] == "payment.amount_range":
            c["per_merchant"] = True
    assert reason(issue(claims, owner_key(keys))) == "mandate_ap2_unknown_constraint"


@pytest.mark.parametrize("change", [
    {"type": "payment.agent_recurrence", "frequency": "MONTHLY"},
    {"type": "payment.agent_recurrence", "frequency": "ON_DEMAND", "max_occurrences": 3},
    {"type": "payment.amount_range", "currency": "USDC", "max": 10_000, "min": 500},
    {"type": "payment.allowed_pisps", "allowed": [{"legal_name": "Bank"}]},
])
def test_a_constraint_a402_cannot_enforce_is_refused(change: dict[str, Any]) -> None:
    keys = Keys()
    claims = claims_of(keys)
    claims["constraints"] = [c for c in claims["constraints"] if c["type"] != change["type"]]
    claims["constraints"].append(change)
    assert reason(issue(claims, owner_key(keys))) == "mandate_ap2_unresolved_constraint"


def test_a_preset_payment_amount_is_refused() -> None:
    keys = Keys()
    claims = claims_of(keys)
    claims["payment_amount"] = {"amount": 500, "currency": "USDC"}
    assert reason(issue(claims, owner_key(keys))) == "mandate_ap2_unresolved_constraint"


@pytest.mark.parametrize("dropped", ["payment.budget", "payment.allowed_payment_instruments",
                                     "payment.reference"])
def test_a_mandate_missing_a_limit_a402_needs_is_refused(dropped: str) -> None:
    keys = Keys()
    claims = claims_of(keys)
    claims["constraints"] = [c for c in claims["constraints"] if c["type"] != dropped]
    assert reason(issue(claims, owner_key(keys))) == "mandate_ap2_incomplete"


def test_instruments_that_are_not_a_full_product_are_refused_rather_than_widened() -> None:
    keys = Keys()
    claims = claims_of(keys, networks=(NETWORK, "eip155:8453"), assets=(USDC, OTHER_USDC))
    for c in claims["constraints"]:
        if c["type"] == "payment.allowed_payment_instruments":
            kept = [i for i in c["allowed"] if not (
                i["id"].startswith("eip155:8453/") and OTHER_USDC in i["id"].lower())]
            assert len(kept) == len(c["allowed"]) - 2  # both schemes of one pair dropped
            c["allowed"] = kept
    assert reason(issue(claims, owner_key(keys))) == "mandate_ap2_unresolved_constraint"


def test_a_withheld_disclosure_is_refused_and_the_whole_credential_is_accepted() -> None:
    keys = Keys()
    claims = claims_of(keys)
    payees = next(c for c in claims["constraints"] if c["type"] == "payment.allowed_payees")
    payees["allowed"] = [SDObj(m) for m in payees["allowed"]]
    token = issue(claims, owner_key(keys))
    whole = read_open(token)
    assert whole.mandate.payees == (PAYEE,)
    jwt, *_disclosures = token.split("~")
    assert reason(jwt + "~") == "mandate_ap2_withheld"  # read as "any payee" otherwise


def test_a_signature_by_another_key_a_tampered_payload_or_another_alg_is_refused() -> None:
    keys, other = Keys(), Keys()
    claims = claims_of(keys)
    # The other key signs claims naming our owner as issuer.
    assert reason(issue(claims, owner_key(other))) == "mandate_bad_signature"
    token = issue(claims, owner_key(keys))
    header, payload, sig = token.split("~")[0].split(".")
    tampered = copy.deepcopy(claims)
    for c in tampered["constraints"]:
        if c["type"] == "payment.amount_range":
            c["max"] *= 100
    forged = issue(tampered, owner_key(other)).split("~")[0].split(".")[1]
    assert reason(f"{header}.{forged}.{sig}~") == "mandate_bad_signature"
    none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiZGMrc2Qtand0In0"  # {"alg":"none",...}
    assert reason(f"{none_alg}.{payload}.~") == "mandate_bad_signature"


def test_a_foreign_ap2_mandate_with_a_jwk_agent_key_reads_with_the_registry_given() -> None:
    keys = Keys()
    claims = claims_of(keys)
    del claims["a402_registry"]
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwcrypto.jwk import JWK  # the agent's public key as AP2's SDK writes it

    agent_key = ec.derive_private_key(int.from_bytes(bytes(keys.agent.key), "big"),
                                      ec.SECP256K1())
    claims["cnf"] = {"jwk": JWK.from_pyca(agent_key.public_key()).export_public(as_dict=True)}
    token = issue(claims, owner_key(keys))
    assert reason(token) == "mandate_ap2_incomplete"  # where would it be revoked?
    read = read_open(token, registry=REGISTRY)
    assert read.mandate.agent == keys.agent.address
    assert read.domain == DOMAIN


def test_an_ap2_mandate_decides_like_its_a402_twin_and_shares_its_budget(tmp_path: Path) -> None:
    keys = Keys()
    original = signed(keys, max_per_payment=10_000, budget=25_000, payees=(PAYEE,))
    twin = load_sd_jwt(export_open(original.mandate, original.domain, owner_key(keys)))
    payment = ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK,
                              asset=USDC, scheme="exact", amount=10_000,
                              url="https://api.example.com/x")
    now = int(time.time())
    greedy = ProposedPayment(**{**payment.__dict__, "amount": 100 * 10_000})
    for s in (original, twin):
        assert decide(s, greedy, decide_spent(), now=now).reason == "mandate_cap_exceeded"
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    try:
        store.reserve(original, payment, now=now)
        store.reserve(twin, payment, now=now)
        with pytest.raises(Exception) as e:  # 30,000 > 25,000: one budget for both
            store.reserve(original, payment, now=now)
        assert getattr(e.value, "reason", None) == "mandate_budget_exhausted"
        assert store.spent(twin).total == store.spent(original).total == 20_000
        assert {m.signed.hash for m in store.mandates()} == {original.hash}
    finally:
        store.close()


def decide_spent() -> Any:
    from a402.mandate import Spent

    return Spent()


def test_the_twin_cannot_be_built_with_limits_its_sd_jwt_does_not_state() -> None:
    keys = Keys()
    original = signed(keys)
    token = export_open(original.mandate, original.domain, owner_key(keys))
    wider = make_mandate(keys, budget=10**12, nonce=original.mandate.nonce)
    with pytest.raises(MandateError) as e:
        Ap2SignedMandate(wider, original.domain, b"", sd_jwt=token)
    assert e.value.reason == "mandate_bad_signature"
    assert os.environ.get("SD_JWT_HEADER") is None  # the package's typ default is not used


# ---------------------------------------------------------------- closed mandates


def closed_setup(keys: Keys) -> tuple[Any, str, ProposedPayment]:
    original = signed(keys, max_per_payment=10_000, budget=50_000, payees=(PAYEE,))
    token = export_open(original.mandate, original.domain, owner_key(keys))
    payment = ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK,
                              asset=USDC, scheme="exact", amount=7_500,
                              url="https://api.example.com/v1/report")
    return original, token, payment


def test_the_agent_writes_a_closed_mandate_a_verifier_reads_back_and_decides_on() -> None:
    keys = Keys()
    original, token, payment = closed_setup(keys)
    chain = write_closed(token, bytes(keys.agent.key), payment, aud="api.example.com",
                         nonce="n-1")
    assert chain.startswith(token) and chain.count("~~") == 1
    closed = read_closed(chain, expected_aud="api.example.com", expected_nonce="n-1")
    assert closed.payment == payment
    assert closed.open.hash == original.hash
    assert closed.claims["vct"] == "mandate.payment.1"
    assert closed.claims["payment_amount"] == {"amount": 7_500, "currency": "USDC"}
    assert len(closed.reference) == 43  # base64url sha-256 of the leaf
    now = int(time.time())
    assert decide(closed.open, closed.payment, decide_spent(), now=now).allowed
    greedy = write_closed(token, bytes(keys.agent.key),
                          ProposedPayment(**{**payment.__dict__, "amount": 100 * 10_000}),
                          aud="api.example.com", nonce="n-2")
    judged = decide(read_closed(greedy).open, read_closed(greedy).payment, decide_spent(),
                    now=now)
    assert judged.reason == "mandate_cap_exceeded"


def test_a_closed_mandate_not_by_the_agent_for_another_open_mandate_or_audience_is_refused(
) -> None:
    keys = Keys()
    _original, token, payment = closed_setup(keys)
    chain = write_closed(token, bytes(keys.agent.key), payment, aud="a", nonce="n")
    with pytest.raises(MandateError) as e:
        write_closed(token, bytes(keys.owner.key), payment, aud="a", nonce="n")
    assert e.value.reason == "mandate_wrong_agent"
    # A leaf signed by another key, spliced onto this open mandate.
    stranger = Keys()
    s2 = signed(stranger, payees=(PAYEE,))
    other_token = export_open(s2.mandate, s2.domain, owner_key(stranger))
    other_payment = ProposedPayment(**{**payment.__dict__, "agent": stranger.agent.address})
    other_leaf = write_closed(other_token, bytes(stranger.agent.key), other_payment,
                              aud="a", nonce="n").split("~~")[1]
    reasons = []
    for bad in (f"{token}~{other_leaf}",  # not our agent's signature
                chain.replace("~~", "~~x", 1)):  # a mangled leaf
        with pytest.raises(MandateError) as e:
            read_closed(bad)
        reasons.append(e.value.reason)
    assert reasons[0] == "mandate_bad_signature"
    assert reasons[1] in ("mandate_bad_signature", "mandate_ap2_invalid")
    for kw in ({"expected_aud": "b"}, {"expected_nonce": "m"}):
        with pytest.raises(MandateError) as e:
            read_closed(chain, **kw)
        assert e.value.reason == "mandate_ap2_invalid"
    with pytest.raises(MandateError) as e:
        read_closed(chain + "~" + chain.split("~~")[1])  # a further delegation hop
    assert e.value.reason == "mandate_ap2_unresolved_constraint"
