"""One ECDSA recovery, three acceptance rules: each is the rule its callers had before."""

from __future__ import annotations

import pytest
from eth_account import Account

from a402.evm.ecdsa import (
    EIP3009_TOKEN,
    ETH_ACCOUNT,
    OPENZEPPELIN,
    SECP256K1_N,
    RecoveryPolicy,
    recover_address,
)

SECRET = b"\x24" * 32
DIGEST = b"\x33" * 32
SIGNER = bytes.fromhex(Account.from_key(SECRET).address[2:])
SIGNATURE = bytes(Account.unsafe_sign_hash(DIGEST, SECRET).signature)  # v 27/28, low s
POLICIES = [OPENZEPPELIN, EIP3009_TOKEN, ETH_ACCOUNT]


def _with_v(v: int) -> bytes:
    return SIGNATURE[:64] + bytes((v,))


def _high_s_twin() -> bytes:
    """(r, N - s) with v flipped: the same signer, the malleated form EIP-2 refuses."""
    s = int.from_bytes(SIGNATURE[32:64], "big")
    return SIGNATURE[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - SIGNATURE[64],))


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_recovers_an_ordinary_signature(policy: RecoveryPolicy) -> None:
    assert recover_address(DIGEST, SIGNATURE, policy=policy) == SIGNER


@pytest.mark.parametrize(("policy", "accepted"),
                         [(OPENZEPPELIN, False), (EIP3009_TOKEN, True), (ETH_ACCOUNT, True)])
def test_v_as_the_raw_recovery_id(policy: RecoveryPolicy, accepted: bool) -> None:
    recovered = recover_address(DIGEST, _with_v(SIGNATURE[64] - 27), policy=policy)
    assert recovered == (SIGNER if accepted else None)


@pytest.mark.parametrize(("policy", "accepted"),
                         [(OPENZEPPELIN, False), (EIP3009_TOKEN, False), (ETH_ACCOUNT, True)])
def test_v_in_eip155_style(policy: RecoveryPolicy, accepted: bool) -> None:
    recovery_id = SIGNATURE[64] - 27
    for v in (35 + recovery_id, 37 + recovery_id, 253 + recovery_id):
        recovered = recover_address(DIGEST, _with_v(v), policy=policy)
        assert recovered == (SIGNER if accepted else None)


@pytest.mark.parametrize(("policy", "accepted"),
                         [(OPENZEPPELIN, False), (EIP3009_TOKEN, False), (ETH_ACCOUNT, True)])
def test_high_s(policy: RecoveryPolicy, accepted: bool) -> None:
    recovered = recover_address(DIGEST, _high_s_twin(), policy=policy)
    assert recovered == (SIGNER if accepted else None)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("bad", ["v", "r0", "s0", "rN", "sN", "short", "long", "digest"])
def test_malformed_signatures_recover_nothing(policy: RecoveryPolicy, bad: str) -> None:
    n = SECP256K1_N.to_bytes(32, "big")
    digest, signature = DIGEST, {
        "v": _with_v(29),
        "r0": bytes(32) + SIGNATURE[32:],
        "s0": SIGNATURE[:32] + bytes(32) + SIGNATURE[64:],
        "rN": n + SIGNATURE[32:],
        "sN": SIGNATURE[:32] + n + SIGNATURE[64:],
        "short": SIGNATURE[:64],
        "long": SIGNATURE + b"\x00",
        "digest": SIGNATURE,
    }[bad]
    if bad == "digest":
        digest = DIGEST[:31]
    assert recover_address(digest, signature, policy=policy) is None
