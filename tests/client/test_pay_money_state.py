"""``a402 pay`` says first what happened to the money: nothing paid, pending, or settled.

Each case runs the command (``pay_main``, output captured) against a real gateway
middleware, a real facilitator and anvil, and checks the balances, not only the words.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client.pay import EXIT_NOT_PAID, EXIT_OK, EXIT_USAGE, pay_main
from tests.provider.support import PRICE_ATOMIC, Balances, Calls, paid_app
from tests.servers import dead_url, serve

pytestmark = pytest.mark.anvil


def _key_file(tmp_path: Path, account: LocalAccount) -> str:
    path = tmp_path / "payer.key"
    path.write_text(account.key.hex())
    path.chmod(0o600)
    return str(path)


def _pay(*argv: str) -> tuple[int, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = pay_main(list(argv), stdout=out, stderr=err)
    return code, err.getvalue()


def _summary(err: str) -> dict[str, object]:
    return json.loads(next(line for line in err.splitlines() if line.startswith("{")))


def _first_line(err: str) -> str:
    return err.splitlines()[0]


def _gateway(manifest: Manifest, facilitator: str, calls: Calls) -> object:
    return paid_app(pay_to=manifest.account("provider").address, manifest=manifest,
                    facilitator=facilitator, calls=calls)


def test_a_facilitator_that_is_down_means_nothing_was_paid(
        anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
        tmp_path: Path) -> None:
    payer = new_payer(PRICE_ATOMIC)
    provider = dev_stack.account("provider").address
    balances = Balances(anvil_chain, dev_stack, payer.address, provider)
    calls = Calls()
    with serve(_gateway(dev_stack, dead_url(), calls)) as url:
        code, err = _pay(f"{url}/weather", "--key-file", _key_file(tmp_path, payer))
    assert code == EXIT_NOT_PAID, err
    assert _first_line(err).startswith("a402 pay: nothing was paid")
    assert "paid but" not in err and "Traceback" not in err
    assert _summary(err)["moneyState"] == "not_paid"
    assert _summary(err)["reason"] == "facilitator_unavailable"
    assert calls["weather"] == 0 and balances.unchanged()


def test_an_upstream_error_means_nothing_was_paid(
        anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
        facilitator_url: str, tmp_path: Path) -> None:
    payer = new_payer(PRICE_ATOMIC)
    provider = dev_stack.account("provider").address
    balances = Balances(anvil_chain, dev_stack, payer.address, provider)
    calls = Calls()
    with serve(_gateway(dev_stack, facilitator_url, calls)) as url:
        code, err = _pay(f"{url}/boom", "--key-file", _key_file(tmp_path, payer))
    assert code == EXIT_NOT_PAID, err
    assert _first_line(err).startswith("a402 pay: nothing was paid: the service answered "
                                       "HTTP 500")
    assert _summary(err)["moneyState"] == "not_paid"
    assert calls["boom"] == 1 and balances.unchanged()


def test_a_payer_without_funds_is_told_nothing_was_paid(
        anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
        facilitator_url: str, tmp_path: Path) -> None:
    broke = new_payer(0)
    provider = dev_stack.account("provider").address
    balances = Balances(anvil_chain, dev_stack, broke.address, provider)
    calls = Calls()
    with serve(_gateway(dev_stack, facilitator_url, calls)) as url:
        code, err = _pay(f"{url}/weather", "--key-file", _key_file(tmp_path, broke))
    assert code == EXIT_NOT_PAID, err
    assert _first_line(err).startswith("a402 pay: nothing was paid: the server refused")
    assert "insufficient" in str(_summary(err)["reason"])
    assert calls["weather"] == 0 and balances.unchanged()


def test_a_settled_payment_says_paid_and_settled_first(
        anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
        facilitator_url: str, tmp_path: Path) -> None:
    payer = new_payer(PRICE_ATOMIC)
    provider = dev_stack.account("provider").address
    balances = Balances(anvil_chain, dev_stack, payer.address, provider)
    with serve(_gateway(dev_stack, facilitator_url, Calls())) as url:
        code, err = _pay(f"{url}/weather", "--key-file", _key_file(tmp_path, payer))
    assert code == EXIT_OK, err
    assert _first_line(err).startswith("a402 pay: paid and settled: 1000 atomic units")
    assert _summary(err)["moneyState"] == "settled"
    assert balances.delta(payer.address) == -PRICE_ATOMIC
    assert balances.delta(provider) == PRICE_ATOMIC


@pytest.mark.parametrize("amount", ["0.0000001", "0.0010001"])
def test_a_max_with_more_decimals_than_the_token_is_refused_not_zeroed(
        anvil_chain: Chain, dev_stack: Manifest, new_payer: Callable[..., LocalAccount],
        facilitator_url: str, tmp_path: Path, amount: str) -> None:
    payer = new_payer(PRICE_ATOMIC)
    balances = Balances(anvil_chain, dev_stack, payer.address)
    calls = Calls()
    with serve(_gateway(dev_stack, facilitator_url, calls)) as url:
        code, err = _pay(f"{url}/weather", "--key-file", _key_file(tmp_path, payer),
                         "--max", amount)
    assert code == EXIT_USAGE
    assert err.startswith("a402 pay: nothing was paid: --max: ")
    assert "more than 6 decimals" in err
    assert calls["weather"] == 0 and balances.unchanged()
