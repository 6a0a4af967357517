"""``a402 pay --vault ... --budget``: the budget bounds what the vault may pay, and a vault
payment counts against it (reserved before the call, settled to what was paid, given
back when the vault refused). A call over the budget is refused with nothing paid: the
provider never runs, the client's vault account shows nothing paid. Real vault, real
provider enclave, anvil."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from a402.background import serve_in_thread
from a402.client import Budget
from a402.client.limits import token_units_max
from a402.client.pay import add_pay_arguments, pay_main
from a402.client.vault_pay import run_vault_pay
from a402.client.wallet import Wallet
from tests.a402_exchange.helpers import World

from .helpers import answer_lost_front, client_of, key_file, running_vault, vault_flags

pytestmark = pytest.mark.anvil

PRICE = 1_000  # GET /weather


def test_a402_pay_with_a_vault_refuses_a_call_over_its_budget(world: World, tmp_path: Path
                                                              ) -> None:
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        key = key_file(tmp_path, account)
        flags = [f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                 *vault_flags(world, vault), "--max", "0.002"]
        err = io.StringIO()
        over = pay_main([*flags, "--budget", "0.0005"], stdout=io.BytesIO(), stderr=err)
        assert over == 3, err.getvalue()
        assert err.getvalue().startswith("a402 pay: nothing was paid by this attempt: the "
                                         "vault refused (price_above_maximum")
        assert "--budget" in err.getvalue()
        assert provider.calls["weather"] == 0
        assert client.account_info()["paid"] == "0"

        out, err = io.BytesIO(), io.StringIO()
        within = pay_main([*flags, "--budget", "0.001"], stdout=out, stderr=err)
        assert within == 0, err.getvalue()
        assert json.loads(out.getvalue())["weather"] == "sunny"
        assert provider.calls["weather"] == 1
        assert client.account_info()["paid"] == str(PRICE)


def test_a_vault_payment_counts_against_the_budget(world: World, tmp_path: Path) -> None:
    """One budget across calls (as a script embedding ``run_vault_pay`` has): each paid
    call is recorded at what it paid, a refusal gives its reservation back, and once
    nothing is left the next call is refused before anything is sent."""
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        key = key_file(tmp_path, account)
        parser = argparse.ArgumentParser()
        add_pay_arguments(parser)
        args = parser.parse_args([f"{site}/weather", "--key-file", str(key), "--vault",
                                  vault.url, *vault_flags(world, vault), "--max", "0.002"])
        budget = Budget({world.token.address: 2 * PRICE + 500})
        wallet = Wallet(account.key.hex())

        def pay() -> tuple[int, str]:
            err = io.StringIO()
            code = run_vault_pay(args, account.key.hex(), wallet, method="GET", headers=[],
                                 content=None, cap=token_units_max("0.002", 6),
                                 budget=budget, out=io.BytesIO(), err=err)
            return code, err.getvalue()

        assert pay()[0] == 0
        assert budget.spent(world.token.address) == PRICE  # reserved 2000, settled to 1000
        args.idempotency_key = None
        assert pay()[0] == 0
        assert budget.spent(world.token.address) == 2 * PRICE
        code, said = pay()  # 500 left: the vault may pay at most 500, and refuses
        assert code == 3 and "price_above_maximum" in said
        assert budget.spent(world.token.address) == 2 * PRICE  # nothing paid: given back
        assert provider.calls["weather"] == 2
        assert client.account_info()["paid"] == str(2 * PRICE)

        budget.reserve(world.token.address, 500)  # now nothing is left
        code, said = pay()
        assert code == 3
        assert said.startswith("a402 pay: nothing was paid: payment refused "
                               "(budget_exhausted"), said
        assert provider.calls["weather"] == 2
        assert client.account_info()["paid"] == str(2 * PRICE)


def test_a402_pay_vault_stream_stops_at_its_budget(world: World, tmp_path: Path) -> None:
    """``--stream 50 --max 0.0005 --budget 0.001`` and no ``--max-total``: the budget holds
    the stream's total, so two groups are paid (1,000) and the stream stops there."""
    from .test_paid_stream import (
        GROUP,
        PER_GROUP,
        ROUTES,
        Upstream,
        _settle,
        _tokens,
        _wait,
        llm_service,
        pay_stream,
    )

    upstream = Upstream()
    provider = world.provider(routes=ROUTES, service=llm_service(upstream))
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, \
            running_vault(world, deposit_multiple=100) as vault:
        account, client = client_of(world, vault, funds=200_000, deposit=200_000)
        code, out, err = pay_stream(world, vault, site, account, tmp_path, "--budget", "0.001")
        assert code == 0, err
        assert _tokens(out) == [f"tok{i}" for i in range(2 * GROUP)]
        summary = json.loads(err.splitlines()[-1])
        assert {k: summary[k] for k in ("success", "outcome", "groups", "paid", "reason",
                                        "complete")} == {
            "success": True, "outcome": "stream", "groups": 2, "paid": str(2 * PER_GROUP),
            "reason": "max_total", "complete": False}
        assert summary["message"].startswith(f"{2 * PER_GROUP} (atomic units) paid for the 2 "
                                             "groups received")
        # The limit named is the one the person gave (no --max-total was given).
        assert "more than --budget allowed" in summary["message"], summary["message"]
        _wait(lambda: upstream.closed, timeout=5.0)
        _settle(world, client, vault, provider, escrow, 2 * PER_GROUP)
        client.close()


def test_a_vault_answer_lost_to_a_proxy_5xx_says_payment_unknown_and_keeps_the_budget(
        world: World, tmp_path: Path) -> None:
    """The vault pays the call, then the host in front of it answers 502 (a proxy whose
    upstream broke): the user is told the payment is unknown, not "nothing was paid", and
    the budget keeps the price (the vault's account shows it paid)."""
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        front = answer_lost_front(vault.url)
        account, client = client_of(world, vault, funds=20_000, deposit=20_000)
        key = key_file(tmp_path, account)
        with serve_in_thread(front) as front_url:
            parser = argparse.ArgumentParser()
            add_pay_arguments(parser)
            args = parser.parse_args([f"{site}/weather", "--key-file", str(key), "--vault",
                                      front_url, *vault_flags(world, vault), "--max", "0.002"])
            budget = Budget({world.token.address: 10 * PRICE})
            err = io.StringIO()
            code = run_vault_pay(args, account.key.hex(), Wallet(account.key.hex()),
                                 method="GET", headers=[], content=None,
                                 cap=token_units_max("0.002", 6), budget=budget,
                                 out=io.BytesIO(), err=err)
        assert code == 1, err.getvalue()
        assert err.getvalue().startswith("a402 pay: payment unknown: the vault's answer was "
                                         "lost (HTTP 502, bad_gateway)"), err.getvalue()
        assert "nothing was paid" not in err.getvalue()
        assert provider.calls["weather"] == 1
        assert client.account_info()["paid"] == str(PRICE)  # the vault did pay
        assert budget.spent(world.token.address) >= PRICE  # and the budget does not forget it


def test_the_retry_advice_names_the_max_the_budget_lowered_the_call_to() -> None:
    """A call ``--budget`` lowered to 0.0005 and not answered: running it again under its
    key with another maxPrice would be refused (``idempotency_key_reused``), so the advice
    names the same --budget or the lowered --max; without a lowering it names neither."""
    from a402.client.vault import VaultCallError
    from a402.client.vault_pay import _call_failed, _retry_advice, _token_units

    assert [_token_units(500, 6), _token_units(2_000_000, 6), _token_units(7, 0),
            _token_units(1_234_500, 6), _token_units(9, None)] == [
        "0.0005", "2", "7", "1.2345", "9"]
    body = {"error": "channel_recovering", "idempotencyKey": "k1", "createdAt": 1700000000}
    code, line = _call_failed(VaultCallError(503, body), "0.0005")
    assert line.startswith("nothing was paid by this attempt: the vault could not pay")
    assert code == 1  # EXIT_REQUEST_FAILED: retryable, nothing paid
    assert ("run again with --idempotency-key k1 --created-at 1700000000 and the same "
            "--budget, or --max 0.0005 (the maxPrice --budget lowered this call to; with "
            "another maxPrice the vault refuses the retry as idempotency_key_reused) to "
            "retry it") in line
    pending = _call_failed(VaultCallError(202, {**body, "error": "payment_pending"}),
                           "0.0005")[1]
    assert "--max 0.0005" in pending and pending.startswith("payment pending")
    assert "--budget" not in _retry_advice(body)
