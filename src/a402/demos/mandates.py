"""``a402 demo --act mandates``: an owner bounds what an agent may spend, and it holds.

On an embedded chain with the dev contracts (``MandateRegistry`` included), a
fund owner signs an EIP-712 mandate for the demo's client key: at most the
weather API's price per payment, a small budget, one payee. The agent pays
inside it; a malicious API whose 402 asks 100× the cap is refused before
anything is signed; the owner revokes the mandate on-chain and the agent's next
payment is refused; ``a402 audit``'s check verifies the evidence chain of the
payments and names the record in which one byte was then altered. The same
mandate is also written as an AP2 open payment
mandate (SD-JWT) to show that both encodings name one hash. Every claim is
checked against balances read from the chain and the durable spend store.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.background import serve_in_thread
from a402.chain.deploy import deploy_dev_stack, token_balance
from a402.chain.node import embedded_chain
from a402.chain.tx import transact
from a402.client import PaymentRefused, paying_client, receipt_of
from a402.client.audit import audit
from a402.client.mandate_command import stored_mandates
from a402.crypto.authorization import EcdsaSigner
from a402.demos.common import PRICE, atomic_units, format_usdc, weather_api
from a402.facilitator.app import create_app
from a402.facilitator.core import Facilitator
from a402.facilitator.store import SettlementStore
from a402.mandate import Domain, Mandate, sign_mandate
from a402.mandate.ap2 import export_open, load_sd_jwt
from a402.mandate.evidence import EvidenceLog, EvidenceRow, evidence
from a402.mandate.guard import MandateGuard
from a402.mandate.registry import MandateRegistry, RevocationCheck
from a402.mandate.spend import SpendStore
from a402.provider.middleware import PaymentMiddleware

GREED = 100
"""How many times the mandate's cap the malicious API asks for."""
PAID_CALLS = 3


def run_mandates_act(out: TextIO = sys.stdout) -> int:
    """Act 4: a mandate bounds the agent; 0 only if every step behaved and balances agree."""
    say = lambda line="": print(line, file=out, flush=True)  # noqa: E731
    say("a402 demo: a mandate bounds what an agent may spend\n")
    started = time.perf_counter()
    chain = embedded_chain()
    manifest = deploy_dev_stack(chain)
    provider, client = manifest.account("provider"), manifest.account("client")
    owner: LocalAccount = Account.create()
    transact(chain, chain.accounts[0], {"to": owner.address}, value=10**17)  # revocation gas
    cap = atomic_units(PRICE)
    budget = 10 * cap
    now = int(time.time())
    mandate = Mandate(
        owner=owner.address, agent=client.address, max_per_payment=cap, budget=budget,
        valid_after=now - 60, valid_before=now + 3600, nonce=os.urandom(32),
        networks=(manifest.network,), assets=(manifest.token.address,), schemes=("exact",),
        payees=(provider.address,))
    domain = Domain(manifest.chain_id, manifest.contracts["MandateRegistry"])
    signed = sign_mandate(mandate, domain, EcdsaSigner(bytes(owner.key)).sign_digest)
    say(f"owner      {owner.address} signs mandate {signed.hash_hex[:18]}.. (EIP-712) for "
        f"agent {client.address}")
    say(f"           at most {format_usdc(cap)} USDC a payment, {format_usdc(budget)} in all, "
        f"payee {provider.address} only; revocable in MandateRegistry {domain.registry}")
    twin = load_sd_jwt(export_open(mandate, domain, bytes(owner.key)))
    say(f"           as an AP2 open payment mandate (SD-JWT, ES256K): "
        f"{len(twin.dumps())} bytes, same hash: {twin.hash == signed.hash}")

    token = manifest.token.address
    before = {"agent": token_balance(chain, token, client.address),
              "provider": token_balance(chain, token, provider.address)}
    steps: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        journal = SettlementStore(f"sqlite:///{Path(tmp) / 'journal.db'}")
        spend = SpendStore(f"sqlite:///{Path(tmp) / 'spend.db'}")
        facilitator = Facilitator(chain, chain.accounts[1], journal)
        guard = MandateGuard(signed, agent=client.address, store=spend,
                             revocation=RevocationCheck.for_mandate(chain, signed))
        greedy_price = f"{GREED * cap / 10**6:.6f}"
        with serve_in_thread(create_app(facilitator)) as facilitator_url:
            def api(price: str) -> PaymentMiddleware:
                return PaymentMiddleware(
                    weather_api(), routes={"GET /weather/*": price}, pay_to=provider.address,
                    token=manifest.token, network=manifest.network,
                    facilitator=facilitator_url)

            with serve_in_thread(api(PRICE)) as honest, \
                    serve_in_thread(api(greedy_price)) as greedy, \
                    paying_client(client.private_key, mandate=guard) as http:
                say(f"\n1. the agent pays {PAID_CALLS} calls of {PRICE} USDC inside the mandate")
                paid = 0
                for city in ("berlin", "lagos", "lima")[:PAID_CALLS]:
                    response = http.get(f"{honest}/weather/{city}")
                    receipt = receipt_of(response)
                    ok = response.status_code == 200 and receipt is not None and receipt.success
                    paid += cap if ok else 0
                    say(f"   GET /weather/{city:<8} {response.status_code}  "
                        f"{receipt.transaction if receipt else 'no receipt'}")
                steps["paid inside"] = paid == PAID_CALLS * cap

                spent_before = spend.spent(signed).total
                say(f"\n2. a malicious API's 402 asks {greedy_price} USDC, {GREED}x the cap")
                steps["greedy refused"] = _refused(
                    say, lambda: http.get(f"{greedy}/weather/osaka"), "mandate_cap_exceeded")
                steps["budget untouched"] = spend.spent(signed).total == spent_before

                say("\n3. the owner revokes the mandate on-chain")
                receipt_tx = MandateRegistry(chain, domain.registry).revoke(owner, signed.hash)
                say(f"   revoked in block {int(receipt_tx['blockNumber'])}")
                say("   the agent tries once more")
                steps["revoked refused"] = _refused(
                    say, lambda: http.get(f"{honest}/weather/perth"), "mandate_revoked")
        guard.close()  # the last payment's outcome record, queued, written now
        spent = spend.spent(signed).total
        say("\n4. a402 audit checks the evidence chain offline, then one altered byte")
        steps["audit verifies"] = _audit(say, spend) == (len(evidence_of(spend)), None)
        seq, altered = _alter_one_byte(spend)
        steps["altered byte named"] = _audit(say, spend)[1] == seq
        say(f"   (record #{seq} had one byte changed: {altered})")
        spend.close()
        journal.close()

    after = {"agent": token_balance(chain, token, client.address),
             "provider": token_balance(chain, token, provider.address)}
    moved = before["agent"] - after["agent"]
    steps["balances agree"] = (moved == paid == spent
                               and after["provider"] - before["provider"] == paid)
    say(f"\n{'':<10}{'before':>16}{'after':>16}{'change':>16}   (USDC)")
    for name in before:
        say(f"{name:<10}{format_usdc(before[name]):>16}{format_usdc(after[name]):>16}"
            f"{(after[name] - before[name]) / 1e6:>+16,.6f}")
    say(f"spent under the mandate (spend store): {format_usdc(spent)} of {format_usdc(budget)}")
    failed = [name for name, ok in steps.items() if not ok]
    say(f"\nran in {time.perf_counter() - started:.1f} s on {manifest.network}")
    say("\nresult     " + ("OK: paid inside the mandate, a 100x 402 and a revoked mandate "
                          "refused before anything was sent, the audit trail verified and one "
                          "altered byte named, balances agree" if not failed
                          else f"FAILED: {', '.join(failed)}"))
    return 0 if not failed else 1


def evidence_of(spend: SpendStore) -> list[EvidenceRow]:
    return EvidenceLog(spend.engine).rows()


def _audit(say: Callable[[str], None], spend: SpendStore) -> tuple[int, int | None]:
    """What ``a402 audit`` checks, on the demo's spend store: (records, the first failing
    record's number or None), printed."""
    lines = audit(evidence_of(spend), stored_mandates(spend.engine))
    bad = [line for line in lines if not line.ok]
    if not bad:
        payments = sum(1 for line in lines if line.record.get("kind") != "outcome")
        say(f"   a402 audit: {len(lines)} record(s), every signature and link verified "
            f"({payments} payment(s), each with its outcome)")
        return len(lines), None
    say(f"   a402 audit: {bad[0].name} fails: "
        + "; ".join(f"{code}: {why}" for code, why in bad[0].problems)[:160])
    return len(lines), bad[0].seq


def _alter_one_byte(spend: SpendStore) -> tuple[int, str]:
    """Change one byte of the first record's amount, as a tamperer with the database
    would; returns (its number, what changed)."""
    from sqlalchemy import update

    row = evidence_of(spend)[0]
    text = row.record
    at = text.index(str(atomic_units(PRICE)))
    digit = text[at]
    changed = text[:at] + ("1" if digit != "1" else "2") + text[at + 1:]
    with spend.engine.begin() as conn:
        conn.execute(update(evidence).where(evidence.c.seq == row.seq).values(record=changed))
    return row.seq, f"amount {text[at:at + 4]}.. -> {changed[at:at + 4]}.."


def _refused(say: Callable[[str], None], call: Callable[[], httpx.Response],
             reason: str) -> bool:
    """Run ``call``; True if it raised ``PaymentRefused`` with ``reason`` (printed)."""
    try:
        response = call()
    except PaymentRefused as e:
        # Refused before signing, or (a revocation seen at the commit) signed in memory and
        # discarded unsent: either way nothing left the process.
        unsent = "discarded unsent" in e.message
        say(f"   refused: {e.reason}; "
            + ("the payment signed in memory was discarded unsent, nothing was paid"
               if unsent else "nothing was signed, nothing was paid"))
        return bool(e.reason == reason)
    say(f"   NOT refused: status {response.status_code}")
    return False
