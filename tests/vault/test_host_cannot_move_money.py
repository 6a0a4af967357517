"""A vault host that is not its enclave cannot move the vault's money (issue 12, finding 2).

The host here has everything a vault operator has: its gas key, its database
and its process — the :class:`SimulatedEnclave` object, the enclave code's
boundary (:class:`VaultEnclave`) and every channel proxy, and every signed call
its clients ever sent — but not the enclave's kernel or sealing keys. On anvil,
with balances: the pooled deposits are per-client balances in the ASCManager
(``pooled[vault][client]``; neither the enclave's address nor the host's
account holds tokens), and nothing the host can do — not even inventing a
deposit in its own database — moves them or pays a provider beyond what
clients signed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import httpx
import pytest
from eth_account import Account

from a402.asc import (
    BalanceState,
    ChannelTerms,
    Exec,
    SignedState,
    decode,
    sign_pool_open_approval,
    sign_state,
)
from a402.asc.snapshot import terms_from_json
from a402.background import serve_in_thread
from a402.chain.tx import TransactionFailed, transact
from a402.client.vault import VaultClient, pooled, withdraw_from_pool
from a402.crypto import EcdsaSigner
from a402.tee import EnclaveError, SealingError
from a402.vault import store as vault_store
from a402.vault_enclave import INVOKE_PATH, SignedCall
from a402.wire import vault_api as api
from a402.wire.a402 import REQUEST_AD, Envelope, HttpRequest, Kind
from tests.a402_exchange.helpers import PRICES, World
from tests.asc.helpers import selector

from .helpers import Vault, assert_conserved, client_of, expected, running_vault, wait_for

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
        assert info["vault"] == vault.address and info["deposit"]["vault"] == vault.address
        account, client = client_of(world, vault, funds=60_000, deposit=50_000)
        assert world.balances(vault.address, vault.account.address) == (0, 0)
        assert world.manager.pooled(vault.address, account.address) == 50_000

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
        assert world.balances(vault.address, vault.account.address) == (0, 0)
        assert world.manager.pooled(vault.address, account.address) == (
            50_000 - 2 * PRICE - 20_000)
        assert_conserved(world, vault.store, vault.address, escrow)


def test_a_host_cannot_pay_a_provider_for_a_call_no_client_signed_or_twice_for_one(
    world: World,
) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
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


def test_a_host_that_invents_a_deposit_cannot_withdraw_the_pool(world: World) -> None:
    """The old custody hole (issue 12): the host credits an invented deposit to a key it
    controls — in its database and in every report it makes — then tries to take the pool
    with it, by every door: a withdrawal order of that key relayed through its own vault,
    the enclave's approval of a pool channel for that key's signed call, a channel opened
    without the enclave, the honest clients' orders replayed or altered. The chain bounds
    every one of them: alice's and bob's pooled tokens do not move, to the unit."""
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        alice, alice_client = client_of(world, vault, funds=10_000, deposit=10_000)
        bob, _ = client_of(world, vault, funds=5_000, deposit=5_000)
        manager, enclave, host = world.manager, vault.service.vault, vault.account
        # An honest withdrawal first, so there is an order to replay.
        paid_out = alice_client.withdraw(1_000)
        assert paid_out["state"] == vault_store.TX_CONFIRMED
        escrow = world.balance(manager.address)
        mallory = Account.create()  # a key the host controls
        transact(world.chain, world.chain.accounts[0], {"to": mallory.address}, value=10**18)
        # The host's full access: its own database says mallory deposited a million.
        assert vault.store.credit_deposit(f"pool:0x{'ee' * 32}:0", mallory.address, 10**6,
                                          "pool", "0x" + "ee" * 32)
        mallorys = VaultClient(vault.url, mallory, expect=expected(world, vault))
        assert mallorys.account_info()["balance"] == str(10**6)  # the host's books say so
        assert mallorys.account_info()["pooled"] == "0"  # the chain does not
        # 1. Withdraw it through the vault (the order is mallory's; the chain has nothing).
        refused = mallorys.withdraw(500_000, to=mallory.address)
        assert (refused["state"], refused["reason"]) == (vault_store.TX_FAILED,
                                                         api.WITHDRAWAL_REFUSED)
        assert "nothing moved" in refused["message"]
        # 2. Spend it on a pool channel: the enclave approves mallory's own call for a
        #    channel of mallory's, but the contract debits mallory's pool balance: none.
        h, b = _signed_invoke(vault, mallory, f"{site}/weather", "steal")
        terms = ChannelTerms(mallory.address, vault.address, provider.address,
                             provider_key(provider), 10_000, enclave.salt())
        approval = enclave.approve_pool_channel(SignedCall.of(h, "POST", INVOKE_PATH, b),
                                                terms, lock_timeout=10.0,
                                                now=manager.chain_time())
        with pytest.raises(TransactionFailed, match=selector("InsufficientPool(uint256,uint256)")):
            manager.create_from_pool(host, terms, approval.signature, approval.deadline)
        #    ... nor can that approval open a channel of alice's (the id names the client).
        alices = ChannelTerms(alice.address, vault.address, provider.address,
                              provider_key(provider), 9_000, terms.salt)
        with pytest.raises(TransactionFailed):
            manager.create_from_pool(host, alices, approval.signature, approval.deadline)
        # 3. Open alice's pool channel without the enclave: its own key's approval.
        forged = sign_pool_open_approval(EcdsaSigner(bytes(host.key)), manager.domain, alices,
                                    manager.chain_time() + 600)
        with pytest.raises(TransactionFailed):
            manager.create_from_pool(host, alices, forged, manager.chain_time() + 600)
        # 4. Take alice's pool with orders: hers replayed, hers redirected, its own as hers.
        deadline = manager.chain_time() + 600
        nonce, order = manager.pool_withdrawal_order(alice, vault.address, alice.address,
                                                     1_000, deadline, nonce=0)  # the used one
        with pytest.raises(TransactionFailed):
            manager.withdraw_from_pool_for(host, vault.address, alice.address, alice.address,
                                           1_000, nonce, deadline, order)
        _, fresh = manager.pool_withdrawal_order(alice, vault.address, alice.address, 1_000,
                                                 deadline)
        with pytest.raises(TransactionFailed):  # redirected to the host
            manager.withdraw_from_pool_for(host, vault.address, alice.address, host.address,
                                           1_000, 1, deadline, fresh)
        _, as_alice = manager.pool_withdrawal_order(host, vault.address, host.address, 9_000,
                                                    deadline, nonce=1)
        with pytest.raises(TransactionFailed):
            manager.withdraw_from_pool_for(host, vault.address, alice.address, host.address,
                                           9_000, 1, deadline, as_alice)
        # Not a unit moved.
        assert (manager.pooled(vault.address, alice.address),
                manager.pooled(vault.address, bob.address),
                manager.pooled(vault.address, mallory.address)) == (9_000, 5_000, 0)
        assert world.balance(manager.address) == escrow
        assert world.balances(mallory.address, host.address, vault.address) == (0, 0, 0)
        assert world.balance(alice.address) == 1_000
        assert manager.channel(terms.channel_id(manager.domain)).status.name == "NONE"
        mallorys.close()
        alice_client.close()


def test_a_host_cannot_open_a_pool_channel_beyond_a_balance_or_without_the_enclave(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app), running_vault(world) as vault:
        alice, _ = client_of(world, vault, funds=3_000, deposit=3_000)
        enclave = vault.service.vault
        manager = world.manager
        host = vault.account
        h, b = _signed_invoke(vault, alice, "https://api.example/weather", "open")
        # The enclave approves alice's call; the chain refuses more than alice pooled.
        terms = ChannelTerms(alice.address, vault.address, provider.address,
                             provider_key(provider), 3_001, enclave.salt())
        approval = enclave.approve_pool_channel(SignedCall.of(h, "POST", INVOKE_PATH, b), terms,
                                                lock_timeout=10.0, now=manager.chain_time())
        with pytest.raises(TransactionFailed, match=selector("InsufficientPool(uint256,uint256)")):
            manager.create_from_pool(host, terms, approval.signature, approval.deadline)
        # Without the enclave's approval, or with the host's own signature instead:
        within = ChannelTerms(alice.address, vault.address, provider.address,
                              provider_key(provider), 3_000, enclave.salt())
        deadline = manager.chain_time() + 600
        for signature in (b"", sign_pool_open_approval(EcdsaSigner(bytes(host.key)), manager.domain,
                                                       within, deadline)):
            with pytest.raises(TransactionFailed):
                manager.create_from_pool(host, within, signature, deadline)
        assert world.balance(manager.address) == escrow + 3_000
        assert manager.pooled(vault.address, alice.address) == 3_000
        assert world.balance(vault.address) == 0


def test_a_host_cannot_sign_a_channel_state_or_read_sealed_records(world: World) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
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



class RequestSwappingHost:
    """The vault host's own hand on the tunnel: it encrypts every frame itself (the vault's
    enclave code runs with ``host_tunnels=True``), so before it encrypts an EXEC it puts
    ``substitute`` where the request the enclave built from the client's call was — the
    same channel, request id, version and δ, another request the provider sells at δ."""

    def __init__(self, enclave: Any, substitute: HttpRequest) -> None:
        self._encrypt = enclave.channel_encrypt
        self.substitute = substitute
        self.swapped: list[HttpRequest] = []  # the requests it replaced

    def channel_encrypt(self, handle: str, plaintext: bytes, *, ad: bytes = b"") -> bytes:
        envelope = Envelope.decode(plaintext)
        if ad == REQUEST_AD and envelope.kind is Kind.ASC:
            message = decode(envelope.body)
            if isinstance(message, Exec):
                self.swapped.append(HttpRequest.decode(message.request))
                swapped = dataclasses.replace(message, request=self.substitute.encode())
                plaintext = Envelope.asc(swapped.encode()).encode()
        return bytes(self._encrypt(handle, plaintext, ad=ad))


def test_a_vault_host_that_swaps_the_request_in_an_exec_gets_no_payment_for_it(
    world: World, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client signs ``GET /weather``; the host sends the provider ``POST /echo`` (sold at
    the same price) in its place, inside the EXEC, before encrypting the frame. The provider
    was not asked for that by anyone who pays: it must not be paid for it — the exchange is
    refused before σ_U, or no state pays it — and the client's pool balance is whole.

    Why it is refused: the provider's enclave runs ``POST /echo`` and pre-signs
    m(cid, rid, δ, answer_hash(POST /echo, H(result))); the vault enclave's machine
    (:meth:`a402.asc.VaultChannel._on_reply`) rebuilds m from the request it sent
    (``GET /weather``), the pre-signature does not verify on it (``bad_presignature``), and
    no σ_U is signed. (Before m bound the request it went through: the provider was paid
    1 000 on-chain and only the host's own check after payment, a check a cheating host
    skips, noticed.)
    """
    provider = world.provider(routes={**PRICES, "POST /echo": PRICE})
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        host = RequestSwappingHost(vault.service.config.enclave,
                                   HttpRequest("POST", "/echo", body=b"the host's choice"))
        monkeypatch.setattr(vault.service.config.enclave, "channel_encrypt",
                            host.channel_encrypt)
        headers, body = _signed_invoke(vault, account, f"{site}/weather", "weather")
        answer = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers, timeout=30)
        assert [r.path for r in host.swapped] == ["/weather"]  # the client's request, replaced
        [row] = vault.store.channels(client=account.address)
        channel = vault.service.vault.channel(bytes.fromhex(row.cid[2:]))
        assert channel is not None
        # What should hold: the provider ran a request nobody who pays signed; no σ_U, no
        # state pays it, and the client is not told it paid.
        assert (channel.provider_balance, channel.locked) == (0, 0), answer.json()
        assert answer.json()["outcome"] != api.PAID
        # The provider holds the request it ran (its REPLY refused) until its own lock on
        # it ends, and co-signs the close only then: the vault's worker closes it after.
        client.close_channel(row.cid)
        settled = wait_for(
            lambda: (c := vault.store.channel(row.cid)).phase == vault_store.SETTLED and c,
            what="settlement")
        assert (settled.provider_payout, settled.client_payout) == ("0", settled.deposit)
        assert world.balance(provider.address) == 0
        assert world.manager.pooled(vault.address, account.address) == 20_000


def test_a_host_that_restarts_cannot_replay_a_call_it_received_before(world: World) -> None:
    """After a restart the enclave knows no nonce until the client's channels are loaded
    from their sealed records and logs of paid calls: it refuses the client's calls until
    then, and then every replay of the calls paid before the restart."""
    provider = world.provider()
    gas = Account.create()
    transact(world.chain, world.chain.accounts[0], {"to": gas.address}, value=10**18)
    db = f"sqlite:///{world.tmp}/restarted-vault.db"
    with serve_in_thread(provider.app) as site:
        with running_vault(world, account=gas, db_url=db) as vault:
            account, _ = client_of(world, vault, funds=20_000, deposit=20_000)
            calls = []
            for i in range(4):
                headers, body = _signed_invoke(vault, account, f"{site}/weather", f"before-{i}")
                answer = httpx.post(vault.url + "/v1/invoke", content=body, headers=headers,
                                    timeout=30)
                assert answer.json()["outcome"] == api.PAID
                calls.append((headers, body))
            address = vault.address
        with running_vault(world, account=gas, db_url=db) as vault:
            assert vault.address == address  # the same enclave, restored from its store
            [row] = vault.store.channels(client=account.address)
            enclave = vault.service.vault
            cid = bytes.fromhex(row.cid[2:])
            replays = [SignedCall.of(h, "POST", INVOKE_PATH, b) for h, b in calls]
            # Recovery may have loaded the channel; the host can unload it at will. The
            # restarted enclave knows (from the ledger) that the client's calls wait for
            # it, and the host can load it only from its sealed record, which carries the
            # nonces it consumed. (Under the enclave's lock: the running vault's recovery
            # would otherwise load the channel again, with its log, in the middle of these
            # checks, and a restore of a channel already running changes nothing.)
            with enclave._code.lock:
                enclave.unload(cid)
                assert enclave.channel(cid) is None
                assert enclave.missing(account.address) == [cid]
                # Nor without the log of the calls it paid, stored with that record: a host
                # that withholds it (to have a call paid again) gets no channel.
                with pytest.raises(EnclaveError, match="log_incomplete"):
                    enclave.restore(cid, row.snapshot)
                assert enclave.channel(cid) is None
            assert world.manager.pooled(vault.address, account.address) == (
                20_000 - int(row.deposit))
            channel = enclave.restore(cid, row.snapshot, vault.store.consumed_log(row.cid))
            assert channel is not None
            for replay in replays:
                with pytest.raises(EnclaveError, match="replayed_call"):
                    channel.request(replay, PRICE, now=time.time())
            assert channel.provider_balance == 4 * PRICE
            # A new call of the client's pays as usual.
            # The restarted vault's URL.
            again = VaultClient(vault.url, account, expect=expected(world, vault))
            assert again.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
            fresh = vault.store.channel(row.cid)
            assert fresh is not None and fresh.provider_balance == str(5 * PRICE)


def test_with_the_vault_gone_a_pool_client_takes_exactly_its_balance_out_itself(
        world: World) -> None:
    """The escape hatch: the vault's host is gone (stopped, its database and enclave out of
    reach). The client reads its pool balance from the chain and takes it out with
    ``withdrawFromPool``, sent with its own key: exactly its balance, not a unit more."""
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        [channel] = client.account_info()["channels"]
        client.close_channel(channel["channelId"])
        neighbour, _ = client_of(world, vault, funds=5_000, deposit=5_000)
        address = vault.address
        client.close()
    # The vault is gone. Only the chain and the client's key are left.
    transact(world.chain, world.chain.accounts[0], {"to": account.address}, value=10**17)
    rpc = world.chain.rpc_url
    assert rpc is not None
    balance = pooled(rpc, world.manager.address, address, account.address)
    assert balance == 20_000 - PRICE
    with pytest.raises(TransactionFailed):  # not a unit more
        withdraw_from_pool(rpc, world.manager.address, account, address, balance + 1)
    answer = withdraw_from_pool(rpc, world.manager.address, account, address)
    assert (answer["amount"], answer["pooled"]) == (str(20_000 - PRICE), "0")
    assert world.balance(account.address) == 20_000 - PRICE
    assert world.manager.pooled(address, neighbour.address) == 5_000  # nobody else's
    with pytest.raises(TransactionFailed):
        withdraw_from_pool(rpc, world.manager.address, account, address, 1)
