"""Channels under load and over their life: concurrent calls on one channel, a channel too
poor for the next call, wallet-funded channels, and the httpx integration."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from a402.asc import Status
from a402.background import serve_in_thread
from a402.client import (
    Budget,
    BudgetExceeded,
    VaultCallError,
    vault_paying_client,
    vault_payment_of,
)
from a402.client.pay import pay_main
from a402.vault import store as vault_store
from a402.wire import vault_api as api
from tests.a402_exchange.faulty import AckLosingProvider
from tests.a402_exchange.helpers import Calls, World

from .helpers import (
    assert_conserved,
    client_of,
    expected,
    key_file,
    running_vault,
    vault_flags,
    wait_for,
)

pytestmark = pytest.mark.anvil

PRICE = 1_000


def test_concurrent_calls_on_one_channel_take_turns_and_never_double_spend(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=50_000, deposit=50_000)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda i: client.invoke(f"{site}/weather", max_price=PRICE,
                                        idempotency_key=f"c{i}"), range(8)))
        [channel] = vault.store.channels()
        assert_conserved(world, vault.store, vault.address, escrow)
    # One channel, eight requests in sequence: eight distinct request ids and answers.
    assert sorted(r.payment["requestId"] for r in results if r.payment) == list(range(8))
    assert sorted(json.loads(r.content)["n"] for r in results) == list(range(1, 9))
    assert provider.calls["weather"] == 8
    assert (channel.version, channel.provider_balance) == (8, str(8 * PRICE))


def test_a_second_call_that_cannot_wait_is_refused_and_pays_nothing(world: World) -> None:
    release = threading.Event()
    provider = world.provider(calls=Calls(slow_release=release))
    with serve_in_thread(provider.app) as site, running_vault(world, queue_timeout=0.1) as vault:
        _, client = client_of(world, vault, funds=50_000, deposit=50_000)
        client.invoke(f"{site}/weather", max_price=PRICE)  # the channel exists
        with ThreadPoolExecutor(1) as pool:
            try:
                slow = pool.submit(client.invoke, f"{site}/slow", max_price=2_000)
                # The provider runs /slow only while the vault holds the channel for it.
                deadline = time.monotonic() + 30
                while provider.calls["slow"] == 0:
                    assert not slow.done(), slow.result()
                    assert time.monotonic() < deadline, "the slow call never reached the provider"
                    time.sleep(0.01)
                refused = _refusal(client, f"{site}/weather")
            finally:
                release.set()
            paid = slow.result()
        view = client.account_info()
    assert paid.outcome == api.PAID
    assert refused == (409, api.CHANNEL_BUSY)
    assert view["paid"] == str(PRICE + 1_500)


def _refusal(client: object, url: str) -> tuple[int, str]:
    try:
        client.invoke(url, max_price=PRICE)  # type: ignore[attr-defined]
    except VaultCallError as e:
        return e.status, e.reason
    raise AssertionError("the second call was not refused")


def test_a_channel_too_poor_for_the_next_call_is_closed_and_replaced(world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=2) as vault:
        _, client = client_of(world, vault, funds=10_000, deposit=10_000)
        for _ in range(3):
            client.invoke(f"{site}/weather", max_price=PRICE)
        old, new = vault.store.channels()
        assert_conserved(world, vault.store, vault.address, escrow)
        # The settled channel's write lock and forget count went with it (not the new one's).
        channels = vault.service.channels
        settled, running = bytes.fromhex(old.cid[2:]), bytes.fromhex(new.cid[2:])
        assert settled not in channels._write_locks and settled not in channels._forgotten
        assert running in channels._write_locks and not channels._writers
    assert (old.phase, old.provider_payout, old.client_payout) == (vault_store.SETTLED, "2000", "0")
    assert (new.phase, new.provider_balance) == (vault_store.OPEN, str(PRICE))
    assert world.balance(provider.address) == 2 * PRICE


def test_a_wallet_funded_channel_takes_one_signature_and_refunds_the_wallet(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=8_000)
        first = client.invoke(f"{site}/weather", max_price=PRICE, funding=api.WALLET,
                              deposit=5_000)
        second = client.invoke(f"{site}/weather", max_price=PRICE, funding=api.WALLET,
                               deposit=5_000)
        [channel] = vault.store.channels()
        assert world.balance(account.address) == 3_000  # the deposit left the wallet
        closed = client.close_channel(channel.cid)
        assert_conserved(world, vault.store, vault.address, escrow)
    assert (first.outcome, second.outcome) == (api.PAID, api.PAID)
    assert (channel.funding, channel.terms["client"]) == (api.WALLET, account.address[2:].lower())
    assert closed["phase"] == vault_store.SETTLED
    assert world.balance(account.address) == 8_000 - 2 * PRICE
    assert world.balance(provider.address) == 2 * PRICE


def test_httpx_routes_through_the_vault_within_its_limits(world: World) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, _ = client_of(world, vault, funds=20_000, deposit=20_000)
        budget = Budget({world.token.address: 2_500})
        with vault_paying_client(vault.url, account, max_per_request=PRICE,
                                 budget=budget, expect=expected(world, vault)) as http:
            ok = http.get(f"{site}/weather")
            with pytest.raises(VaultCallError) as too_dear:
                http.post(f"{site}/echo", content=b"x")  # 2500 > the per-request maximum
            again = http.get(f"{site}/weather")
            with pytest.raises(BudgetExceeded) as over_budget:
                http.get(f"{site}/weather")  # 1000 more than the 500 left
    assert ok.status_code == 200 and ok.json()["weather"] == "sunny"
    payment = vault_payment_of(ok)
    assert payment is not None and (payment.outcome, payment.amount) == (api.PAID, PRICE)
    assert vault_payment_of(again) is not None
    assert too_dear.value.reason == api.PRICE_ABOVE_MAXIMUM
    assert over_budget.value.remaining == 500
    assert budget.spent(world.token.address) == 2 * PRICE


def test_a402_pay_with_a_vault(world: World, tmp_path: object, capsys: pytest.CaptureFixture
                               ) -> None:
    import io

    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, _ = client_of(world, vault, funds=20_000, deposit=20_000)
        key = key_file(tmp_path, account)
        out, err = io.BytesIO(), io.StringIO()
        code = pay_main([f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                         *vault_flags(world, vault),
                         "--max", "0.001", "--idempotency-key", "cli-1"], stdout=out, stderr=err)
        out2, err2 = io.BytesIO(), io.StringIO()
        again = pay_main([f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                         *vault_flags(world, vault),
                          "--max", "0.001", "--idempotency-key", "cli-1"], stdout=out2,
                         stderr=err2)
        cheap = pay_main([f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                         *vault_flags(world, vault),
                          "--max", "0.0001"], stdout=io.BytesIO(), stderr=io.StringIO())
    assert (code, again, cheap) == (0, 0, 3)
    assert json.loads(out.getvalue())["weather"] == "sunny" and out2.getvalue() == out.getvalue()
    summary = json.loads(err.getvalue().strip().splitlines()[-1])
    assert summary["outcome"] == api.PAID and summary["payment"]["amount"] == str(PRICE)
    assert provider.calls["weather"] == 1


def test_a402_pay_through_a_vault_whose_info_names_another_key_pays_nothing(
    world: World, tmp_path: object,
) -> None:
    """F2, the CLI: ``a402 pay --vault`` needs the vault's address (or an explicit
    ``--trust-vault-info``); a vault whose info names another key is refused before any
    call is signed: nothing is paid, the pool is untouched."""
    import io

    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, _ = client_of(world, vault, funds=5_000, deposit=5_000)
        key = key_file(tmp_path, account)
        runs = []
        for flags in ([], ["--vault-address", vault.account.address, "--vault-manager",
                           world.manager.address, "--vault-token", world.token.address]):
            err = io.StringIO()
            code = pay_main([f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                             *flags, "--max", "0.001"], stdout=io.BytesIO(), stderr=err)
            runs.append((code, err.getvalue()))
        assert world.manager.pooled(vault.address, account.address) == 5_000
    assert [code for code, _ in runs] == [3, 3]
    assert "nothing was sent or paid: give --vault-address" in runs[0][1]
    assert "vault_mismatch" in runs[1][1] and "nothing was sent or paid" in runs[1][1]
    assert provider.calls["weather"] == 0


def test_a402_pay_with_a_vault_funds_a_channel_from_the_wallet(
    world: World, tmp_path: object,
) -> None:
    """No vault balance at all: one signature moves the deposit from the wallet."""
    import io

    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, _ = client_of(world, vault, funds=20_000)
        key = key_file(tmp_path, account)
        out, err = io.BytesIO(), io.StringIO()
        code = pay_main([f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                         *vault_flags(world, vault),
                         "--funding", "wallet", "--max", "0.001"], stdout=out, stderr=err)
        [channel] = vault.store.channels()
        assert_conserved(world, vault.store, vault.address, escrow)
    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue())["weather"] == "sunny"
    assert (channel.funding, channel.provider_balance) == ("wallet", str(PRICE))
    assert world.balance(account.address) == 20_000 - int(channel.deposit)


def test_the_same_call_sent_four_times_at_once_is_paid_once(world: World) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        _, client = client_of(world, vault, funds=20_000, deposit=20_000)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(
                lambda _: client.invoke(f"{site}/slow", max_price=2_000, idempotency_key="dup"),
                range(4)))
        view = client.account_info()
    assert len({(r.content, r.payment["requestId"] if r.payment else None) for r in results}) == 1
    assert provider.calls["slow"] == 1
    assert view["paid"] == "1500"


def test_channels_opened_and_closed_together_share_one_transaction_each(world: World) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    first_block = world.chain.w3.eth.block_number + 1
    # A batch leaves when all four are in it (the window is only a backstop).
    with serve_in_thread(provider.app) as site, \
            running_vault(world, batch_window=30, batch_limit=4) as vault:
        clients = [client_of(world, vault, funds=20_000, deposit=20_000)[1]
                   for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:  # four clients' first calls: four new channels
            paid = list(pool.map(lambda c: c.invoke(f"{site}/weather", max_price=PRICE),
                                 clients))
            channels = [c.account_info()["channels"][0]["channelId"] for c in clients]
            closed = list(pool.map(lambda cc: cc[0].close_channel(cc[1]),
                                   zip(clients, channels, strict=True)))
        assert_conserved(world, vault.store, vault.address, escrow)
        balances = [int(c.account_info()["balance"]) for c in clients]
    assert [p.outcome for p in paid] == [api.PAID] * 4
    assert [c["phase"] for c in closed] == [vault_store.SETTLED] * 4
    assert balances == [20_000 - PRICE] * 4
    assert world.balance(provider.address) == 4 * PRICE
    calls = manager_calls(world, first_block)  # the four deposits first, then one each
    assert calls == ["depositToPoolWithAuthorization"] * 4 + ["createASCFromPoolBatch",
                                                               "closeASCBatch"]


def manager_calls(world: World, first_block: int) -> list[str]:
    """The ASCManager functions called in the blocks mined since ``first_block``."""
    names = []
    for number in range(first_block, world.chain.w3.eth.block_number + 1):
        block = world.chain.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["to"] == world.manager.address:
                names.append(world.manager.contract.decode_function_input(tx["input"])[0]
                             .fn_name)
    return names


def test_a_call_refused_while_the_provider_awaits_our_ack_is_retryable_and_pays_once_on_retry(
    world: World,
) -> None:
    """The ACK riding on an EXEC is lost: the provider still holds the previous request and
    refuses the EXEC. That is the vault's own state to finish, not the call's fault: the
    vault sends the ACK at once and answers 503 ``channel_recovering`` (retryable, nothing
    paid); the same idempotency key then runs again and pays once."""
    provider = world.provider(runtime_cls=AckLosingProvider)
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        client.invoke(f"{site}/weather", max_price=PRICE)  # its ACK waits for the next EXEC
        provider.runtime.lose = 1
        body = json.dumps(api.InvokeRequest(
            url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=PRICE,
            idempotency_key="k", created_at=int(time.time())).to_json()).encode()
        refused = httpx.post(vault.url + "/v1/invoke", content=body, headers={
            **api.sign_request(account, vault.signed_as, "POST", "/v1/invoke", body,
                               life=vault.life),
            "content-type": "application/json"})
        [row] = vault.store.channels()
        slot = provider.runtime.channels.slot(bytes.fromhex(row.cid[2:]))
        assert slot is not None and slot.channel.status is Status.OPEN  # the ACK went at once
        between = (vault.store.request(f"{account.address.lower()}:k"), row.provider_balance)
        again = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="k")
        repeated = client.invoke(f"{site}/weather", max_price=PRICE, idempotency_key="k")
        client.close_channel(row.cid)
        settled = wait_for(
            lambda: (c := vault.store.channel(row.cid)).phase == vault_store.SETTLED and c,
            what="settlement")
        balance = client.account_info()["balance"]
        assert_conserved(world, vault.store, vault.address, escrow)
    assert (refused.status_code, refused.json()["error"]) == (503, api.CHANNEL_RECOVERING)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["outcome"] == api.REFUSED
    stored, provider_balance = between
    assert stored is not None and stored.retryable and provider_balance == str(PRICE)
    assert (again.outcome, again.amount, json.loads(again.content)["n"]) == (api.PAID, PRICE, 2)
    assert repeated.payment == again.payment  # the recorded answer, not a third payment
    assert provider.calls["weather"] == 2
    assert (settled.provider_payout, settled.client_payout) == (
        str(2 * PRICE), str(int(settled.deposit) - 2 * PRICE))
    assert balance == str(20_000 - 2 * PRICE)
    assert world.balance(provider.address) == 2 * PRICE
