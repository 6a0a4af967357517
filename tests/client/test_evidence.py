"""The evidence chain of mandated payments (issue 14): each paid request leaves a signed record
next to the spend store; ``a402 audit`` prints them and verifies every signature offline, and
one altered byte anywhere fails with the record named. On anvil, with balances."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from a402.cli import main
from a402.client import paying_client, payment_of
from a402.client.audit import (
    BAD_MANDATE,
    BAD_RECORD_SIGNATURE,
    CHAIN_BROKEN,
    HASH_MISMATCH,
    request_hash,
    sha256_hex,
)
from a402.client.mandate_command import EXIT_AUDIT_FAILED, add_audit_arguments, run_audit
from a402.mandate.evidence import evidence
from a402.mandate.spend import mandates
from tests.client.conftest import Stack
from tests.client.test_mandate import PRICE, _guard, _mandate

pytestmark = pytest.mark.anvil


def _audit(db: str, *extra: str) -> tuple[int, str, str]:
    import argparse

    parser = argparse.ArgumentParser()
    add_audit_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = run_audit(parser.parse_args(["--spend-db", db, *extra]), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def paid_trail(stack: Stack, served: Any, tmp_path: Path) -> tuple[str, Any, list[Any]]:
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 5)
    signed = _mandate(stack, owner, agent)
    guard = _guard(stack, signed, agent, tmp_path)
    url = served(stack.server(PRICE))
    payee_before = stack.balance(stack.pay_to)
    responses = []
    with paying_client(agent, mandate=guard) as http:
        for i in range(3):
            responses.append(http.get(f"{url}/paid?n={i}"))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert stack.balance(stack.pay_to) - payee_before == 3 * PRICE
    assert stack.balance(agent.address) == 2 * PRICE
    # Each payment's record committed before it was sent; the outcomes of the first two
    # with the next payment's commit; the last one's when the guard closes.
    assert guard.pending == 1
    guard.close()
    assert guard.pending == 0
    return f"sqlite:///{tmp_path / 'spend.db'}", guard, responses


def test_every_paid_request_leaves_a_record_that_audit_verifies_offline(
    paid_trail: tuple[str, Any, list[Any]],
) -> None:
    db, guard, responses = paid_trail
    code, out, err = _audit(db)
    assert code == 0, err
    assert "6 record(s), every signature and link verified (3 payment(s))" in err
    assert out.count(" ok") == 3
    code, out, _ = _audit(db, "--json")
    rows = json.loads(out)
    # payment 1, outcome 1 + payment 2 (one commit), outcome 2 + payment 3, outcome 3
    assert [r["seq"] for r in rows] == [1, 3, 5]
    assert [r["outcomeRecord"] for r in rows] == [2, 4, 6]
    assert [r["status"] for r in rows] == [200, 200, 200]
    for row, response in zip(rows, responses, strict=True):
        payment = payment_of(response)
        assert payment is not None and payment.receipt is not None
        assert row["mandate"] == guard.mandate_hash and row["amount"] == str(PRICE)
        assert row["settlement"] == payment.receipt.transaction
        assert row["request"] == request_hash(response.request)
        assert row["result"] == sha256_hex(response.content)
    # The same through the a402 command line.
    assert main(["audit", "--spend-db", db]) == 0


@pytest.mark.parametrize(("column", "where", "seq", "reason"), [
    ("record", "the amount", 3, BAD_RECORD_SIGNATURE),    # a byte of the text: the agent's
    ("record", "the result hash", 4, BAD_RECORD_SIGNATURE),  # signature no longer covers it
    ("hash", "the stored hash", 3, HASH_MISMATCH),
    ("signature", "the agent's signature", 3, BAD_RECORD_SIGNATURE),
    ("mandate", "the row's mandate column", 3, HASH_MISMATCH),  # (what rows(mandate) selects)
    ("document", "the mandate's budget", 1, BAD_MANDATE),
])
def test_one_altered_byte_fails_the_audit_with_the_record_named(
    paid_trail: tuple[str, Any, list[Any]], column: str, where: str, seq: int, reason: str,
) -> None:
    """Records 3 and 4 are the second payment's and its outcome's: the second row of the
    table fails, naming the record, and the others stand."""
    db, guard, _ = paid_trail
    engine = guard.store.engine
    with engine.begin() as conn:
        if column == "document":
            text = conn.execute(select(mandates.c.document)).scalar_one()
            old = f'"budget": {guard.signed_mandate.mandate.budget}'
            assert old in text
            new = old[:-1] + str((int(old[-1]) + 1) % 10)  # one digit, one byte
            conn.execute(update(mandates).values(document=text.replace(old, new)))
        else:
            value = conn.execute(select(evidence.c[column]).where(evidence.c.seq == seq)
                                 ).scalar_one()
            if where == "the amount":
                at = value.index(f'"amount":"{PRICE}"') + len('"amount":"')
            elif where == "the result hash":
                at = value.index('"result":"0x') + len('"result":"0x')
            else:
                at = len(value) - 3
            flipped = "1" if value[at] != "1" else "2"
            altered = value[:at] + flipped + value[at + 1:]
            assert len(altered) == len(value) and altered != value
            conn.execute(update(evidence).where(evidence.c.seq == seq)
                         .values({column: altered}))
    code, out, err = _audit(db)
    assert code == EXIT_AUDIT_FAILED
    if column == "document":  # every record under the altered mandate fails, the first named
        assert f"record #1 fails: {reason}" in err and "6 record(s) fail" in err
    else:
        assert f"record #{seq} fails: " in err and reason in err.split("record(s) fail")[0], err
        lines = out.splitlines()[1:]
        assert lines[0].rstrip().endswith("ok") and "FAILED" in lines[1]
        assert f"record #{seq} {reason}" in lines[1] or seq == 3
        # An altered stored hash also unlinks the next record (#4, the same row's outcome).
        assert lines[2].rstrip().endswith("ok")


def test_a_deleted_record_breaks_the_chain_at_the_next_one(
    paid_trail: tuple[str, Any, list[Any]],
) -> None:
    db, guard, _ = paid_trail
    with guard.store.engine.begin() as conn:
        conn.execute(evidence.delete().where(evidence.c.seq == 2))
    code, _, err = _audit(db)
    assert code == EXIT_AUDIT_FAILED
    assert f"record #3 fails: {CHAIN_BROKEN}" in err
