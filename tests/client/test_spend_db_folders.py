"""A payer's spend store lives in the folder of the mandate's chain, like the services' files.

``.a402/<chain id>/mandates.db`` by default: two chains' budgets never share a file.
An existing ``.a402/mandates.db`` (the old default) is still used while the per-chain
file does not exist, so moving the default never makes a budget start again from zero.
``a402 audit`` and ``a402 mandate list`` read every per-chain store there is; the
gateway's A402 channel records default to the chain's folder too."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from a402.cli import main
from a402.client.mandates import DEFAULT_SPEND_DB, LEGACY_SPEND_DB, spend_db_for, spend_dbs_found
from a402.client.wallet import Wallet
from a402.mandate import Domain, ProposedPayment
from a402.mandate.guard import MandateGuard
from a402.mandate.spend import SpendStore
from tests.mandate.helpers import NETWORK, PAYEE, REGISTRY, USDC, Keys, signed

PRICE = 1_000


def _pay_once(url: str, keys: Keys, s) -> None:  # type: ignore[no-untyped-def]
    store = SpendStore(url)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None,
                         flush_after=None)
    wallet = Wallet(bytes(keys.agent.key))
    payment = ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK,
                              asset=USDC, scheme="exact", amount=PRICE, url="https://x/y")
    guard.commit(guard.admit(payment), {"mandate": guard.mandate_hash,
                                        "agent": wallet.address}, wallet.sign_evidence)
    store.close()


def test_two_chains_budgets_land_in_two_folders_and_list_reads_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    keys = Keys()
    on_base = signed(keys)  # chain 84532
    on_dev = signed(keys, domain=Domain(31337, REGISTRY))
    for s in (on_base, on_dev):
        _pay_once(spend_db_for(DEFAULT_SPEND_DB, s.domain.chain_id), keys, s)
    assert (tmp_path / ".a402/84532/mandates.db").exists()
    assert (tmp_path / ".a402/31337/mandates.db").exists()
    assert not (tmp_path / ".a402/mandates.db").exists()
    assert len(spend_dbs_found(DEFAULT_SPEND_DB)) == 2
    for chain in ("84532", "31337"):
        store = SpendStore(f"sqlite:///.a402/{chain}/mandates.db")
        [entry] = store.mandates()
        assert entry.spent_total == PRICE and str(entry.signed.domain.chain_id) == chain
        store.close()
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        assert main(["mandate", "list", "--json"]) == 0
    listed = json.loads(out.getvalue())
    assert sorted(str(m["spent"]) for m in listed) == [str(PRICE), str(PRICE)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["audit", "--json"])  # (these bare test records carry no payment payload)
    audited = json.loads(out.getvalue())
    assert sorted(audited) == ["sqlite:///.a402/31337/mandates.db",
                               "sqlite:///.a402/84532/mandates.db"]
    assert [len(rows) for rows in audited.values()] == [1, 1]


def test_an_existing_store_at_the_old_default_keeps_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    keys = Keys()
    s = signed(keys, budget=PRICE, max_per_payment=PRICE)
    (tmp_path / ".a402").mkdir()
    _pay_once(LEGACY_SPEND_DB, keys, s)  # spent under the old default: the budget is used
    warnings: list[str] = []
    url = spend_db_for(DEFAULT_SPEND_DB, s.domain.chain_id, warn=warnings.append)
    assert url == LEGACY_SPEND_DB and "move it to" in warnings[0]
    store = SpendStore(url)
    assert store.spent(s).total == PRICE  # not zero: nothing more may be paid
    store.close()
    assert LEGACY_SPEND_DB in spend_dbs_found(DEFAULT_SPEND_DB)


def test_the_gateways_channel_records_default_to_the_chains_folder() -> None:
    import argparse

    from a402.provider.command import add_gateway_arguments

    parser = argparse.ArgumentParser()
    add_gateway_arguments(parser)
    defaults = parser.parse_args(["--upstream", "http://u", "--route", "GET /x=0.01",
                                  "--facilitator", "http://f"])
    assert defaults.channel_db == "sqlite:///.a402/{chain_id}/provider-channels.db"
