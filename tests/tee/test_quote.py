"""The quote model and the shared attestation policy."""

from __future__ import annotations

import cbor2
import pytest

from a402.crypto import EVM
from a402.tee import AttestationError, AttestationPolicy, Quote, VerifiedEnclave, _cbor

from .conftest import PROVIDER_CODE, VAULT_CODE, policy_for
from .nitro_factory import NOW

SIGNING_KEY = b"\x02" + EVM.generate_key().public_key


def quote(**changes) -> Quote:
    fields = dict(kind="simulated", measurement=VAULT_CODE, signing_key=SIGNING_KEY,
                  kx_key=bytes(range(32)), nonce=b"n" * 32, timestamp_ms=int(NOW * 1000),
                  user_data=b"u")
    fields.update(changes)
    return Quote(**fields)


def test_canonical_round_trip():
    q = quote()
    assert Quote.from_bytes(q.to_bytes()) == q
    assert q.to_bytes() == quote().to_bytes()  # deterministic


def test_non_canonical_and_incomplete_encodings_are_refused():
    q = quote()
    fields = cbor2.loads(q.to_bytes())
    non_canonical = cbor2.dumps(dict(reversed(list(fields.items()))))
    assert non_canonical != q.to_bytes()
    with pytest.raises(ValueError, match="canonical"):
        Quote.from_bytes(non_canonical)
    del fields["user_data"]
    with pytest.raises(ValueError):
        Quote.from_bytes(_cbor.encode(fields))
    with pytest.raises(ValueError):
        Quote.from_bytes(q.to_bytes() + b"\x00")


@pytest.mark.parametrize(
    "change",
    [
        {"measurement": b"short"},
        {"signing_key": b"\x04" + bytes(32)},
        {"signing_key": b"\x02" + b"\xff" * 32},  # x beyond the field: not on the curve
        {"kx_key": bytes(31)},
        {"nonce": bytes(513)},
        {"user_data": bytes(513)},
        {"timestamp_ms": -1},
        {"timestamp_ms": True},
        {"kind": ""},
        {"version": 2},
        {"version": 1.0},  # CBOR float: the right value in the wrong type
    ],
)
def test_invalid_fields_are_refused(change):
    with pytest.raises(ValueError):
        quote(**change)


def test_a_policy_must_name_a_measurement():
    with pytest.raises(ValueError):
        AttestationPolicy(frozenset())
    with pytest.raises(ValueError):
        AttestationPolicy(frozenset({b"not a digest"}))
    with pytest.raises(ValueError):
        AttestationPolicy(frozenset({VAULT_CODE}), max_age_s=0)


def _enclave(**changes) -> VerifiedEnclave:
    fields = dict(kind="simulated", measurement=VAULT_CODE, signing_key=SIGNING_KEY,
                  kx_key=bytes(32), timestamp_ms=int(NOW * 1000), nonce=b"n",
                  pcrs={0: VAULT_CODE, 1: PROVIDER_CODE})
    fields.update(changes)
    return VerifiedEnclave(**fields)


@pytest.mark.parametrize(
    ("policy", "now", "reason"),
    [
        (policy_for(PROVIDER_CODE), NOW, "measurement_mismatch"),
        (policy_for(VAULT_CODE, pcrs={1: VAULT_CODE}), NOW, "pcr_mismatch"),
        (policy_for(VAULT_CODE, pcrs={7: VAULT_CODE}), NOW, "pcr_mismatch"),
        (policy_for(VAULT_CODE, max_age_s=10), NOW + 11, "stale"),
        (policy_for(VAULT_CODE, max_clock_skew_s=5), NOW - 6, "future_timestamp"),
        (policy_for(VAULT_CODE, nonce=b"m"), NOW, "nonce_mismatch"),
    ],
)
def test_policy_failures_have_reasons(policy, now, reason):
    with pytest.raises(AttestationError) as info:
        policy.check(_enclave(), now)
    assert info.value.reason == reason


def test_policy_accepts_within_limits():
    policy_for(PROVIDER_CODE, VAULT_CODE, pcrs={1: PROVIDER_CODE}, nonce=b"n", max_age_s=10,
               max_clock_skew_s=5).check(_enclave(), NOW + 10)
    policy_for(VAULT_CODE, max_clock_skew_s=5).check(_enclave(), NOW - 5)


def test_verified_enclave_is_immutable():
    enclave = _enclave()
    with pytest.raises(TypeError):
        enclave.pcrs[0] = bytes(48)  # type: ignore[index]
