"""The vault enclave pays only within the client's mandate (issue 14), on anvil, with balances.

The agent's vault calls carry the owner's signed mandate; the enclave checks it
before a request goes out on a channel, so a refused call has nothing signed for
it: the provider earns nothing, the client's pool and channel balances stay put.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select, update

from a402.background import serve_in_thread
from a402.chain.tx import deploy_contract, transact
from a402.client.audit import BAD_PAYMENT_SIGNATURE, BAD_RECORD_SIGNATURE, HASH_MISMATCH, audit
from a402.client.mandate_command import add_audit_arguments, run_audit, stored_mandates
from a402.client.pay import pay_main
from a402.client.vault import VaultCallError, VaultClient
from a402.crypto import EcdsaSigner
from a402.mandate import Domain, Mandate, SignedMandate, revocation_digest, sign_mandate
from a402.mandate.enclave import MAX_READ_AGE, RegistryRead
from a402.mandate.evidence import EvidenceLog, evidence
from a402.mandate.registry import MandateRegistry
from a402.mandate.spend import SpendStore
from a402.tee import EnclaveError
from a402.vault_enclave import INVOKE_PATH, SignedCall
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PRICES, World

from .helpers import client_of, expected, key_file, running_vault, vault_flags

pytestmark = pytest.mark.anvil
PRICE = PRICES["GET /weather"]  # 1_000; POST /echo costs 2_500


def _mandate(world: World, registry: str, owner: Any, agent: str, **limits: Any
             ) -> SignedMandate:
    now = int(time.time())
    fields: dict[str, Any] = dict(
        owner=owner.address, agent=agent, max_per_payment=2_000, budget=3 * PRICE,
        valid_after=now - 60, valid_before=now + 3600, nonce=os.urandom(32),
        networks=(world.chain.network,), assets=(world.token.address,), schemes=("a402",))
    fields.update(limits)
    domain = Domain(world.chain.chain_id, registry)
    return sign_mandate(Mandate(**fields), domain, EcdsaSigner(bytes(owner.key)).sign_digest)


def _refused(client: Any, url: str, reason: str, **kw: Any) -> dict[str, Any]:
    with pytest.raises(VaultCallError) as refused:
        client.invoke(url, max_price=10_000, **kw)
    assert refused.value.body["error"] == reason, refused.value.body
    assert refused.value.body["message"].startswith("nothing was paid"), refused.value.body
    return refused.value.body


def test_the_vault_pays_only_within_the_clients_mandate_and_stops_at_its_revocation(
    world: World,
) -> None:
    chain = world.chain
    registry = MandateRegistry(chain, deploy_contract(chain, chain.accounts[0],
                                                      "MandateRegistry").address)
    owner = Account.create()
    provider, stranger = world.provider(), world.provider()
    with serve_in_thread(provider.app) as site, serve_in_thread(stranger.app) as other, \
            running_vault(world) as vault:
        agent, client = client_of(world, vault, funds=20_000, deposit=20_000)
        signed = _mandate(world, registry.address, owner, agent.address,
                          payees=(provider.address,), origins=(site,))
        client.mandate = signed.to_json()

        paid = client.invoke(f"{site}/weather", max_price=PRICE)
        assert paid.outcome == api.PAID
        enclave = vault.service.vault
        [row] = vault.store.channels(client=agent.address)
        channel = enclave.channel(bytes.fromhex(row.cid[2:]))
        assert channel is not None and channel.provider_balance == PRICE
        pooled = world.manager.pooled(vault.address, agent.address)

        # A provider outside the allow-list, a price above the cap, a URL of another origin:
        # each refused by the enclave, before a request goes out.
        _refused(client, f"{other}/weather", "mandate_payee_not_allowed")
        _refused(client, f"{site}/echo", "mandate_cap_exceeded", method="POST")
        # The agent leaves the mandate out: the vault still holds it to it.
        client.mandate = None
        _refused(client, f"{site}/weather", "mandate_required")
        # A mandate for another agent, signed by the same owner, does not do either.
        client.mandate = _mandate(world, registry.address, owner,
                                  Account.create().address).to_json()
        _refused(client, f"{site}/weather", "mandate_wrong_agent")
        # One signed by a stranger for this agent: the agent is bound to its owner.
        client.mandate = _mandate(world, registry.address, Account.create(),
                                  agent.address).to_json()
        _refused(client, f"{site}/weather", "mandate_wrong_agent")
        client.mandate = signed.to_json()

        # The host cannot make the enclave pay outside it either: the client's signed call
        # for another provider, replayed straight into the paying channel.
        body = json.dumps(api.InvokeRequest(
            url=f"{other}/weather", method="GET", headers=(), body=b"", max_price=PRICE,
            idempotency_key="host-replay", created_at=int(time.time()),
            mandate=signed.to_json()).to_json()).encode()
        headers = api.sign_request(agent, vault.signed_as, "POST", INVOKE_PATH, body,
                                   life=vault.life)
        with pytest.raises(EnclaveError, match="mandate_origin_not_allowed"):
            channel.request(SignedCall.of(headers, "POST", INVOKE_PATH, body), PRICE,
                            now=time.time())
        assert channel.provider_balance == PRICE and channel.locked == 0

        # Budget 3 × PRICE: two more pay, the fourth is refused.
        for _ in range(2):
            assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        _refused(client, f"{site}/weather", "mandate_budget_exhausted")
        assert channel.provider_balance == 3 * PRICE

        # A second mandate, then revoked by the owner (relayed, the owner holds no gas).
        wider = _mandate(world, registry.address, owner, agent.address, budget=10 * PRICE)
        client.mandate = wider.to_json()
        assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        sig = EcdsaSigner(bytes(owner.key)).sign_digest(revocation_digest(wider.hash,
                                                                          wider.domain))
        registry.revoke_by_sig(chain.accounts[0], owner.address, wider.hash, sig)
        _refused(client, f"{site}/weather", "mandate_revoked")

        assert channel.provider_balance == 4 * PRICE and channel.locked == 0
        assert world.manager.pooled(vault.address, agent.address) == pooled
        assert provider.calls["weather"] == 4 and stranger.calls["weather"] == 0
        closed = client.close_channel(row.cid)
        assert closed["providerPayout"] == str(4 * PRICE)
        assert world.balance(provider.address) == 4 * PRICE
        assert world.balance(stranger.address) == 0


def test_a_stale_registry_read_does_not_pay(world: World) -> None:
    """The host's registry read must be fresh: one older than MAX_READ_AGE before the call's
    signature leaves the enclave refusing (mandate_revocation_unknown), nothing signed."""
    chain = world.chain
    registry = deploy_contract(chain, chain.accounts[0], "MandateRegistry").address
    owner = Account.create()
    provider = world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        agent, client = client_of(world, vault, funds=5_000, deposit=5_000)
        signed = _mandate(world, registry, owner, agent.address)
        client.mandate = signed.to_json()
        assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        [row] = vault.store.channels(client=agent.address)
        channel = vault.service.vault.channel(bytes.fromhex(row.cid[2:]))
        assert channel is not None
        # A call signed well after the last read the enclave holds, played in by a host
        # that reads the registry no more.
        later = int(time.time()) + MAX_READ_AGE + 30
        body = json.dumps(api.InvokeRequest(
            url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=PRICE,
            idempotency_key="late", created_at=later, mandate=signed.to_json()).to_json()
        ).encode()
        headers = api.sign_request(agent, vault.signed_as, "POST", INVOKE_PATH, body,
                                   life=vault.life, now=later)
        with pytest.raises(EnclaveError, match="mandate_revocation_unknown"):
            channel.request(SignedCall.of(headers, "POST", INVOKE_PATH, body), PRICE,
                            now=later)
        # An older block than one already read is ignored: the fresh read stands.
        vault.service.vault.mandate_read(RegistryRead(signed.hash, 0, later, True))
        assert channel.provider_balance == PRICE and channel.locked == 0
        assert world.balance(provider.address) == 0


def test_a_restarted_vault_keeps_the_mandates_spend_and_binding(world: World) -> None:
    """The book is in the sealed ledger, stored before the request it reserved for goes out:
    a restart (the same enclave, restored from its store) neither resets the budget nor
    forgets that the agent pays only under its owner's mandate."""
    chain = world.chain
    registry = deploy_contract(chain, chain.accounts[0], "MandateRegistry").address
    owner, provider = Account.create(), world.provider()
    gas = Account.create()
    transact(chain, chain.accounts[0], {"to": gas.address}, value=10**18)
    db = f"sqlite:///{world.tmp}/mandated-vault.db"
    with serve_in_thread(provider.app) as site:
        with running_vault(world, account=gas, db_url=db) as vault:
            agent, client = client_of(world, vault, funds=20_000, deposit=20_000)
            signed = _mandate(world, registry, owner, agent.address)  # budget 3 x PRICE
            client.mandate = signed.to_json()
            for _ in range(2):
                assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        with running_vault(world, account=gas, db_url=db) as vault:
            again = VaultClient(vault.url, agent, expect=expected(world, vault))
            _refused(again, f"{site}/weather", "mandate_required")
            again.mandate = signed.to_json()
            assert again.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
            _refused(again, f"{site}/weather", "mandate_budget_exhausted")
            [row] = vault.store.channels(client=agent.address)
            assert row.provider_balance == str(3 * PRICE)
            assert provider.calls["weather"] == 3


def test_a402_pay_through_a_vault_under_a_mandate(world: World, tmp_path: Path) -> None:
    """``a402 pay --vault --mandate``: the mandate is signed into the call and the enclave
    enforces it: inside it pays; a provider outside its payees exits 3, nothing paid."""
    chain = world.chain
    registry = deploy_contract(chain, chain.accounts[0], "MandateRegistry").address
    owner, provider, stranger = Account.create(), world.provider(), world.provider()
    with serve_in_thread(provider.app) as site, serve_in_thread(stranger.app) as other, \
            running_vault(world) as vault:
        agent, _ = client_of(world, vault, funds=20_000, deposit=20_000)
        key = key_file(tmp_path, agent)
        mandate = tmp_path / "mandate.json"
        spend_db = f"sqlite:///{tmp_path}/cli-spend.db"
        mandate.write_text(_mandate(world, registry, owner, agent.address,
                                    payees=(provider.address,)).dumps())

        def pay(url: str) -> tuple[int, str]:
            err = io.StringIO()
            code = pay_main([url, "--key-file", str(key), "--vault", vault.url,
                             *vault_flags(world, vault), "--mandate", str(mandate),
                             "--spend-db", spend_db], stdout=io.BytesIO(), stderr=err)
            return code, err.getvalue()

        assert pay(f"{site}/weather")[0] == 0
        code, err = pay(f"{other}/weather")
        assert code == 3 and "mandate_payee_not_allowed" in err and "nothing was paid" in err
        balances = {r.provider.lower(): (r.phase, r.provider_balance)
                    for r in vault.store.channels(client=agent.address)}
        assert balances[provider.address.lower()][1] == str(PRICE)
        # The stranger's channel was never approved (the pool debit came back): unpaid.
        assert balances.get(stranger.address.lower(), ("-", "0"))[1] == "0", balances
        assert world.manager.pooled(vault.address, agent.address) == 20_000 - int(
            next(r.deposit for r in vault.store.channels(client=agent.address)
                 if r.provider.lower() == provider.address.lower()))
        assert (provider.calls["weather"], stranger.calls["weather"]) == (1, 0)
    # The paid call's record, next to the spend store, verified by a402 audit.
    out, err = io.StringIO(), io.StringIO()
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    assert run_audit(parser.parse_args(["--spend-db", spend_db]), out=out, err=err) == 0, \
        err.getvalue()
    assert "1 record(s), every signature and link verified" in err.getvalue()


def test_paid_vault_calls_leave_evidence_whose_channel_receipts_verify_offline(
    world: World, tmp_path: Path,
) -> None:
    chain = world.chain
    registry = deploy_contract(chain, chain.accounts[0], "MandateRegistry").address
    owner, provider = Account.create(), world.provider()
    store = SpendStore(f"sqlite:///{tmp_path}/agent-spend.db")
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        agent, client = client_of(world, vault, funds=20_000, deposit=20_000)
        signed = _mandate(world, registry, owner, agent.address)
        client.mandate, client.evidence = signed.to_json(), EvidenceLog(store.engine)
        for _ in range(2):
            assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        _refused(client, f"{site}/echo", "mandate_cap_exceeded", method="POST")
    store.register(signed)  # the document the audit checks the owner's signature on
    rows = EvidenceLog(store.engine).rows()
    lines = audit(rows, stored_mandates(store.engine))
    assert [line.problems for line in lines] == [[], []]  # the refused call left none
    receipts = [line.record["settlement"]["receipt"] for line in lines]
    assert [r["providerBalance"] for r in receipts] == [str(PRICE), str(2 * PRICE)]
    assert all(line.record["payment"]["payee"] == provider.address for line in lines)

    # One byte of the second receipt's provider balance, re-signed by nobody: named.
    with store.engine.begin() as conn:
        text = conn.execute(select(evidence.c.record).where(evidence.c.seq == 2)).scalar_one()
        old = f'"providerBalance":"{2 * PRICE}"'
        conn.execute(update(evidence).where(evidence.c.seq == 2).values(
            record=text.replace(old, old.replace("2", "3", 1))))
    lines = audit(EvidenceLog(store.engine).rows(), stored_mandates(store.engine))
    assert lines[0].ok and not lines[1].ok
    assert {code for code, _ in lines[1].problems} >= {HASH_MISMATCH, BAD_RECORD_SIGNATURE,
                                                       BAD_PAYMENT_SIGNATURE}
    store.close()
