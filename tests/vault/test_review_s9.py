"""Adversarial review, session 9 (issue 14 mandates): what a vault host can make the enclave do.

Each test states the money rule it expects; each was ``xfail(strict=True)`` while its
finding stood and is a plain test since the fix (S9-V1, S9-V2). On anvil.
"""

from __future__ import annotations

import json
import time

import pytest
from eth_account import Account

from a402.asc.errors import LocalProtocolError
from a402.background import serve_in_thread
from a402.chain.tx import deploy_contract
from a402.vault_enclave import INVOKE_PATH, SignedCall
from a402.wire import vault_api as api
from tests.a402_exchange.helpers import PRICES, World

from .helpers import client_of, running_vault
from .test_mandate import _mandate

pytestmark = pytest.mark.anvil
PRICE = PRICES["GET /weather"]


def test_a_host_cannot_erase_the_reservation_of_a_request_in_flight(world: World) -> None:
    """The host holds the agent's signed call; the enclave sent it on the channel (δ = PRICE
    reserved under the mandate). The host plays the same call again on that busy channel at
    a lower price. Before the fix the book gave the PRICE back and reserved the new amount,
    then the channel refused and the enclave released the new amount too, so the request in
    flight could still get σ_U for PRICE uncounted. Now the busy channel is refused before
    the book is asked: the budget still counts the in-flight PRICE."""
    chain = world.chain
    registry = deploy_contract(chain, chain.accounts[0], "MandateRegistry").address
    owner, provider = Account.create(), world.provider()
    with serve_in_thread(provider.app) as site, running_vault(world) as vault:
        agent, client = client_of(world, vault, funds=20_000, deposit=20_000)
        signed = _mandate(world, registry, owner, agent.address)  # budget 3 x PRICE
        client.mandate = signed.to_json()
        assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        [row] = vault.store.channels(client=agent.address)
        enclave = vault.service.vault
        channel = enclave.channel(bytes.fromhex(row.cid[2:]))
        assert channel is not None
        book = enclave._code._mandates  # the sealed ledger's mandate book
        assert book.spend[signed.hash_hex].total == PRICE

        body = json.dumps(api.InvokeRequest(
            url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=PRICE,
            idempotency_key="in-flight", created_at=int(time.time()),
            mandate=signed.to_json()).to_json()).encode()
        headers = api.sign_request(agent, vault.signed_as, "POST", INVOKE_PATH, body,
                                   life=vault.life)
        call = SignedCall.of(headers, "POST", INVOKE_PATH, body)
        exec_ = channel.request(call, PRICE, now=time.time())  # sent: σ_U may follow
        assert exec_.amount == PRICE and channel.locked == PRICE
        assert book.spend[signed.hash_hex].total == 2 * PRICE
        with pytest.raises(LocalProtocolError):  # the channel is busy with the first one
            channel.request(call, 1, now=time.time())
        assert channel.locked == PRICE  # the PRICE request is still out, σ_U-able
        assert book.spend[signed.hash_hex].total == 2 * PRICE, (
            f"the book counts {book.spend[signed.hash_hex].total} while "
            f"{2 * PRICE} is paid or payable")


def test_a_host_cannot_pay_another_provider_for_a_call_to_an_allowed_origin(
    world: World,
) -> None:
    """The owner limits the agent to one origin (``--origin``). The signed call names only a
    URL; the host chooses the channel, and no provider attests an origin. So, through a
    vault, an origin limit without payees would not limit who is paid: played into the
    agent's channel with another provider (the host's friend, whose attested enclave serves
    any path), the friend would be paid. Such a mandate is refused outright
    (``mandate_payees_required``, nothing paid); with the payees named, the call played into
    the friend's channel is refused (``mandate_payee_not_allowed``) and nothing is locked."""
    from a402.tee import EnclaveError

    from .test_mandate import _refused

    chain = world.chain
    registry = deploy_contract(chain, chain.accounts[0], "MandateRegistry").address
    owner, provider, friend = Account.create(), world.provider(), world.provider()
    with serve_in_thread(provider.app) as site, serve_in_thread(friend.app) as other, \
            running_vault(world) as vault:
        agent, client = client_of(world, vault, funds=20_000, deposit=20_000)
        # Before any mandate: the agent once paid the friend (a channel to it exists).
        assert client.invoke(f"{other}/weather", max_price=PRICE).outcome == api.PAID
        rows = {r.provider.lower(): r for r in vault.store.channels(client=agent.address)}
        friends = vault.service.vault.channel(
            bytes.fromhex(rows[friend.address.lower()].cid[2:]))
        assert friends is not None and friends.provider_balance == PRICE

        origin_only = _mandate(world, registry, owner, agent.address, origins=(site,))
        client.mandate = origin_only.to_json()
        _refused(client, f"{site}/weather", "mandate_payees_required")
        book = vault.service.vault._code._mandates
        assert origin_only.hash_hex not in book.spend  # nothing reserved, nothing paid
        assert friends.provider_balance == PRICE and friends.locked == 0

        signed = _mandate(world, registry, owner, agent.address, origins=(site,),
                          payees=(provider.address,))
        client.mandate = signed.to_json()
        assert client.invoke(f"{site}/weather", max_price=PRICE).outcome == api.PAID
        assert book.spend[signed.hash_hex].total == PRICE

        body = json.dumps(api.InvokeRequest(
            url=f"{site}/weather", method="GET", headers=(), body=b"", max_price=PRICE,
            idempotency_key="rerouted", created_at=int(time.time()),
            mandate=signed.to_json()).to_json()).encode()
        headers = api.sign_request(agent, vault.signed_as, "POST", INVOKE_PATH, body,
                                   life=vault.life)
        with pytest.raises(EnclaveError) as refused:
            friends.request(SignedCall.of(headers, "POST", INVOKE_PATH, body), PRICE,
                            now=time.time())
        assert refused.value.reason == "mandate_payee_not_allowed"
        assert friends.locked == 0 and friends.provider_balance == PRICE
        assert book.spend[signed.hash_hex].total == PRICE
