"""A wallet-funded channel the wallet cannot pay for: refused as insufficient funds, not as
an unavailable chain, with nothing moved (the wallet, the provider and the escrow keep
their balances, and the vault records no channel)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from a402.background import serve_in_thread
from a402.client import VaultCallError
from a402.client.pay import EXIT_REFUSED, pay_main
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import World

from .helpers import client_of, running_vault, vault_flags

pytestmark = pytest.mark.anvil

PRICE = 1_000


def test_a_wallet_too_poor_for_the_deposit_is_told_insufficient_funds_and_pays_nothing(
    world: World,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, client = client_of(world, vault, funds=2_000)
        with pytest.raises(VaultCallError) as refused:
            client.invoke(f"{site}/weather", max_price=PRICE, funding=api.WALLET,
                          deposit=5_000)
        opened = [c for c in vault.store.channels() if c.phase == "open"]
    assert refused.value.reason == api.INSUFFICIENT_BALANCE, refused.value.body
    assert "nothing" in refused.value.message and "2000" in refused.value.message
    assert refused.value.status == 402
    assert opened == []
    assert world.balance(account.address) == 2_000
    assert world.balance(provider.address) == 0
    assert world.balance(world.manager.address) == escrow
    assert provider.calls["weather"] == 0


def test_a402_pay_with_a_poor_wallet_says_nothing_was_paid_first(
    world: World, tmp_path: Path,
) -> None:
    provider = world.provider()
    escrow = world.balance(world.manager.address)
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        account, _ = client_of(world, vault, funds=500)  # the deposit is 100x a 0.001 price
        key = tmp_path / "client.key"
        key.write_text(account.key.hex())
        key.chmod(0o600)
        out, err = io.BytesIO(), io.StringIO()
        code = pay_main([f"{site}/weather", "--key-file", str(key), "--vault", vault.url,
                         *vault_flags(world, vault), "--funding", "wallet", "--max", "0.001"],
                        stdout=out, stderr=err)
        opened = [c for c in vault.store.channels() if c.phase == "open"]
    first = err.getvalue().splitlines()[0]
    assert code == EXIT_REFUSED, err.getvalue()
    assert first.startswith("a402 pay: nothing was paid by this attempt: the vault refused "
                            "(insufficient_balance: nothing was paid: your wallet")
    assert "Traceback" not in err.getvalue() and out.getvalue() == b""
    assert opened == []
    assert world.balance(account.address) == 500
    assert world.balance(world.manager.address) == escrow
    assert provider.calls["weather"] == 0
