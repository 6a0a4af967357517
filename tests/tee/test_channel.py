"""The attested channel: Noise XX conformance, authentication, tampering, replay."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a402.crypto import EVM
from a402.tee import AttestationError, ChannelError, Initiator, NitroVerifier, Responder
from a402.tee._noise import XXHandshake, _public_bytes, x25519
from a402.tee.nitro import encode_user_data
from a402.tee.quote import AWS_NITRO, SIMULATED
from a402.tee.simulated import SimulatedVerifier

from .conftest import PROVIDER_CODE, VAULT_CODE, policy_for
from .nitro_factory import DocumentSpec, NitroPKI, sign_document

PROLOGUE = b"vault->provider"

# -- Noise conformance ------------------------------------------------------------------
# The first Noise_XX_25519_ChaChaPoly_SHA256 vector of cacophony
# (haskell-cryptography/cacophony, vectors/cacophony.txt): three handshake messages,
# the handshake hash, then transport messages alternating from the initiator.
CACOPHONY_XX = {
    "prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "c8e5f64e846193be2a834104c2a009868d6c9f3bd3c186299888b488b2f1f58e",
    "messages": [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e"
         "204d69736573"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378f"
         "fce2b65285e08d6b68aaa3629a5a8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe"
         "09be9b5c412f8a0db50f8814c7194e83f23dbd8d162c9326ad"),
        ("462e20412e20486179656b",
         "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89"
         "be0865b57f58c9fea0d4ec82a286427402f113e4b6ae769a1d95941d49b25030"),
        ("4361726c204d656e676572", "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df"),
        ("4a65616e2d426170746973746520536179",
         "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5"),
        ("457567656e2042f6686d20766f6e2042617765726b",
         "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"),
    ],
}


class RawStatic:
    """A static key from raw bytes (test vectors only; enclaves never do this)."""

    def __init__(self, private: bytes) -> None:
        self._key = X25519PrivateKey.from_private_bytes(private)

    @property
    def kx_public_key(self) -> bytes:
        return _public_bytes(self._key)

    def dh(self, peer_public_key: bytes) -> bytes:
        return x25519(self._key, peer_public_key)


def test_noise_xx_matches_the_cacophony_vector_byte_for_byte():
    v = CACOPHONY_XX
    prologue = bytes.fromhex(v["prologue"])

    def side(initiator: bool, who: str) -> XXHandshake:
        return XXHandshake(
            initiator=initiator, static=RawStatic(bytes.fromhex(v[f"{who}_static"])),
            prologue=prologue,
            ephemeral=X25519PrivateKey.from_private_bytes(bytes.fromhex(v[f"{who}_ephemeral"])),
        )

    i, r = side(True, "init"), side(False, "resp")
    for n, (payload, ciphertext) in enumerate(v["messages"][:3]):
        sender, receiver = (i, r) if n % 2 == 0 else (r, i)
        written = sender.write_message(bytes.fromhex(payload))
        assert written.hex() == ciphertext
        assert receiver.read_message(written)[0].hex() == payload
    assert i.handshake_hash.hex() == r.handshake_hash.hex() == v["handshake_hash"]
    assert r.remote_static == RawStatic(bytes.fromhex(v["init_static"])).kx_public_key
    (i_send, i_recv), (r_send, r_recv) = i.split(), r.split()
    for n, (payload, ciphertext) in enumerate(v["messages"][3:], start=3):
        send, receive = (i_send, r_recv) if n % 2 == 0 else (r_send, i_recv)
        written = send.encrypt_with_ad(b"", bytes.fromhex(payload))
        assert written.hex() == ciphertext
        assert receive.decrypt_with_ad(b"", written).hex() == payload


# -- enclaves over the channel ------------------------------------------------------------


def open_channel(vault, provider, verifier, *, vault_prologue=PROLOGUE, provider_prologue=PROLOGUE):
    h_vault, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier],
                                         prologue=vault_prologue)
    h_provider, m2 = provider.channel_respond(m1, policy_for(VAULT_CODE), [verifier],
                                              prologue=provider_prologue)
    m3, provider_seen = vault.channel_finish(h_vault, m2)
    vault_seen = provider.channel_accept(h_provider, m3)
    return h_vault, h_provider, provider_seen, vault_seen


def test_handshake_authenticates_both_attested_enclaves(vault, provider, verifier):
    hv, hp, provider_seen, vault_seen = open_channel(vault, provider, verifier)
    assert provider_seen.signing_key == provider.signing_public_key
    assert provider_seen.kx_key == provider.kx_public_key
    assert provider_seen.measurement == PROVIDER_CODE
    assert vault_seen.kx_key == vault.kx_public_key
    assert vault_seen.measurement == VAULT_CODE
    assert vault.channel_binding(hv) == provider.channel_binding(hp)
    assert provider.channel_decrypt(hp, vault.channel_encrypt(hv, b"EXEC")) == b"EXEC"
    assert vault.channel_decrypt(hv, provider.channel_encrypt(hp, b"REPLY")) == b"REPLY"


def test_two_secure_channels_have_different_bindings_and_keys(vault, provider, verifier):
    hv1, _, *_ = open_channel(vault, provider, verifier)
    hv2, hp2, *_ = open_channel(vault, provider, verifier)
    assert vault.channel_binding(hv1) != vault.channel_binding(hv2)
    frame = vault.channel_encrypt(hv1, b"for channel 1")
    with pytest.raises(ChannelError) as info:
        provider.channel_decrypt(hp2, frame)
    assert info.value.reason == "decrypt_failed"


def test_handshake_refuses_the_wrong_peer_code(vault, provider, verifier):
    hv, m1 = vault.channel_initiate(policy_for(VAULT_CODE), [verifier])  # expects a vault
    _, m2 = provider.channel_respond(m1, policy_for(VAULT_CODE), [verifier])
    with pytest.raises(AttestationError) as info:
        vault.channel_finish(hv, m2)
    assert info.value.reason == "measurement_mismatch"


def test_simulated_peers_are_refused_by_a_default_verifier(vault, provider, platform):
    strict = SimulatedVerifier(platform.root.public_key)  # allow_simulated=False
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [strict])
    _, m2 = provider.channel_respond(m1, policy_for(VAULT_CODE), [strict])
    with pytest.raises(AttestationError) as info:
        vault.channel_finish(hv, m2)
    assert info.value.reason == "simulated_not_allowed"


def test_mismatched_prologues_fail(vault, provider, verifier):
    with pytest.raises(ChannelError) as info:
        open_channel(vault, provider, verifier, provider_prologue=b"provider->vault")
    assert info.value.reason == "decrypt_failed"


def test_handshake_messages_cannot_be_tampered_with(vault, provider, verifier):
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier])
    hp, m2 = provider.channel_respond(m1, policy_for(VAULT_CODE), [verifier])
    for at in (0, 40, len(m2) - 1):  # ephemeral, encrypted static, payload tag
        hv2, m1b = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier])
        _, m2b = provider.channel_respond(m1b, policy_for(VAULT_CODE), [verifier])
        bad = m2b[:at] + bytes([m2b[at] ^ 1]) + m2b[at + 1 :]
        with pytest.raises(ChannelError) as info:
            vault.channel_finish(hv2, bad)
        assert info.value.reason in {"decrypt_failed", "malformed"}
        with pytest.raises(ChannelError) as info:  # a failed handshake is gone for good
            vault.channel_finish(hv2, m2b)
        assert info.value.reason == "unknown_channel"
    m3, _ = vault.channel_finish(hv, m2)
    with pytest.raises(ChannelError):
        provider.channel_accept(hp, m3[:-1] + bytes([m3[-1] ^ 1]))


# -- man in the middle ---------------------------------------------------------------------


class Impostor:
    """A handshake identity whose key no genuine enclave attests.

    ``evidence`` decides what it presents: a genuine enclave's quote relayed
    (with the right nonce, as an active MITM could obtain), or its own.
    """

    def __init__(self, evidence):
        self._key = X25519PrivateKey.generate()
        self._evidence = evidence

    @property
    def kx_public_key(self) -> bytes:
        return _public_bytes(self._key)

    def dh(self, peer_public_key: bytes) -> bytes:
        return x25519(self._key, peer_public_key)

    def attest(self, nonce: bytes) -> tuple[str, bytes]:
        return self._evidence(nonce)


def test_mitm_with_an_unattested_key_fails_even_relaying_genuine_evidence(
    vault, provider, verifier
):
    # The impostor sits between vault and provider, answering the vault itself. For
    # every nonce it asks the real provider enclave for a genuine quote; the quote
    # attests the provider's key, not the impostor's, so the vault refuses.
    impostor = Impostor(lambda nonce: (SIMULATED, provider.quote(nonce)))
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier])
    mitm = Responder(impostor, [verifier], policy_for(VAULT_CODE))
    m2 = mitm.respond(m1)
    with pytest.raises(ChannelError) as info:
        vault.channel_finish(hv, m2)
    assert info.value.reason == "key_not_attested"


def test_mitm_cannot_present_its_own_quote(vault, platform, verifier):
    # An enclave-shaped impostor with a quote for its own key, signed by a root the
    # vault does not trust.
    from a402.tee.simulated import SimulatedPlatform

    rogue = SimulatedPlatform.generate(clock=platform.clock).launch(PROVIDER_CODE)
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier])
    _, m2 = rogue.channel_respond(m1, policy_for(VAULT_CODE), [verifier])
    with pytest.raises(AttestationError) as info:
        vault.channel_finish(hv, m2)
    assert info.value.reason == "untrusted_root"


def test_replayed_evidence_from_another_handshake_is_refused(vault, provider, verifier):
    # Evidence recorded in one handshake has that handshake's hash as nonce.
    recorded = provider.quote(b"\x00" * 32)
    impostor = Impostor(lambda nonce: (SIMULATED, recorded))
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier])
    m2 = Responder(impostor, [verifier], policy_for(VAULT_CODE)).respond(m1)
    with pytest.raises(AttestationError) as info:
        vault.channel_finish(hv, m2)
    assert info.value.reason == "nonce_mismatch"


def test_unsupported_evidence_kind(vault, verifier):
    impostor = Impostor(lambda nonce: ("sgx", b"whatever"))
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [verifier])
    m2 = Responder(impostor, [verifier], policy_for(VAULT_CODE)).respond(m1)
    with pytest.raises(ChannelError) as info:
        vault.channel_finish(hv, m2)
    assert info.value.reason == "unsupported_kind"


# -- transport -----------------------------------------------------------------------------


def test_tampered_ciphertext_fails(vault, provider, verifier):
    hv, hp, *_ = open_channel(vault, provider, verifier)
    frame = vault.channel_encrypt(hv, b"AUTH sigma_U", ad=b"cid")
    for at in (3, 8, len(frame) - 1):  # counter, ciphertext, tag
        bad = frame[:at] + bytes([frame[at] ^ 0x80]) + frame[at + 1 :]
        with pytest.raises(ChannelError) as info:
            provider.channel_decrypt(hp, bad, ad=b"cid")
        assert info.value.reason == "decrypt_failed"
    with pytest.raises(ChannelError) as info:
        provider.channel_decrypt(hp, frame, ad=b"other cid")
    assert info.value.reason == "decrypt_failed"
    # Failed frames changed nothing: the genuine frame still opens.
    assert provider.channel_decrypt(hp, frame, ad=b"cid") == b"AUTH sigma_U"


def test_replayed_and_reordered_frames_fail(vault, provider, verifier):
    hv, hp, *_ = open_channel(vault, provider, verifier)
    first, second, third = (vault.channel_encrypt(hv, m) for m in (b"one", b"two", b"three"))
    assert provider.channel_decrypt(hp, first) == b"one"
    with pytest.raises(ChannelError) as info:
        provider.channel_decrypt(hp, first)
    assert info.value.reason == "replay"
    assert provider.channel_decrypt(hp, third) == b"three"  # a gap (lost frame) is allowed
    with pytest.raises(ChannelError) as info:
        provider.channel_decrypt(hp, second)  # ...but nothing older afterwards
    assert info.value.reason == "replay"


def test_a_frame_cannot_be_reflected_to_its_sender(vault, provider, verifier):
    hv, _, *_ = open_channel(vault, provider, verifier)
    with pytest.raises(ChannelError) as info:
        vault.channel_decrypt(hv, vault.channel_encrypt(hv, b"EXEC"))
    assert info.value.reason == "decrypt_failed"


def test_closed_and_unknown_channels(vault, provider, verifier):
    hv, hp, *_ = open_channel(vault, provider, verifier)
    vault.channel_close(hv)
    with pytest.raises(ChannelError) as info:
        vault.channel_encrypt(hv, b"x")
    assert info.value.reason == "unknown_channel"
    with pytest.raises(ChannelError):
        provider.channel_finish(hp, b"")  # a responder handle is not an initiator's


def test_out_of_turn_handshake_calls_are_refused(vault, verifier):
    side = Initiator(_identity_of(vault), [verifier], policy_for(PROVIDER_CODE))
    side.start()
    with pytest.raises(ChannelError) as info:
        side.start()
    assert info.value.reason == "out_of_order_call"


def _identity_of(enclave):
    return enclave._identity  # test-only access to the in-enclave handshake identity


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.tuples(st.binary(max_size=512), st.binary(max_size=32)), max_size=8))
def test_round_trips_in_both_directions(vault, provider, verifier, messages):
    hv, hp, *_ = open_channel(vault, provider, verifier)
    for n, (plaintext, ad) in enumerate(messages):
        src, dst, hs, hd = (vault, provider, hv, hp) if n % 2 == 0 else (provider, vault, hp, hv)
        frame = src.channel_encrypt(hs, plaintext, ad=ad)
        assert dst.channel_decrypt(hd, frame, ad=ad) == plaintext


# -- a Nitro provider talking to a simulated vault -------------------------------------------


class FakeNitroIdentity:
    """A provider "on Nitro": its NSM is the generated PKI of nitro_factory."""

    def __init__(self, pki: NitroPKI, pcr0: bytes, timestamp_ms: int) -> None:
        self._key = X25519PrivateKey.generate()
        self._pki = pki
        self._pcr0 = pcr0
        self._ts = timestamp_ms
        self.signing_key = b"\x02" + EVM.generate_key().public_key

    @property
    def kx_public_key(self) -> bytes:
        return _public_bytes(self._key)

    def dh(self, peer_public_key: bytes) -> bytes:
        return x25519(self._key, peer_public_key)

    def attest(self, nonce: bytes) -> tuple[str, bytes]:
        spec = DocumentSpec(pcrs={0: self._pcr0}, public_key=self.kx_public_key,
                            user_data=encode_user_data(self.signing_key), nonce=nonce,
                            timestamp_ms=self._ts)
        return AWS_NITRO, sign_document(self._pki, spec)


def test_channel_between_a_simulated_vault_and_a_nitro_provider(vault, verifier, clock):
    pki = NitroPKI.generate()
    nitro_provider = FakeNitroIdentity(pki, PROVIDER_CODE, int(clock.now * 1000))
    verifiers = [verifier, NitroVerifier(pki.root)]
    hv, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), verifiers)
    responder = Responder(nitro_provider, verifiers, policy_for(VAULT_CODE), clock=clock)
    m2 = responder.respond(m1)
    m3, provider_seen = vault.channel_finish(hv, m2)
    channel = responder.finish(m3)
    assert provider_seen.kind == AWS_NITRO
    assert provider_seen.signing_key == nitro_provider.signing_key
    assert channel.peer.kind == SIMULATED
    assert channel.decrypt(vault.channel_encrypt(hv, b"EXEC")) == b"EXEC"
    assert vault.channel_decrypt(hv, channel.encrypt(b"REPLY")) == b"REPLY"
