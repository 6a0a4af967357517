"""Snapshots of both machines, the vault's early abandon, and the recovery accessors.

A restored machine must behave exactly as the one it was taken from, at every
stage of a request (the runtimes persist at every one of them), so each test
snapshots, restores, and carries the protocol on with the restored machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from a402.asc import (
    Exec,
    ForceCloseDue,
    KeyPreSigner,
    LocalProtocolError,
    ProviderChannel,
    Reason,
    RemoteProtocolError,
    RequestAbandoned,
    RequestExpired,
    ResultDelivered,
    SnapshotError,
    Status,
    VaultChannel,
    snapshot,
)
from a402.crypto import EVM, EcdsaSigner, PaymentDomain, payment_message, result_hash

from .helpers import wire
from .test_machine import ACK, LOCK, PROVIDER_LOCK, World, new_world


def reload(w: World) -> None:
    """Replace both ends by what their snapshots restore (a restart of both processes),
    each from its binary snapshot, checked the same as one restored from its JSON."""
    vault_bytes, provider_bytes = w.vault.snapshot(binary=True), w.provider.snapshot(binary=True)
    vault_json, provider_json = w.vault.snapshot(), w.provider.snapshot()
    w.vault = VaultChannel.restore(vault_bytes, w.vault_key)
    w.provider = ProviderChannel.restore(provider_bytes, w.provider_key, w.schnorr)
    assert w.vault.snapshot(binary=True) == vault_bytes  # lossless
    assert w.provider.snapshot(binary=True) == provider_bytes
    assert w.vault.snapshot() == vault_json  # the same machine as the JSON restores
    assert w.provider.snapshot() == provider_json
    from_json = VaultChannel.restore(vault_json, w.vault_key)
    assert from_json.snapshot(binary=True) == vault_bytes
    assert ProviderChannel.restore(provider_json, w.provider_key, w.schnorr).snapshot(
        binary=True) == provider_bytes
    assert snapshot.loads(vault_bytes, snapshot.VAULT_FORMAT) == _normal(
        snapshot.loads(vault_json, snapshot.VAULT_FORMAT))


def _normal(document: dict[str, object]) -> dict[str, object]:
    """A JSON snapshot's document as a binary one reads: numbers as floats, the mode named."""
    document = json.loads(json.dumps(document))
    document["terms"].setdefault("vaultMode", False)  # type: ignore[union-attr]
    document["lockTimeout"] = float(document["lockTimeout"])  # type: ignore[arg-type]
    if document["pending"] is not None:
        pending = document["pending"]
        pending["lockDeadline"] = float(pending["lockDeadline"])  # type: ignore[index]
    return document


def test_a_request_survives_a_restart_at_every_step() -> None:
    w = new_world()
    exec_ = w.vault.request(b"GET /weather", 100, now=0)
    reload(w)
    assert w.vault.pending_exec() == exec_  # the same EXEC can be re-sent
    w.provider.receive(wire(exec_), now=0)
    reload(w)
    reply = w.provider.reply(exec_.request_id, b"sunny")
    reload(w)
    auth = w.vault.receive(wire(reply), now=1).send[0]
    reload(w)
    assert w.vault.pending_auth() == auth
    assert w.vault.pending_request() == (0, 100, b"GET /weather")
    reveal = w.provider.receive(wire(auth), now=1).send[0]
    reload(w)
    assert w.provider.pending_reveal() == reveal
    step = w.vault.receive(wire(reveal), now=2)
    reload(w)
    (delivered,) = step.events
    assert isinstance(delivered, ResultDelivered) and delivered.result == b"sunny"
    assert w.vault.last_ack() == step.send[0]
    assert w.vault.receive(wire(reveal), now=3).send == step.send  # still idempotent
    w.provider.receive(wire(step.send[0]), now=2)
    reload(w)
    assert w.vault.state == w.provider.state
    assert (w.vault.free, w.vault.provider_balance, w.vault.version) == (900, 100, 1)
    close = w.vault.close()
    reload(w)
    assert w.vault.pending_close() == close
    close_ack = w.provider.receive(wire(close), now=4).send[0]
    reload(w)
    w.vault.receive(wire(close_ack), now=4)
    reload(w)
    assert w.vault.pending_close() is None
    assert w.vault.status is w.provider.status is Status.CLOSED


def test_a_restored_provider_still_claims_and_a_restored_vault_still_extracts() -> None:
    w = new_world()
    exec_ = w.vault.request(b"req", 250, now=0)
    w.provider.receive(wire(exec_), now=0)
    auth = w.vault.receive(wire(w.provider.reply(0, b"result")), now=0).send[0]
    w.provider.receive(wire(auth), now=0)
    reload(w)
    assert w.provider.poll(now=ACK - 1).events == ()
    (due,) = w.provider.poll(now=ACK).events
    assert isinstance(due, ForceCloseDue)
    reload(w)
    assert w.provider.poll(now=ACK + 1).events == ()  # signalled once, even across a restart
    (delivered,) = w.vault.provider_force_closed(0, due.claim.signature).events
    assert isinstance(delivered, ResultDelivered) and delivered.on_chain
    assert delivered.result == b"result"


def test_restore_checks_keys_and_refuses_damaged_snapshots() -> None:
    w = new_world()
    w.vault.request(b"req", 1, now=0)
    good = w.vault.snapshot()
    with pytest.raises(ValueError, match="vault key"):
        VaultChannel.restore(good, EcdsaSigner(b"\x01" * 32))
    with pytest.raises(ValueError, match="Schnorr key"):
        ProviderChannel.restore(w.provider.snapshot(), w.provider_key, EVM.generate_key())
    document = json.loads(good)
    binary = w.vault.snapshot(binary=True)
    damaged = [
        b"not json",
        b"",
        good.replace(b"a402/asc-vault/v1", b"a402/asc-provider/v1"),
        json.dumps({**document, "status": "sleeping"}).encode(),
        json.dumps({**document, "state": [0, 1, 2]}).encode(),
        json.dumps({**document, "pending": {"requestId": "0"}}).encode(),
        json.dumps({**document, "lastAck": "zz"}).encode(),
        json.dumps({**document, "final": document["terms"]["salt"]}).encode(),
        # Binary (version 2): another side's, another version, cut, extended, bad flag.
        w.provider.snapshot(binary=True),
        b"A4SV\x03" + binary[5:],
        binary[:-1],
        binary[: len(binary) // 2],
        binary + b"\x00",
        binary[:5] + b"\x02" + binary[6:],
    ]
    for data in damaged:
        with pytest.raises(SnapshotError):
            VaultChannel.restore(data, w.vault_key)


V1 = json.loads((Path(__file__).parent / "data" / "snapshots_v1.json").read_text())


def test_snapshots_written_as_json_by_earlier_code_still_restore_and_carry_on() -> None:
    # Bytes code before the binary format wrote (format version 1, JSON), of a channel
    # whose keys are these: the vault holding σ_U's REPLY (δ 100, δ' 60) and the provider
    # that revealed t for it; then both after the ACK, and the provider's next REPLY.
    domain = PaymentDomain(31337, bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
    vault_key, provider_key = EcdsaSigner(b"\x01" * 32), EcdsaSigner(b"\x02" * 32)
    schnorr = EVM.secret_key(b"\x04" * 32)
    for name, data in V1.items():
        kind = VaultChannel if name.startswith("vault") else ProviderChannel
        fmt = snapshot.VAULT_FORMAT if kind is VaultChannel else snapshot.PROVIDER_FORMAT
        restored = (VaultChannel.restore(data.encode(), vault_key) if kind is VaultChannel
                    else ProviderChannel.restore(data.encode(), provider_key, schnorr))
        assert restored.snapshot() == data.encode()  # the same JSON, byte for byte
        again = restored.snapshot(binary=True)
        assert again.startswith(b"A4S") and len(again) < len(data) * 2 // 3
        # Everything the JSON held is what the binary snapshot holds.
        expected = {**json.loads(data), "format": fmt}
        expected["terms"].setdefault("vaultMode", False)
        assert snapshot.loads(again, fmt) == expected
    vault = VaultChannel.restore(V1["vault_pending"].encode(), vault_key)
    provider = ProviderChannel.restore(V1["provider_revealed"].encode(), provider_key, schnorr)
    assert vault.channel_id == provider.channel_id == vault.terms.channel_id(domain)
    assert vault.status is provider.status is Status.PENDING
    # Its m was made before m bound the request (over H(result) alone): restored, its claim
    # carries the h of that m, from which the contract rebuilds m, so the claim still holds.
    claim = provider.claim()
    assert claim.result_hash == result_hash(b"sunny")
    old_m = payment_message(domain, provider.channel_id, claim.request_id, 60, claim.result_hash)
    assert claim.amount == 60 and EVM.verify(schnorr.public_key, old_m, claim.signature)
    reveal = provider.pending_reveal()
    assert reveal is not None
    step = vault.receive(wire(reveal), now=1002)
    (delivered,) = step.events
    assert isinstance(delivered, ResultDelivered) and delivered.result == b"sunny"
    assert delivered.amount == 60
    provider.receive(wire(step.send[0]), now=1002)
    assert vault.state == provider.state and vault.provider_balance == 60
    # Its binary snapshot restores the same machine as the JSON earlier code wrote then.
    vault = VaultChannel.restore(vault.snapshot(binary=True), vault_key)
    assert vault.snapshot() == V1["vault_delivered"].encode()


def test_the_vault_may_abandon_a_locked_request_and_a_late_reply_is_refused() -> None:
    w = new_world()
    exec_ = w.vault.request(b"req", 100, now=0)
    w.provider.receive(wire(exec_), now=0)
    (expired,) = w.vault.abandon().events
    assert expired == RequestExpired(0, 100)
    assert (w.vault.status, w.vault.free, w.vault.pending_exec()) == (Status.OPEN, 1000, None)
    with pytest.raises(RemoteProtocolError) as late:
        w.vault.receive(wire(w.provider.reply(0, b"late")), now=1)
    assert late.value.reason is Reason.LOCK_EXPIRED
    with pytest.raises(LocalProtocolError):
        w.vault.abandon()  # nothing locked any more
    # The next request gets a fresh id; the provider takes it once its own lock is over.
    following = w.vault.request(b"next", 100, now=2)
    assert following.request_id == 1
    with pytest.raises(RemoteProtocolError) as busy:
        w.provider.receive(wire(following), now=2)
    assert busy.value.reason is Reason.REQUEST_IN_FLIGHT
    w.provider.receive(wire(following), now=PROVIDER_LOCK + 1)


def test_a_pending_request_cannot_be_abandoned() -> None:
    w = new_world()
    exec_ = w.vault.request(b"req", 100, now=0)
    w.provider.receive(wire(exec_), now=0)
    w.vault.receive(wire(w.provider.reply(0, b"r")), now=0)
    with pytest.raises(LocalProtocolError) as refused:
        w.vault.abandon()
    assert refused.value.reason is Reason.NOT_ALLOWED
    assert w.vault.status is Status.PENDING


def test_the_provider_abandons_an_unreplied_request_and_takes_the_next_at_once() -> None:
    w = new_world()
    first = w.vault.request(b"boom", 100, now=0)
    w.provider.receive(wire(first), now=0)
    assert w.provider.abandon(0).events == (RequestAbandoned(0),)
    assert w.provider.status is Status.OPEN
    w.vault.abandon()
    second = w.vault.request(b"ok", 100, now=1)
    w.provider.receive(wire(second), now=1)  # no wait for the provider's lock
    w.provider.reply(1, b"fine")
    with pytest.raises(LocalProtocolError):
        w.provider.abandon(1)  # replied: the vault may authorise it, so it must be kept
    with pytest.raises(RemoteProtocolError) as replayed:
        w.provider.receive(wire(first), now=2)
    assert replayed.value.reason is Reason.REPLAYED


def test_a_provider_channel_accepts_any_pre_signer_holding_the_registered_key() -> None:
    w = new_world()

    class CountingPreSigner(KeyPreSigner):
        calls = 0

        def pre_sign(self, message: bytes, adaptor: bytes):  # type: ignore[no-untyped-def]
            CountingPreSigner.calls += 1
            return super().pre_sign(message, adaptor)

    provider = ProviderChannel(w.terms, w.domain, w.provider_key, CountingPreSigner(w.schnorr),
                               ack_timeout=ACK, lock_timeout=PROVIDER_LOCK)
    vault = VaultChannel(w.terms, w.domain, w.vault_key, lock_timeout=LOCK)
    exec_ = vault.request(b"q", 5, now=0)
    assert isinstance(exec_, Exec)
    provider.receive(wire(exec_), now=0)
    vault.receive(wire(provider.reply(0, b"a")), now=0)  # σ̂ verifies under the channel's key
    assert CountingPreSigner.calls == 1
    with pytest.raises(ValueError, match="Schnorr key"):
        ProviderChannel(w.terms, w.domain, w.provider_key, KeyPreSigner(EVM.generate_key()),
                        ack_timeout=ACK, lock_timeout=PROVIDER_LOCK)
