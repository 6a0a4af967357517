"""The one-commit mandate path killed in its two windows (a402.mandate.guard), on anvil.

A real payer process signs an EIP-3009 payment under a mandate and is killed
(SIGKILL, nothing runs after) either between signing and the commit of its
reservation and record, or after that commit and before the payload is sent. The
test then reads the chain (balances, the nonce's ``authorizationState``), the
server (what reached it) and the spend store (totals, reservations, the audit):

- killed before the commit: a signature existed only in the dead process's memory:
  nothing reached the server, nothing moved, the nonce is unused, the budget is
  untouched, no record;
- killed after it: still nothing sent and nothing moved, but the amount is reserved
  (the budget counts it after a restart: the error is toward spending less) and the
  audit verifies the chain and shows the payment ``unsettled``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from a402.chain.tx import contract_at
from a402.client import PaymentRefused, paying_client
from a402.client.mandate_command import EXIT_OK
from a402.mandate.evidence import EvidenceLog
from a402.mandate.guard import MandateGuard
from a402.mandate.registry import RevocationCheck
from a402.mandate.spend import SpendStore
from tests.client.conftest import Stack
from tests.client.test_evidence import _audit
from tests.client.test_mandate import PRICE, _mandate

pytestmark = pytest.mark.anvil

ROOT = Path(__file__).resolve().parents[2]

_PAYER = textwrap.dedent("""
    import json, os, signal, sys
    from a402.client import paying_client
    from a402.mandate.document import load_signed
    from a402.mandate.guard import MandateGuard
    from a402.mandate.registry import RevocationCheck
    from a402.mandate.spend import SpendStore

    mandate, key, db, url, rpc, where, marker = sys.argv[1:8]
    signed = load_signed(open(mandate).read())
    guard = MandateGuard(signed, agent=signed.mandate.agent, store=SpendStore(db),
                         revocation=RevocationCheck.from_rpc(rpc, signed))
    commit = guard.commit

    def dying_commit(admission, fields, sign_digest, **kw):
        # The payment is signed (in memory): its payload is in the record's fields.
        authorization = fields["payment"]["payload"]["payload"]["authorization"]
        if where == "after":
            commit(admission, fields, sign_digest, **kw)
        with open(marker, "w") as f:
            json.dump(authorization, f)
            f.flush()
            os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    guard.commit = dying_commit
    with paying_client(key, mandate=guard) as http:
        http.get(url + "/paid")
    print("NOT KILLED")
""")


def _pay_and_die(stack: Stack, tmp_path: Path, where: str, budget: int) -> dict[str, Any]:
    """Run the payer until it kills itself at ``where``; the authorization it had signed."""
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent, budget=budget)
    (tmp_path / "mandate.json").write_text(signed.dumps())
    db = f"sqlite:///{tmp_path / 'spend.db'}"
    marker = tmp_path / "signed.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return {"agent": agent, "signed": signed, "db": db, "marker": marker,
            "run": lambda url: subprocess.run(
                [sys.executable, "-c", _PAYER, str(tmp_path / "mandate.json"),
                 "0x" + bytes(agent.key).hex(), db, url, str(stack.chain.rpc_url), where,
                 str(marker)], env=env, capture_output=True, text=True, timeout=120)}


def _used(stack: Stack, authorizer: str, nonce: str) -> bool:
    token = contract_at(stack.chain, "TestUSDC", stack.token)
    return bool(token.functions.authorizationState(authorizer, bytes.fromhex(nonce[2:])).call())


def test_killed_between_signing_and_the_commit_nothing_was_sent_and_the_budget_is_untouched(
    stack: Stack, served: Any, tmp_path: Path,
) -> None:
    payer = _pay_and_die(stack, tmp_path, "before", budget=2 * PRICE)
    server = stack.server(PRICE)
    url = served(server)
    agent, signed = payer["agent"], payer["signed"]
    payee_before = stack.balance(stack.pay_to)
    done = payer["run"](url)
    assert done.returncode == -signal.SIGKILL, done.stderr
    authorization = json.loads(payer["marker"].read_text())  # it had signed a payment
    assert int(authorization["value"]) == PRICE
    # Nothing reached the server, nothing moved, the signed nonce was never used.
    assert server.payloads == [] and server.unpaid_requests == 1
    assert stack.balance(agent.address) == PRICE * 5
    assert stack.balance(stack.pay_to) == payee_before
    assert not _used(stack, agent.address, authorization["nonce"])
    # The budget is untouched and nothing is recorded.
    store = SpendStore(payer["db"])
    assert store.spent(signed).total == 0
    assert store.count(signed, "reserved") + store.count(signed, "signed") == 0
    assert EvidenceLog(store.engine).rows() == []
    # The full budget still pays: two payments now, the third refused.
    guard = MandateGuard(signed, agent=agent.address, store=store,
                         revocation=RevocationCheck.for_mandate(stack.chain, signed))
    with paying_client(agent, mandate=guard) as http:
        assert [http.get(f"{url}/paid").status_code for _ in range(2)] == [200, 200]
        with pytest.raises(PaymentRefused) as e:
            http.get(f"{url}/paid")
    assert e.value.reason == "mandate_budget_exhausted"
    assert stack.balance(agent.address) == PRICE * 3
    guard.close()
    store.close()


def test_killed_after_the_commit_before_sending_the_amount_is_reserved_and_shown_unsettled(
    stack: Stack, served: Any, tmp_path: Path,
) -> None:
    payer = _pay_and_die(stack, tmp_path, "after", budget=2 * PRICE)
    server = stack.server(PRICE)
    url = served(server)
    agent, signed = payer["agent"], payer["signed"]
    payee_before = stack.balance(stack.pay_to)
    done = payer["run"](url)
    assert done.returncode == -signal.SIGKILL, done.stderr
    authorization = json.loads(payer["marker"].read_text())
    # Still nothing sent and nothing moved ...
    assert server.payloads == []
    assert stack.balance(agent.address) == PRICE * 5
    assert stack.balance(stack.pay_to) == payee_before
    assert not _used(stack, agent.address, authorization["nonce"])
    # ... but the payment is reserved (signed) and recorded, with no outcome.
    store = SpendStore(payer["db"])
    assert store.spent(signed).total == PRICE
    assert store.count(signed, "signed") == 1 and store.count(signed, "reserved") == 0
    code, out, err = _audit(payer["db"], "--json")
    assert code == EXIT_OK, err
    [row] = json.loads(out)
    assert row["status"] == "unsettled" and row["outcomeRecord"] is None
    assert row["amount"] == str(PRICE) and row["settlement"] is None
    record = json.loads(EvidenceLog(store.engine).rows()[0].record)
    assert record["payment"]["payload"]["payload"]["authorization"]["nonce"] == \
        authorization["nonce"]
    # After a restart the budget counts it: one more payment fits, not two.
    guard = MandateGuard(signed, agent=agent.address, store=store,
                         revocation=RevocationCheck.for_mandate(stack.chain, signed))
    with paying_client(agent, mandate=guard) as http:
        assert http.get(f"{url}/paid").status_code == 200
        with pytest.raises(PaymentRefused) as e:
            http.get(f"{url}/paid")
    assert e.value.reason == "mandate_budget_exhausted"
    assert stack.balance(agent.address) == PRICE * 4
    guard.close()
    store.close()
