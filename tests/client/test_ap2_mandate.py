"""An AP2 open payment mandate (SD-JWT VC) drives the a402 client on anvil.

The owner signs an a402 mandate, exports it for AP2 (``a402 mandate export --ap2``),
the agent pays with the SD-JWT file as its mandate; a 402 asking 100× the cap is
refused before anything is signed; the owner revokes the mandate (its hash, shared
by both encodings) and the AP2 encoding stops paying too. ``import --ap2`` turns
it back into an a402 mandate of the same hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from a402.client import PaymentRefused, paying_client, payment_of
from a402.client.pay import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from a402.mandate.ap2 import load_sd_jwt
from a402.mandate.guard import MandateGuard
from a402.mandate.registry import MandateRegistry, RevocationCheck
from a402.mandate.spend import SpendStore
from tests.client.conftest import Stack
from tests.client.test_mandate_cli import _key_file, mandate, pay

PRICE = 10_000

pytestmark = pytest.mark.anvil


def test_an_ap2_mandate_drives_the_client_refuses_a_greedy_402_and_dies_with_its_revocation(
    stack: Stack, served, tmp_path: Path,
) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(stack.manifest.to_json())
    owner = stack.chain.accounts[-1]  # pays the revocation's gas
    agent = stack.new_payer(PRICE * 10)
    owner_key = _key_file(tmp_path, "owner", owner)
    doc, ap2 = str(tmp_path / "mandate.json"), str(tmp_path / "mandate.sd-jwt")
    code, _, err = mandate("create", "--owner-key-file", owner_key, "--agent", agent.address,
                           "--max-per-payment", "0.01", "--budget", "0.05",
                           "--payee", stack.pay_to, "--manifest", str(manifest), "--out", doc)
    assert code == 0, err
    code, out, err = mandate("export", doc, "--ap2", "--owner-key-file", owner_key,
                             "--out", ap2)
    assert code == 0, err
    a402_hash = json.loads(Path(doc).read_text())["hash"]
    assert a402_hash in out

    signed = load_sd_jwt(Path(ap2).read_text())
    assert signed.hash_hex == a402_hash
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = MandateGuard(signed, agent=agent.address, store=store,
                         revocation=RevocationCheck.for_mandate(stack.chain, signed))
    url = served(stack.server(PRICE))
    greedy = served(stack.server(100 * PRICE))
    payee_before = stack.balance(stack.pay_to)
    with paying_client(agent, mandate=guard) as http:
        response = http.get(f"{url}/paid")
        assert response.status_code == 200 and payment_of(response) is not None
        with pytest.raises(PaymentRefused) as e:
            http.get(f"{greedy}/paid")
        assert e.value.reason == "mandate_cap_exceeded"
        MandateRegistry(stack.chain, signed.domain.registry).revoke(owner, signed.hash)
        with pytest.raises(PaymentRefused) as e:
            http.get(f"{url}/paid")
        assert e.value.reason == "mandate_revoked"
    assert stack.balance(agent.address) == PRICE * 9
    assert stack.balance(stack.pay_to) - payee_before == PRICE
    assert store.spent(signed).total == PRICE
    store.close()


def test_the_cli_pays_with_an_sd_jwt_file_and_imports_it_back_to_the_same_mandate(
    stack: Stack, served, tmp_path: Path,
) -> None:
    manifest = tmp_path / "devnet.json"
    manifest.write_text(stack.manifest.to_json())
    owner, agent = stack.new_payer(0), stack.new_payer(PRICE * 3)
    owner_key = _key_file(tmp_path, "owner", owner)
    doc, ap2, back = (str(tmp_path / n) for n in ("m.json", "m.sd-jwt", "back.json"))
    url = served(stack.server(PRICE))
    other = served(stack.server(PRICE))
    code, _, err = mandate("create", "--owner-key-file", owner_key, "--agent", agent.address,
                           "--max-per-payment", "0.01", "--budget", "0.02",
                           "--period-budget", "0.02", "--period", "1d",
                           "--origin", url,
                           "--scheme", "exact", "--scheme", "a402", "--confirm-above", "0.01",
                           "--manifest", str(manifest), "--out", doc)
    assert code == 0, err
    assert mandate("export", doc, "--ap2", "--owner-key-file", owner_key, "--out", ap2)[0] == 0

    # import: verified, shown, and re-signed by the owner as the same a402 mandate.
    code, out, err = mandate("import", ap2, "--ap2", "--owner-key-file", owner_key,
                             "--out", back, "--json")
    assert code == 0, err
    shown = json.loads(out)
    original = json.loads(Path(doc).read_text())
    assert shown["hash"] == original["hash"] == json.loads(Path(back).read_text())["hash"]
    assert json.loads(Path(back).read_text())["mandate"] == original["mandate"]
    # Only the issuer re-signs.
    code, _, err = mandate("import", ap2, "--ap2", "--owner-key-file",
                           _key_file(tmp_path, "agent", agent))
    assert code == 2 and "only the owner" in err

    # The SD-JWT file pays like any mandate file, inside its limits only.
    flags = ("--key-file", _key_file(tmp_path, "agent", agent), "--mandate", ap2,
             "--spend-db", f"sqlite:///{tmp_path / 'spend.db'}", "--manifest", str(manifest))
    code, body, err = pay(f"{url}/paid", *flags)
    assert code == EXIT_OK, err
    assert json.loads(body)["paid"] is True
    assert stack.balance(agent.address) == PRICE * 2
    code, _, err = pay(f"{other}/paid", *flags)
    assert code == EXIT_REFUSED and "mandate_origin_not_allowed" in err
    assert stack.balance(agent.address) == PRICE * 2

    # An unknown constraint, even signed by the owner, does not pay.
    from a402.mandate.ap2 import issue, read_open

    claims = read_open(Path(ap2).read_text()).claims
    claims["constraints"].append({"type": "payment.shipping_address", "country": "FR"})
    Path(ap2).write_text(issue(claims, bytes(owner.key)))
    code, _, err = pay(f"{url}/paid", *flags)
    assert code == EXIT_USAGE and "mandate_ap2_unknown_constraint" in err
    assert stack.balance(agent.address) == PRICE * 2
