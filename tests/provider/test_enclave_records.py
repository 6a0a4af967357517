"""The provider enclave's sealed channel records: what :meth:`ProviderEnclaveCode.export`
writes (binary) restores the channel exactly, and so does the JSON record earlier code
sealed (here around a real snapshot that code wrote: ``tests/asc/data``), whose channel
carries on and is written in the new format from then on."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from a402.asc import BalanceState, ProviderChannel, Reveal, SignedState, Status, decode
from a402.crypto import EVM, EcdsaSigner, PaymentDomain
from a402.provider_enclave import ProviderEnclaveBoundary, ProviderEnclaveCode
from a402.tee import PROVIDER_PURPOSES, SealingError, SimulatedPlatform
from a402.tee.simulated import SimulatedEnclave

V1 = json.loads((Path(__file__).parents[1] / "asc" / "data" / "snapshots_v1.json").read_text())
DOMAIN = PaymentDomain(31337, bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3"))
SIGNER = EcdsaSigner(b"\x02" * 32)  # the provider of the channel in tests/asc/data
SCHNORR = EVM.secret_key(b"\x04" * 32)  # its adaptor key, the enclave's attested key


def enclave(platform: SimulatedPlatform) -> tuple[ProviderEnclaveBoundary, ProviderEnclaveCode]:
    """The provider's enclave code (its host's boundary, and the code for the tests' look
    inside), on ``platform``: every start on one platform opens what another sealed."""
    simulated = SimulatedEnclave(platform, hashlib.sha384(b"provider code").digest(),
                                 SCHNORR.to_bytes(), X25519PrivateKey.generate(),
                                 PROVIDER_PURPOSES)
    codes: list[ProviderEnclaveCode] = []

    def start(kernel):  # type: ignore[no-untyped-def]
        code = ProviderEnclaveCode(kernel, domain=DOMAIN, signer=SIGNER, price=lambda *_: 100,
                                   closing=lambda _: False, clock=time.time, ack_timeout=10.0,
                                   lock_timeout=29.0)
        codes.append(code)
        return ProviderEnclaveBoundary(code)

    return simulated.start(start), codes[0]


def test_a_json_record_sealed_by_earlier_code_restores_and_is_written_anew_in_binary() -> None:
    platform = SimulatedPlatform.generate()
    host, code = enclave(platform)
    snapshot = V1["provider_revealed"]  # t revealed, the ACK not yet in
    cid = ProviderChannel.restore(snapshot.encode(), SIGNER, SCHNORR).channel_id
    final = SignedState(BalanceState(3, 10, 20, True), b"\x01" * 65, b"\x02" * 65)
    legacy = {
        "format": "a402/provider-enclave-channel/v1", "channel": snapshot,
        "lastIn": "aa" * 40, "lastOut": "bb" * 90,
        "final": [[3, 10, 20, True], "01" * 65, "02" * 65], "closedAt": 1234.5,
        "pendingNote": None,
    }
    sealed = code._kernel.seal(f"a402/provider-channel/{cid.hex()}", json.dumps(legacy).encode())
    host.restore(cid, sealed)
    held = code._held[cid]
    assert (held.last_in, held.last_out) == (b"\xaa" * 40, b"\xbb" * 90)
    assert held.final == final and held.closed_at == 1234.5 and held.pending_note is None
    reveal = held.channel.pending_reveal()
    assert isinstance(reveal, Reveal) and held.channel.status is Status.PENDING
    # Written again: binary, half the bytes, and a restart restores the same channel.
    again = host.export(cid)
    assert len(again) < len(sealed) * 2 // 3
    restarted, code2 = enclave(platform)
    restarted.restore(cid, again)
    held2 = code2._held[cid]
    assert held2.channel.snapshot() == held.channel.snapshot()
    assert (held2.last_in, held2.last_out, held2.final, held2.closed_at) == (
        held.last_in, held.last_out, held.final, held.closed_at)
    assert decode(held2.channel.pending_reveal().encode()) == reveal  # type: ignore[union-attr]
    assert restarted.export(cid) != again  # (a new seal each time) ...
    with pytest.raises(SealingError, match="open_failed"):  # ... bound to its channel
        enclave(platform)[0].restore(bytes(32), again)
