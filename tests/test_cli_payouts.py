"""``a402 channels`` and ``a402 payouts`` on anvil: a user sees and takes its own money
from the chain alone, with balances checked after every step.

* A provider whose address the token blocklists is credited its payout, sees it, and
  withdraws it to another address of its own; a second withdrawal moves nothing.
* A provider with no gas signs an order; a relayer carries it out once, to the address
  signed, and neither a tampered copy nor a replay pays anyone.
* A wallet-funded client force-closes without the vault: the opening state, the dispute
  window (during which the provider can still answer with a newer co-signed state), then
  the payout.
* Bad input (unknown or malformed channel id, malformed address, too many decimals, no
  deployment, unreachable node) exits non-zero with a reason and changes nothing.

The chain is a private anvil (the dispute window needs time travel); the commands run
in-process through :func:`a402.cli.main`, and once as the real executable to show that an
expected failure prints no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import BalanceState, ChannelTerms
from a402.asc_manager import ASCManager, OnChainStatus
from a402.chain.deploy import DEV_DISPUTE_WINDOW, Manifest, TokenInfo, deploy_dev_stack
from a402.chain.node import Chain, start_anvil
from a402.chain.tx import TransactionFailed, contract_at, deploy_contract, transact
from a402.cli import main
from a402.crypto import EVM
from tests.asc.helpers import Parties, balance, fresh_account, increase_time, make_parties
from tests.servers import dead_url

pytestmark = pytest.mark.anvil

DEPOSIT = 1_000_000
PAID = 300_000
A402 = str(Path(sys.executable).with_name("a402"))


@dataclass
class Deployment:
    chain: Chain
    token: Any
    manager: ASCManager
    manifest: Path


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with start_anvil(accounts=4) as node:
        yield node


@pytest.fixture(scope="module")
def usdc(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """The devnet's stack (TestUSDC, ASCManager) and its manifest, as `a402 devnet` makes."""
    manifest = deploy_dev_stack(chain, asc_manager=True)
    path = tmp_path_factory.mktemp("usdc") / "devnet.json"
    path.write_text(manifest.to_json())
    token = contract_at(chain, "TestUSDC", manifest.token.address)
    return Deployment(chain, token, ASCManager(chain, manifest.contracts["ASCManager"]), path)


@pytest.fixture(scope="module")
def restricted(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """A token that blocklists (contracts/RestrictedToken.sol) and an ASCManager for it."""
    admin = chain.accounts[0]
    token = deploy_contract(chain, admin, "RestrictedToken")
    manager = ASCManager.deploy(chain, admin, token.address, DEV_DISPUTE_WINDOW)
    manifest = Manifest(network=chain.network, chain_id=chain.chain_id,
                        token=TokenInfo(token.address, "Restricted", "RST", "1", 6),
                        contracts={"ASCManager": manager.address}, rpc_url=chain.rpc_url)
    path = tmp_path_factory.mktemp("restricted") / "manifest.json"
    path.write_text(manifest.to_json())
    return Deployment(chain, token, manager, path)


def key_file(tmp_path: Path, account: LocalAccount) -> str:
    path = tmp_path / f"{account.address}.key"
    path.write_text(bytes(account.key).hex())
    path.chmod(0o600)
    return str(path)


def a402(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``a402 ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def blocklist(d: Deployment, who: str, blocked: bool = True) -> None:
    transact(d.chain, d.chain.accounts[0], d.token.functions.setBlocklisted(who, blocked))


def credited_provider(d: Deployment, provider: LocalAccount | None = None) -> Parties:
    """A channel closed cooperatively while its provider is blocklisted: ``PAID`` is
    credited to the provider (``owed``), the client is paid the rest. The provider is
    unblocked afterwards (its address keeps no tokens: the credit stays owed)."""
    p = make_parties(d.chain, d.token, d.manager, DEPOSIT)
    if provider is not None:
        p = Parties(p.chain, p.token, p.manager, p.client, p.vault, provider, p.schnorr,
                    ChannelTerms(client=p.client.address, vault=p.vault.address,
                                 provider=provider.address, provider_key=p.schnorr.public_key,
                                 deposit=DEPOSIT, salt=p.terms.salt))
    p.open()
    blocklist(d, p.provider.address)
    p.manager.close(p.vault, p.terms, p.signed(BalanceState(1, DEPOSIT - PAID, PAID, True)))
    assert p.manager.owed(p.provider.address) == PAID
    assert balance(d.token, p.client.address) == DEPOSIT - PAID
    return p


# ------------------------------------------------------------------ owed payouts


def test_a_blocklisted_provider_withdraws_what_it_is_owed_to_another_address(
    restricted: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = restricted
    p = credited_provider(d)
    try:
        key = key_file(tmp_path, p.provider)
        where = ("--key-file", key, "--manifest", str(d.manifest))

        code, out, _ = a402(capsys, "payouts", *where)
        assert code == 0
        assert out.startswith(f"0.300000 RST owed to {p.provider.address}, withdrawable")
        code, out, _ = a402(capsys, "payouts", *where, "--json")
        shown = json.loads(out)
        assert (shown["owed"], shown["owedAtomic"]) == ("0.300000", str(PAID))
        assert shown["token"]["symbol"] == "RST"

        code, out, _ = a402(capsys, "channels", *where, "--json")
        (channel,) = json.loads(out)["channels"]
        assert channel["channelId"] == "0x" + p.cid.hex()
        assert (channel["role"], channel["status"]) == ("provider", "closed")
        assert channel["closed"]["credited"] == {p.provider.address: "0.300000"}

        elsewhere = Account.create()
        code, out, err = a402(capsys, "payouts", "withdraw", *where, "--to", elsewhere.address)
        assert (code, err) == (0, "")
        assert out.startswith(f"0.300000 RST withdrawn to {elsewhere.address}")
        assert balance(d.token, elsewhere.address) == PAID
        assert balance(d.token, p.provider.address) == 0
        assert d.manager.owed(p.provider.address) == 0

        code, out, err = a402(capsys, "payouts", "withdraw", *where, "--to", elsewhere.address)
        assert code == 4
        assert err.startswith(f"a402 payouts: nothing moved: nothing is owed to "
                              f"{p.provider.address}")
        assert balance(d.token, elsewhere.address) == PAID
        code, out, _ = a402(capsys, "payouts", *where)
        assert (code, out.splitlines()[0]) == (
            0, f"nothing owed to {p.provider.address}: every payout to it was transferred")
    finally:
        blocklist(d, p.provider.address, False)


def test_a_withdrawal_the_token_still_refuses_moves_nothing_and_stays_owed(
    restricted: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = restricted
    p = credited_provider(d)
    try:  # the provider names its own, still blocklisted, address
        code, _, err = a402(capsys, "payouts", "withdraw", "--key-file",
                            key_file(tmp_path, p.provider), "--manifest", str(d.manifest))
        assert code == 1
        assert err.startswith("a402 payouts: nothing moved: the chain refused the call: ")
        assert "blacklisted" in err
        assert d.manager.owed(p.provider.address) == PAID
        assert balance(d.token, p.provider.address) == 0
    finally:
        blocklist(d, p.provider.address, False)


def test_a_provider_without_gas_signs_an_order_that_a_relayer_carries_out_once(
    restricted: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = restricted
    provider = Account.create()  # no ETH: it cannot send withdraw() itself
    credited_provider(d, provider)
    blocklist(d, provider.address, False)
    elsewhere, relayer = Account.create(), fresh_account(d.chain)
    order_file = tmp_path / "order.json"

    code, out, err = a402(capsys, "payouts", "withdraw", "--key-file",
                          key_file(tmp_path, provider), "--manifest", str(d.manifest),
                          "--to", elsewhere.address, "--order-out", str(order_file))
    assert (code, err) == (0, "")
    assert out.startswith(f"nothing moved yet: signed an order paying 0.300000 RST of the "
                          f"0.300000 RST owed to you to {elsewhere.address} "
                          f"({provider.address} has no ETH for gas)")
    order = json.loads(order_file.read_text())
    assert order == json.loads(out.splitlines()[-1])
    assert (order["owner"], order["to"], order["amount"]) == (
        provider.address, elsewhere.address, str(PAID))
    assert d.manager.owed(provider.address) == PAID  # signing moved nothing
    relay = ("payouts", "relay", str(order_file), "--key-file", key_file(tmp_path, relayer),
             "--manifest", str(d.manifest))

    # A copy redirected to the relayer is refused by the contract: the signature names `to`.
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**order, "to": relayer.address}))
    code, _, err = a402(capsys, "payouts", "relay", str(tampered), *relay[3:])
    assert code == 1
    assert f"BadSignature(signer={provider.address})" in err
    assert balance(d.token, relayer.address) == 0
    assert d.manager.owed(provider.address) == PAID

    code, out, err = a402(capsys, *relay)
    assert (code, err) == (0, "")
    assert out.startswith(f"0.300000 RST paid to {elsewhere.address} from what the "
                          f"ASCManager owed {provider.address}; the order is used up")
    assert balance(d.token, elsewhere.address) == PAID
    assert d.manager.owed(provider.address) == 0
    assert balance(d.token, relayer.address) == 0

    code, _, err = a402(capsys, *relay)  # a replay: refused before any gas is spent
    assert code == 4
    assert err.startswith("a402 payouts: nothing moved: the order (nonce 0) was already "
                          "carried out or replaced")
    with pytest.raises(TransactionFailed):  # and by the contract itself, were it sent
        d.manager.withdraw_for(relayer, provider.address, elsewhere.address, PAID,
                               order["deadline"], bytes.fromhex(order["signature"][2:]))
    assert balance(d.token, elsewhere.address) == PAID


# --------------------------------------------------------- client force-close


def wallet_funded(d: Deployment) -> Parties:
    """A channel whose deposit came from the client's own wallet (client != vault)."""
    p = make_parties(d.chain, d.token, d.manager, DEPOSIT)
    p.open()
    assert p.terms.client != p.terms.vault
    assert balance(d.token, p.client.address) == 0
    return p


def test_balance_says_a_live_client_channel_counts_at_its_deposit_only_while_it_is_live(
    usdc: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The chain knows a channel's deposit, not what the client already paid inside it:
    ``a402 balance`` says its total counts a live client channel at the deposit, and says
    it only while such a channel is live (not for the provider, not once it closed)."""
    d = usdc
    p = wallet_funded(d)
    cid = "0x" + p.cid.hex()
    where = ("--key-file", key_file(tmp_path, p.client), "--manifest", str(d.manifest))
    said = "live channel as client counted at the on-chain deposit"

    code, out, _ = a402(capsys, "balance", *where)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"1.000000 USDC in all for {p.client.address}: 0.000000 USDC "
                               "in the wallet, 0.000000 USDC pooled, 1.000000 USDC escrowed"
                               ), lines[0]
    assert said in lines[1] and "leaves only at the close" in lines[1], lines[1]
    code, out, _ = a402(capsys, "balance", *where, "--json")
    data = json.loads(out)
    assert (data["escrowedAtomic"], data["channelsCountedAtDeposit"]) == (str(DEPOSIT), True)

    provider = ("--key-file", key_file(tmp_path, p.provider), "--manifest", str(d.manifest))
    code, out, _ = a402(capsys, "balance", *provider)
    assert code == 0 and said not in out and "escrowed" in out.splitlines()[0]
    code, out, _ = a402(capsys, "balance", *provider, "--json")
    assert json.loads(out)["channelsCountedAtDeposit"] is False

    code, _, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0
    increase_time(d.chain, DEV_DISPUTE_WINDOW)
    code, _, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0 and balance(d.token, p.client.address) == DEPOSIT
    code, out, _ = a402(capsys, "balance", *where)
    assert code == 0 and said not in out, out
    assert out.startswith(f"1.000000 USDC in all for {p.client.address}: 1.000000 USDC in "
                          "the wallet"), out


def test_a_pool_channels_force_close_says_the_refund_goes_back_to_the_pool(
    usdc: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A pool channel's client share goes back into the client's pool balance with its
    vault, not to the client's address: the CLI says so at both steps (and the balances
    agree: nothing paid to the address, all of it pooled)."""
    d = usdc
    client, vault, provider = (fresh_account(d.chain) for _ in range(3))
    transact(d.chain, d.chain.accounts[0], d.token.functions.mint(client.address, DEPOSIT))
    transact(d.chain, client, d.token.functions.approve(d.manager.address, DEPOSIT))
    d.manager.deposit_to_pool(client, vault.address, client.address, DEPOSIT)
    terms = ChannelTerms(client.address, vault.address, provider.address,
                         EVM.generate_key().public_key, DEPOSIT, os.urandom(32))
    d.manager.create_from_pool(vault, terms)
    cid = "0x" + terms.channel_id(d.manager.domain).hex()
    where = ("--key-file", key_file(tmp_path, client), "--manifest", str(d.manifest))
    code, started, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0
    increase_time(d.chain, DEV_DISPUTE_WINDOW)
    code, done, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0
    assert balance(d.token, client.address) == 0  # nothing was paid to the address ...
    assert d.manager.pooled(vault.address, client.address) == DEPOSIT  # ... it is pooled
    first = started.splitlines()[0]
    assert f"your pool balance with vault {vault.address}" in first, first
    assert "paid to the client" not in done, done
    assert "credited to the client's pool balance" in done, done


def test_a_wallet_funded_client_force_closes_without_the_vault_and_gets_its_deposit_back(
    usdc: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = usdc
    p = wallet_funded(d)
    cid = "0x" + p.cid.hex()
    where = ("--key-file", key_file(tmp_path, p.client), "--manifest", str(d.manifest))
    escrow = balance(d.token, d.manager.address)

    code, out, _ = a402(capsys, "channels", *where)
    assert code == 0
    assert out.startswith(f"1.000000 USDC escrowed in 1 open or closing channel of "
                          f"{p.client.address}; nothing owed to it")
    (row,) = [line for line in out.splitlines() if line.startswith(cid)]
    assert row.split()[1:4] == ["client", "wallet", "open"]

    code, out, err = a402(capsys, "channels", "force-close", cid, *where)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (f"nothing paid out yet: force-close of {cid} started; if no newer "
                        f"state is presented, 1.000000 USDC comes back to you "
                        f"({p.client.address}) and 0.000000 USDC goes to the provider")
    assert lines[1].startswith("the dispute window ends at ")
    assert f"in {DEV_DISPUTE_WINDOW} s" in lines[1]
    assert "the provider may still claim what it earned" in lines[1]
    assert d.manager.channel(p.cid).status == OnChainStatus.CLOSING
    assert balance(d.token, p.client.address) == 0

    code, _, err = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 4
    assert err.startswith(f"a402 channels: nothing moved: the dispute window of {cid} ends")
    assert balance(d.token, p.client.address) == 0

    increase_time(d.chain, DEV_DISPUTE_WINDOW)
    code, out, err = a402(capsys, "channels", "force-close", cid, *where, "--json")
    assert (code, err) == (0, "")
    done = json.loads(out)
    assert (done["step"], done["moved"], done["version"]) == ("finalized", True, 0)
    assert done["payouts"]["client"] == {"address": p.client.address, "amount": "1.000000",
                                         "credited": False}
    assert balance(d.token, p.client.address) == DEPOSIT
    assert balance(d.token, p.provider.address) == 0
    assert balance(d.token, d.manager.address) == escrow - DEPOSIT

    code, out, _ = a402(capsys, "channels", *where, "--json")
    (channel,) = json.loads(out)["channels"]
    assert (channel["status"], channel["closed"]["by"]) == ("closed", "ForceCloseFinalized")
    assert (channel["closed"]["client"], channel["closed"]["provider"]) == ("1.000000",
                                                                            "0.000000")
    code, _, err = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 4
    assert err.startswith(f"a402 channels: nothing moved: {cid} is already closed")
    assert balance(d.token, p.client.address) == DEPOSIT


def test_a_provider_answers_a_client_force_close_with_the_newer_state_it_holds(
    usdc: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Version 0 claims the whole deposit back; the provider, paid PAID meanwhile, shows
    the state both co-signed within the window, and the payout follows it."""
    d = usdc
    p = wallet_funded(d)
    cid = "0x" + p.cid.hex()
    where = ("--key-file", key_file(tmp_path, p.client), "--manifest", str(d.manifest))
    assert a402(capsys, "channels", "force-close", cid, *where)[0] == 0
    p.manager.challenge(p.provider, p.terms, p.signed(BalanceState(1, DEPOSIT - PAID, PAID)))

    code, out, _ = a402(capsys, "channels", *where)
    (row,) = [line for line in out.splitlines() if line.startswith(cid)]
    assert ("force-closing at version 1: 0.700000 USDC to the client, 0.300000 USDC to the "
            "provider") in row
    increase_time(d.chain, DEV_DISPUTE_WINDOW)
    code, out, _ = a402(capsys, "channels", "force-close", cid, *where)
    assert code == 0
    assert out.startswith(f"0.700000 USDC paid to the client {p.client.address} (you): "
                          f"{cid} closed at version 1")
    assert p.payouts() == (DEPOSIT - PAID, PAID)


# ------------------------------------------------------------------- bad input


def test_bad_input_exits_with_a_reason_and_changes_nothing(
    usdc: Deployment, restricted: Deployment, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    d = usdc
    p = wallet_funded(d)
    q = credited_provider(restricted)
    blocklist(restricted, q.provider.address, False)
    client = ("--key-file", key_file(tmp_path, p.client), "--manifest", str(d.manifest))
    provider = ("--key-file", key_file(tmp_path, q.provider), "--manifest",
                str(restricted.manifest))
    stranger = ("--key-file", key_file(tmp_path, fresh_account(d.chain)), "--manifest",
                str(d.manifest))
    cid = "0x" + p.cid.hex()
    before = (balance(d.token, p.client.address), balance(d.token, d.manager.address),
              restricted.manager.owed(q.provider.address))
    lowercase = q.provider.address.lower()
    bad_checksum = "0x" + (lowercase[2:12].upper() + lowercase[12:])
    cases = [
        (3, ("channels", "force-close", "0x" + "ab" * 32, *client), "has no channel 0xabab"),
        (2, ("channels", "force-close", "0x1234", *client), "a channel id is 0x and 64 hex"),
        (2, ("channels", "force-close", *client), "force-close needs a CHANNEL_ID"),
        (2, ("channels", "force-close", cid, *stranger), "is not the client of"),
        (2, ("payouts", "withdraw", *provider, "--to", "0x12345"), "--to: not an address"),
        (2, ("payouts", "withdraw", *provider, "--to", bad_checksum), "fails its EIP-55"),
        (2, ("payouts", "withdraw", *provider, "--relay", "--amount", "0.0000001"),
         "more decimals than RST (6)"),
        (2, ("payouts", "withdraw", *provider, "--relay", "--amount", "1"),
         "is more than the 300000 owed"),
        (2, ("payouts", "--address", "nope", "--manifest", str(d.manifest)),
         "--address: not an address"),
        (2, ("payouts", "--key-file", str(tmp_path / "missing.key")), "cannot read key file"),
        (2, ("channels", *client[:2], "--manifest", str(tmp_path / "none.json")),
         "cannot read the manifest"),
        (1, ("payouts", *client[:2], "--rpc", dead_url(),
             "--manager", d.manager.address), "cannot reach the chain"),
        (2, ("payouts", "relay", str(tmp_path / "no-order.json"), *client), "cannot read"),
        (2, ("payouts", *provider, "--to", q.client.address), "--to goes with `a402 payouts "
                                                               "withdraw`"),
    ]
    for code, argv, reason in cases:
        got, out, err = a402(capsys, *argv)
        assert got == code, (argv, err)
        assert err.startswith(("a402 channels: nothing moved: ", "a402 payouts: nothing moved: ")
                              ), err
        assert reason in err, (reason, err)
        assert "Traceback" not in err
    assert (balance(d.token, p.client.address), balance(d.token, d.manager.address),
            restricted.manager.owed(q.provider.address)) == before
    assert d.manager.channel(p.cid).status == OnChainStatus.OPEN

    code, out, _ = a402(capsys, "channels", "force-close", "0x" + "ab" * 32, *client, "--json")
    assert code == 3
    assert json.loads(out)["reason"] == "unknown_channel"


def test_the_executable_reports_a_missing_deployment_without_a_traceback(
    tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_text(bytes(Account.create().key).hex())
    key.chmod(0o600)
    done = subprocess.run([A402, "payouts", "--key-file", str(key), "--manifest",
                           str(tmp_path / "devnet.json")], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    assert done.returncode == 2
    assert done.stderr.startswith("a402 payouts: nothing moved: cannot read the manifest")
    assert "Traceback" not in done.stderr


def test_a_relayer_without_gas_moves_nothing_and_the_order_stays_good(
    restricted: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = restricted
    p = credited_provider(d)
    blocklist(d, p.provider.address, False)
    order_file = tmp_path / "order.json"
    provider = ("--key-file", key_file(tmp_path, p.provider), "--manifest", str(d.manifest))
    code, out, _ = a402(capsys, "payouts", "withdraw", *provider, "--relay", "--amount",
                        "0.1", "--order-out", str(order_file))
    assert code == 0
    assert out.startswith("nothing moved yet: signed an order paying 0.100000 RST of the "
                          "0.300000 RST owed to you")
    broke = Account.create()
    code, _, err = a402(capsys, "payouts", "relay", str(order_file), "--key-file",
                        key_file(tmp_path, broke), "--manifest", str(d.manifest))
    assert code == 1
    assert err == (f"a402 payouts: nothing moved: the node refused the transaction: "
                   f"{broke.address} has no ETH to pay the gas\n")
    assert d.manager.owed(p.provider.address) == PAID
    code, out, _ = a402(capsys, "payouts", "relay", str(order_file), "--key-file",
                        key_file(tmp_path, fresh_account(d.chain)), "--manifest",
                        str(d.manifest), "--json")
    assert (code, json.loads(out)["amount"]) == (0, "0.100000")
    assert balance(d.token, p.provider.address) == 100_000
    code, out, _ = a402(capsys, "payouts", "--address", p.provider.address, "--manifest",
                        str(d.manifest), "--json")
    assert json.loads(out)["owed"] == "0.200000"


# ------------------------------------------------------------------------- the pool


def test_a_pool_client_sees_and_takes_its_pool_balance_without_the_vault(
    restricted: Deployment, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``a402 pool``: the balance as the chain holds it, then ``withdraw`` sent by the key
    itself (no vault anywhere); a blocklisted ``--to`` moves nothing; more than the balance
    moves nothing; the rest goes to another address."""
    d = restricted
    client, vault, blocked, elsewhere = (fresh_account(d.chain) for _ in range(4))
    transact(d.chain, d.chain.accounts[0], d.token.functions.mint(client.address, DEPOSIT))
    transact(d.chain, client, d.token.functions.approve(d.manager.address, DEPOSIT))
    d.manager.deposit_to_pool(client, vault.address, client.address, DEPOSIT)
    common = ["--manifest", str(d.manifest), "--vault", vault.address]
    key = key_file(tmp_path, client)

    code, out, _ = a402(capsys, "pool", *common, "--address", client.address, "--json")
    assert code == 0 and json.loads(out)["pooledAtomic"] == str(DEPOSIT)
    blocklist(d, blocked.address)
    try:
        code, out, err = a402(capsys, "pool", "withdraw", *common, "--key-file", key,
                              "--to", blocked.address)
        assert code == 1 and err.startswith("a402 pool: nothing moved")
    finally:
        blocklist(d, blocked.address, False)
    code, _, err = a402(capsys, "pool", "withdraw", *common, "--key-file", key,
                        "--amount", "1.000001")
    assert code == 4 and "nothing moved" in err
    assert d.manager.pooled(vault.address, client.address) == DEPOSIT
    code, out, _ = a402(capsys, "pool", "withdraw", *common, "--key-file", key, "--amount",
                        "0.3")
    assert code == 0 and out.startswith("0.300000 RST withdrawn from the pool")
    code, out, _ = a402(capsys, "pool", "withdraw", *common, "--key-file", key, "--to",
                        elsewhere.address)
    assert code == 0
    assert (balance(d.token, client.address), balance(d.token, elsewhere.address),
            balance(d.token, blocked.address)) == (300_000, DEPOSIT - 300_000, 0)
    assert d.manager.pooled(vault.address, client.address) == 0
