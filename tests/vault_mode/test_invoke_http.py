"""Vault mode over real HTTP on anvil: ``a402 pay --vault`` pays a provider's gateway from the
client's account in the A402Vault, through the vault's ``/v1/invoke`` and the standard
attested tunnel; the provider admits the vault-mode channel (no chain record) and is paid by
a settlement."""

from __future__ import annotations

import contextlib
import io
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import Status
from a402.asc_manager import ASCManager
from a402.background import serve_in_thread
from a402.chain.deploy import TokenInfo
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.client.pay import pay_main
from a402.client.vault import VaultCallError
from a402.crypto.vault_messages import NO_LEDGER
from a402.evm.address import address_key
from a402.provider.a402_config import A402Config
from a402.provider.a402_payments import A402Payments
from a402.provider.a402_store import SqlChannelStore
from a402.provider.middleware import PaymentMiddleware
from a402.provider.settings import ChannelTimeouts, Watching
from a402.tee import (
    PROVIDER_PURPOSES,
    AttestationPolicy,
    SimulatedEnclave,
    SimulatedPlatform,
    SimulatedVerifier,
)
from a402.vault.mode import VaultModeConfig, VaultModeService
from a402.vault.mode_app import create_mode_app
from a402.vault.mode_invoke import ModeInvoker, answer_row, endpoint_row, seal_endpoint
from a402.vault.settlement_schedule import SchedulePolicy
from a402.vault.store import VaultStore
from a402.vault_contract import A402Vault
from a402.wire import vault_api as api
from a402.wire.a402 import Envelope
from tests.a402_exchange.helpers import (
    PRICES,
    PROVIDER_CODE,
    PROVIDER_LOCK,
    UNUSED_FACILITATOR,
    VAULT_CODE,
    Calls,
    service_app,
)
from tests.vault.helpers import wait_for

from .accounts_setup import enclave_address
from .helpers import SETTLE_WINDOW, balance, funded, increase_time

pytestmark = pytest.mark.anvil

PRICE = PRICES["GET /weather"]


@dataclass
class Setup:
    chain: Chain
    usdc: Any
    contract: A402Vault
    service: VaultModeService
    invoker: ModeInvoker
    provider: LocalAccount
    calls: Calls
    tmp: Path
    #: The provider's gateway again, around ``enclave`` (its config and store the same).
    gateway: Callable[[SimulatedEnclave], A402Payments] | None = None
    provider_enclave: SimulatedEnclave | None = None
    platform: SimulatedPlatform | None = None
    #: The provider's gateway as served (its channels: ``.runtime.channels``).
    provider_app: A402Payments | None = None

    def deposit(self, participant: str, amount: int) -> None:
        depositor = funded(self.chain, self.usdc, amount)
        transact(self.chain, depositor,
                 self.usdc.functions.approve(self.contract.address, amount))
        self.contract.deposit(depositor, participant, amount)

    def account(self, who: str) -> int:
        """What ``who`` has in its vault account: free + locked (confirmed)."""
        b = self.service.balance(who)
        return int(b["free"]) + int(b["locked"])

    def pay(self, site: str, vault: str, client: LocalAccount, key: str
            ) -> tuple[int, dict[str, Any], bytes]:
        """``a402 pay URL --vault VAULT``: its exit code, its summary line, its output."""
        key_file = self.tmp / f"{client.address}.key"
        key_file.write_text(bytes(client.key).hex())
        key_file.chmod(0o600)
        out, err = io.BytesIO(), io.StringIO()
        code = pay_main([f"{site}/weather", "--key-file", str(key_file), "--vault", vault,
                         "--vault-address", self.service.address,
                         "--vault-manager", self.contract.address,
                         "--vault-token", self.usdc.address,
                         "--max", "0.001", "--idempotency-key", key], stdout=out, stderr=err)
        lines = err.getvalue().strip().splitlines()
        summary = next((json.loads(line) for line in reversed(lines) if line.startswith("{")),
                       {})
        return code, {**summary, "stderr": err.getvalue()}, out.getvalue()


class AckWithholdingInvoker(ModeInvoker):
    """A vault host that does not send its first ACK (it has the result): the provider's
    Δ_ack passes and it claims on-chain. Later ACKs go out as usual."""

    withheld = 0

    async def send_ack(self, tunnel: Any, ack: Any) -> None:
        if self.withheld == 0:
            self.withheld = 1
            return
        await super().send_ack(tunnel, ack)


@contextlib.contextmanager
def running(chain: Chain, usdc: Any, tmp: Path, *, ack_timeout: float = 30.0,
            invoker_cls: type[ModeInvoker] = ModeInvoker, routes: dict[str, Any] | None = None,
            ) -> Iterator[tuple[Setup, str, str]]:
    """A vault in vault mode (its API served; the test runs the worker's rounds) and a
    provider gateway that also admits that A402Vault's channels, both on loopback."""
    platform = SimulatedPlatform.generate()
    verifier = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
    enclave = platform.launch(VAULT_CODE)
    contract = A402Vault.deploy(chain, chain.accounts[0], usdc.address,
                                enclave_address(enclave), SETTLE_WINDOW)
    service = VaultModeService(VaultModeConfig(
        chain=chain, account=funded(chain, usdc), contract=contract.address,
        store=VaultStore(f"sqlite:///{tmp / 'vault-mode.db'}"), enclave=enclave,
        schedule=SchedulePolicy(window=0, jitter=0, min_participants=1, max_per_tx=10),
        rng=random.Random(3), poll_interval=0.2,
        confirmations=0))  # anvil mines on demand: records at the head (nothing reorganises)
    invoker = invoker_cls(service, verifiers=[verifier],
                          policy=AttestationPolicy(frozenset({PROVIDER_CODE})),
                          allow_private_targets=True)
    # The provider: standard mode's ASCManager, and the A402Vault's channels too.
    manager = ASCManager.deploy(chain, chain.accounts[0], usdc.address, 600)
    operator = funded(chain, usdc)
    calls = Calls()
    config = A402Config(
        enclave=platform.launch(PROVIDER_CODE, allowed_purposes=PROVIDER_PURPOSES),
        operator=operator, chain=chain, manager=manager.address,
        vault_policy=AttestationPolicy(frozenset({VAULT_CODE})), verifiers=[verifier],
        store=SqlChannelStore(f"sqlite:///{tmp / 'provider.db'}"),
        timeouts=ChannelTimeouts(ack_timeout=ack_timeout, lock_timeout=PROVIDER_LOCK),
        watching=Watching(poll_interval=0.1), vault_contract=contract.address)
    payments = PaymentMiddleware(
        service_app(calls), routes=dict(PRICES if routes is None else routes),
        pay_to=operator.address,
        token=TokenInfo(usdc.address, "USD Coin", "USDC", "2", 6), network=chain.network,
        facilitator=UNUSED_FACILITATOR)
    setup = Setup(chain, usdc, contract, service, invoker, operator, calls, tmp,
                  gateway=lambda e: A402Payments(payments, replace(
                      config, enclave=e, store=SqlChannelStore(config.store.url))),
                  provider_enclave=config.enclave, platform=platform)
    setup.provider_app = A402Payments(payments, config)
    with serve_in_thread(setup.provider_app) as site, \
            serve_in_thread(create_mode_app(service, worker=False, invoker=invoker)) as vault:
        yield setup, site, vault


def test_a402_pay_through_a_vault_in_vault_mode_pays_n_times_with_no_transaction_and_settles(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    n = 5
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()  # reads the deposit and confirms it in settlement 1
        assert s.account(client.address) == 20_000
        provider_before = balance(usdc, s.provider.address)
        block = vault_chain.w3.eth.block_number
        outcomes = [s.pay(site, vault, client, f"vm-{i}") for i in range(n)]
        # n paid calls, the channel opened in the enclave: not one transaction
        assert vault_chain.w3.eth.block_number == block
        for code, summary, output in outcomes:
            assert code == 0, summary
            assert summary["outcome"] == api.PAID
            assert summary["payment"]["amount"] == str(PRICE)
            assert json.loads(output)["weather"] == "sunny"
        assert s.calls["weather"] == n
        assert s.account(client.address) == 20_000 - n * PRICE
        # the same key again pays nothing more
        again = s.pay(site, vault, client, "vm-0")
        assert again[0] == 0 and s.calls["weather"] == n
        assert s.account(client.address) == 20_000 - n * PRICE

        # The provider's earnings resolve once the claim window has passed; its payout
        # is settled in the next round.
        increase_time(vault_chain, 3_601)
        s.service.tick()
        assert int(s.service.balance(s.provider.address)["free"]) == n * PRICE
        s.service.withdraw(s.provider.address, n * PRICE)
        landed = s.service.tick()
        assert [x.payees for x in landed] == [1]
        assert balance(usdc, s.provider.address) == provider_before + n * PRICE
        assert s.account(client.address) == 20_000 - n * PRICE
        t = s.service.accounts.totals()
        assert balance(usdc, s.contract.address) == (
            t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


def test_vault_mode_channels_of_several_clients_spread_over_the_provider_tunnels_each_pays_once(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    # One frame is in flight per tunnel: channels on one tunnel wait for each other's EXEC
    # and AUTH. Each new channel is bound on the provider's least used tunnel (all of them
    # attested, the same provider key), and stays there for its next calls.
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        clients = [Account.create() for _ in range(3)]
        for c in clients:
            s.deposit(c.address, 20_000)
        s.service.tick()
        for round_ in range(2):
            for c in clients:
                code, summary, _ = s.pay(site, vault, c, f"spread-{round_}-{c.address}")
                assert code == 0 and summary["outcome"] == api.PAID, summary
            on = {cid: tunnel for tunnel in s.invoker._tunnels.values() for cid in tunnel._bound}
            if round_ == 0:
                first = dict(on)
            assert on == first  # the second call of each channel: on its own tunnel still
        assert len(on) == 3 and len({id(t) for t in on.values()}) == 3
        for cid, tunnel in on.items():  # each tunnel attested as the channel's provider key
            assert tunnel.info is not None
            assert tunnel.info.provider_key == s.service.accounts.terms(cid).provider_key
        assert s.calls["weather"] == 6
        for c in clients:  # each paid twice, once per call
            assert s.account(c.address) == 20_000 - 2 * PRICE


def test_a_provider_whose_ack_the_vault_withholds_claims_on_chain_and_is_paid_exactly_once(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    # Δ_ack 3 s, not 1: the call after the claim is ACKed as usual, and its ACK must reach
    # the provider within Δ_ack on a loaded host too (else that call is claimed as well).
    with running(vault_chain, usdc, tmp_path, ack_timeout=3.0,
                 invoker_cls=AckWithholdingInvoker) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        provider_before = balance(usdc, s.provider.address)
        code, summary, output = s.pay(site, vault, client, "withheld")
        assert code == 0 and summary["outcome"] == api.PAID, summary
        assert json.loads(output)["weather"] == "sunny"
        assert isinstance(s.invoker, AckWithholdingInvoker)
        # no next EXEC to ride on: the ACK would leave on its own after Δ_ack / 4; withheld
        wait_for(lambda: s.invoker.withheld == 1, timeout=60, what="the ACK's own send")
        # No ACK within Δ_ack: the provider's watcher claims with the pending record.
        wait_for(lambda: balance(usdc, s.provider.address) == provider_before + PRICE,
                 timeout=60, what="the provider's claimPayment")
        s.service.tick()  # the worker reads PaymentClaimed: that payment is nobody's again
        increase_time(vault_chain, 3_601)
        s.service.tick()  # the claim window of the payment is shut: nothing left pending
        assert s.service.balance(s.provider.address)["free"] == "0"
        assert s.account(client.address) == 20_000 - PRICE
        assert s.service.accounts.totals()["pending"] == 0
        # The provider ended its side of the channel: the next call opens a new one.
        code, summary, _ = s.pay(site, vault, client, "after-claim")
        assert code == 0 and summary["outcome"] == api.PAID, summary
        assert s.account(client.address) == 20_000 - 2 * PRICE
        increase_time(vault_chain, 3_601)
        s.service.tick()
        assert s.service.balance(s.provider.address)["free"] == str(PRICE)
        s.service.withdraw(s.provider.address, PRICE)
        s.service.tick()
        # two calls, each paid once: one by the claim, one by the settlement
        assert balance(usdc, s.provider.address) == provider_before + 2 * PRICE
        t = s.service.accounts.totals()
        assert balance(usdc, s.contract.address) == (
            t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


class NoRecordInvoker(ModeInvoker):
    """A vault host that sends AUTH without the enclave's pending record."""

    def auth_envelope(self, auth: Any, pending: Any) -> Envelope:
        return Envelope.asc(auth.encode())


def test_a_provider_reveals_nothing_for_a_vault_mode_auth_without_its_pending_record(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    with running(vault_chain, usdc, tmp_path, invoker_cls=NoRecordInvoker) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        code, summary, output = s.pay(site, vault, client, "no-record")
        # σ_U is out, so the vault says "may have been paid"; the provider kept t.
        assert code != 0 and output == b""
        assert summary["error"] == api.PAYMENT_PENDING, summary
        assert "may have been paid" in summary["stderr"]
        status, body = s.invoker._answers[(address_key(client.address), "no-record")]
        assert (status, body["providerReason"]) == (202, "pending_record_required")
        assert s.account(client.address) == 20_000 - PRICE  # pending, in no statement
        increase_time(vault_chain, 3_601)
        s.service.tick()  # not revealed: the payment goes back to the client
        assert s.account(client.address) == 20_000
        assert s.service.balance(s.provider.address)["free"] == "0"
        assert s.service.accounts.totals()["pending"] == 0


def test_a402_pay_refuses_a_vault_mode_vault_that_names_another_a402vault(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 5_000)
        s.service.tick()
        key_file = tmp_path / "client.key"
        key_file.write_text(bytes(client.key).hex())
        key_file.chmod(0o600)
        err = io.StringIO()
        code = pay_main([f"{site}/weather", "--key-file", str(key_file), "--vault", vault,
                         "--vault-address", s.service.address,
                         "--vault-manager", "0x" + "22" * 20, "--vault-token", usdc.address,
                         "--max", "0.001"], stdout=io.BytesIO(), stderr=err)
        assert code == 3
        assert "vault_mismatch" in err.getvalue() and "nothing was sent or paid" in err.getvalue()
        assert s.calls["weather"] == 0 and s.account(client.address) == 5_000


def test_a_restarted_vault_pays_through_the_channel_its_enclave_still_holds(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        assert s.pay(site, vault, client, "before")[0] == 0
        (channel,) = s.service.accounts.channels()
        # A new process: the service from the stored sealed ledger, a new invoker and API.
        again = VaultModeService(s.service.config)
        invoker = ModeInvoker(again, verifiers=s.invoker.verifiers, policy=s.invoker.policy,
                              allow_private_targets=True)
        with serve_in_thread(create_mode_app(again, worker=False, invoker=invoker)) as url:
            s.service = again
            code, summary, _ = s.pay(site, url, client, "after")
        assert code == 0 and summary["payment"]["channelId"] == "0x" + channel[0].hex()
        assert [c[0] for c in again.accounts.channels()] == [channel[0]]
        assert s.account(client.address) == 20_000 - 2 * PRICE
        assert s.calls["weather"] == 2


def test_a_provider_restarted_at_another_url_is_paid_on_the_vault_mode_channel(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """The provider's gateway restarts at another port, its enclave restored from its sealed
    identity and its channel store the same: the channel is bound on the tunnel to the new
    URL and pays there (the vault's tunnels are per origin; the enclave key is checked)."""
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        assert s.pay(site, vault, client, "before")[0] == 0
        (channel,) = s.service.accounts.channels()
        assert s.gateway and s.platform and s.provider_enclave
        restored = s.platform.restore(PROVIDER_CODE, s.provider_enclave.export_sealed(),
                                      allowed_purposes=PROVIDER_PURPOSES)
        with serve_in_thread(s.gateway(restored)) as moved:
            assert moved != site
            code, summary, _ = s.pay(moved, vault, client, "after")
        assert code == 0, summary
        assert summary["payment"]["channelId"] == "0x" + channel[0].hex()
        assert [c[0] for c in s.service.accounts.channels()] == [channel[0]]
        assert s.account(client.address) == 20_000 - 2 * PRICE
        assert s.calls["weather"] == 2


def test_a_provider_reveals_nothing_to_a_vault_whose_enclave_ledger_is_not_the_pinned_one(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """Issue 13. The vault's host wipes its sealed ledger and restarts: the same enclave (same
    key) starts a fresh ledger life, re-reads the chain's deposits and confirms them in an
    "epoch 1" that never lands (the A402Vault pinned the old life). Its pending records are
    signed by the vault key but name the fresh life, and ``claimPayment`` recomputes the
    digest with the pinned one: no claim could pay the provider. So the provider refuses
    the AUTH (``wrong_ledger``) and reveals nothing, though this vault withholds ACKs: the
    result stays sealed, no claim is tried, the provider's balance does not move."""
    with running(vault_chain, usdc, tmp_path, ack_timeout=1.0,
                 invoker_cls=AckWithholdingInvoker) as (s, site, _):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()  # settlement 1 lands and pins the ledger life
        pinned = s.contract.ledger()
        assert pinned == s.service.accounts.ledger != NO_LEDGER
        # The host's own code refuses a first boot past a landed settlement (S9-5); this
        # host runs code that skips that check.
        with pytest.MonkeyPatch.context() as host_code:
            host_code.setattr(A402Vault, "last_epoch", lambda self: 0)
            wiped = VaultModeService(replace(
                s.service.config, store=VaultStore(f"sqlite:///{tmp_path / 'wiped.db'}")))
        assert wiped.accounts.ledger not in (pinned, NO_LEDGER)
        wiped.tick()  # confirms the deposit again in its own "epoch 1": never lands
        assert s.contract.last_epoch() == 1 and s.contract.ledger() == pinned
        invoker = AckWithholdingInvoker(wiped, verifiers=s.invoker.verifiers,
                                        policy=s.invoker.policy, allow_private_targets=True)
        provider_before = balance(usdc, s.provider.address)
        with serve_in_thread(create_mode_app(wiped, worker=False, invoker=invoker)) as url:
            s.service = wiped
            assert s.account(client.address) == 20_000
            code, summary, output = s.pay(site, url, client, "wiped")
            # σ_U is out, so the vault says "may have been paid"; the provider kept t.
            assert code != 0 and output == b"", summary
            assert summary["error"] == api.PAYMENT_PENDING, summary
            status, body = invoker._answers[(address_key(client.address), "wiped")]
            assert (status, body["providerReason"]) == (202, "wrong_ledger")
            assert s.calls["weather"] == 1  # the service ran; its result stays sealed
            assert invoker.withheld == 0  # no REVEAL, so no ACK to withhold
            time.sleep(2.5)  # past Δ_ack: the provider has nothing to claim
        assert balance(usdc, s.provider.address) == provider_before
        assert s.account(client.address) == 20_000 - PRICE  # pending in the wiped ledger
        increase_time(vault_chain, 3_601)
        wiped.tick()  # not revealed: the payment goes back to the client
        assert s.account(client.address) == 20_000
        assert balance(usdc, s.provider.address) == provider_before


def test_a_provider_reveals_nothing_before_the_a402vault_pinned_a_ledger_and_pays_once_it_has(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """The vault confirms the client's deposit in settlement 1 but its host holds it back: no
    ledger life is pinned, and no record could be claimed (``claimPayment`` reverts
    ``EpochNotSettled`` until epoch 1 lands). Told truly what landed (nothing), the vault
    enclave takes no call paid with that money (``funds_settling``, nothing locked). Told
    falsely that it landed, it pays, and the provider refuses to reveal
    (``ledger_not_pinned``); once settlement 1 lands it reads the pinned life and the next
    call is paid."""
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        landing = s.service.land
        s.service.land = lambda: []  # type: ignore[method-assign]  # the host holds it back
        s.service.tick()  # confirms the deposit in settlement 1, which does not land
        assert s.contract.last_epoch() == 0 and s.contract.ledger() == NO_LEDGER
        provider_before = balance(usdc, s.provider.address)
        code, summary, output = s.pay(site, vault, client, "settling")
        assert code != 0 and output == b"" and summary["error"] == "funds_settling", summary
        assert s.account(client.address) == 20_000 and s.calls["weather"] == 0
        s.service.accounts.chain_epoch(1)  # the lie
        code, summary, output = s.pay(site, vault, client, "unpinned")
        assert code != 0 and output == b"" and summary["error"] == api.PAYMENT_PENDING
        status, body = s.invoker._answers[(address_key(client.address), "unpinned")]
        assert (status, body["providerReason"]) == (202, "ledger_not_pinned")
        assert s.account(client.address) == 20_000 - PRICE  # pending, in no statement
        s.service.land = landing  # type: ignore[method-assign]
        increase_time(vault_chain, 3_601)
        s.service.tick()  # settlement 1 lands and pins the life; the unrevealed payment
        s.service.tick()  # goes back to the client
        assert s.contract.ledger() == s.service.accounts.ledger != NO_LEDGER
        assert s.account(client.address) == 20_000
        code, summary, output = s.pay(site, vault, client, "pinned")
        assert code == 0 and summary["outcome"] == api.PAID, summary
        assert json.loads(output)["weather"] == "sunny"
        assert s.account(client.address) == 20_000 - PRICE
        increase_time(vault_chain, 3_601)
        s.service.tick()
        assert s.service.balance(s.provider.address)["free"] == str(PRICE)
        assert balance(usdc, s.provider.address) == provider_before


def test_a_provider_reveals_nothing_for_a_record_naming_a_settlement_the_host_withholds(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """Review s14-rev12. Settlement 1 landed (the life is pinned). The client tops up; the
    host has the enclave sign settlement 2, which confirms the top-up, keeps it, and tells
    the enclave it landed. The enclave then pays the client's call with a pending record
    naming epoch 2, which no claim can use until it lands (``EpochNotSettled``), while the
    client could leave with its earlier statement. The provider reads the chain (epoch 1,
    for a while), refuses the AUTH (``epoch_not_landed``) and reveals nothing: the result
    stays sealed, the provider is not paid, and the payment goes back to the client."""
    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()  # settlement 1 lands and pins the ledger life
        s.deposit(client.address, 5_000)
        landing = s.service.land
        s.service.land = lambda: []  # type: ignore[method-assign]  # the host holds it back
        s.service.tick()  # settlement 2 confirms the top-up; it does not land
        assert s.service.accounts.epoch == 2 and s.contract.last_epoch() == 1
        s.service.accounts.chain_epoch(2)  # the lie
        provider_before = balance(usdc, s.provider.address)
        code, summary, output = s.pay(site, vault, client, "withheld")
        assert code != 0 and output == b"" and summary["error"] == api.PAYMENT_PENDING
        status, body = s.invoker._answers[(address_key(client.address), "withheld")]
        assert (status, body["providerReason"]) == (202, "epoch_not_landed")
        assert s.calls["weather"] == 1  # the service ran; its result stays sealed
        assert s.account(client.address) == 25_000 - PRICE  # pending, in no statement
        s.service.land = landing  # type: ignore[method-assign]
        increase_time(vault_chain, 3_601)
        s.service.tick()  # settlement 2 lands; the unrevealed payment
        s.service.tick()  # goes back to the client
        assert s.account(client.address) == 25_000
        assert balance(usdc, s.provider.address) == provider_before
        assert s.service.balance(s.provider.address)["free"] == "0"


def test_a_paid_call_retried_after_a_restart_gets_its_stored_answer_and_is_paid_once(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    import httpx

    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client, stranger = Account.create(), Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        code, first, output = s.pay(site, vault, client, "once")
        assert code == 0 and output
        stored = s.service.store.get_meta(answer_row(client.address, "once"))
        assert stored is not None and output not in stored  # sealed: the host cannot read it
        # A new process: the answer comes from the store, not from the first one's memory.
        again = VaultModeService(s.service.config)
        invoker = ModeInvoker(again, verifiers=s.invoker.verifiers, policy=s.invoker.policy,
                              allow_private_targets=True)
        with serve_in_thread(create_mode_app(again, worker=False, invoker=invoker)) as url:
            s.service = again
            code, retried, output_again = s.pay(site, url, client, "once")
            life = again.accounts.life_id
            account = api.vault_account(vault_chain.network, again.address)
            path = "/v1/requests/once"
            mine = httpx.get(url + path, headers=api.sign_request(
                client, account, "GET", path, b"", life=life))
            theirs = httpx.get(url + path, headers=api.sign_request(
                stranger, account, "GET", path, b"", life=life))
        assert code == 0 and output_again == output
        assert retried["payment"] == first["payment"]
        assert s.calls["weather"] == 1  # the provider ran it once
        assert s.account(client.address) == 20_000 - PRICE  # paid once
        assert mine.status_code == 200 and mine.json()["payment"] == first["payment"]
        assert theirs.status_code == 404 and theirs.json()["error"] == api.NOT_FOUND


def test_a_signed_request_replayed_to_a_restarted_vault_is_refused_and_pays_nothing(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """The service checks a request's nonce in memory, with no read of the store per call:
    a new process loads the nonces the one before it recorded, so a paid call's signed
    request, and a withdrawal's, sent again after a restart are refused as replayed
    (``replayed_request``), and nothing is paid or queued a second time."""
    import httpx

    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        alice = Account.create()
        s.deposit(alice.address, 20_000)
        s.service.tick()
        to = api.vault_account(vault_chain.network, s.service.address)
        life = s.service.accounts.life_id
        paid = json.dumps({"url": f"{site}/weather", "maxPrice": str(PRICE),
                           "idempotencyKey": "k1", "payTo": s.provider.address,
                           "deposit": str(5 * PRICE)}).encode()  # the rest stays free
        paid_headers = api.sign_request(alice, to, "POST", "/v1/invoke", paid, life=life)
        payout = b'{"amount": "300"}'
        payout_headers = api.sign_request(alice, to, "POST", "/v1/vault/withdraw", payout,
                                          life=life)
        with httpx.Client(base_url=vault, timeout=60) as http:
            assert http.post("/v1/invoke", content=paid, headers=paid_headers
                             ).status_code == 200
            assert http.post("/v1/vault/withdraw", content=payout, headers=payout_headers
                             ).status_code == 202
        assert s.calls["weather"] == 1 and s.account(alice.address) == 20_000 - PRICE
        # A new process: the service from the store, a new invoker and API.
        again = VaultModeService(s.service.config)
        invoker = ModeInvoker(again, verifiers=s.invoker.verifiers, policy=s.invoker.policy,
                              allow_private_targets=True)
        with serve_in_thread(create_mode_app(again, worker=False, invoker=invoker)) as url, \
                httpx.Client(base_url=url, timeout=60) as http:
            s.service = again
            replayed = [http.post("/v1/invoke", content=paid, headers=paid_headers),
                        http.post("/v1/vault/withdraw", content=payout, headers=payout_headers)]
        assert [(r.status_code, r.json()["error"]) for r in replayed] == [
            (401, api.REPLAYED_REQUEST)] * 2
        assert s.calls["weather"] == 1  # the provider ran it once
        assert s.account(alice.address) == 20_000 - PRICE  # paid once
        assert again.balance(alice.address)["payoutRequested"] == "300"  # queued once


def test_a_paid_calls_lost_answer_is_looked_up_as_may_have_paid_never_as_nothing_paid(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """σ_U is out for a call but its answer was lost (the process ended between σ_U's
    write and the answer's). ``GET /v1/requests/{key}`` answered it 404 ``not_found``
    ("no paid call of yours"), which the client reads as nothing paid (a 4xx): it is
    now refused as a retry of the call is, ``replayed_call``, which the client reads as
    paid, or may have been. A key that never paid is still 404, nothing paid."""
    import httpx

    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        code, _, output = s.pay(site, vault, client, "lost")
        assert code == 0 and output
        # The answer's write never happened: its row gone, and a new process.
        s.service.store.put_metas({}, delete_prefix=answer_row(client.address, "lost"))
        again = VaultModeService(s.service.config)
        invoker = ModeInvoker(again, verifiers=s.invoker.verifiers, policy=s.invoker.policy,
                              allow_private_targets=True)
        with serve_in_thread(create_mode_app(again, worker=False, invoker=invoker)) as url:
            s.service = again
            account = api.vault_account(vault_chain.network, again.address)

            def outcome(key: str) -> httpx.Response:
                path = f"/v1/requests/{key}"
                return httpx.get(url + path, headers=api.sign_request(
                    client, account, "GET", path, b"", life=again.accounts.life_id))
            lost, never = outcome("lost"), outcome("never")
        assert lost.status_code == 401 and lost.json()["error"] == api.REPLAYED_CALL
        assert VaultCallError(lost.status_code, lost.json()).may_have_paid
        assert never.status_code == 404 and never.json()["error"] == api.NOT_FOUND
        assert not VaultCallError(never.status_code, never.json()).may_have_paid
        assert s.calls["weather"] == 1
        assert s.account(client.address) == 20_000 - PRICE  # paid once, as it says


def test_hostile_invoke_calls_to_a_paying_vault_mode_vault_pay_nothing_and_run_nothing(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """With an invoker configured (the fuzzer of tests/vault_mode/test_hostile_inputs.py
    meets only the 501 before it): a paid call's body, signed by an unfunded stranger,
    replayed, mutated and among every hostile body; the paid call's own signed request sent
    again. No answer is a 5xx but a 503 that says why, the provider's handler runs no
    second time, and no account moves."""
    import httpx
    from hypothesis import given, settings

    from tests.hostile import FUZZ, assert_answered, hostile_bodies

    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        alice, stranger = Account.create(), Account.create()
        s.deposit(alice.address, 20_000)
        s.service.tick()
        paid = json.dumps({"url": f"{site}/weather", "maxPrice": str(PRICE),
                           "idempotencyKey": "k1", "payTo": s.provider.address}).encode()
        to = api.vault_account(vault_chain.network, s.service.address)
        signed = api.sign_request(alice, to, "POST", "/v1/invoke", paid,
                                  life=s.service.accounts.life_id)
        with httpx.Client(base_url=vault, timeout=60) as http:
            first = http.post("/v1/invoke", content=paid, headers=signed)
            assert first.status_code == 200, first.text
            assert s.calls["weather"] == 1
            before = (s.account(alice.address), s.service.accounts.totals())
            again = http.post("/v1/invoke", content=paid, headers=signed)
            assert (again.status_code, again.json()["error"]) == (401, api.REPLAYED_REQUEST)
            probes: list[int] = []

            @settings(FUZZ, max_examples=40)
            @given(body=hostile_bodies(paid, large=api.MAX_CALL_BODY))
            def probe(body: bytes) -> None:
                headers = api.sign_request(stranger, to, "POST", "/v1/invoke", body,
                                           life=s.service.accounts.life_id)
                answer = http.post("/v1/invoke", content=body, headers=headers)
                probes.append(answer.status_code)
                assert_answered(answer)
                assert answer.status_code != 200 or s.calls["weather"] == 1, answer.text[:300]

            probe()
            assert len(probes) >= 30
        assert s.calls["weather"] == 1
        assert (s.account(alice.address), s.service.accounts.totals()) == before
        assert s.account(stranger.address) == 0


def test_a_paid_calls_answer_row_fits_the_meta_tables_key_on_postgresql() -> None:
    # PostgreSQL enforces the meta key's 64 characters (SQLite does not): a longer row name
    # failed the answer's write after the payment, and the client got a 500 for a paid call
    from a402.vault.tables import MetaRow

    limit = MetaRow.__table__.c.key.type.length
    rows = {answer_row("0x" + f"{i:040x}", "k" * 200 + str(i)) for i in range(50)}
    assert len(rows) == 50 and all(len(r) <= limit for r in rows), limit


def test_a_metered_call_in_vault_mode_answers_and_debits_the_charge_not_delta(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """``GET /weather`` metered per byte (1 unit a byte, δ = 1,000): the client's answer
    says what the channel paid (δ' = the body's length), its account is debited that, and
    the provider is paid that on-chain; the rest of δ stays the client's."""
    from a402.metering import parse_rule
    from a402.provider.routes import RouteConfig

    rule = parse_rule("per-byte:0.000001,max=0.001", 6)
    routes = {"GET /weather": RouteConfig(price=PRICE, meter=rule)}
    with running(vault_chain, usdc, tmp_path, routes=routes) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        provider_before = balance(usdc, s.provider.address)
        code, summary, output = s.pay(site, vault, client, "metered-1")
        assert code == 0, summary
        charge = len(output)
        assert 0 < charge < PRICE
        assert summary["payment"]["amount"] == str(charge), summary["payment"]
        assert s.account(client.address) == 20_000 - charge
        increase_time(vault_chain, 3_601)
        s.service.tick()
        assert int(s.service.balance(s.provider.address)["free"]) == charge
        s.service.withdraw(s.provider.address, charge)
        s.service.tick()
        assert balance(usdc, s.provider.address) == provider_before + charge
        t = s.service.accounts.totals()
        assert balance(usdc, s.contract.address) == (
            t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


def test_a402_pay_through_a_vault_mode_vault_to_an_unreachable_provider_says_nothing_was_paid(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """The payee is read from the provider's 402 before anything is signed: a provider
    that cannot be reached is refused then, with nothing sent to the vault, and said so
    (not "vault unreachable ... may have been paid")."""
    with running(vault_chain, usdc, tmp_path) as (s, _site, vault):
        client = Account.create()
        s.deposit(client.address, 5_000)
        s.service.tick()
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            gone = f"http://127.0.0.1:{closed.getsockname()[1]}"
        code, said, out = s.pay(gone, vault, client, "k-unreachable-provider")
        assert code == 3, said["stderr"]
        assert said["stderr"].startswith("a402 pay: nothing was paid"), said["stderr"]
        assert "may have been paid" not in said["stderr"]
        assert out == b"" and s.account(client.address) == 5_000


def _acked_or_claimed(s: Setup, channel_id: bytes) -> Any:
    """The provider's side of ``channel_id`` once its payment is decided: ACKed (no longer
    PENDING) or its ACK overdue (the watcher's on-chain claim is due). None before."""
    assert s.provider_app is not None
    slot = s.provider_app.runtime.channels.slot(channel_id)
    if slot is None:
        return None
    if (slot.force_close_due or slot.closing_on_chain or slot.onchain_closed
            or slot.channel.status is not Status.PENDING):
        return slot
    return None


def _signed_invoke(s: Setup, client: LocalAccount, body: dict[str, Any]
                   ) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    to = api.vault_account(s.chain.network, s.service.address)
    return raw, api.sign_request(client, to, "POST", "/v1/invoke", raw,
                                 life=s.service.accounts.life_id)


def test_a_replaced_channels_owed_ack_reaches_a_provider_with_a_short_ack_deadline_while_the_next_call_runs(  # noqa: E501
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """Issue 13. The client's channel holds one call (``deposit`` = the price); its next call
    (``/slow``, dearer) closes it and opens another, and holds the (client, provider) lock
    while the provider runs it. The first channel's ACK is owed: it leaves before that
    channel is closed, not behind the lock, so the provider (Δ_ack 2 s, less than the slow
    call) gets it and claims nothing on-chain. Before the fix it waited for the slow call to
    end and the provider claimed. Paid once each; the pool holds what the ledger says."""
    with running(vault_chain, usdc, tmp_path, ack_timeout=2.0) as (s, site, vault):
        import httpx

        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        provider_before = balance(usdc, s.provider.address)
        slow_price = PRICES["GET /slow"]
        s.calls.slow_release = threading.Event()
        first = _signed_invoke(s, client, {
            "url": f"{site}/weather", "maxPrice": str(PRICE), "idempotencyKey": "one-call",
            "payTo": s.provider.address, "deposit": str(PRICE)})
        second = _signed_invoke(s, client, {
            "url": f"{site}/slow", "maxPrice": str(slow_price), "idempotencyKey": "slow-call",
            "payTo": s.provider.address})
        answers: list[httpx.Response] = []
        with httpx.Client(base_url=vault, timeout=60) as http:
            answer = http.post("/v1/invoke", content=first[0], headers=first[1])
            assert answer.status_code == 200, answer.text
            replaced = bytes.fromhex(answer.json()["payment"]["channelId"][2:])
            # at once (before the ACK's own send, Δ_ack / 4): the call that replaces it
            later = threading.Thread(target=lambda: answers.append(
                http.post("/v1/invoke", content=second[0], headers=second[1])))
            later.start()
            try:
                slot = wait_for(lambda: _acked_or_claimed(s, replaced), timeout=30,
                                what="the replaced channel's ACK, or the provider's claim")
                # decided while the slow call still holds the lock: ACKed, nothing claimed
                assert not slot.force_close_due
                assert slot.channel.status is Status.OPEN
                assert balance(usdc, s.provider.address) == provider_before
                assert not answers  # the slow call holds the lock still
            finally:
                s.calls.slow_release.set()
                later.join(timeout=60)
        (slow,) = answers
        assert slow.status_code == 200, slow.text
        assert slow.json()["payment"]["channelId"] != "0x" + replaced.hex()
        wait_for(lambda: _acked_or_claimed(
            s, bytes.fromhex(slow.json()["payment"]["channelId"][2:])), timeout=30,
            what="the second channel's ACK, or the provider's claim")
        assert s.account(client.address) == 20_000 - PRICE - slow_price
        increase_time(vault_chain, 3_601)
        s.service.tick()
        s.service.tick()
        # each call paid once: by the vault's ledger, or (the second, if a loaded host
        # missed its Δ_ack) by a claim the ledger then counts as paid
        claimed = balance(usdc, s.provider.address) - provider_before
        assert claimed in (0, slow_price)
        assert int(s.service.balance(s.provider.address)["free"]) + claimed == (
            PRICE + slow_price)
        assert s.account(client.address) == 20_000 - PRICE - slow_price
        t = s.service.accounts.totals()
        assert t["pending"] == 0
        assert balance(usdc, s.contract.address) == (
            t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


class AckLosingInvoker(ModeInvoker):
    """A vault host that dies before any ACK leaves (it sends none)."""

    lost = 0

    async def send_ack(self, tunnel: Any, ack: Any) -> None:
        self.lost += 1


def test_an_ack_lost_in_a_vault_crash_is_sent_by_the_restarted_vault_before_any_call(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """Issue 13. A paid call's ACK never left (the vault's process ended first). The vault
    restarts (its ledger and the channel's endpoint from the store) and nobody calls: it
    re-sends the ACK on its own, so the provider (Δ_ack 5 s) claims nothing on-chain; the
    payment settles through the ledger, once. Before the fix only a new call on the
    channel sent it, and the provider claimed."""
    with running(vault_chain, usdc, tmp_path, ack_timeout=5.0,
                 invoker_cls=AckLosingInvoker) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        provider_before = balance(usdc, s.provider.address)
        code, summary, _ = s.pay(site, vault, client, "ack-lost")
        assert code == 0 and summary["outcome"] == api.PAID, summary
        channel = bytes.fromhex(summary["payment"]["channelId"][2:])
        assert s.provider_app is not None
        slot = s.provider_app.runtime.channels.slot(channel)
        assert slot is not None and slot.channel.status is Status.PENDING  # no ACK yet
        # A new process, from the store: no call comes to it.
        again = VaultModeService(s.service.config)
        invoker = ModeInvoker(again, verifiers=s.invoker.verifiers, policy=s.invoker.policy,
                              allow_private_targets=True)
        with serve_in_thread(create_mode_app(again, worker=False, invoker=invoker)):
            decided = wait_for(lambda: _acked_or_claimed(s, channel), timeout=30,
                               what="the re-sent ACK, or the provider's claim")
        assert not decided.force_close_due and decided.channel.status is Status.OPEN
        assert balance(usdc, s.provider.address) == provider_before
        s.service = again
        increase_time(vault_chain, 3_601)
        again.tick()
        assert int(again.balance(s.provider.address)["free"]) == PRICE
        assert s.account(client.address) == 20_000 - PRICE
        t = again.accounts.totals()
        assert t["pending"] == 0
        assert balance(usdc, s.contract.address) == (
            t["free"] + t["locked"] + t["pending"] + t["unconfirmed"])


@contextlib.contextmanager
def silent_endpoint() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """A provider endpoint that accepts connections and never answers (a host gone dark):
    its URL, set once a connection came, and set once that connection was given up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    came, gone = threading.Event(), threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = server.accept()
            came.set()
            with connection:
                while connection.recv(4096):
                    pass
            gone.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/.well-known/a402", came, gone
    finally:
        server.close()


def test_a_call_is_not_held_up_by_an_owed_ack_resent_to_a_provider_endpoint_gone_dark(
    vault_chain: Chain, usdc: Any, tmp_path: Path
) -> None:
    """A restarted vault re-sends an owed ACK at the endpoint stored with the channel (here:
    one that accepts and never answers, as a provider host gone dark, or one the provider
    left). A call to that provider, at its live URL, is answered meanwhile: the re-send
    attests its provider outside the pair's lock (it takes the lock only to bind the
    channel and send the ACK), so it does not hold the call up for its whole timeout.
    The call's EXEC carries the owed ACK; paid once."""
    with running(vault_chain, usdc, tmp_path, ack_timeout=60.0,
                 invoker_cls=AckLosingInvoker) as (s, site, vault), \
            silent_endpoint() as (dark, came, gone):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        code, summary, _ = s.pay(site, vault, client, "ack-lost")
        assert code == 0 and summary["outcome"] == api.PAID, summary
        channel = bytes.fromhex(summary["payment"]["channelId"][2:])
        s.service.store.put_meta(endpoint_row(channel), seal_endpoint(
            s.service.config.enclave, channel, dark))  # where the provider was when it paid
        again = VaultModeService(s.service.config)
        invoker = ModeInvoker(again, verifiers=s.invoker.verifiers, policy=s.invoker.policy,
                              allow_private_targets=True)
        with serve_in_thread(create_mode_app(again, worker=False, invoker=invoker)) as url:
            assert came.wait(30), "the re-send never tried the stored endpoint"
            s.service = again
            code, summary, _ = s.pay(site, url, client, "after-restart")
            answered_first = not gone.is_set()
            assert code == 0 and summary["outcome"] == api.PAID, summary
            assert answered_first, "the call waited for the re-send's timeout"
        assert summary["payment"]["channelId"] == "0x" + channel.hex()
        slot = _acked_or_claimed(s, channel)
        assert slot is not None and not slot.force_close_due
        assert s.account(client.address) == 20_000 - 2 * PRICE


def test_a_paid_calls_ledger_write_failing_on_the_writer_thread_pays_nothing_and_breaks(
    vault_chain: Chain, usdc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paid call awaits its writes on the event loop (``VaultModeService._adurable``): the
    store's writer thread reports each write's end through its future. One that fails there
    (the disk full at σ_U's write, reported from another thread a moment later) is never
    acknowledged: AUTH does not leave (the provider ran the call on EXEC but is paid
    nothing), the service is broken (a later call is refused, nothing written), and a
    restart from the store has the client's account as the last stored write left it."""
    from concurrent.futures import Future

    with running(vault_chain, usdc, tmp_path) as (s, site, vault):
        client = Account.create()
        s.deposit(client.address, 20_000)
        s.service.tick()
        code, _, output = s.pay(site, vault, client, "one")
        assert code == 0 and output and s.calls["weather"] == 1
        writes: list[dict[str, bytes]] = []

        def disk_full(values: dict[str, bytes], **_: Any) -> Future[list[int]]:
            writes.append(values)
            failed: Future[list[int]] = Future()
            threading.Timer(0.05, failed.set_exception, [OSError("disk full")]).start()
            return failed
        monkeypatch.setattr(s.service.store, "submit_metas", disk_full)
        code, summary, output = s.pay(site, vault, client, "two")
        assert code != 0 and not output and summary["error"] == "vault_broken"
        assert len(writes) == 1  # σ_U's, which failed: nothing after it was tried
        assert s.service.broken is not None and "disk full" in s.service.broken
        assert s.calls["weather"] == 2  # the provider ran it on EXEC (no AUTH came)
        code, _, _ = s.pay(site, vault, client, "three")
        assert code != 0 and len(writes) == 1  # refused, nothing written
        assert s.calls["weather"] == 2  # refused before any EXEC
        monkeypatch.undo()
        again = VaultModeService(s.service.config)  # a restart, from what was stored
        b = again.balance(client.address)
        assert int(b["free"]) + int(b["locked"]) == 20_000 - PRICE  # paid once
        assert again.accounts.has_paid(client.address, "one")
        assert not again.accounts.has_paid(client.address, "two")
