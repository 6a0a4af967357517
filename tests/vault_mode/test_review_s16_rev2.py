"""Adversarial review s16 (rev2): ``a402 vault deposit``'s check of the vault's A402Vault.

Played on anvil against the real ``A402Vault`` and TestUSDC; asserts token balances."""

from __future__ import annotations

from typing import Any

import pytest

from a402.chain.artifacts import load_artifact
from a402.chain.create2 import transfer_prover_address
from a402.chain.node import Chain
from a402.chain.tx import transact
from a402.evm.address import to_checksum
from a402.evm.keccak import keccak256
from a402.vault_contract import A402Vault

from .helpers import SETTLE_WINDOW, balance, funded, new_vault_key

pytestmark = pytest.mark.anvil

#: ``owed`` and ``totalOwed``'s storage slots in A402Vault (EIP712's two fallback strings
#: take slots 0 and 1; then lastEpoch|resolvedUntil|ledger, totalOwed, claimState, and the
#: mappings in declaration order).
TOTAL_OWED_SLOT, OWED_SLOT = 3, 13


def _push32(value: int) -> bytes:
    return b"\x7f" + value.to_bytes(32, "big")


def test_deposit_refuses_an_a402vault_whose_own_constructor_preset_its_storage(
    vault_chain: Chain, usdc: Any
) -> None:
    """A host deploys, with creation code of its own, a contract whose runtime code is byte
    for byte this release's A402Vault for the token, the vault's published key and window
    (the getters and the runtime code hold), but whose constructor first wrote
    ``owed[host] = totalOwed = 10^12``. Its /v1/info names it and the published key: every
    check ``a402 vault deposit --vault-address`` makes passes. Carol deposits 4,000; the host
    withdraws them by ``withdrawWithSignature`` (no enclave signature needed): equal code
    says nothing of storage. Fixed: the check proves the contract's creation (its CREATE2
    address over this release's init code, with the salt the vault publishes), which this
    contract's address is not, whatever salt the host names."""
    from a402.vault.mode_command import CommandError, _check_vault

    host = funded(vault_chain, usdc)
    published = to_checksum("0x" + new_vault_key().address.hex())
    artifact = load_artifact("A402Vault")
    factory = vault_chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    genuine = factory.constructor(usdc.address, published, SETTLE_WINDOW,
                                  transfer_prover_address()).data_in_transaction
    # the runtime code the genuine creation gives at the host's next CREATE address
    runtime = bytes(vault_chain.w3.eth.call({"from": host.address, "data": genuine}))
    preset = 10**12
    owed_slot = int.from_bytes(keccak256(bytes(12) + bytes.fromhex(host.address[2:])
                                         + OWED_SLOT.to_bytes(32, "big")), "big")
    prologue = b"".join(_push32(preset) + _push32(slot) + b"\x55"
                        for slot in (owed_slot, TOTAL_OWED_SLOT))
    tail = len(prologue) + 15  # PUSH2 n PUSH2 off PUSH1 0 CODECOPY PUSH2 n PUSH1 0 RETURN
    n = len(runtime).to_bytes(2, "big")
    init = (prologue + b"\x61" + n + b"\x61" + tail.to_bytes(2, "big") + b"\x60\x00\x39"
            + b"\x61" + n + b"\x60\x00\xf3" + runtime)
    receipt = transact(vault_chain, host, {"data": "0x" + init.hex()})
    fake = A402Vault(vault_chain, receipt["contractAddress"])
    assert int(fake.contract.functions.owed(host.address).call()) == preset
    assert bytes(vault_chain.w3.eth.get_code(fake.address)) == runtime
    info = {"vault": published, "a402Vault": fake.address, "a402VaultSalt": "0x" + "11" * 32}
    refused = False
    try:
        _check_vault(published, info, fake)
    except CommandError:
        refused = True
    if not refused:  # what the deposit then does, and what the host does next
        carol = funded(vault_chain, usdc, 4_000)
        transact(vault_chain, carol, usdc.functions.approve(fake.address, 4_000))
        fake.deposit(carol, carol.address, 4_000)
        before = balance(usdc, host.address)
        digest = bytes(fake.contract.functions.withdrawalDigest(
            host.address, host.address, 4_000, 0, 2**64).call())
        order = bytes(host.unsafe_sign_hash(digest).signature)
        transact(vault_chain, host, fake.contract.functions.withdrawWithSignature(
            host.address, host.address, 4_000, 2**64, order))
        assert balance(usdc, host.address) - before == 4_000  # Carol's deposit, taken
        assert balance(usdc, carol.address) == balance(usdc, fake.address) == 0
    assert refused, "a contract with preset storage passed every check"


def test_a_pull_on_a_vault_with_a_payment_pending_still_waits_the_window(
    vault_chain: Chain, usdc: Any, tmp_path: Any
) -> None:
    """879c3da: pulls and their checks wait for the scheduler's window, so that one
    settlement carries many. But ``tick`` signs whenever ``totals["pending"]`` is non-zero,
    and a paid call's payment stays pending until its deadline (an hour): on a vault that
    served one call in the last hour, each pull asked (and each check) gets a settlement of
    its own at the next tick, whatever the window. Here a client pays once, then Dave's
    pull is authorized: before the fix a settlement carrying it was signed and landed at
    once (the window is 60 s; nothing else is due). Now the tick asks for a settlement only
    once a pending payment is past its deadline: the pull waits its window, then goes."""
    from a402.vault.settlement_schedule import SchedulePolicy

    from .accounts_setup import PRICE
    from .test_service import Harness

    h = Harness(vault_chain, usdc, tmp_path,
                SchedulePolicy(window=60, jitter=0, min_participants=1, max_per_tx=10))
    client = funded(vault_chain, usdc)
    provider = h.vm.provider()
    h.deposit(client.address, 10_000)
    h.service.tick()  # confirms the deposit
    cid, side, _ = h.open(client, provider, 5 * PRICE)
    h.pay(cid, side, client, "one-call")
    assert h.service.accounts.totals()["pending"] == PRICE  # until its deadline
    epoch = h.contract.last_epoch()
    dave = funded(vault_chain, usdc, 1_000, eth=0)
    asked = h.service.prepare_pull(dave.address, 1_000)
    pull = int(asked["pull"])
    h.service.authorize_pull(dave.address, pull, h.contract.sign_pull(
        dave, dave.address, 1_000, pull, int(asked["deadline"]), h.service.accounts.ledger))
    t0 = __import__("time").time()
    landed = h.service.tick(now=t0)  # the pull's first tick: inside its window
    assert balance(usdc, dave.address) == 1_000 and h.contract.last_epoch() == epoch, (
        f"{len(landed)} settlement(s) signed for one pull inside its window")
    assert len(h.service.tick(now=t0 + 60)) == 1  # its window waited: made
    assert h.contract.pulled(pull) and balance(usdc, dave.address) == 0


def test_pulls_past_max_pulls_go_in_the_next_round_not_a_window_later(
    vault_chain: Chain, usdc: Any, tmp_path: Any
) -> None:
    """``MAX_PULLS`` + 2 pulls are authorized at once; after the window one settlement makes
    ``MAX_PULLS`` of them. The two left over have waited the window already: they go in the
    very next round's settlement (with the first ones' checks), not a whole window later
    (before the fix every backlog of pulls moved ``MAX_PULLS`` a window: one a spammer of
    1-unit pulls keeps full makes every honest pull wait, past its deadline)."""
    from a402.vault.settlement_schedule import SchedulePolicy
    from a402.vault_accounts import MAX_PULLS

    from .test_service import Harness

    h = Harness(vault_chain, usdc, tmp_path,
                SchedulePolicy(window=60, jitter=0, min_participants=1, max_per_tx=10))
    pulls = []
    for _ in range(MAX_PULLS + 2):
        who = funded(vault_chain, usdc, 10, eth=0)
        asked = h.service.prepare_pull(who.address, 10)
        pull = int(asked["pull"])
        h.service.authorize_pull(who.address, pull, h.contract.sign_pull(
            who, who.address, 10, pull, int(asked["deadline"]), h.service.accounts.ledger))
        pulls.append(pull)
    t0 = __import__("time").time()
    assert h.service.tick(now=t0) == []
    assert len(h.service.tick(now=t0 + 60)) == 1
    assert sum(h.contract.pulled(p) for p in pulls) == MAX_PULLS
    assert len(h.service.tick(now=t0 + 61)) == 1  # the next round: the two left
    assert all(h.contract.pulled(p) for p in pulls)
    assert balance(usdc, h.contract.address) == 10 * (MAX_PULLS + 2)


def test_deposit_says_nothing_moved_when_the_vault_names_an_a402vault_that_is_no_contract(
    vault_chain: Chain, usdc: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A vault whose /v1/info names an address with no code as its A402Vault: before the fix
    ``a402 vault deposit`` died with web3's traceback; now it says nothing moved (exit 1)."""
    import io

    from a402.vault import mode_command

    carol = funded(vault_chain, usdc, 4_000)
    published = to_checksum("0x" + new_vault_key().address.hex())

    class Named:  # the vault as deposit reads it: its info only
        def __init__(self, flags: Any) -> None:
            self.key = carol
            self.info = {"vault": published, "a402Vault": to_checksum("0x" + "11" * 20)}

    monkeypatch.setattr(mode_command, "_Vault", Named)
    key_file = tmp_path / "carol.key"
    key_file.write_text(carol.key.hex())
    out, err = io.StringIO(), io.StringIO()
    assert vault_chain.rpc_url is not None
    code = mode_command.main(["deposit", "--rpc", vault_chain.rpc_url, "--key-file",
                              str(key_file), "--amount", "4000", "--vault-address", published],
                             out=out, err=err)
    assert code == 1 and "nothing moved" in err.getvalue(), err.getvalue()
    assert balance(usdc, carol.address) == 4_000


def test_a_reorganisation_that_drops_a_pulls_settlement_sends_it_again_with_its_authorization(
    vault_chain: Chain, usdc: Any, tmp_path: Any
) -> None:
    """Dave's pull lands in settlement 1; the chain then reorganises it away (anvil's
    ``evm_revert`` to before it) before it is as deep as the host reads pulls at
    (``confirmations``). The host sends settlement 1 again: before the fix its pull went with
    no authorization (deleted at the first receipt) and was skipped, Dave's 1,000 never
    pulled (he had to ask again); now the authorization is deleted only once the pull is
    reported at that depth, and the pull is made."""
    from .test_service import Harness

    h = Harness(vault_chain, usdc, tmp_path, confirmations=3)
    dave = funded(vault_chain, usdc, 1_000, eth=0)
    asked = h.service.prepare_pull(dave.address, 1_000)
    pull = int(asked["pull"])
    h.service.authorize_pull(dave.address, pull, h.contract.sign_pull(
        dave, dave.address, 1_000, pull, int(asked["deadline"]), h.service.accounts.ledger))
    for _ in range(3):  # the contract as deep as the host reads it
        vault_chain.w3.provider.make_request("evm_mine", [])
    snapshot = vault_chain.w3.provider.make_request("evm_snapshot", [])["result"]
    assert len(h.service.settle_now()) == 1 and h.contract.pulled(pull)
    vault_chain.w3.provider.make_request("evm_revert", [snapshot])  # the reorganisation
    assert h.contract.last_epoch() == 0 and balance(usdc, dave.address) == 1_000
    assert len(h.service.land()) == 1  # settlement 1 again
    assert h.contract.pulled(pull) and balance(usdc, dave.address) == 0
    assert balance(usdc, h.contract.address) == 1_000
