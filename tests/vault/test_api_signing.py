"""The vault API's call signatures: ``sign_request``/``verify_request`` sign and recover on
coincurve directly, and must be EIP-191 ``personal_sign`` exactly as eth_account does it.

eth_account is the oracle: what it signs verifies, what we sign it recovers (byte for byte
the same signature), and a signature is accepted by us if and only if eth_account's
``recover_message`` recovers the named client from it. No chain, no HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.wire import vault_api as api

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1 order
VAULT_ADDRESS = "0x" + "Ab" * 20
VAULT = api.vault_account("eip155:8453", VAULT_ADDRESS)
PATH = "/v1/invoke"
BODY = b'{"url":"http://127.0.0.1:1/data","maxPrice":"1000","idempotencyKey":"k1"}'
NOW = 1_700_000_000
NONCE = "0123456789abcdef0123456789abcdef"
LIFE = "0x" + "5e" * 16


@pytest.fixture(scope="module")
def account() -> LocalAccount:
    return Account.from_key(b"\x11" * 32)


def _text(vault: str = VAULT, method: str = "POST", path: str = PATH, body: bytes = BODY,
          timestamp: int = NOW, nonce: str = NONCE) -> str:
    return api.signing_text(vault, method, path, body, timestamp, nonce, life=LIFE)


def _eth_headers(account: LocalAccount, signature: bytes, *, timestamp: int = NOW,
                 nonce: str = NONCE) -> dict[str, str]:
    return {api.CLIENT_HEADER: account.address, api.TIMESTAMP_HEADER: str(timestamp),
            api.NONCE_HEADER: nonce, api.SIGNATURE_HEADER: "0x" + signature.hex(),
            api.LIFE_HEADER: LIFE}


def _eth_sign(account: LocalAccount, **text: Any) -> bytes:
    """The signature as the previous implementation made it (eth_account)."""
    return bytes(account.sign_message(encode_defunct(text=_text(**text))).signature)


def _eth_recover(signature: bytes, **text: Any) -> str | None:
    try:
        return Account.recover_message(encode_defunct(text=_text(**text)),
                                       signature=signature)
    except Exception:
        return None


def _verify(headers: dict[str, str], *, method: str = "POST", path: str = PATH,
            body: bytes = BODY, now: float = NOW) -> api.Authenticated:
    return api.verify_request(headers, VAULT, method, path, body, life=LIFE, now=now)


def _reason(headers: dict[str, str], **kwargs: Any) -> str:
    with pytest.raises(api.AuthError) as refused:
        _verify(headers, **kwargs)
    return refused.value.reason


def _with_signature(headers: dict[str, str], signature: bytes) -> dict[str, str]:
    return dict(headers, **{api.SIGNATURE_HEADER: "0x" + signature.hex()})


# ------------------------------------------------------------------ equivalence


def test_our_headers_are_eth_accounts_byte_for_byte(account: LocalAccount) -> None:
    ours = api.sign_request(account, VAULT, "POST", PATH, BODY, now=NOW, nonce=NONCE, life=LIFE)
    assert ours == _eth_headers(account, _eth_sign(account))
    assert ours[api.SIGNATURE_HEADER][-2:] in ("1b", "1c")  # v = 27 + recid


def test_our_signature_recovers_with_eth_account(account: LocalAccount) -> None:
    headers = api.sign_request(account, VAULT, "POST", PATH, BODY, now=NOW, nonce=NONCE, life=LIFE)
    signature = bytes.fromhex(headers[api.SIGNATURE_HEADER].removeprefix("0x"))
    assert _eth_recover(signature) == account.address


def test_eth_account_signed_headers_verify(account: LocalAccount) -> None:
    signed = _verify(_eth_headers(account, _eth_sign(account)))
    assert signed == api.Authenticated(account.address, NONCE, NOW)


def test_the_client_header_in_any_case_names_the_checksum_address(
        account: LocalAccount) -> None:
    headers = _eth_headers(account, _eth_sign(account))
    for client in (account.address.lower(), "0x" + account.address[2:].upper()):
        assert _verify(dict(headers, **{api.CLIENT_HEADER: client})).client == account.address


@settings(max_examples=40, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k) < N),
       body=st.binary(max_size=300),
       path=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
       method=st.sampled_from(["GET", "POST", "delete"]), timestamp=st.integers(0, 2**40))
def test_signatures_match_eth_account_for_any_call(key: bytes, body: bytes, path: str,
                                                   method: str, timestamp: int) -> None:
    account = Account.from_key(key)
    ours = api.sign_request(account, VAULT, method, path, body, now=timestamp, nonce=NONCE,
                            life=LIFE)
    theirs = _eth_sign(account, method=method, path=path, body=body, timestamp=timestamp)
    assert ours == _eth_headers(account, theirs, timestamp=timestamp)
    assert api.verify_request(ours, VAULT, method, path, body, life=LIFE, now=timestamp).client \
        == account.address


@settings(max_examples=300, deadline=None)
@given(signature=st.binary(min_size=65, max_size=65))
def test_any_65_bytes_are_accepted_exactly_when_eth_account_recovers_them(
        signature: bytes) -> None:
    signer = _eth_recover(signature)
    headers = {api.CLIENT_HEADER: signer or "0x" + "00" * 20, api.TIMESTAMP_HEADER: str(NOW),
               api.NONCE_HEADER: NONCE, api.SIGNATURE_HEADER: "0x" + signature.hex(),
               api.LIFE_HEADER: LIFE}
    if signer is None:
        assert _reason(headers) == api.BAD_SIGNATURE
    else:
        assert _verify(headers).client == signer


# ---------------------------------------------------------------- malformed and forged


@pytest.mark.parametrize("v", range(256))
def test_v_is_accepted_exactly_as_eth_account_accepts_it(account: LocalAccount,
                                                         v: int) -> None:
    # eth_account takes 0/1, 27/28 and EIP-155 style 35+ (recid = (v - 35) % 2).
    original = _eth_sign(account)
    recid = original[64] - 27
    signature = original[:64] + bytes((v,))
    headers = _eth_headers(account, signature)
    same_key = v in (recid, 27 + recid) or (v >= 35 and (v - 35) % 2 == recid)
    assert (_eth_recover(signature) == account.address) == same_key
    if same_key:
        assert _verify(headers).client == account.address
    else:
        assert _reason(headers) == api.BAD_SIGNATURE


@pytest.mark.parametrize("length", [0, 1, 32, 64, 66, 130])
def test_a_signature_of_another_length_is_refused(account: LocalAccount, length: int) -> None:
    signature = (_eth_sign(account) * 3)[:length]
    assert _eth_recover(signature) is None
    assert _reason(_eth_headers(account, signature)) == api.BAD_SIGNATURE


@pytest.mark.parametrize("value", ["", "0x", "0xzz", "not hex", "0x" + "a" * 129])
def test_a_signature_that_is_not_hex_bytes_is_unauthenticated_or_bad(
        account: LocalAccount, value: str) -> None:
    headers = dict(_eth_headers(account, _eth_sign(account)), **{api.SIGNATURE_HEADER: value})
    try:
        bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        assert _reason(headers) == api.UNAUTHENTICATED
    else:
        assert _reason(headers) == api.BAD_SIGNATURE


def test_high_s_is_treated_as_eth_account_treats_it(account: LocalAccount) -> None:
    # eth_account does not reject high s: (r, N - s) with v flipped recovers the same key,
    # with v kept it recovers some other key. Both ends keep exactly that behaviour.
    signature = _eth_sign(account)
    r, s, v = signature[:32], int.from_bytes(signature[32:64]), signature[64]
    assert s <= N // 2  # we, like eth_account, sign low s
    high = (N - s).to_bytes(32)
    flipped, kept = r + high + bytes((55 - v,)), r + high + bytes((v,))
    assert _eth_recover(flipped) == account.address
    assert _verify(_eth_headers(account, flipped)).client == account.address
    assert _eth_recover(kept) not in (None, account.address)
    assert _reason(_eth_headers(account, kept)) == api.BAD_SIGNATURE


@pytest.mark.parametrize("part", ["r=0", "s=0", "r=N", "s=N", "r=max", "s=max"])
def test_r_and_s_out_of_range_are_refused(account: LocalAccount, part: str) -> None:
    signature = _eth_sign(account)
    value = {"0": 0, "N": N, "max": 2**256 - 1}[part[2:]].to_bytes(32)
    signature = (value + signature[32:] if part[0] == "r"
                 else signature[:32] + value + signature[64:])
    assert _eth_recover(signature) is None
    assert _reason(_eth_headers(account, signature)) == api.BAD_SIGNATURE


def test_another_signer_is_refused(account: LocalAccount) -> None:
    other = Account.create()
    for signature in (_eth_sign(other), bytes.fromhex(api.sign_request(
            other, VAULT, "POST", PATH, BODY, now=NOW, nonce=NONCE,
            life=LIFE)[api.SIGNATURE_HEADER][2:])):
        assert _reason(_eth_headers(account, signature)) == api.BAD_SIGNATURE


@pytest.mark.parametrize("tamper", ["body", "path", "method", "timestamp", "nonce", "vault",
                                    "chain"])
def test_a_tampered_call_is_refused(account: LocalAccount, tamper: str) -> None:
    headers = api.sign_request(account, VAULT, "POST", PATH, BODY, now=NOW, nonce=NONCE, life=LIFE)
    assert _verify(headers).client == account.address
    kwargs: dict[str, Any] = {}
    if tamper == "body":
        kwargs["body"] = BODY.replace(b"1000", b"1001")
    elif tamper == "path":
        kwargs["path"] = PATH + "?x=1"
    elif tamper == "method":
        kwargs["method"] = "PUT"
    elif tamper == "timestamp":
        headers[api.TIMESTAMP_HEADER] = str(NOW + 1)  # still inside the window
    elif tamper == "nonce":
        headers[api.NONCE_HEADER] = NONCE[::-1]
    else:
        # Another vault; or the same vault key on another chain (another deployment).
        elsewhere = (api.vault_account("eip155:8453", "0x" + "cd" * 20) if tamper == "vault"
                     else api.vault_account("eip155:1", VAULT_ADDRESS))
        with pytest.raises(api.AuthError) as refused:
            api.verify_request(headers, elsewhere, "POST", PATH, BODY, life=LIFE, now=NOW)
        assert refused.value.reason == api.BAD_SIGNATURE
        return
    assert _reason(headers, **kwargs) == api.BAD_SIGNATURE


def test_freshness_and_header_checks_are_unchanged(account: LocalAccount) -> None:
    headers = api.sign_request(account, VAULT, "POST", PATH, BODY, now=NOW, nonce=NONCE, life=LIFE)
    assert _reason(headers, now=NOW + api.DEFAULT_AUTH_WINDOW + 1) == api.STALE_REQUEST
    assert _reason({k: v for k, v in headers.items() if k != api.NONCE_HEADER}) \
        == api.UNAUTHENTICATED
    assert _reason(dict(headers, **{api.NONCE_HEADER: "short"})) == api.UNAUTHENTICATED
    fresh = api.sign_request(account, VAULT, "GET", "/v1/account", b"", life=LIFE)
    assert api.verify_request(fresh, VAULT, "GET", "/v1/account", b"",
                              life=LIFE, now=time.time()).client == account.address


def test_the_signed_text_names_the_vault_on_its_chain() -> None:
    assert api.vault_account("eip155:8453", VAULT_ADDRESS.upper().replace("0X", "0x")) == (
        "eip155:8453:0x" + "ab" * 20)
    assert _text().splitlines()[:3] == ["a402-vault-request/v3", "eip155:8453:0x" + "ab" * 20,
                                        LIFE]


def test_a_call_signed_for_another_life_is_refused_as_such(account: LocalAccount) -> None:
    """A vault that lost its ledger starts a new life: a call signed for the old one is
    refused saying so (and that nothing was paid), and one without a life is an older
    client's."""
    headers = api.sign_request(account, VAULT, "POST", PATH, BODY, now=NOW, nonce=NONCE,
                               life="0x" + "01" * 16)
    with pytest.raises(api.AuthError) as refused:
        _verify(headers)
    assert refused.value.reason == api.WRONG_LIFE
    assert refused.value.detail.startswith("nothing was paid")
    assert "lost its ledger" in refused.value.detail
    old = {k: v for k, v in api.sign_request(account, VAULT, "POST", PATH, BODY, now=NOW,
                                             nonce=NONCE, life=LIFE).items()
           if k != api.LIFE_HEADER}
    assert _reason(old) == api.CLIENT_OUTDATED
