"""The machine's settlement interface on EVM: the same rules and bytes as before it existed.

Each check recomputes what the contract verifies with :mod:`a402.crypto` directly (not
through :class:`~a402.asc.EvmSettlement`), so a settlement that changed ``m``, σ_U, the
state digests or the snapshot layout would fail here.
"""

from __future__ import annotations

import json

from a402.asc import Auth, EvmSettlement, Reveal, state_signer
from a402.crypto import EVM, answer_hash, payment_message
from a402.crypto.authorization import authorization_signer

from .helpers import wire
from .test_machine import new_world


def test_the_evm_exchange_carries_the_contracts_message_signatures_and_an_ack() -> None:
    w = new_world()
    assert isinstance(w.vault.settlement, EvmSettlement)
    assert w.vault.terms == w.terms and w.provider.domain == w.domain
    assert w.vault.channel_id == w.terms.channel_id(w.domain)
    exec_ = w.vault.request(b"GET /", 700, now=0.0)
    w.provider.receive(wire(exec_), now=0.0)
    reply = w.provider.reply(exec_.request_id, b"result", charge=600)
    h = answer_hash(b"GET /", reply.result_hash)  # the result as the answer to that request
    m = payment_message(w.domain, w.cid, exec_.request_id, 600, h)
    presignature = EVM.presignature_from_bytes(reply.presignature)
    assert len(reply.presignature) == 64
    assert EVM.pre_verify(w.terms.provider_key, m, reply.adaptor_point, presignature)
    (auth,) = w.vault.receive(wire(reply), now=0.0).send
    assert isinstance(auth, Auth)
    assert authorization_signer(
        w.domain, m, 600, presignature.r, auth.authorization
    ) == w.terms.vault
    (reveal,) = w.provider.receive(wire(auth), now=0.0).send
    assert isinstance(reveal, Reveal)
    assert state_signer(w.domain, w.cid, reveal.state, reveal.signature) == w.terms.provider
    step = w.vault.receive(wire(reveal), now=0.0)
    (ack,) = step.send  # EVM keeps its ACK
    assert state_signer(w.domain, w.cid, ack.state, ack.signature) == w.terms.vault  # type: ignore[union-attr]
    w.provider.receive(wire(ack), now=0.0)
    assert w.vault.state == w.provider.state and w.vault.provider_balance == 600
    assert w.vault.free == w.terms.deposit - 600


def test_an_evm_snapshot_still_names_the_terms_and_the_domain() -> None:
    w = new_world()
    for channel in (w.vault, w.provider):
        doc = json.loads(channel.snapshot())
        assert "terms" in doc and "domain" in doc and "channelId" not in doc
        assert "answeredAuth" not in doc
