"""The pool (ASCManager.pooled) against its vault's host: scenarios first found by a
review (s8-rev2), each now holding.

* F1: no approval the enclave gives without a call of the client's (a wallet open's
  A402Open) opens a channel from her pool: pool opens take an A402PoolOpen.
* F1b/F1c: one signed call opens at most one pool channel, within what the call allows;
  after the client force-closes it, the host cannot lock her pool again.
* F2: the client pools and pays only with the vault, manager and token it expects,
  whatever the unauthenticated ``GET /v1/info`` names.
* F3: a client's own ``withdrawFromPool`` during an open in flight leaves the host's books
  equal to the chain, and refusals are worded from the chain's balance.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from eth_account.signers.local import LocalAccount

from a402.asc import BalanceState, ChannelTerms, SignedState
from a402.background import serve_in_thread
from a402.chain.tx import TransactionFailed, transact
from a402.client.vault import VaultCallError, VaultClient
from a402.vault_enclave import INVOKE_PATH, SignedCall
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import DISPUTE_WINDOW, PRICES, World

from .helpers import Vault, client_of, expected, running_vault

pytestmark = pytest.mark.anvil
PRICE = PRICES["GET /weather"]


def _provider_key(provider: object) -> bytes:
    key: bytes = provider.enclave.signing_public_key[1:]  # type: ignore[attr-defined]
    return key


def _signed_invoke(vault: Vault, account: LocalAccount, url: str, key: str,
                   max_price: int = PRICE, deposit: int | None = None) -> SignedCall:
    body = json.dumps(api.InvokeRequest(url=url, method="GET", headers=(), body=b"",
                                        max_price=max_price, idempotency_key=key,
                                        deposit=deposit,
                                        created_at=int(time.time())).to_json()
                      ).encode()
    headers = api.sign_request(account, vault.signed_as, "POST", INVOKE_PATH, body,
                               life=vault.life)
    return SignedCall.of(headers, "POST", INVOKE_PATH, body)


def test_a_host_cannot_move_a_clients_pool_into_a_channel_without_a_call_she_signed(
    world: World,
) -> None:
    """F1. The enclave's approval is A402Open(channelId, deadline) for both kinds of open,
    and ``approve_wallet_channel`` signs it for any terms naming this vault (no client call
    needed: the wallet path needs the client's own consent on-chain). ``createASCFromPool``
    takes the same approval and needs no client consent, so the host opens a channel of
    alice's whole pool balance, to a provider of its choosing, without any call of hers."""
    provider = world.provider()
    with serve_in_thread(provider.app), running_vault(world) as vault:
        alice, _ = client_of(world, vault, funds=10_000, deposit=10_000)
        enclave, manager, host = vault.service.vault, world.manager, vault.account
        terms = ChannelTerms(alice.address, vault.address, provider.address,
                             _provider_key(provider), 10_000, enclave.salt())
        # No call of alice's: the "wallet" approval the 428 flow asks for before she signs.
        approval = enclave.approve_wallet_channel(terms, 10.0, now=manager.chain_time())
        with contextlib.suppress(TransactionFailed):
            manager.create_from_pool(host, terms, approval.signature, approval.deadline)
        assert manager.pooled(vault.address, alice.address) == 10_000, (
            "alice's pool was moved into a channel she never asked for")


def test_one_signed_call_opens_at_most_one_pool_channel_within_what_it_allows(
    world: World,
) -> None:
    """F1b. One signed call (client, idempotencyKey, createdAt) approves at most ONE pool
    channel (asked again for that channel: a fresh approval), whose deposit is at most what
    the call allows: its ``deposit`` if it names one, else ``POOL_DEPOSIT_MULTIPLE`` × its
    ``maxPrice``. The host asking for four channels of 2,500 with one call gets one."""
    from a402.tee import EnclaveError
    from a402.vault_enclave import POOL_DEPOSIT_MULTIPLE

    provider = world.provider()
    with serve_in_thread(provider.app), running_vault(world) as vault:
        alice, _ = client_of(world, vault, funds=10_000, deposit=10_000)
        enclave, manager, host = vault.service.vault, world.manager, vault.account

        def terms_of(deposit: int) -> ChannelTerms:
            return ChannelTerms(alice.address, vault.address, provider.address,
                                _provider_key(provider), deposit, enclave.salt())

        # A call naming its deposit: no channel beyond it.
        capped = _signed_invoke(vault, alice, "https://api.example/weather", "capped",
                                deposit=1_500)
        with pytest.raises(EnclaveError, match="deposit_too_large"):
            enclave.approve_pool_channel(capped, terms_of(2_500), 10.0,
                                         now=manager.chain_time())
        # Naming none: at most the fixed multiple of its maxPrice, a constant of the code.
        bare = _signed_invoke(vault, alice, "https://api.example/weather", "bare")
        with pytest.raises(EnclaveError, match="deposit_too_large"):
            enclave.approve_pool_channel(bare, terms_of(POOL_DEPOSIT_MULTIPLE * PRICE + 1),
                                         10.0, now=manager.chain_time())
        call = _signed_invoke(vault, alice, "https://api.example/weather", "one-call")
        refused: list[str] = []
        first = terms_of(2_500)
        for terms in [first] + [terms_of(2_500) for _ in range(3)]:
            try:
                approval = enclave.approve_pool_channel(call, terms, 10.0,
                                                        now=manager.chain_time())
                manager.create_from_pool(host, terms, approval.signature, approval.deadline)
            except EnclaveError as e:
                refused.append(e.reason)
        assert refused == ["call_used"] * 3
        assert manager.pooled(vault.address, alice.address) == 10_000 - 2_500
        # The same channel again: a fresh approval (it is open already: ids are single-use).
        again = enclave.approve_pool_channel(call, first, 10.0, now=manager.chain_time())
        with pytest.raises(TransactionFailed):
            manager.create_from_pool(host, first, again.signature, again.deadline)
        assert manager.pooled(vault.address, alice.address) == 7_500


def test_after_the_client_force_closes_the_host_cannot_lock_her_pool_again_without_a_new_call(
    private_world: World,
) -> None:
    """F1c, closed by F1b. The client's exit from a channel the host opened for one of her
    calls is her force close (version 0, a dispute window), which credits the pool, then
    ``withdrawFromPool``: two transactions. In between the host would lock the pool again
    with a fresh approval — but the call already approved its one channel, and a wallet
    approval does not open from the pool: her withdrawal gets everything."""
    from a402.tee import EnclaveError

    world = private_world
    provider = world.provider()
    with serve_in_thread(provider.app), running_vault(world) as vault:
        alice, _ = client_of(world, vault, funds=10_000, deposit=10_000)
        transact(world.chain, world.chain.accounts[0], {"to": alice.address}, value=10**18)
        enclave, manager, host = vault.service.vault, world.manager, vault.account
        call = _signed_invoke(vault, alice, "https://api.example/weather", "locks",
                              deposit=10_000)

        def terms_now() -> ChannelTerms:
            return ChannelTerms(alice.address, vault.address, provider.address,
                                _provider_key(provider),
                                manager.pooled(vault.address, alice.address), enclave.salt())

        locked = terms_now()
        approval = enclave.approve_pool_channel(call, locked, 10.0, now=manager.chain_time())
        manager.create_from_pool(host, locked, approval.signature, approval.deadline)
        assert manager.pooled(vault.address, alice.address) == 0
        opening = SignedState(BalanceState(0, 10_000, 0, False), b"", b"")
        manager.init_force_close(alice, locked, opening)  # her exit: the opening state
        world.increase_time(DISPUTE_WINDOW + 1)
        manager.final_force_close(host, locked)  # anyone may; the host does, and then
        assert manager.pooled(vault.address, alice.address) == 10_000
        again = terms_now()
        with pytest.raises(EnclaveError, match="call_used"):  # ... the same call: no
            enclave.approve_pool_channel(call, again, 10.0, now=manager.chain_time())
        wallet = enclave.approve_wallet_channel(again, 10.0, now=manager.chain_time())
        with pytest.raises(TransactionFailed):  # ... a wallet approval: not from the pool
            manager.create_from_pool(host, again, wallet.signature, wallet.deadline)
        manager.withdraw_from_pool(alice, vault.address, alice.address, 10_000)
        assert world.balance(alice.address) == 10_000
        assert manager.pooled(vault.address, alice.address) == 0


def _withdrawal_during_an_open(world: World, vault: Vault, site: str
                               ) -> tuple[LocalAccount, VaultClient]:
    """F3's scenario: alice pooled 10,000; the host's pool open for her call is in flight
    (its debit in the store) when she takes everything out with ``withdrawFromPool``; the
    open never lands and is written off."""
    import threading

    from a402.vault import store as vault_store

    from .helpers import wait_for

    w3 = world.chain.w3
    alice, client = client_of(world, vault, funds=10_000, deposit=10_000)
    transact(world.chain, world.chain.accounts[0], {"to": alice.address}, value=10**18)
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(_attempt(
        lambda: client.invoke(f"{site}/weather", max_price=PRICE))), daemon=True)
    worker.start()
    wait_for(lambda: [c for c in vault.store.channels(client=alice.address)
                      if c.phase == vault_store.OPENING], what="an open in flight")

    def the_open_in_the_pool() -> bool:
        pending = w3.provider.make_request("txpool_content", [])["result"]["pending"]  # type: ignore[arg-type]
        return any(sender.lower() == vault.account.address.lower() for sender in pending)

    # The open is broadcast (a fixed 1 s sleep was not always enough on a loaded host: an
    # open sent after the drop below could be mined before her withdrawal).
    wait_for(the_open_in_the_pool, timeout=60, what="the host's open in the mempool")
    # Her withdrawal goes into the pool first, the host's open is dropped, then one block:
    # whatever the host sends again afterwards finds the pool empty.
    withdrawal = world.manager.contract.functions.withdrawFromPool(
        vault.address, alice.address, 10_000).build_transaction({
            "from": alice.address, "nonce": w3.eth.get_transaction_count(alice.address),
            "chainId": world.chain.chain_id, "gas": 300_000,
            "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9})
    w3.eth.send_raw_transaction(alice.sign_transaction(withdrawal).raw_transaction)
    pending = w3.provider.make_request("txpool_content", [])["result"]["pending"]  # type: ignore[arg-type]
    for sender, txs in pending.items():
        if sender.lower() == vault.account.address.lower():
            for tx in txs.values():
                w3.provider.make_request("anvil_dropTransaction", [tx["hash"]])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    assert world.manager.pooled(vault.address, alice.address) == 0
    for _ in range(3):
        world.increase_time(400)  # past the approval's deadline
    wait_for(lambda: not [c for c in vault.store.channels(client=alice.address)
                          if c.phase in vault_store.UNSETTLED], timeout=60,
             what="the open written off")
    worker.join(60)
    assert world.balance(alice.address) == 10_000
    return alice, client


def test_a_withdrawal_during_an_open_in_flight_leaves_the_books_equal_to_the_chain(
    private_world: World,
) -> None:
    """F3. The host debits its store for a pool open before sending it; the client takes its
    whole pool out itself meanwhile (``withdrawFromPool``), so the open never lands. The
    watch's ``mirror_withdrawal`` records the withdrawal all the same (the store goes below
    zero by the open's debit); when the open is written off its debit comes back: the books
    equal the chain, 0."""
    world = private_world
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        alice, _ = _withdrawal_during_an_open(world, vault, site)
        assert vault.store.balance(alice.address) == world.manager.pooled(
            vault.address, alice.address), "the host's books show money the chain does not hold"


def test_after_it_a_refused_withdrawal_does_not_say_the_balance_is_still_in_the_pool(
    private_world: World,
) -> None:
    """F3b. The refusal is worded from the chain's balance: 0, not "still in the pool"."""
    world = private_world
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = _withdrawal_during_an_open(world, vault, site)
        with pytest.raises(VaultCallError) as refused:
            client.withdraw(10_000)
        message = refused.value.body["message"]
        assert "still in the pool" not in message and "is 0 on-chain" in message, message


def _attempt(f: object) -> object:
    try:
        return f()  # type: ignore[operator]
    except Exception as e:
        return e


def test_a_client_pools_only_with_the_vault_it_expects_whatever_the_info_names(
    world: World,
) -> None:
    """F2. ``GET /v1/info`` is unauthenticated: a host answering with its own gas key as
    ``vault`` would get alice's EIP-3009 pool deposit credited to ``pooled[hostKey][alice]``,
    which that plain key moves into a channel by *sending* ``createASCFromPool`` and pays
    out to itself. The client knows the vault it expects (key, manager, token) and refuses
    an info answer that differs, before it signs anything: nothing is relayed, nothing
    moves. Trust on first use is there only when asked for, and pins the first answer."""
    import httpx

    with running_vault(world) as vault:
        honest = httpx.get(vault.url + "/v1/info").json()
        host = vault.account
        answers = [{**honest, "vault": host.address},
                   {**honest, "ascManager": host.address},
                   {**honest, "token": {**honest["token"], "address": host.address}}]
        relayed: list[object] = []

        def fake_host(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/info"):
                return httpx.Response(200, json=answers[0])
            relayed.append(request.content)
            return httpx.Response(202, json={"state": "pending"})

        alice = world.client(10_000)
        for lie in list(answers):
            answers[0] = lie
            client = VaultClient(vault.url, alice, expect=expected(world, vault),
                                 http=httpx.Client(transport=httpx.MockTransport(fake_host)))
            with pytest.raises(VaultCallError) as refused:
                client.deposit(10_000)
            assert refused.value.reason == "vault_mismatch"
            assert refused.value.body["message"].startswith("nothing was sent or paid")
        assert relayed == [] and world.balance(alice.address) == 10_000
        assert world.manager.pooled(host.address, alice.address) == 0
        # No expectation at all: refused at once, unless trust on first use is asked for.
        with pytest.raises(ValueError, match="give the vault you expect"):
            VaultClient(vault.url, alice)
        answers[0] = honest
        tofu = VaultClient(vault.url, alice, trust_on_first_use=True,
                           http=httpx.Client(transport=httpx.MockTransport(fake_host)))
        assert tofu.info()["vault"] == vault.address
        assert tofu.expect == expected(world, vault)  # pinned: a later answer must match
