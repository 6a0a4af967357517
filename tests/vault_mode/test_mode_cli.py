"""``a402 vault deposit|balance|statement|withdraw|settle-now|status`` against a vault-mode
vault served over HTTP (its worker reading deposits and settling), on anvil."""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from a402 import cli
from a402.chain.node import Chain
from a402.vault.mode import PULL_INTENT_PREFIX, statement_from_json
from a402.vault.mode_app import create_mode_app
from a402.vault.mode_command import main as vault_action

from ..servers import serve
from .helpers import balance, funded, increase_time
from .test_service import Harness, h, verifies

pytestmark = pytest.mark.anvil
__all__ = ["h"]


def key_file(tmp: Path, account: LocalAccount) -> str:
    path = tmp / f"{account.address}.key"
    path.write_text(account.key.hex())
    path.chmod(0o600)
    return str(path)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = vault_action(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("the worker did not get there in time")


def test_participants_and_the_operator_use_the_vault_commands_with_tables_and_json(
    h: Harness, vault_chain: Chain, usdc: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alice, bob = funded(vault_chain, usdc, 6_000), funded(vault_chain, usdc, 3_000)
    ka, kb, kop = (key_file(tmp_path, a) for a in (alice, bob, h.operator))
    with serve(create_mode_app(h.service)) as url:
        common = ("--vault", url)
        expected = ("--vault-address", h.contract.vault_signer)
        code, out, _ = run("deposit", *common, *expected, "--key-file", ka, "--rpc",
                           vault_chain.rpc_url, "--amount", "6000")
        assert code == 0 and out.startswith("6000 deposited into A402Vault")
        assert "participant" in out and alice.address in out
        code, out, _ = run("deposit", *common, "--trust-vault-info", "--key-file", kb, "--rpc",
                           vault_chain.rpc_url, "--amount", "3000", "--json")
        assert code == 0 and json.loads(out)["amount"] == "3000"
        assert balance(usdc, h.contract.address) == 9_000
        # refused before anything is signed or sent: no vault expected, or another one
        code, out, err = run("deposit", *common, "--key-file", ka, "--rpc", vault_chain.rpc_url,
                             "--amount", "1")
        assert code == 2 and "--vault-address" in err and out == ""
        code, out, err = run("deposit", *common, "--vault-address", bob.address, "--key-file",
                             ka, "--rpc", vault_chain.rpc_url, "--amount", "1")
        assert code == 1 and err.startswith("a402 vault deposit: nothing moved: the vault "
                                            "names its key")
        assert balance(usdc, h.contract.address) == 9_000

        # the worker reads both deposits and confirms them in a settlement
        def free(key: str) -> str:
            code, out, _ = run("balance", *common, "--key-file", key, "--json")
            assert code == 0
            return str(json.loads(out)["free"])
        wait_for(lambda: free(ka) == "6000" and free(kb) == "3000")
        code, out, _ = run("balance", *common, "--key-file", ka)
        assert out.splitlines()[0] == f"6000 free in the vault for {alice.address} (yours to " \
                                      "spend or pay out)"
        assert out.splitlines()[1].split() == ["free", "locked", "unconfirmed", "pulling",
                                               "payout", "queued", "owed", "on-chain"]

        saved = tmp_path / "statement.json"
        code, out, _ = run("statement", *common, "--key-file", ka, "--out", str(saved))
        assert code == 0 and "6000 free + 0 locked" in out
        kept = json.loads(saved.read_text())
        signed = statement_from_json(kept)
        assert verifies(h, signed) and signed.statement.balance == 6_000

        code, out, _ = run("withdraw", *common, "--key-file", ka, "--amount", "2500")
        assert code == 0 and out.startswith("nothing moved yet: 2500 queued")
        code, out, err = run("withdraw", *common, "--key-file", kb, "--amount", "9999")
        assert code == 1 and "insufficient_balance" in err and out == ""
        code, out, _ = run("withdraw", *common, "--key-file", kb, "--amount", "1000")
        assert code == 0
        # the scheduler's batch (two participants, window 0) lands from the worker
        wait_for(lambda: balance(usdc, alice.address) == 2_500
                 and balance(usdc, bob.address) == 1_000)
        assert balance(usdc, h.contract.address) == 5_500

        code, out, err = run("status", *common, "--key-file", ka)
        assert code == 1 and "not_operator" in err
        code, out, _ = run("status", *common, "--key-file", kop)
        assert code == 0
        print(out)
        assert "accounts hold 5500 free, 0 locked" in out
        assert alice.address in out and bob.address in out
        assert h.service.landed[-1].tx_hash in out
        assert "pending settlements: signed, not landed yet\n(none)" in out
        code, out, _ = run("status", *common, "--key-file", kop, "--json")
        status = json.loads(out)
        assert status["landedEpoch"] == status["epoch"] >= 2
        assert status["leaseHolder"] and status["pendingPayouts"] == []
        assert status["unlanded"] == []

        code, out, _ = run("withdraw", *common, "--key-file", kb, "--amount", "500")
        code, out, err = run("settle-now", *common, "--key-file", kop)
        # the background worker (window 0) may land it first: then settle-now says so
        assert code == 0 and (out.startswith("1 settlement(s) landed, paying 1 payee(s)")
                              or out.startswith("no settlement sent")), out
        wait_for(lambda: balance(usdc, bob.address) == 1_500)
        # through the `a402` entry point too
        capsys.readouterr()
        assert cli.main(["vault", "balance", *common, "--key-file", kb, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["free"] == "1500"


def test_a_participant_deposits_by_a_pull_with_no_deposit_transaction_and_keeps_its_statement(
    h: Harness, vault_chain: Chain, usdc: Any, tmp_path: Path,
) -> None:
    """``deposit --pull`` from a key holding no ETH: one signature (EIP-3009), no
    transaction; the worker's next settlement pulls the amount, the one after confirms it,
    and it is free. The
    statement the command kept counts it from the start (the escape hatch pays it if the
    pull was made)."""
    increase_time(vault_chain, 2 * 86_400)  # the chain's clock two days ahead of the host's
    carol = funded(vault_chain, usdc, 4_000, eth=0)
    kc = key_file(tmp_path, carol)
    with serve(create_mode_app(h.service)) as url:
        common = ("--vault", url, "--key-file", kc, "--vault-address", h.contract.vault_signer)
        saved = tmp_path / "pull.json"
        code, out, err = run("deposit", *common, "--rpc", vault_chain.rpc_url, "--amount",
                             "4000", "--pull", "--out", str(saved))
        assert code == 0 and out.startswith("nothing moved yet: 4000 will be pulled"), err
        kept = statement_from_json(json.loads(saved.read_text()))
        assert (kept.statement.pulling, kept.statement.balance) == (4_000, 4_000)

        def free() -> str:
            code, out, _ = run("balance", *common, "--json")
            assert code == 0
            return str(json.loads(out)["free"])
        wait_for(lambda: free() == "4000")
        assert balance(usdc, carol.address) == 0
        assert balance(usdc, h.contract.address) == 4_000
        assert h.contract.pulled(kept.statement.pull)
        assert verifies(h, kept)  # in the life the first settlement pinned
        assert h.service.store.get_metas(PULL_INTENT_PREFIX) == []  # spent: not kept
        # Carol sent no transaction and holds no ETH (the settlements were the vault's).
        assert vault_chain.w3.eth.get_transaction_count(carol.address) == 0
        assert vault_chain.w3.eth.get_balance(carol.address) == 0
        code, out, err = run("deposit", *common, "--rpc", vault_chain.rpc_url, "--amount",
                             "1", "--pull", "--beneficiary", h.operator.address)
        assert code == 2 and "no --beneficiary" in err and out == ""
        # a wallet that cannot fund its pull is refused before the vault keeps anything
        dave = funded(vault_chain, usdc, 0)
        code, out, err = run("deposit", "--vault", url, "--key-file", key_file(tmp_path, dave),
                             "--rpc", vault_chain.rpc_url, "--amount", "10", "--pull",
                             "--trust-vault-info")
        assert code == 1 and "pull_unfunded" in err and out == ""
        assert h.service.accounts.pulling(dave.address) == (0, 0)


def test_a_participant_deposits_by_a_plain_transfer_with_one_transaction_and_no_approval(
    h: Harness, vault_chain: Chain, usdc: Any, tmp_path: Path,
) -> None:
    """``deposit --transfer``: one token ``transfer`` to the A402Vault (no approval), read by
    the worker from the chain and free once its settlement, anchored after it, lands; the
    statement counts it as ``transferred``."""
    erin = funded(vault_chain, usdc, 3_000)
    ke = key_file(tmp_path, erin)
    with serve(create_mode_app(h.service)) as url:
        common = ("--vault", url, "--key-file", ke, "--vault-address", h.contract.vault_signer)
        code, out, err = run("deposit", *common, "--rpc", vault_chain.rpc_url, "--amount",
                             "3000", "--transfer", "--json")
        assert code == 0, err
        said = json.loads(out)
        assert (said["moved"], said["route"], said["amount"]) == (True, "transfer", "3000")
        assert vault_chain.w3.eth.get_transaction_count(erin.address) == 1  # no approve
        vault_chain.w3.provider.make_request("evm_mine", [])  # a block after it: readable

        def free() -> str:
            code, out, _ = run("balance", *common, "--json")
            assert code == 0
            return str(json.loads(out)["free"])
        wait_for(lambda: free() == "3000")
        assert h.service.statement(erin.address).statement.transferred == 3_000
        assert balance(usdc, erin.address) == 0
        code, out, err = run("deposit", *common, "--rpc", vault_chain.rpc_url, "--amount",
                             "1", "--transfer", "--pull")
        assert code == 2 and "not both" in err and out == ""


def test_a_settlement_slower_than_a_second_shows_a_progress_line_and_a_fast_one_none() -> None:
    from a402.vault.mode_command import Progress

    """No timed assertion: the slow call lasts until its progress line is out (a fixed
    0.5 s sleep lost the race to a descheduled progress thread on a loaded host, and "done in
    0.x s" failed when the sleep itself overran a second); the fast call is far below its
    ``after``."""
    slow = io.StringIO()
    with Progress(slow, "settling", after=0.05):
        deadline = time.monotonic() + 60
        while not slow.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert slow.getvalue().startswith("\rsettling ")
    assert re.search(r"\rsettling: done in \d+\.\ds\n$", slow.getvalue()), slow.getvalue()
    fast = io.StringIO()
    with Progress(fast, "settling", after=600.0):
        time.sleep(0.01)
    assert fast.getvalue() == ""


def test_with_the_vault_stopped_a402_vault_exit_pays_each_side_its_statement(
    h: Harness, vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    from a402.vault.mode import statement_json

    from .helpers import SETTLE_WINDOW, increase_time
    from .test_service import PRICE

    client = funded(vault_chain, usdc)
    provider = h.vm.provider()
    gas = funded(vault_chain, usdc)
    h.deposit(client.address, 9_000)
    with serve(create_mode_app(h.service, worker=False)) as url:
        h.service.tick()
        cid, side, _ = h.open(client, provider, 4 * PRICE)
        for i in range(3):
            h.pay(cid, side, client, f"e{i}")
        h.service.close(cid)
        increase_time(vault_chain, 3_601)
        h.service.tick()  # the provider's earnings are in its account and statement
        mine = tmp_path / "client-statement.json"
        code, _, _ = run("statement", "--vault", url, "--key-file", key_file(tmp_path, client),
                         "--out", str(mine))
        assert code == 0
    # The vault is gone. The provider kept the statement handed to it after the change.
    theirs = tmp_path / "provider-statement.json"
    theirs.write_text(json.dumps({**statement_json(h.service.statement(provider.address)),
                                  "a402Vault": h.contract.address}))
    del h.service
    code, out, err = run("exit", "--key-file", key_file(tmp_path, gas), "--rpc",
                         vault_chain.rpc_url, "--statement", str(mine))
    assert code == 2 and "only the participant starts its exit" in err, err
    # The participant signs its exit order; another account may send it and pay the gas.
    code, out, err = run("exit", "--key-file", key_file(tmp_path, client), "--gas-key-file",
                         key_file(tmp_path, gas), "--rpc", vault_chain.rpc_url,
                         "--statement", str(mine))
    assert code == 0 and out.startswith("nothing moved yet: force-settle started"), err
    st = statement_from_json(json.loads(theirs.read_text()))
    h.contract.init_force_settle(gas, st.statement, st.signature,
                                 h.contract.exit_order(provider.signer, st.statement))
    code, out, err = run("exit", "--key-file", key_file(tmp_path, client), "--rpc",
                         vault_chain.rpc_url, "--statement", str(mine))
    assert code == 4 and "the dispute window closes at" in err
    increase_time(vault_chain, SETTLE_WINDOW)
    code, out, _ = run("exit", "--key-file", key_file(tmp_path, client), "--rpc",
                       vault_chain.rpc_url, "--statement", str(mine), "--json")
    assert code == 0 and json.loads(out)["paid"] == "6000"
    code, out, _ = run("exit", "--key-file", key_file(tmp_path, gas), "--rpc",
                       vault_chain.rpc_url, "--statement", str(theirs))
    assert code == 0 and out.startswith(f"3000 paid out to {provider.address}")
    assert h.paid_to(client.address) == 6_000 and h.paid_to(provider.address) == 3_000
    assert balance(usdc, h.contract.address) == 0


def test_exit_proves_the_participants_plain_transfers_and_pays_those_no_statement_counts(
    h: Harness, vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """``exit --prove-transfer TX``: the transfer the vault credited (its statement counts it)
    and one it never read (sent once the vault was gone) are proven on-chain; the exit pays the
    statement and, on top, only the one it does not count."""
    from a402.chain.tx import transact

    from .helpers import SETTLE_WINDOW

    frank = funded(vault_chain, usdc, 1_000)
    kf = key_file(tmp_path, frank)
    mine = tmp_path / "frank.json"
    with serve(create_mode_app(h.service, worker=False)) as url:
        counted = transact(vault_chain, frank, usdc.functions.transfer(h.contract.address, 700))
        vault_chain.w3.provider.make_request("evm_mine", [])
        h.service.tick()
        code, _, err = run("statement", "--vault", url, "--key-file", kf, "--out", str(mine))
        assert code == 0, err
    del h.service  # the vault is gone; a later transfer is read by nobody
    hidden = transact(vault_chain, frank, usdc.functions.transfer(h.contract.address, 300))
    proofs = ("--prove-transfer", _hex(counted["transactionHash"]),
              "--prove-transfer", _hex(hidden["transactionHash"]))
    vault_chain.w3.provider.make_request("evm_mine", [])  # (a block's hash comes with the next)
    code, out, err = run("exit", "--key-file", kf, "--rpc", vault_chain.rpc_url, "--statement",
                         str(mine), *proofs, "--json")
    assert code == 0, err
    assert (json.loads(out)["step"], json.loads(out)["transfersProven"]) == ("initiated", "1000")
    increase_time(vault_chain, SETTLE_WINDOW)
    code, out, err = run("exit", "--key-file", kf, "--rpc", vault_chain.rpc_url, "--statement",
                         str(mine), *proofs, "--json")  # proven already: skipped
    assert code == 0 and json.loads(out)["paid"] == "1000", err
    assert h.paid_to(frank.address) == 1_000
    assert balance(usdc, h.contract.address) == 0
    # A transfer after the exit was final: its proof pays it at once, and the command says so.
    late = transact(vault_chain, frank, usdc.functions.transfer(h.contract.address, 250))
    vault_chain.w3.provider.make_request("evm_mine", [])
    code, out, err = run("exit", "--key-file", kf, "--rpc", vault_chain.rpc_url, "--statement",
                         str(mine), "--prove-transfer", _hex(late["transactionHash"]))
    assert code == 0 and out.startswith(f"250 paid out to {frank.address}"), (out, err)
    assert h.paid_to(frank.address) == 1_000 and balance(usdc, frank.address) == 1_000


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


def test_a_statement_not_signed_by_the_vaults_key_for_this_participant_is_never_saved(
) -> None:
    """``a402 vault statement`` saves what ``exit`` will present: only a statement of this
    participant signed by the key the vault names (with ``--vault-address``, the key
    expected), for its A402Vault and ledger life; anything else says nothing was saved."""
    from eth_account import Account

    from a402.crypto import PaymentDomain
    from a402.crypto.vault_messages import BalanceStatement, statement_digest
    from a402.vault.mode import statement_json
    from a402.vault.mode_command import CommandError, _checked_statement
    from a402.vault_accounts import SignedStatement

    from .helpers import new_vault_key

    vault_key, other = new_vault_key(), new_vault_key()
    carol, a402_vault = Account.create(), Account.create().address
    ledger = bytes(range(16))
    st = BalanceStatement(carol.address, 3, 4_000, 0, 2, 5, 0, 0, 0)
    digest = statement_digest(PaymentDomain(31337, a402_vault), st, ledger)

    def info(key: Any) -> dict[str, Any]:
        return {"vault": "0x" + key.address.hex(), "chainId": 31337, "a402Vault": a402_vault,
                "ledger": "0x" + ledger.hex()}
    raw = statement_json(SignedStatement(st, vault_key.sign_digest(digest)))
    kept = _checked_statement(raw, info(vault_key), carol.address,
                              "0x" + vault_key.address.hex())
    assert kept["a402Vault"] == a402_vault and kept["balance"] == "4000"
    forged = statement_json(SignedStatement(st, other.sign_digest(digest)))
    for args in ((forged, info(vault_key), carol.address, None),        # another key signed
                 (raw, info(other), carol.address, None),               # the info names another
                 (raw, info(vault_key), Account.create().address, None),  # not this participant
                 (raw, info(vault_key), carol.address, "0x" + other.address.hex()),  # unexpected
                 ({"balance": "1"}, info(vault_key), carol.address, None)):  # malformed
        with pytest.raises(CommandError) as refused:
            _checked_statement(*args)
        assert refused.value.message.startswith("nothing saved")
