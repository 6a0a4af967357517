"""A paid call's signature is recovered once in vault mode (:meth:`VaultAccountsCode.
authenticate <a402.vault_accounts.VaultAccountsCode.authenticate>`): the host API's check
is made in the enclave, which keeps what it recovered for the call's own EXEC. The EXEC still
judges freshness by its own time and window, a call the enclave did not check byte for byte
is recovered again, and what it keeps is bounded. The recoveries are counted by a wrapper
around the real recovery (which still decides)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from a402.crypto import PaymentDomain
from a402.tee import EnclaveError
from a402.vault_accounts import AUTHENTICATED_KEPT
from a402.vault_enclave import SignedCall
from a402.wire import vault_api as api

from .accounts_setup import PRICE, VaultMode, client, clock, vault_mode

DOMAIN = PaymentDomain(31337, bytes.fromhex("a16e02e87b7454126e5e10d957a927a7f5b5d2be"))
WINDOW = 60  # the host API's auth window


@pytest.fixture
def vm() -> VaultMode:
    return vault_mode(DOMAIN)


@pytest.fixture
def recoveries(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every signature recovery a call's check makes (the real one decides)."""
    made: list[bytes] = []
    real = api.recover_address

    def counted(digest: bytes, signature: bytes, **kw: Any) -> Any:
        made.append(signature)
        return real(digest, signature, **kw)
    monkeypatch.setattr(api, "recover_address", counted)
    return made


def with_a_channel(vm: VaultMode) -> tuple[Any, bytes, Any]:
    alice = client()
    vm.deposit(alice.address, 50_000)
    vm.vault.settle([], now=clock())
    cid, side = vm.open(alice, vm.provider(), 10 * PRICE)
    return alice, cid, side


def pays(vm: VaultMode, cid: bytes, side: Any, call: SignedCall, now: float) -> None:
    authorized = vm.pay(cid, side, call, now=now)
    assert authorized.pending is not None  # σ_U out: paid


def test_a_call_checked_by_the_host_api_is_paid_without_recovering_its_signature_again(
    vm: VaultMode, recoveries: list[bytes],
) -> None:
    alice, cid, side = with_a_channel(vm)
    call = vm.call(alice, key="once")
    now = clock()
    assert vm.vault.authenticate(call, now, WINDOW).client == alice.address
    assert len(recoveries) == 1
    pays(vm, cid, side, call, now)
    assert len(recoveries) == 1  # the EXEC took the enclave's own check of this call
    # taken once: the same call again is checked again (and refused: it has paid)
    with pytest.raises(EnclaveError) as refused:
        vm.vault.request(cid, call, PRICE, now)
    assert refused.value.reason == "replayed_call" and len(recoveries) == 2


def test_a_call_checked_once_but_stale_by_its_exec_is_refused_stale_request(
    vm: VaultMode,
) -> None:
    alice, cid, side = with_a_channel(vm)
    t0 = clock()
    late = vm.call(alice, key="late", ts=t0)
    vm.vault.authenticate(late, t0, WINDOW)
    window = vm.vault._code.window  # the enclave's own, not the host's
    with pytest.raises(EnclaveError) as refused:
        vm.vault.request(cid, late, PRICE, t0 + window + 1)
    assert refused.value.reason == api.STALE_REQUEST
    on_time = vm.call(alice, key="on-time")
    vm.vault.authenticate(on_time, clock(), WINDOW)
    pays(vm, cid, side, on_time, clock())  # nothing was paid for the stale one


def test_a_forged_call_is_refused_bad_signature_by_the_check_and_by_its_exec(
    vm: VaultMode,
) -> None:
    alice, cid, _ = with_a_channel(vm)
    call = vm.call(alice, key="forged")
    forged = SignedCall({**call.headers, api.CLIENT_HEADER: client().address},
                        call.method, call.path, call.body)
    with pytest.raises(api.AuthError) as refused:
        vm.vault.authenticate(forged, clock(), WINDOW)
    assert refused.value.reason == api.BAD_SIGNATURE
    with pytest.raises(EnclaveError) as at_exec:  # never kept: recovered, and refused
        vm.vault.request(cid, forged, PRICE, clock())
    assert at_exec.value.reason == api.BAD_SIGNATURE


def test_another_body_or_nonce_under_a_checked_signature_is_recovered_and_refused(
    vm: VaultMode, recoveries: list[bytes],
) -> None:
    alice, cid, side = with_a_channel(vm)
    call = vm.call(alice, key="checked")
    now = clock()
    vm.vault.authenticate(call, now, WINDOW)
    other = vm.call(alice, key="other")  # a body the client signed for another call
    swapped_body = SignedCall(call.headers, call.method, call.path, other.body)
    swapped_nonce = SignedCall({**call.headers, api.NONCE_HEADER: "another1nonce"},
                               call.method, call.path, call.body)
    for altered in (swapped_body, swapped_nonce):
        before = len(recoveries)
        with pytest.raises(EnclaveError) as refused:
            vm.vault.request(cid, altered, PRICE, now)
        assert refused.value.reason == api.BAD_SIGNATURE
        assert len(recoveries) == before + 1  # not taken from the check of `call`
    pays(vm, cid, side, call, now)  # the checked call itself is still paid on its check
    assert len(recoveries) == 3  # its check, and one for each altered call: none at EXEC


def test_the_enclave_keeps_the_newest_checks_only_and_recovers_a_dropped_one_again(
    vm: VaultMode, recoveries: list[bytes], monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AUTHENTICATED_KEPT >= 1024  # the calls in flight fit
    monkeypatch.setattr("a402.vault_accounts.AUTHENTICATED_KEPT", 3)
    alice, cid, side = with_a_channel(vm)
    now = clock()
    calls = [vm.call(alice, key=f"k{i}") for i in range(5)]
    for call in calls:
        vm.vault.authenticate(call, now, WINDOW)
    assert len(vm.vault._code._authenticated) == 3
    assert len(recoveries) == 5
    pays(vm, cid, side, calls[0], now)  # dropped: recovered again, then paid
    assert len(recoveries) == 6
    pays(vm, cid, side, calls[4], now)  # kept
    assert len(recoveries) == 6


def test_the_host_api_check_does_not_wait_for_an_enclave_step_in_flight(
    vm: VaultMode,
) -> None:
    alice, _, _ = with_a_channel(vm)
    held, release = threading.Event(), threading.Event()

    def step_in_flight() -> None:  # a thread's enclave step, holding the code's lock
        with vm.vault._code.lock:
            held.set()
            release.wait(60)
    step = threading.Thread(target=step_in_flight)
    step.start()
    assert held.wait(60)
    try:
        vm.vault.authenticate(vm.call(alice, key="meanwhile"), clock(), WINDOW)
        assert step.is_alive()  # checked while the step still held the lock
    finally:
        release.set()
        step.join()
