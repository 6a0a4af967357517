"""A2A under an owner's mandate (issue 14): a paid task for a skill the mandate does not
allow is refused before anything is signed; one it allows pays, counted in the mandate's
durable spend. Anvil, our facilitator over HTTP, a2a-sdk; balances checked on chain."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.agents import a2a_x402
from a402.agents.a2a_card import InMemoryCardSource
from a402.agents.a2a_client import SKILL_NOT_ON_CARD, PayingAgentClient, discover
from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.client import PaymentRefused
from a402.client.audit import audit, sha256_hex
from a402.client.mandate_command import stored_mandates
from a402.crypto import EcdsaSigner
from a402.mandate import Domain, Mandate, MandateGuard, sign_mandate
from a402.mandate.evidence import EvidenceLog
from a402.mandate.registry import RevocationCheck
from a402.mandate.spend import SpendStore
from tests.agents.conftest import A2A_PRICE_ATOMIC, A2AServedAgent, a2a_balance

pytestmark = [pytest.mark.anyio, pytest.mark.anvil]
AGENT_ID = "agent-1"


def _guard(payer: LocalAccount, dev_stack: Manifest, chain: Chain, store: SpendStore,
           skills: tuple[str, ...]) -> MandateGuard:
    owner = Account.create()
    now = int(time.time())
    mandate = Mandate(owner=owner.address, agent=payer.address, max_per_payment=100_000,
                      budget=1_000_000, valid_after=now - 60, valid_before=now + 3600,
                      nonce=os.urandom(32), networks=(dev_stack.network,),
                      assets=(dev_stack.token.address,), schemes=("exact",), skills=skills)
    domain = Domain(dev_stack.chain_id, dev_stack.contracts["MandateRegistry"])
    signed = sign_mandate(mandate, domain, EcdsaSigner(bytes(owner.key)).sign_digest)
    return MandateGuard(signed, agent=payer.address, store=store,
                        revocation=RevocationCheck.for_mandate(chain, signed))


async def test_a_task_outside_the_mandates_skills_is_refused_before_anything_is_signed(
    a2a_agents: Callable[..., A2AServedAgent], a2a_wire: Any,
    new_payer: Callable[..., LocalAccount], anvil_chain: Chain, dev_stack: Manifest,
    tmp_path: Path,
) -> None:
    served = a2a_agents()  # its card's one skill is "task"
    payer = new_payer(1_000_000)
    http, recorder = a2a_wire
    agent = await discover(AGENT_ID, InMemoryCardSource({AGENT_ID: served.onchain}), http=http)
    store = SpendStore(f"sqlite:///{tmp_path}/spend.db")
    narrow = _guard(payer, dev_stack, anvil_chain, store, skills=("translate",))

    async with PayingAgentClient(payer.key, http=http, mandate=narrow) as client:
        for skill in ("task", None):  # the card's skill, not the mandate's; or none named
            with pytest.raises(PaymentRefused) as refused:
                await client.send(agent, "hello", skill=skill)
            assert refused.value.reason == "mandate_skill_not_allowed"
            assert "nothing was signed" in str(refused.value)
        with pytest.raises(PaymentRefused) as refused:  # a skill the card does not declare
            await client.send(agent, "hello", skill="translate")
        assert refused.value.reason == SKILL_NOT_ON_CARD

    # Declined in-band each time, no payload ever sent; nothing moved, nothing counted.
    calls = recorder.rpc()
    assert len(calls) == 4  # (ask, decline) x 2; the unknown skill sent nothing
    for request, _, _ in calls:
        assert a2a_x402.PAYLOAD_KEY not in request["params"]["message"].get("metadata", {})
    assert served.calls == []
    assert store.spent(narrow.signed_mandate).total == 0
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == 0

    # The owner's mandate for that skill: the same task pays, once, and is counted.
    wide = _guard(payer, dev_stack, anvil_chain, store, skills=("task",))
    async with PayingAgentClient(payer.key, http=http, mandate=wide) as client:
        result = await client.send(agent, "hello", skill="task")
    assert result.text == "HELLO" and result.receipt is not None and result.receipt.success
    assert store.spent(wide.signed_mandate).total == A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, payer.address) == 1_000_000 - A2A_PRICE_ATOMIC
    assert a2a_balance(anvil_chain, dev_stack, served.pay_to) == A2A_PRICE_ATOMIC

    # The paid task left its payment's record (committed before it was submitted) and,
    # written when the client closed, its outcome's; both verify offline.
    lines = audit(EvidenceLog(store.engine).rows(), stored_mandates(store.engine))
    assert [line.problems for line in lines] == [[], []]
    line, outcome = lines
    assert line.record["mandate"] == wide.mandate_hash
    assert line.record["request"]["skill"] == "task"
    assert line.record["status"] == "sending" and line.record["result"] is None
    assert outcome.record["kind"] == "outcome" and outcome.record["of"] == line.seq
    assert outcome.record["result"] == sha256_hex(b"HELLO")
    assert outcome.record["settlement"]["transaction"] == result.receipt.transaction
    store.close()
