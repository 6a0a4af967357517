"""Adversarial review, session 9 (issue 14 mandates): findings that need no chain.

Each test states the rule it expects; each was ``xfail(strict=True)`` while its finding
stood and is a plain test since the fix (the docstrings say what the finding was).
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from a402.client.audit import exact_record
from a402.client.mandate_command import EXIT_AUDIT_FAILED, add_audit_arguments, run_audit
from a402.client.wallet import Wallet
from a402.mandate import ProposedPayment
from a402.mandate.evidence import evidence
from a402.mandate.guard import MandateGuard
from a402.mandate.spend import SpendStore
from a402.wire.headers import encode_header
from a402.wire.x402 import PaymentRequirements
from tests.mandate.helpers import NETWORK, PAYEE, USDC, Keys, signed

PRICE = 1_000
SRC = Path(__file__).resolve().parents[2] / "src"


def _audit(db: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = run_audit(parser.parse_args(["--spend-db", db]), out=out, err=err)
    return code, err.getvalue()


def _pay_with_evidence(guard: MandateGuard, wallet: Wallet, n: int) -> None:
    """``n`` payments as X402Auth makes them: reserve, sign the EIP-3009 payload (real
    secp256k1), then the evidence record that also marks the reservation signed."""
    req = PaymentRequirements(scheme="exact", network=NETWORK, amount=str(PRICE), asset=USDC,
                              pay_to=PAYEE, max_timeout_seconds=60,
                              extra={"name": "USDC", "version": "2"})
    for i in range(n):
        url = f"https://api.example.com/paid?n={i}"
        held = guard.reserve(ProposedPayment(agent=wallet.address, payee=PAYEE,
                                             network=NETWORK, asset=USDC, scheme="exact",
                                             amount=PRICE, url=url))
        payload = wallet.sign(req, valid_for=60)
        request = httpx.Request("GET", url)
        response = httpx.Response(200, content=b"paid result", request=request)
        fields = exact_record(mandate=guard.mandate_hash, agent=wallet.address,
                              request=request, header_value=encode_header(payload),
                              amount=PRICE, payee=PAYEE, network=NETWORK, asset=USDC,
                              response=response)
        guard.record(fields, wallet.sign_evidence, reservation=held,
                     payment_ref=payload.payload["authorization"]["nonce"])


def test_the_audit_names_payments_whose_records_were_cut_off_the_tail(tmp_path: Path) -> None:
    """Three payments signed, three records. Whoever can write the database deletes the
    last two: the chain that is left links perfectly, and the audit says "1 record(s),
    every signature and link verified" while the spend store itself still counts three
    signed payments (3 x PRICE spent). Expected: the audit fails (exit 4) naming the
    missing payments (e.g. signed reservations with no record, or a tail anchor)."""
    keys = Keys()
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    store = SpendStore(db)
    s = signed(keys)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    wallet = Wallet(bytes(keys.agent.key))
    _pay_with_evidence(guard, wallet, 3)
    assert _audit(db)[0] == 0
    with store.engine.begin() as conn:
        conn.execute(evidence.delete().where(evidence.c.seq >= 2))
    assert store.spent(s).total == 3 * PRICE and store.count(s, "signed") == 3
    code, err = _audit(db)
    store.close()
    assert code == EXIT_AUDIT_FAILED, err
    assert "chain_cut: the signed head names record #3, the last one left is #1" in err


def test_the_audit_fails_when_every_record_was_deleted(tmp_path: Path) -> None:
    keys = Keys()
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    store = SpendStore(db)
    s = signed(keys)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    _pay_with_evidence(guard, Wallet(bytes(keys.agent.key)), 2)
    with store.engine.begin() as conn:
        conn.execute(evidence.delete())
    assert store.spent(s).total == 2 * PRICE
    code, err = _audit(db)
    store.close()
    assert code == EXIT_AUDIT_FAILED, err
    assert "chain_cut" in err and "record_missing: 2 payment(s)" in err


def _delivery(price: int) -> tuple[Any, Any, Any, Any, Any, Any]:
    """One real paid request through both channel machines (real secp256k1): the delivered
    result as committed, the vault's ACK (the receipt), the vault's address, the domain, and
    the request's AUTH (the vault's σ_U) and REPLY (the provider's commitment)."""
    from a402.agents.validation import DeliveredResult
    from a402.asc import Ack, ChannelTerms, ProviderChannel, VaultChannel, decode, encode
    from a402.crypto import EVM, EcdsaSigner, PaymentDomain

    domain = PaymentDomain(31337, os.urandom(20))
    vault_key, provider_key, client_key = (EcdsaSigner(os.urandom(32)) for _ in range(3))
    schnorr = EVM.generate_key()
    terms = ChannelTerms(client_key.address, vault_key.address, provider_key.address,
                         schnorr.public_key, 1_000_000, os.urandom(32))
    vault = VaultChannel(terms, domain, vault_key, lock_timeout=30)
    provider = ProviderChannel(terms, domain, provider_key, schnorr, ack_timeout=10,
                               lock_timeout=29)
    exec_ = vault.request(b"translate: hello", price, now=0)
    provider.receive(decode(encode(exec_)), now=0)
    reply = provider.reply(exec_.request_id, b"hola")
    auth = vault.receive(decode(encode(reply)), now=1).send[0]
    reveal = provider.receive(decode(encode(auth)), now=2).send[0]
    ack = vault.receive(decode(encode(reveal)), now=3).send[0]
    assert isinstance(ack, Ack)
    from a402.evm.keccak import keccak256

    delivered = DeliveredResult(vault.channel_id, exec_.request_id, price, reply.result_hash,
                                keccak256(exec_.request))
    return delivered, ack, vault_key.address, domain, auth, reply


@pytest.mark.parametrize("claim", ["amount", "result_hash", "request_digest"])
def test_a_validator_does_not_vouch_for_an_amount_or_result_the_receipt_does_not_show(
    claim: str,
) -> None:
    """The provider (the agent's owner) chooses what it asks the validator about: the real
    receipt of a 2_500 request, but a DeliveredResult claiming 2_500 x 10^6 paid (or another
    result's hash, or the answer to another request). check_receipt compares only channel,
    request id, version and the vault's signature, so answer_with_receipt would publish a
    score of 100 "for the delivery committed to by h and amount" that no receipt supports.
    Expected: ValidationRefused."""
    import dataclasses

    from a402.agents.validation import ValidationRefused, check_receipt

    delivered, ack, vault, domain, auth, reply = _delivery(2_500)
    # the honest claim holds
    check_receipt(ack, delivered, vault=vault, domain=domain, auth=auth, reply=reply)
    lie = (dataclasses.replace(delivered, amount=2_500 * 10**6) if claim == "amount"
           else dataclasses.replace(delivered, **{claim: os.urandom(32)}))
    with pytest.raises(ValidationRefused) as refused:
        check_receipt(ack, lie, vault=vault, domain=domain, auth=auth, reply=reply)
    assert refused.value.reason == "receipt_wrong_amount_or_result"
    if claim == "result_hash":  # a REPLY rewritten to match the lie breaks the vault's σ_U
        forged = dataclasses.replace(reply, result_hash=lie.result_hash)
        with pytest.raises(ValidationRefused, match="receipt_wrong_amount_or_result"):
            check_receipt(ack, lie, vault=vault, domain=domain, auth=auth, reply=forged)


def test_a_record_rewritten_as_deeply_nested_json_is_named_not_a_crash(tmp_path: Path) -> None:
    """eth_account raises the interpreter's recursion limit to 100_000, so json.loads of a
    record nested 100_000 deep overflows the C stack: ``a402 audit`` dies (SIGSEGV) and names
    no record, and a script that treats "not exit 4" as "not tampered" is fooled. Expected:
    exit 4 naming record #2 (the evidence text bounded like every wire body,
    :mod:`a402.wire.jsonstrict`)."""
    import subprocess
    import sys

    from sqlalchemy import update

    keys = Keys()
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    store = SpendStore(db)
    s = signed(keys)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    _pay_with_evidence(guard, Wallet(bytes(keys.agent.key)), 2)
    with store.engine.begin() as conn:
        conn.execute(update(evidence).where(evidence.c.seq == 2).values(
            record="[" * 100_000 + "]" * 100_000))
    store.close()
    run = subprocess.run([sys.executable, "-m", "a402.cli", "audit", "--spend-db", db],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert run.returncode == EXIT_AUDIT_FAILED, (run.returncode, run.stderr[-300:])
    assert "record #2" in run.stderr


@pytest.mark.parametrize("claim", [
    # The IETF token status list: how an SD-JWT VC issuer revokes it (index 7 of the list).
    ("status", {"status_list": {"idx": 7, "uri": "https://owner.example/status/1"}}),
    # An audience: the credential is for one verifier only.
    ("aud", "https://only-this-merchant.example"),
])
def test_an_ap2_mandate_with_a_claim_a402_cannot_enforce_is_refused(claim: tuple) -> None:
    """The README: "a limit it cannot read is a limit it would not enforce". read_open checks
    every constraint but no top-level claim besides the ones it maps, so an owner's status
    list (revoke by flipping a bit, never read by a402) or audience restriction is silently
    dropped and the mandate pays. Expected: ``mandate_ap2_*`` refusal."""
    from a402.mandate import MandateError
    from a402.mandate.ap2 import issue, open_claims, read_open

    keys = Keys()
    s = signed(keys, payees=(PAYEE,))
    claims = open_claims(s.mandate, s.domain)
    name, value = claim
    claims[name] = value
    with pytest.raises(MandateError) as refused:
        read_open(issue(claims, bytes(keys.owner.key)))
    assert refused.value.reason.startswith("mandate_ap2_")


@pytest.fixture(scope="module")
def agent_suite(anvil_chain: Any) -> Any:
    from a402.agents.onchain import AgentSuite

    return AgentSuite.deploy(anvil_chain, anvil_chain.accounts[0])


@pytest.mark.anvil
def test_another_agents_owner_cannot_take_a_providers_delivery_for_its_own_agent(
    anvil_chain: Any, agent_suite: Any,
) -> None:
    """The request hash commits to (channel, rid, amount, h) but not to the agent. Seen in
    the mempool (or computed from a receipt), it is filed first by a stranger for the
    stranger's own agent and validator: the provider's own request then reverts
    (RequestExists) for good, and the stranger's validator answers 100 for work the
    stranger's agent never did (its getSummary counts it). Expected: the provider can still
    ask for its own delivery (the hash namespaced by agent, or the request bound to the
    channel's provider)."""
    from a402.agents.validation import answer_with_receipt, suite_validation
    from tests.agents.onchain_helpers import fresh_account
    from tests.agents.test_validation import deliver, provider_identity

    suite = agent_suite
    owner, agent_id = provider_identity(anvil_chain, suite)
    thief, thief_agent = provider_identity(anvil_chain, suite)
    enclave, thiefs_validator = fresh_account(anvil_chain), fresh_account(anvil_chain)
    d = deliver(anvil_chain, b"hola")
    registry = suite_validation(suite)
    h = d.delivered.request_hash()
    registry.request(thief, thiefs_validator.address, thief_agent, h)  # front-run
    registry.respond(thiefs_validator, h, 100, agent_id=thief_agent, tag="a402-receipt")
    assert registry.summary(thief_agent, [], "a402-receipt") == (1, 100)
    registry.request(owner, enclave.address, agent_id, h)  # reverted (RequestExists) before
    mine = registry.status(h, agent_id)
    assert (mine.agent_id, mine.validator, mine.answered) == (agent_id, enclave.address, False)
    assert registry.summary(agent_id, [], "a402-receipt") == (0, 0)  # nothing of the thief's
    published = answer_with_receipt(registry, enclave, d.delivered, d.ack, agent_id=agent_id,
                                    vault=d.vault, domain=d.domain, auth=d.auth, reply=d.reply)
    assert registry.status(h, agent_id).response_hash == published
    assert registry.summary(agent_id, [enclave.address], "a402-receipt") == (1, 100)


def test_one_forged_future_read_does_not_hide_later_honest_revocations() -> None:
    """The enclave keeps the read of the highest block and ignores any lower one. A host that
    lies once (a read at block 10^12, timestamped a year ahead, "not revoked") leaves that
    read standing: fresh for every call for a year, and the honest host that later reports
    the owner's revocation at the real block is ignored. The README bounds a lying host to
    hiding a revocation while it lies; here one lie hides it until the enclave restarts.
    Expected: a revoked read is final whatever its block (a revocation is never undone
    on-chain), and a read's time is bounded by the enclave's wall."""
    import time

    from a402.mandate import MandateRefused
    from a402.mandate.enclave import MandateBook, RegistryRead

    keys = Keys()
    s = signed(keys)
    doc, now = s.to_json(), int(time.time())
    book = MandateBook()
    book.read(RegistryRead(s.hash, 10**12, now + 365 * 86_400, False))  # the one lie
    book.read(RegistryRead(s.hash, 1_000, now, True))  # honest: the owner revoked
    payment = ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK,
                              asset=USDC, scheme="a402", amount=PRICE,
                              url="https://api.example/x")
    with pytest.raises(MandateRefused, match="mandate_revoked"):
        book.check(agent=keys.agent.address, document=doc, confirmation=None,
                   payment=payment, now=now, signed_at=now, key="call-1")
    assert book.reserved == {}


def test_150_payments_answered_at_once_on_postgresql_leave_150_records(
    postgres_url: str,
) -> None:
    """150 payments reserved under a budget for 150 (the spend store holds that), whose
    answers come back at once: each payer writes its record, which also marks its
    reservation signed, as X402Auth does. EvidenceLog.append retries a lost race 20 times
    and then raises; X402Auth._evidence only logs it. Measured: about a fifth of the records
    never written, their reservations left "reserved", and ``a402 audit`` passes the shorter
    chain (S9-E1). Expected: 150 records, 150 signed."""
    import threading

    keys = Keys()
    s = signed(keys, max_per_payment=PRICE, budget=150 * PRICE)
    store = SpendStore(postgres_url)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    wallet = Wallet(bytes(keys.agent.key))
    held = [guard.reserve(ProposedPayment(
        agent=wallet.address, payee=PAYEE, network=NETWORK, asset=USDC, scheme="exact",
        amount=PRICE, url=f"https://api.example.com/x?{i}")) for i in range(150)]
    start, lock, lost = threading.Barrier(150), threading.Lock(), [0]

    def answered(i: int) -> None:
        start.wait()
        try:
            guard.record({"mandate": s.hash_hex, "agent": wallet.address, "i": i},
                         wallet.sign_evidence, reservation=held[i], payment_ref=f"0x{i:064x}")
        except RuntimeError:  # what X402Auth._evidence logs and swallows
            with lock:
                lost[0] += 1

    threads = [threading.Thread(target=answered, args=(i,)) for i in range(150)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = len(guard.evidence.rows(s.hash_hex))
    signed_count = store.count(s, "signed")
    assert store.spent(s).total == 150 * PRICE  # the budget itself holds
    store.close()
    assert (records, signed_count, lost[0]) == (150, 150, 0)


def test_a_read_from_the_future_alone_is_no_fresh_read_and_honest_reads_replace_it() -> None:
    """The lie alone (a year ahead, "not revoked") pays nothing: the enclave's clock caps a
    read's time. The honest read that follows at the real, lower block replaces it."""
    import time

    from a402.mandate import MandateRefused
    from a402.mandate.enclave import MandateBook, RegistryRead

    keys = Keys()
    s = signed(keys)
    doc, now = s.to_json(), int(time.time())
    book = MandateBook()
    book.read(RegistryRead(s.hash, 10**12, now + 365 * 86_400, False), now=now)
    payment = ProposedPayment(agent=keys.agent.address, payee=PAYEE, network=NETWORK,
                              asset=USDC, scheme="a402", amount=PRICE,
                              url="https://api.example/x")
    with pytest.raises(MandateRefused, match="mandate_revocation_unknown"):
        book.check(agent=keys.agent.address, document=doc, confirmation=None,
                   payment=payment, now=now, signed_at=now, key="call-1")
    assert book.reserved == {} and s.hash_hex not in book.spend
    book.read(RegistryRead(s.hash, 1_000, now, False), now=now)
    assert book.check(agent=keys.agent.address, document=doc, confirmation=None,
                      payment=payment, now=now, signed_at=now, key="call-1") == s.hash_hex
    assert book.spend[s.hash_hex].total == PRICE


def test_a_tail_cut_with_its_signed_head_deleted_is_named_by_the_signed_payments(
    tmp_path: Path,
) -> None:
    """The writer also deletes the chain's signed head: the spend store still counts three
    signed payments (3 x PRICE) and two of them have no record naming them."""
    from a402.client.audit import CHAIN_CUT, RECORD_MISSING
    from a402.mandate.evidence import evidence_head

    keys = Keys()
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    store = SpendStore(db)
    s = signed(keys)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    _pay_with_evidence(guard, Wallet(bytes(keys.agent.key)), 3)
    with store.engine.begin() as conn:
        conn.execute(evidence.delete().where(evidence.c.seq >= 2))
        conn.execute(evidence_head.delete())
    assert store.spent(s).total == 3 * PRICE and store.count(s, "signed") == 3
    code, err = _audit(db)
    store.close()
    assert code == EXIT_AUDIT_FAILED
    assert f"{RECORD_MISSING}: 2 payment(s)" in err and CHAIN_CUT in err


def test_an_ap2_token_whose_payload_is_deeply_nested_is_refused_not_a_crash() -> None:
    """The SD-JWT's parts are bounded like every wire body before any parser sees them: a
    payload nested 100_000 deep is ``mandate_ap2_invalid``, not a C stack overflow."""
    import base64
    import json

    from a402.mandate import MandateError
    from a402.mandate.ap2 import read_open

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    header = b64(json.dumps({"alg": "ES256K", "typ": "dc+sd-jwt"}).encode())
    payload = b64(("[" * 100_000 + "]" * 100_000).encode())
    with pytest.raises(MandateError) as refused:
        read_open(f"{header}.{payload}.{b64(bytes(64))}~")
    assert refused.value.reason == "mandate_ap2_invalid"
    assert "nested deeper than 64 levels" in str(refused.value)


def test_a_tail_cut_before_the_next_payment_shows_as_a_gap_at_that_payments_record(
    tmp_path: Path,
) -> None:
    """The next record follows the signed head, not the table's tail: after records #2 and
    #3 are cut, payment four's record is #4 and names #3 as its prev, so the audit finds
    the gap there (and the two payments with no record)."""
    from a402.client.audit import CHAIN_BROKEN

    keys = Keys()
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    store = SpendStore(db)
    s = signed(keys)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    wallet = Wallet(bytes(keys.agent.key))
    _pay_with_evidence(guard, wallet, 3)
    with store.engine.begin() as conn:
        conn.execute(evidence.delete().where(evidence.c.seq >= 2))
    _pay_with_evidence(guard, wallet, 1)
    assert [row.seq for row in guard.evidence.rows()] == [1, 4]
    assert store.spent(s).total == 4 * PRICE and store.count(s, "signed") == 4
    code, err = _audit(db)
    store.close()
    assert code == EXIT_AUDIT_FAILED
    assert f"record #4 fails: {CHAIN_BROKEN}" in err and "record_missing: 2 payment(s)" in err


def test_records_from_before_they_named_their_reservation_are_matched_by_the_payment_nonce(
    tmp_path: Path,
) -> None:
    """A store written before records named their reservation: the audit matches a signed
    reservation by its payment_ref (the EIP-3009 nonce in the record) and passes; cutting
    such a record is still named."""
    from sqlalchemy import update

    from a402.mandate.evidence import evidence_head

    keys = Keys()
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    store = SpendStore(db)
    s = signed(keys)
    guard = MandateGuard(s, agent=keys.agent.address, store=store, revocation=None)
    _pay_with_evidence(guard, Wallet(bytes(keys.agent.key)), 2)
    # Rewrite the store as older code left it: no reservation in the records (re-signed
    # by the agent, as that code signed them), so only the nonce links them.
    from a402.mandate.evidence import canonical, head_hash, record_hash
    wallet = Wallet(bytes(keys.agent.key))
    prev = "0x" + "00" * 32
    for row in guard.evidence.rows():
        record = json.loads(row.record)
        del record["reservation"]
        record["prev"] = prev
        text = canonical(record)
        digest = record_hash(text)
        prev = "0x" + digest.hex()
        with store.engine.begin() as conn:
            conn.execute(update(evidence).where(evidence.c.seq == row.seq).values(
                record=text, hash=prev, signature="0x" + wallet.sign_evidence(digest).hex()))
    with store.engine.begin() as conn:
        conn.execute(update(evidence_head).values(
            hash=prev, signature="0x" + wallet.sign_evidence(head_hash(2, prev)).hex()))
    assert _audit(db)[0] == 0
    assert store.spent(s).total == 2 * PRICE
    with store.engine.begin() as conn:
        conn.execute(evidence.delete().where(evidence.c.seq == 1))
    code, err = _audit(db)
    store.close()
    assert code == EXIT_AUDIT_FAILED and "record_missing: 1 payment(s)" in err
