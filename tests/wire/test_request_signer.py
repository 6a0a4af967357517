"""A client's key loaded once (:class:`~a402.wire.vault_api.RequestSigner`) signs its vault
calls exactly as the account itself does: the same headers, byte for byte, that verify."""

from __future__ import annotations

from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.wire import vault_api as api

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
VAULT = api.vault_account("eip155:8453", "0x" + "Ab" * 20)


@settings(max_examples=30, deadline=None)
@given(key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k) < N),
       body=st.binary(max_size=200), timestamp=st.integers(0, 2**40))
def test_a_loaded_key_signs_every_call_as_its_account_does(key: bytes, body: bytes,
                                                           timestamp: int) -> None:
    account = Account.from_key(key)
    signer = api.RequestSigner(account)
    ours = api.sign_request(signer, VAULT, "POST", "/v1/invoke", body, now=timestamp,
                            nonce="n0nce123", life="0x00")
    assert ours == api.sign_request(account, VAULT, "POST", "/v1/invoke", body, now=timestamp,
                                    nonce="n0nce123", life="0x00")
    assert api.verify_request(ours, VAULT, "POST", "/v1/invoke", body, life="0x00",
                              now=timestamp).client \
        == account.address


def test_a_loaded_key_does_not_show_in_its_repr() -> None:
    account = Account.from_key(b"\x11" * 32)
    signer = api.RequestSigner(account)
    assert repr(signer) == f"RequestSigner(address={account.address})"
    assert account.key.hex() not in repr(signer)


def test_a_vault_client_signs_each_call_with_its_loaded_key_and_a_replaced_account_with_its_own(
) -> None:
    from a402.client.vault import VaultClient

    first, second = Account.from_key(b"\x21" * 32), Account.from_key(b"\x22" * 32)
    with VaultClient("http://127.0.0.1:9", first, trust_on_first_use=True) as client:
        client._info = {"network": "eip155:8453", "vault": "0x" + "Ab" * 20, "life": "0x00"}
        signers = []
        for account in (first, first, second):
            client.account = account
            request = client._signed("POST", "/v1/invoke", b"{}", json_body=True)
            signers.append(api.verify_request(
                request.headers, VAULT, "POST", "/v1/invoke", b"{}", life="0x00",
                now=int(request.headers[api.TIMESTAMP_HEADER])).client)
            assert client._signer is not None and client._signer[0] is account
        assert signers == [first.address, first.address, second.address]
