"""Review s8-rev2, F4: ``a402 channels force-close`` of a POOL channel says the money is
paid to the client's address; it goes to the client's pool balance with the vault (no
token moves to the address). Fails on 0ae4238 (xfail strict: run with --runxfail)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from a402.asc import ChannelTerms
from a402.chain.deploy import DEV_DISPUTE_WINDOW
from a402.chain.tx import transact
from a402.crypto import EVM
from tests.asc.helpers import balance, fresh_account, increase_time
from tests.test_cli_payouts import (  # noqa: F401 - fixtures
    DEPOSIT,
    Deployment,
    a402,
    chain,
    key_file,
    usdc,
)

pytestmark = pytest.mark.anvil


def test_a_pool_channels_force_close_says_the_refund_goes_back_to_the_pool(
    usdc: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path  # noqa: F811
) -> None:
    d = usdc
    client, vault, provider = (fresh_account(d.chain) for _ in range(3))
    transact(d.chain, d.chain.accounts[0], d.token.functions.mint(client.address, DEPOSIT))
    transact(d.chain, client, d.token.functions.approve(d.manager.address, DEPOSIT))
    d.manager.deposit_to_pool(client, vault.address, client.address, DEPOSIT)
    terms = ChannelTerms(client.address, vault.address, provider.address,
                         EVM.generate_key().public_key, DEPOSIT, os.urandom(32))
    d.manager.create_from_pool(vault, terms)
    cid = "0x" + terms.channel_id(d.manager.domain).hex()
    where = ("--key-file", key_file(tmp_path, client), "--manifest", str(d.manifest))
    code, started, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0
    increase_time(d.chain, DEV_DISPUTE_WINDOW)
    code, done, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0
    assert balance(d.token, client.address) == 0  # nothing was paid to the address ...
    assert d.manager.pooled(vault.address, client.address) == DEPOSIT  # ... it is pooled
    first = started.splitlines()[0]
    assert "pool" in first and "paid to the client" not in done, (first, done)
