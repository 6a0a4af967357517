"""A vault host that is not its enclave cannot move the vault's money (issue 12, finding 2).

The host here has everything a vault operator has: its gas key, its database
and its process — the :class:`SimulatedEnclave` object, the enclave code's
boundary (:class:`VaultEnclave`) and every channel proxy, and every signed call
its clients ever sent — but not the enclave's kernel or sealing keys. On anvil,
with balances: the pooled deposits sit at the enclave's address (the host's
account holds no tokens), and nothing the host can do moves them or pays a
provider beyond what clients signed.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from eth_account import Account

from a402.asc import BalanceState, ChannelTerms, SignedState, sign_channel_open, sign_state
from a402.asc.snapshot import terms_from_json
from a402.asc_manager import terms_tuple
from a402.background import serve_in_thread
from a402.chain.tx import TransactionFailed, transact
from a402.client.vault import VaultClient
from a402.crypto import EcdsaSigner
from a402.tee import EnclaveError, SealingError
from a402.vault import store as vault_store
from a402.vault_enclave import INVOKE_PATH, WITHDRAW_PATH, SignedCall
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PRICES, World

from .helpers import Vault, assert_conserved, client_of, running_vault

pytestmark = pytest.mark.anvil
PRICE = PRICES["GET /weather"]


def provider_key(provider: object) -> bytes:
    key: bytes = provider.enclave.signing_public_key[1:]  # type: ignore[attr-defined]
    return key


def _signed_invoke(vault: Vault, account: Account, url: str, key: str,
                   max_price: int = PRICE) -> tuple[dict[str, str], bytes]:
    body = json.dumps(api.InvokeRequest(url=url, method="GET", headers=(), body=b"",
                                        max_price=max_price, idempotency_key=key,
                                        created_at=int(time.time())).to_json()
                      ).encode()
    return api.sign_request(account, vault.signed_as, "POST", INVOKE_PATH, body,
                            life=vault.life), body


def test_a_vault_whose_host_holds_no_tokens_serves_paid_calls_and_withdrawals(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        assert vault.address != vault.account.address  # the enclave's key, not the host's
        info = httpx.get(vault.url + "/v1/info").json()
        assert info["vault"] == vault.address and info["deposit"]["payTo"] == vault.address
        account, client = client_of(world, vault.url, funds=60_000, deposit=50_000)
        assert world.balances(vault.address, vault.account.address) == (50_000, 0)

        paid = [client.invoke(f"{site}/weather", max_price=PRICE) for _ in range(2)]
        assert [p.outcome for p in paid] == [api.PAID, api.PAID]
        [channel] = client.account_info()["channels"]
        closed = client.close_channel(channel["channelId"])
        assert (closed["phase"], closed["providerPayout"]) == (vault_store.SETTLED,
                                                               str(2 * PRICE))
        assert world.balance(provider.address) == 2 * PRICE

        answer = client.withdraw(20_000)
        assert answer["state"] == vault_store.TX_CONFIRMED, answer
        assert world.balance(account.address) == 10_000 + 20_000
        assert world.balances(vault.address, vault.account.address) == (
            50_000 - 2 * PRICE - 20_000, 0)
        assert vault.service.vault.balance(account.address) == 50_000 - 2 * PRICE - 20_000
        assert_conserved(world, vault.store, vault.address, escrow)


def test_a_host_cannot_pay_a_provider_for_a_call_no_client_signed_or_twice_for_one(
    world: World,
) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault.url, funds=20_000, deposit=20_000)
        headers, body = _signed_invoke(vault, account, f"{site}/weather", "once")
        answer = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers, timeout=30)
        assert answer.json()["outcome"] == api.PAID
        [row] = vault.store.channels(client=account.address)
        enclave = vault.service.vault
        channel = enclave.channel(bytes.fromhex(row.cid[2:]))
        assert channel is not None and channel.provider_balance == PRICE

        # The host replays the client's call, as it arrived, straight into the enclave.
        replay = SignedCall.of(headers, "POST", INVOKE_PATH, body)
        with pytest.raises(EnclaveError, match="replayed_call"):
            channel.request(replay, PRICE, now=time.time())
        # ... or signs a call itself, with its gas key or any key it makes.
        for key in (vault.account, Account.create()):
            h, b = _signed_invoke(vault, key, f"{site}/weather", "forged")
            with pytest.raises(EnclaveError, match="not_your_channel"):
                channel.request(SignedCall.of(h, "POST", INVOKE_PATH, b), PRICE,
                                now=time.time())
        # ... or changes what the client signed (a higher price, another URL).
        tampered = SignedCall(replay.headers, "POST", INVOKE_PATH,
                              body.replace(b'"1000"', b'"9000"'))
        with pytest.raises(EnclaveError, match="bad_signature"):
            channel.request(tampered, 9_000, now=time.time())
        # A fresh call of the client's pays, within its maximum only.
        h, b = _signed_invoke(vault, account, f"{site}/weather", "cheap", max_price=PRICE - 1)
        with pytest.raises(EnclaveError, match="price_above_maximum"):
            channel.request(SignedCall.of(h, "POST", INVOKE_PATH, b), PRICE, now=time.time())

        assert channel.provider_balance == PRICE and channel.locked == 0
        assert provider.calls["weather"] == 1
        closed = client.close_channel(row.cid)
        assert closed["providerPayout"] == str(PRICE)
        assert world.balance(provider.address) == PRICE


def test_a_host_cannot_withdraw_beyond_a_balance_or_for_another_client(world: World) -> None:
    with running_vault(world) as vault:
        alice, alice_client = client_of(world, vault.url, funds=10_000, deposit=10_000)
        bob, _ = client_of(world, vault.url, funds=5_000, deposit=5_000)
        enclave = vault.service.vault
        host = vault.account

        def withdrawal(account: Account, amount: int, key: str, to: str | None = None
                       ) -> SignedCall:
            body = json.dumps({"amount": str(amount), "idempotencyKey": key,
                               **({"to": to} if to else {})}).encode()
            headers = api.sign_request(account, vault.signed_as, "POST", WITHDRAW_PATH, body,
                                       life=vault.life)
            return SignedCall.of(headers, "POST", WITHDRAW_PATH, body)

        # More than alice has; alice's call relabelled as bob's; the host's own call.
        with pytest.raises(EnclaveError, match="insufficient_balance"):
            enclave.withdraw(withdrawal(alice, 10_001, "a"), now=int(time.time()))
        genuine = withdrawal(alice, 4_000, "b")
        relabelled = SignedCall({**genuine.headers, api.CLIENT_HEADER: bob.address},
                                genuine.method, genuine.path, genuine.body)
        with pytest.raises(EnclaveError, match="bad_signature"):
            enclave.withdraw(relabelled, now=int(time.time()))
        with pytest.raises(EnclaveError, match="insufficient_balance"):
            enclave.withdraw(withdrawal(host, 1, "c", to=host.address), now=int(time.time()))

        # A genuine withdrawal signed twice is one transfer: the same EIP-3009 nonce.
        first = enclave.withdraw(genuine, now=int(time.time()))
        again = enclave.withdraw(genuine, now=int(time.time()) + 1)
        assert first.nonce == again.nonce and first.signature != again.signature
        token = world.token.functions
        for n, signed in enumerate((first, again)):
            v = signed.signature[64]
            call = token.transferWithAuthorization(
                world.chain.w3.to_checksum_address(signed.source),
                world.chain.w3.to_checksum_address(signed.to), signed.value,
                signed.valid_after, signed.valid_before, signed.nonce, v,
                signed.signature[:32], signed.signature[32:64])
            if n == 0:
                transact(world.chain, host, call)
            else:
                with pytest.raises(TransactionFailed):
                    transact(world.chain, host, call)
        assert world.balances(alice.address, bob.address) == (4_000, 0)
        assert world.balance(vault.address) == 15_000 - 4_000
        assert (enclave.balance(alice.address), enclave.balance(bob.address)) == (6_000, 5_000)
        # The pool itself: no permit to anyone but the ASCManager, no plain transfer.
        with pytest.raises(EnclaveError, match="spender_not_allowed"):
            enclave.permit(host.address, 2**256 - 1, 0, 2**63)
        assert int(token.allowance(vault.address, host.address).call()) == 0
        assert alice_client.account_info()["balance"] == "10000"  # the host's view: untouched


def test_a_host_cannot_open_a_pool_channel_beyond_a_balance_or_without_the_enclave(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app), running_vault(world) as vault:
        alice, _ = client_of(world, vault.url, funds=3_000, deposit=3_000)
        enclave = vault.service.vault
        terms = ChannelTerms(vault.address, vault.address, provider.address,
                             provider_key(provider), 3_001, enclave.salt())
        h, b = _signed_invoke(vault, alice, "https://api.example/weather", "open")
        with pytest.raises(EnclaveError, match="insufficient_balance"):
            enclave.approve_pool_channel(SignedCall.of(h, "POST", INVOKE_PATH, b), terms,
                                         lock_timeout=10.0, now=world.manager.chain_time())
        manager = world.manager
        host = vault.account
        # Without the enclave's approval, or with the host's own signature instead:
        for approval in (b"", sign_channel_open(EcdsaSigner(bytes(host.key)), manager.domain,
                                                terms)):
            with pytest.raises(TransactionFailed):
                transact(world.chain, host, manager.contract.functions.createASC(
                    terms_tuple(terms), approval, approval))
        assert world.balance(world.manager.address) == escrow
        assert world.balance(vault.address) == 3_000
        assert enclave.balance(alice.address) == 3_000


def test_a_host_cannot_sign_a_channel_state_or_read_sealed_records(world: World) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault.url, funds=20_000, deposit=20_000)
        assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        [row] = vault.store.channels(client=account.address)
        enclave = vault.service.config.enclave
        assert not hasattr(enclave, "sign_digest")  # no signing oracle left for the host
        assert row.snapshot is not None
        with pytest.raises(SealingError):  # the host's unseal cannot open the code's records
            enclave.unseal(f"a402/vault-channel/{row.cid[2:]}", row.snapshot)
        # A state that pays the provider everything, "signed for the vault" by the host's
        # key: the contract refuses it (the vault is the enclave's key).
        terms = terms_from_json(row.terms)
        greedy = BalanceState(5, 0, terms.deposit, True)
        host_sig = sign_state(EcdsaSigner(bytes(vault.account.key)), world.manager.domain,
                              bytes.fromhex(row.cid[2:]), greedy)
        with pytest.raises(TransactionFailed):
            world.manager.init_force_close_for(vault.account, terms,
                                               SignedState(greedy, host_sig, b""), host_sig,
                                               deadline=world.manager.chain_time() + 600)
        before = world.balances(vault.address, provider.address, world.manager.address)
        assert before[1] == 0
        closed = client.close_channel(row.cid)
        assert closed["providerPayout"] == str(PRICE)



def test_a_host_that_restarts_cannot_replay_a_call_it_received_before(world: World) -> None:
    """After a restart the enclave knows no nonce until the client's channels are loaded
    from their sealed records: it refuses the client's calls until then, and then the
    replay."""
    provider = world.provider()
    gas = Account.create()
    transact(world.chain, world.chain.accounts[0], {"to": gas.address}, value=10**18)
    db = f"sqlite:///{world.tmp}/restarted-vault.db"
    with serve_in_thread(provider.app) as site:
        with running_vault(world, account=gas, db_url=db) as vault:
            account, _ = client_of(world, vault.url, funds=20_000, deposit=20_000)
            headers, body = _signed_invoke(vault, account, f"{site}/weather", "before")
            answer = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers,
                                timeout=30)
            assert answer.json()["outcome"] == api.PAID
            address = vault.address
        with running_vault(world, account=gas, db_url=db) as vault:
            assert vault.address == address  # the same enclave, restored from its store
            [row] = vault.store.channels(client=account.address)
            enclave = vault.service.vault
            cid = bytes.fromhex(row.cid[2:])
            replay = SignedCall.of(headers, "POST", INVOKE_PATH, body)
            # Recovery may have loaded the channel; the host can unload it at will. The
            # restarted enclave knows (from the ledger) that the client's calls wait for
            # it, and the host can load it only from its sealed record, which carries the
            # nonces it consumed.
            enclave.unload(cid)
            assert enclave.channel(cid) is None
            assert enclave.missing(account.address) == [cid]
            assert enclave.balance(account.address) == 20_000 - int(row.deposit)
            channel = enclave.restore(cid, row.snapshot)
            assert channel is not None
            with pytest.raises(EnclaveError, match="replayed_call"):
                channel.request(replay, PRICE, now=time.time())
            assert channel.provider_balance == PRICE
            # A new call of the client's pays as usual.
            again = VaultClient(vault.url, account)  # the restarted vault's URL
            assert again.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
            fresh = vault.store.channel(row.cid)
            assert fresh is not None and fresh.provider_balance == str(2 * PRICE)
