"""The vault enclave's code against a hostile host (no chain: the signatures themselves).

The host here holds everything a vault host has — the :class:`SimulatedEnclave`
object, the :class:`VaultEnclave` boundary, every sealed blob, every signed call
it ever received — but not the kernel or the sealing keys. Each test tries to
make the enclave sign something the protocol would not, and checks it does not.
(:mod:`tests.vault.test_host_cannot_move_money` does the same on anvil, with
balances.) The enclave keeps no balance book: pool balances are on-chain
(``ASCManager.pooled``), and what the contract bounds is not checked twice here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import (
    Auth,
    ChannelTerms,
    ProviderChannel,
    Reason,
    Status,
    force_close_digest,
    open_approval_digest,
    pool_open_approval_digest,
    snapshot,
)
from a402.asc.errors import ASCError
from a402.crypto import EVM, EcdsaSigner, PaymentDomain
from a402.crypto.authorization import recover_signer
from a402.evm.address import address_key
from a402.exact.eip3009 import Eip712Domain
from a402.tee import (
    PROVIDER_PURPOSES,
    AttestationPolicy,
    Enclave,
    EnclaveError,
    SealingError,
    SimulatedPlatform,
)
from a402.tee.simulated import SimulatedEnclave, SimulatedVerifier
from a402.vault_enclave import (
    FORCE_CLOSE_LIFETIME,
    INVOKE_PATH,
    OPEN_APPROVAL_LIFETIME,
    POOL_DEPOSIT_MULTIPLE,
    ChannelsNeeded,
    EnclaveChannel,
    SignedCall,
    VaultEnclave,
    VaultEnclaveCode,
    life_id,
    paid_request,
)
from a402.wire import vault_api as api

CODE = hashlib.sha384(b"a402 vault enclave code tests").digest()
PROVIDER_CODE = hashlib.sha384(b"a402 provider enclave code tests").digest()
MANAGER = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
DOMAIN = PaymentDomain(31337, MANAGER)
TOKEN = Eip712Domain("USD Coin", "2", 31337, "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512")
NETWORK = "eip155:31337"
PRICE = 1_000
#: The chain time the host reports to the enclave in these tests.
NOW = 1_700_000_000


@dataclass
class Setup:
    platform: SimulatedPlatform
    enclave: Enclave
    vault: VaultEnclave
    provider: EcdsaSigner
    schnorr: Any
    #: The vault enclave's tunnel to the provider's enclave (whose key is ``schnorr``).
    tunnel: str = ""

    def restarted(self, vault: VaultEnclave) -> Setup:
        return Setup(self.platform, self.enclave, vault, self.provider, self.schnorr, self.tunnel)


def attested_tunnel(platform: SimulatedPlatform, vault: Enclave, provider: Enclave) -> str:
    """A Noise tunnel from the vault enclave to the provider's, both attested (simulated)."""
    verifier = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
    handle, first = vault.channel_initiate(AttestationPolicy(frozenset({PROVIDER_CODE})),
                                           [verifier])
    other, second = provider.channel_respond(first, AttestationPolicy(frozenset({CODE})),
                                             [verifier])
    third, _ = vault.channel_finish(handle, second)
    provider.channel_accept(other, third)
    return handle


@pytest.fixture
def setup() -> Setup:
    return new_setup()


def new_setup() -> Setup:
    """A first-booted vault enclave and an attested provider enclave, tunnelled."""
    platform = SimulatedPlatform.generate()
    enclave = platform.launch(CODE)
    vault = VaultEnclaveCode.start(enclave, domain=DOMAIN, network=NETWORK, token=TOKEN,
                                   first_boot=True)
    # The provider's enclave, whose attested key the test drives directly (standing in
    # for the provider enclave's code): the channel's providerKey is an attested one.
    schnorr = EVM.secret_key(EVM.generate_key().to_bytes())
    provider_enclave = SimulatedEnclave(platform, PROVIDER_CODE, schnorr.to_bytes(),
                                        X25519PrivateKey.generate(), PROVIDER_PURPOSES)
    tunnel = attested_tunnel(platform, enclave, provider_enclave)
    return Setup(platform, enclave, vault, EcdsaSigner(os.urandom(32)), schnorr, tunnel)


def signed(vault: VaultEnclave, client: LocalAccount, body: dict[str, Any], *,
           path: str = INVOKE_PATH, ts: float | None = None) -> SignedCall:
    raw = json.dumps(body).encode()
    headers = api.sign_request(client, vault.account, "POST", path, raw, now=ts,
                               life=vault.life_id)
    return SignedCall.of(headers, "POST", path, raw)


def call(vault: VaultEnclave, client: LocalAccount, *, max_price: int = PRICE,
         key: str = "k1", ts: float | None = None, created: float | None = None
         ) -> SignedCall:
    """``client``'s signed invoke, created at ``created`` (default: when signed, ``ts``)."""
    when = created if created is not None else ts if ts is not None else time.time()
    invoke = api.InvokeRequest(url="https://api.example/weather", method="GET", headers=(),
                               body=b"", max_price=max_price, idempotency_key=key,
                               created_at=int(when))
    return signed(vault, client, invoke.to_json(), ts=ts)


WITHDRAW_PATH = api.API_PREFIX + "/withdrawals"


def pool_terms(s: Setup, client: LocalAccount, deposit: int = 10 * PRICE) -> ChannelTerms:
    """Fresh terms of a pool channel of ``client`` (the client is the on-chain client)."""
    return ChannelTerms(client.address, s.vault.address, s.provider.address,
                        s.schnorr.public_key, deposit, s.vault.salt())


def pool_channel(s: Setup, client: LocalAccount, deposit: int = 10 * PRICE) -> ChannelTerms:
    """A pool channel for a call of ``client``'s, bound to the provider enclave's tunnel."""
    terms = ChannelTerms(client.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, deposit, s.vault.salt())
    # One call opens at most one pool channel: each channel here is for a call of its own.
    s.vault.approve_pool_channel(call(s.vault, client, key=f"opens-{terms.salt.hex()}"), terms,
                                 lock_timeout=10.0, now=NOW)
    s.vault.bind_tunnel(s.tunnel, terms.channel_id(DOMAIN))
    return terms


def provider_side(s: Setup, terms: ChannelTerms) -> ProviderChannel:
    return ProviderChannel(terms, DOMAIN, s.provider, s.schnorr, ack_timeout=30.0,
                           lock_timeout=5.0)


def funded(s: Setup, amount: int = 100 * PRICE) -> LocalAccount:
    """A client (its pool balance is on-chain: the enclave does not track it)."""
    return Account.create()


def clock() -> int:
    """The host's ``now``: signed calls carry the wall clock, and the enclave refuses one
    signed more than the auth window after ``now``."""
    return int(time.time())


def stored(channel: EnclaveChannel, log: dict[int, bytes] | None = None
           ) -> tuple[bytes, dict[int, bytes]]:
    """What a host stores at a checkpoint: the channel's sealed record, and its log of
    consumed calls (``log``, the entries stored before, plus the new ones)."""
    record, entries = channel.checkpoint()
    log = dict(log or {})
    log.update({e.seq: e.entry for e in entries})
    return record, log


def json_record(code: VaultEnclaveCode, label: str, blob: bytes) -> dict[str, Any]:
    """A channel's sealed record as earlier code wrote it: JSON, with the machine's
    snapshot in JSON too (format version 1 of :mod:`a402.asc.snapshot`)."""
    record = code._record(code._kernel.unseal(label, blob))
    record["channel"] = json.dumps(snapshot.loads(record["channel"], snapshot.VAULT_FORMAT))
    return record


def pay(s: Setup, terms: ChannelTerms, provider: ProviderChannel, signed_call: SignedCall,
        now: float | None = None) -> Auth:
    now = clock() if now is None else now
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    exec_ = channel.request(signed_call, PRICE, now=now)
    provider.receive(exec_, now=now)
    reply = provider.reply(exec_.request_id, b"the result")
    (auth,) = channel.receive(reply, now=now).send
    assert isinstance(auth, Auth)
    reveal = provider.receive(auth, now=now).send[0]
    (ack,) = channel.receive(reveal, now=now).send
    provider.receive(ack, now=now)
    return auth


def test_the_host_gets_no_signing_call_and_no_key(setup: Setup) -> None:
    assert not hasattr(setup.enclave, "sign_digest")
    public = {name for name in dir(setup.vault) if not name.startswith("_")}
    assert not {n for n in public if "sign" in n}
    assert address_key("0x" + setup.vault.address.hex()) in setup.vault.account


def test_a_paid_request_needs_the_channel_owners_signed_call(setup: Setup) -> None:
    s = setup
    alice, mallory = funded(s), funded(s)
    terms = pool_channel(s, alice)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None and channel.owner == address_key(alice.address)
    # the host signs a call itself, or as another client: not the channel's owner
    for wrong in (call(s.vault, mallory), call(s.vault, Account.create())):
        with pytest.raises(EnclaveError) as refused:
            channel.request(wrong, PRICE, now=clock())
        assert refused.value.reason == "not_your_channel"
    good = call(s.vault, alice)
    # a tampered body, another path, a missing signature
    forged = SignedCall(good.headers, "POST", INVOKE_PATH, good.body.replace(b"1000", b"9000"))
    with pytest.raises(EnclaveError, match="bad_signature"):
        channel.request(forged, PRICE, now=clock())
    with pytest.raises(EnclaveError, match="wrong_call"):
        channel.request(SignedCall(good.headers, "POST", WITHDRAW_PATH, good.body), PRICE,
                        now=clock())
    with pytest.raises(EnclaveError, match="unauthenticated"):
        channel.request(SignedCall({}, "POST", INVOKE_PATH, good.body), PRICE, now=clock())
    # signed for another vault (another account string)
    other = api.sign_request(alice, "eip155:1:0x" + "11" * 20, "POST", INVOKE_PATH, good.body,
                             life=s.vault.life_id)
    with pytest.raises(EnclaveError, match="bad_signature"):
        channel.request(SignedCall.of(other, "POST", INVOKE_PATH, good.body), PRICE, now=clock())
    # more than the client's maximum
    with pytest.raises(EnclaveError, match="price_above_maximum"):
        channel.request(good, PRICE + 1, now=clock())
    assert channel.status is Status.OPEN and channel.free == terms.deposit
    # the good call pays: the request is the one the call names
    exec_ = channel.request(good, PRICE, now=clock())
    invoke = api.InvokeRequest.from_json(json.loads(good.body))
    assert exec_.request == paid_request(invoke).encode()


def test_one_signed_call_pays_at_most_once(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    first, second = pool_channel(s, alice), pool_channel(s, alice)
    one = call(s.vault, alice)
    pay(s, first, provider_side(s, first), one)
    for terms in (first, second):  # on the same channel or another of the client's
        channel = s.vault.channel(terms.channel_id(DOMAIN))
        assert channel is not None
        with pytest.raises(EnclaveError) as refused:
            channel.request(one, PRICE, now=clock())
        assert refused.value.reason == "replayed_call"
    channel = s.vault.channel(first.channel_id(DOMAIN))
    assert channel is not None and channel.provider_balance == PRICE


def test_a_call_given_up_before_sigma_u_may_run_again_once(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    other = pool_channel(s, alice)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    elsewhere = s.vault.channel(other.channel_id(DOMAIN))
    assert channel is not None and elsewhere is not None
    one = call(s.vault, alice)
    channel.request(one, PRICE, now=clock())
    with pytest.raises(EnclaveError, match="replayed_call"):  # in flight on the first
        elsewhere.request(one, PRICE, now=clock())
    channel.abandon()  # nothing was authorised
    provider = provider_side(s, other)
    pay(s, other, provider, one, now=clock())
    with pytest.raises(EnclaveError, match="replayed_call"):
        channel.request(one, PRICE, now=clock())


def test_a_request_whose_call_paid_elsewhere_gets_no_sigma_u(setup: Setup) -> None:
    """σ_U only for a request whose signed call has not paid: X is in flight on A (the
    host keeps A's record from then), A gives it up, X pays on B, and the host restores
    A's older record, still waiting for X's REPLY: the provider's REPLY gets no σ_U.
    (A restore of that older record after a restart that does not load B is the sealed
    state's rollback limit, stated in the module docstring.)"""
    s = setup
    alice = funded(s)
    a, b = pool_channel(s, alice), pool_channel(s, alice)
    pa, pb = provider_side(s, a), provider_side(s, b)
    channel_a = s.vault.channel(a.channel_id(DOMAIN))
    assert channel_a is not None
    x = call(s.vault, alice)
    exec_a = channel_a.request(x, PRICE, now=clock())
    pa.receive(exec_a, now=clock())
    reply_a = pa.reply(exec_a.request_id, b"result on A")
    record_a = channel_a.snapshot()  # LOCKED, for X
    channel_a.abandon()  # nothing authorised: X may pay once elsewhere
    pay(s, b, pb, x)  # X pays on B
    s.vault.unload(a.channel_id(DOMAIN))
    older = s.vault.restore(a.channel_id(DOMAIN), record_a)
    assert older.pending_request() is not None  # waiting for X's REPLY again
    with pytest.raises(ASCError, match="paid already"):
        older.receive(reply_a, now=clock())
    assert older.pending_auth() is None and older.provider_balance == 0
    assert s.vault.channel(b.channel_id(DOMAIN)).provider_balance == PRICE  # type: ignore[union-attr]


def test_one_call_approves_one_pool_channel_within_its_deposit_even_after_a_restart(
    setup: Setup,
) -> None:
    """F1b: one signed call approves at most one pool channel (asked again for that
    channel: a fresh approval), its deposit within the call's ``deposit`` or
    ``POOL_DEPOSIT_MULTIPLE`` × its ``maxPrice``; the rule is in the sealed ledger, so a
    restarted enclave keeps it. The approval is an A402PoolOpen, not an A402Open."""
    s = setup
    alice = funded(s)
    one = call(s.vault, alice, key="one")
    too_big = pool_terms(s, alice, POOL_DEPOSIT_MULTIPLE * PRICE + 1)
    with pytest.raises(EnclaveError, match="deposit_too_large"):
        s.vault.approve_pool_channel(one, too_big, lock_timeout=10.0, now=NOW)
    first = pool_terms(s, alice, POOL_DEPOSIT_MULTIPLE * PRICE)
    approval = s.vault.approve_pool_channel(one, first, lock_timeout=10.0, now=NOW)
    cid = first.channel_id(DOMAIN)
    assert recover_signer(pool_open_approval_digest(DOMAIN, cid, approval.deadline),
                          approval.signature) == s.vault.address
    assert recover_signer(open_approval_digest(DOMAIN, cid, approval.deadline),
                          approval.signature) != s.vault.address
    s.vault.approve_pool_channel(one, first, lock_timeout=10.0, now=NOW + 1)  # the same one
    with pytest.raises(EnclaveError, match="call_used"):
        s.vault.approve_pool_channel(one, pool_terms(s, alice, PRICE), lock_timeout=10.0,
                                     now=NOW)
    # A call naming its deposit: that, not the multiple, is the cap.
    named = signed(s.vault, alice, api.InvokeRequest(
        url="https://api.example/weather", method="GET", headers=(), body=b"",
        max_price=PRICE, idempotency_key="named", deposit=2 * PRICE,
        created_at=int(time.time())).to_json())
    with pytest.raises(EnclaveError, match="deposit_too_large"):
        s.vault.approve_pool_channel(named, pool_terms(s, alice, 2 * PRICE + 1),
                                     lock_timeout=10.0, now=NOW)
    ledger = s.vault.export_ledger()
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(ledger)
    with pytest.raises(EnclaveError, match="call_used"):
        again.approve_pool_channel(one, pool_terms(s.restarted(again), alice, PRICE),
                                   lock_timeout=10.0, now=NOW)


def test_after_a_restart_a_clients_calls_wait_for_its_channels(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    one = call(s.vault, alice)
    pay(s, terms, provider_side(s, terms), one)
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    (record, log), ledger = stored(channel), s.vault.export_ledger()
    # the host restarts the code and "forgets" the channel that consumed the nonce
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    with pytest.raises(EnclaveError, match="restarted"):  # the old code signs nothing more
        s.vault.force_close(cid, now=NOW)
    again.restore_ledger(ledger)
    fresh = pool_channel(s.restarted(again), alice)
    replay = again.channel(fresh.channel_id(DOMAIN))
    assert replay is not None
    with pytest.raises(ChannelsNeeded) as needed:
        replay.request(one, PRICE, now=clock())
    assert needed.value.channel_ids == [cid]
    with pytest.raises(EnclaveError, match="log_incomplete"):  # its log withheld: refused
        again.restore(cid, record)
    again.restore(cid, record, log)
    with pytest.raises(EnclaveError, match="replayed_call"):
        replay.request(one, PRICE, now=clock())


def test_old_calls_are_refused_so_the_replay_set_stays_bounded(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    newest = clock() + 50  # within a window ahead of now
    pay(s, terms, provider_side(s, terms), call(s.vault, alice, ts=newest))
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    # 71 s old by the clock (not too old for it), but 121 s before the client's newest call
    with pytest.raises(EnclaveError, match="stale_call"):
        channel.request(call(s.vault, alice, key="old", ts=newest - 121), PRICE, now=clock())


def test_one_idempotency_key_pays_at_most_once_whichever_signature_carries_it(
        setup: Setup) -> None:
    """A client signs every retry of a call anew (and the wallet 428 round): a host that
    kept two signatures of one call must not get two payments for it."""
    s = setup
    alice = funded(s)
    first, second = pool_channel(s, alice), pool_channel(s, alice)
    created = clock()
    signature_1 = call(s.vault, alice, key="lost-answer", created=created)
    # the retry: a new nonce, the same creation time (the client keeps it)
    signature_2 = call(s.vault, alice, key="lost-answer", created=created)
    assert signature_1.headers != signature_2.headers
    pay(s, first, provider_side(s, first), signature_1)
    for terms in (first, second):
        channel = s.vault.channel(terms.channel_id(DOMAIN))
        assert channel is not None
        with pytest.raises(EnclaveError, match="replayed_call"):
            channel.request(signature_2, PRICE, now=clock())
    paid = s.vault.channel(first.channel_id(DOMAIN))
    unpaid = s.vault.channel(second.channel_id(DOMAIN))
    assert paid is not None and unpaid is not None
    assert (paid.provider_balance, unpaid.provider_balance) == (PRICE, 0)


def test_a_call_the_host_withheld_is_refused_once_it_is_too_old(setup: Setup) -> None:
    """Alice made no newer call, so her own calls cannot say this one is old; the time
    the enclave has seen vouched for by others' calls (bob's, now) does: a call signed
    more than twice the auth window before it pays nothing."""
    s = setup
    alice, bob = funded(s), funded(s)
    terms, bobs = pool_channel(s, alice), pool_channel(s, bob)
    withheld = call(s.vault, alice, key="withheld", ts=clock() - 86_400)
    pay(s, bobs, provider_side(s, bobs), call(s.vault, bob))
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    with pytest.raises(EnclaveError, match="stale_call"):
        channel.request(withheld, PRICE, now=clock())
    assert channel.provider_balance == 0 and channel.status is Status.OPEN


def test_records_and_ledger_are_sealed_for_the_code_alone(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    for label, blob in ((f"a402/vault-channel/{channel.channel_id.hex()}", channel.snapshot()),
                        ("a402/vault-ledger", s.vault.export_ledger())):
        with pytest.raises(SealingError):
            s.enclave.unseal(label, blob)


def test_a_pool_channel_only_for_the_client_who_signed_the_call_and_this_vault(
        setup: Setup) -> None:
    s = setup
    alice, mallory = funded(s), funded(s)
    # Terms naming another client than the call's signer (mallory's pool paying for
    # alice's call, or the vault as client as before): refused, nothing recorded.
    for client in (mallory, Account.from_key(os.urandom(32))):
        t = pool_terms(s, client)
        with pytest.raises(EnclaveError, match="not_your_channel"):
            s.vault.approve_pool_channel(call(s.vault, alice), t, lock_timeout=10.0, now=NOW)
        assert s.vault.channel(t.channel_id(DOMAIN)) is None
    as_vault = ChannelTerms(s.vault.address, s.vault.address, s.provider.address,
                            s.schnorr.public_key, PRICE, s.vault.salt())
    with pytest.raises(EnclaveError, match="not_your_channel"):
        s.vault.approve_pool_channel(call(s.vault, alice), as_vault, lock_timeout=10.0, now=NOW)
    foreign = ChannelTerms(alice.address, "0x" + "22" * 20, s.provider.address,
                           s.schnorr.public_key, PRICE, s.vault.salt())
    with pytest.raises(EnclaveError, match="not_our_channel"):
        s.vault.approve_pool_channel(call(s.vault, alice), foreign, lock_timeout=10.0, now=NOW)
    terms = pool_terms(s, alice)
    s.vault.approve_pool_channel(call(s.vault, alice), terms, lock_timeout=10.0, now=NOW)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None and channel.owner == address_key(alice.address)


def test_the_enclave_keeps_no_balances_and_signs_no_transfer(setup: Setup) -> None:
    """The pool's balances are the contract's: the enclave has nothing a host could credit
    (an invented deposit, a refund) and nothing that moves tokens (no withdrawal, no
    permit, no EIP-3009). A settlement report closes the channel here and credits nothing."""
    s = setup
    for gone in ("balance", "credit_deposit", "withdraw", "withdrawal_again", "permit",
                 "collect_order"):
        assert not hasattr(s.vault, gone), gone
    alice = funded(s)
    terms = pool_channel(s, alice, deposit=4_000)
    pay(s, terms, provider_side(s, terms), call(s.vault, alice))
    cid = terms.channel_id(DOMAIN)
    assert s.vault.settled(cid, 4_000) == 3_000  # capped at the signed state, informational
    assert s.vault.settled(cid, 3_000) == 0  # once
    with pytest.raises(EnclaveError, match="channel_closed"):
        s.vault.channel(cid).request(call(s.vault, alice, key="k2"), PRICE,  # type: ignore[union-attr]
                                     now=clock())


def test_a_tunnel_binding_only_for_a_channel_held(setup: Setup) -> None:
    s = setup
    with pytest.raises(EnclaveError, match="unknown_channel"):
        s.vault.bind_tunnel("handle", os.urandom(32))


def test_a_force_close_order_only_for_the_latest_co_signed_state(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    pay(s, terms, provider_side(s, terms), call(s.vault, alice))
    latest, order = s.vault.force_close(terms.channel_id(DOMAIN), now=NOW)
    assert latest.state.version == 1 and latest.state.provider_balance == PRICE
    deadline = NOW + FORCE_CLOSE_LIFETIME  # the order lapses: a withheld one cannot be used later
    assert order[65:] == deadline.to_bytes(32, "big")
    digest = force_close_digest(DOMAIN, terms.channel_id(DOMAIN), 1, deadline)
    assert recover_signer(digest, order[:65]) == s.vault.address


def test_an_open_approval_lapses_and_a_pool_channel_is_written_off_only_after_it_has(
    setup: Setup,
) -> None:
    """Review F1/F2: a failed open's approval stays usable until its deadline, so the
    channel may be written off only after it (the host's word that the chain shows the id
    unopened is not enough before), and a channel written off is never approved again."""
    s = setup
    alice = funded(s, 10 * PRICE)
    terms = pool_terms(s, alice, 4 * PRICE)
    cid = terms.channel_id(DOMAIN)
    approval = s.vault.approve_pool_channel(call(s.vault, alice), terms, lock_timeout=10.0,
                                           now=NOW)
    assert approval.deadline == NOW + OPEN_APPROVAL_LIFETIME == s.vault.approved_until(cid)
    assert recover_signer(pool_open_approval_digest(DOMAIN, cid, approval.deadline),
                          approval.signature) == s.vault.address
    assert approval.calldata == approval.signature + approval.deadline.to_bytes(32, "big")
    # Asked again (a retry): a fresh deadline.
    again = s.vault.approve_pool_channel(call(s.vault, alice), terms, lock_timeout=10.0,
                                        now=NOW + 10)
    assert again.deadline == NOW + 10 + OPEN_APPROVAL_LIFETIME == s.vault.approved_until(cid)
    # Up to the last approval's deadline, it is not written off, whatever the host says.
    assert s.vault.open_failed(cid, now=again.deadline) == 0
    # Past it, once.
    assert s.vault.open_failed(cid, now=again.deadline + 1) == 4 * PRICE
    assert s.vault.open_failed(cid, now=again.deadline + 2) == 0
    with pytest.raises(EnclaveError, match="written_off"):
        s.vault.approve_pool_channel(call(s.vault, alice), terms, lock_timeout=10.0,
                                     now=NOW + 1_000)


def test_the_enclaves_clock_never_goes_back(setup: Setup) -> None:
    """A host that once reported a later time cannot then date an approval earlier (and so
    get its debit back sooner): deadlines follow the latest time it ever reported."""
    s = setup
    alice = funded(s, 10 * PRICE)
    first = pool_terms(s, alice, PRICE)
    s.vault.approve_pool_channel(call(s.vault, alice, key="first"), first, lock_timeout=10.0,
                                 now=NOW + 5_000)
    second = pool_terms(s, alice, PRICE)
    approval = s.vault.approve_pool_channel(call(s.vault, alice, key="second"), second,
                                            lock_timeout=10.0, now=NOW)
    assert approval.deadline == NOW + 5_000 + OPEN_APPROVAL_LIFETIME
    assert s.vault.open_failed(second.channel_id(DOMAIN), now=NOW) == 0


def test_the_machine_signs_only_its_own_states(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    provider = provider_side(s, terms)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    exec_ = channel.request(call(s.vault, alice), PRICE, now=clock())
    provider.receive(exec_, now=clock())
    (auth,) = channel.receive(provider.reply(exec_.request_id, b"r"), now=clock()).send
    reveal = provider.receive(auth, now=clock()).send[0]
    greedy = type(reveal)(reveal.channel_id, reveal.request_id, reveal.adaptor_secret,
                          reveal.state.pay(reveal.state.client_balance, reveal.state.version),
                          reveal.signature)
    with pytest.raises(Exception) as refused:
        channel.receive(greedy, now=clock())
    assert getattr(refused.value, "reason", None) in (Reason.STATE_MISMATCH,)
    assert channel.status is Status.PENDING


def test_the_vault_service_never_holds_a_channel_key() -> None:
    """No vault host module builds a machine or loads a signing key: the machines run in
    the enclave's code, with its key (the gas account is a ``LocalAccount`` that only sends
    transactions)."""
    from pathlib import Path

    import a402.vault

    for path in Path(a402.vault.__file__).parent.glob("*.py"):
        text = path.read_text()
        for forbidden in ("VaultChannel(", "VaultChannel.restore(", "EcdsaSigner(",
                          "sign_digest(", "unsafe_sign_hash("):
            assert forbidden not in text, f"{path.name} uses {forbidden}"


def test_a_nonce_pruned_from_a_record_stays_stale_after_a_restart(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    provider = provider_side(s, terms)
    base = clock()
    first = call(s.vault, alice, key="first", ts=base - 110)
    pay(s, terms, provider, first)
    ledger = s.vault.export_ledger()  # an older ledger: it knows only the first call
    pay(s, terms, provider, call(s.vault, alice, key="later", ts=base + 50))
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    record, log = stored(channel)  # "first" is pruned at restore: older than "later" − 2 × 60
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(ledger)
    restored = again.restore(cid, record, log)
    with pytest.raises(EnclaveError, match="stale_call"):
        restored.request(first, PRICE, now=clock())



def test_a_channel_refunded_as_never_opened_pays_nothing_when_restored_from_its_record(
        setup: Setup) -> None:
    """Review 2, finding 3a: the approval stays usable on-chain, so a host may report a
    pool channel as never opened, get its deposit back, and restore the record it stored at
    approval: the channel comes back closed, with no request and no σ_U."""
    s = setup
    alice = funded(s, 10 * PRICE)
    terms = pool_channel(s, alice, deposit=10 * PRICE)
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    record = channel.snapshot()  # stored before the approval left the vault
    later = s.vault.approved_until(cid) + 1  # its approval lapsed unused
    assert s.vault.open_failed(cid, now=later) == 10 * PRICE  # "the open failed": written off
    assert s.vault.open_failed(cid, now=later) == 0  # once
    s.vault.unload(cid)
    again = s.vault.restore(cid, record)  # ... but the channel opens on-chain after all
    assert again.status is Status.CLOSED
    with pytest.raises(EnclaveError, match="channel_closed"):
        again.request(call(s.vault, alice), PRICE, now=clock())
    assert again.provider_balance == 0 and again.pending_auth() is None
    assert s.vault.settled(cid, 10 * PRICE) == 0  # (the chain credits its refund itself)


def test_a_used_pool_channel_cannot_be_reported_as_never_opened(setup: Setup) -> None:
    """Review 2, finding 3b: the provider earned PRICE on the channel; reporting it as
    never opened (loaded, or unloaded so that the enclave cannot look) credits nothing."""
    s = setup
    alice = funded(s, 10 * PRICE)
    terms = pool_channel(s, alice, deposit=10 * PRICE)
    cid = terms.channel_id(DOMAIN)
    pay(s, terms, provider_side(s, terms), call(s.vault, alice))
    later = s.vault.approved_until(cid) + 1  # past its approval: only the use refuses it
    with pytest.raises(EnclaveError, match="channel_used"):
        s.vault.open_failed(cid, now=later)
    s.vault.unload(cid)
    with pytest.raises(EnclaveError, match="unknown_channel"):
        s.vault.open_failed(cid, now=later)
    # A channel that carried a request, even one given up before σ_U, opened too.
    bob = funded(s, 10 * PRICE)
    other = pool_channel(s, bob, deposit=10 * PRICE)
    channel = s.vault.channel(other.channel_id(DOMAIN))
    assert channel is not None
    channel.request(call(s.vault, bob), PRICE, now=clock())
    channel.abandon()
    with pytest.raises(EnclaveError, match="channel_used"):
        s.vault.open_failed(other.channel_id(DOMAIN),
                            now=s.vault.approved_until(other.channel_id(DOMAIN)) + 1)


def test_a_host_cannot_move_a_clients_pool_balance_into_a_channel_without_its_call(
        setup: Setup) -> None:
    """Review 2, finding 6: a pool channel is approved only for a fresh, unpaid invoke
    call the client signed (asking for pool funding); otherwise its on-chain pool
    balance stays put (the contract opens nothing without the approval)."""
    s = setup
    alice, mallory = funded(s, 10 * PRICE), funded(s, 10 * PRICE)
    paid = call(s.vault, alice, key="paid")
    first = pool_channel(s, alice, deposit=PRICE)
    pay(s, first, provider_side(s, first), paid)

    def terms() -> ChannelTerms:
        return pool_terms(s, alice, 9 * PRICE)

    wallet = api.InvokeRequest(url="https://api.example/weather", method="GET", headers=(),
                               body=b"", max_price=PRICE, idempotency_key="w", funding=api.WALLET,
                               created_at=int(time.time()))
    withdrawal = signed(s.vault, alice, {"amount": "1", "idempotencyKey": "w"},
                        path=WITHDRAW_PATH)
    for not_alices_consent, reason in (
            (call(s.vault, mallory), "not_your_channel"),  # mallory's call: not alice's
            (call(s.vault, Account.create()), "not_your_channel"),  # the host's own key
            (paid, "replayed_call"),  # a call that has paid already
            (signed(s.vault, alice, wallet.to_json()), "not_a_pool_channel"),
            (withdrawal, "wrong_call"),
            (SignedCall({}, "POST", INVOKE_PATH, paid.body), "unauthenticated")):
        t = terms()
        with pytest.raises(EnclaveError, match=reason):
            s.vault.approve_pool_channel(not_alices_consent, t, lock_timeout=10.0, now=NOW)
        assert s.vault.channel(t.channel_id(DOMAIN)) is None
    # alice's fresh call opens one of alice's (the contract debits alice's pool balance).
    t = terms()
    s.vault.approve_pool_channel(call(s.vault, alice, key="new"), t, lock_timeout=10.0, now=NOW)
    assert s.vault.channel(t.channel_id(DOMAIN)).owner == address_key(alice.address)  # type: ignore[union-attr]


def test_no_sigma_u_for_a_provider_key_no_attested_enclave_holds(setup: Setup) -> None:
    """Review 2, finding 6: the host opens a channel whose providerKey is a plain key of
    its own (no enclave computes the results it pre-signs): OPEN is refused over a tunnel
    whose attested peer holds another key, and the REPLY gets no σ_U."""
    s = setup
    alice = funded(s, 10 * PRICE)
    host_key = EVM.secret_key(EVM.generate_key().to_bytes())
    terms = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                         host_key.public_key, 10 * PRICE, s.vault.salt())
    s.vault.approve_pool_channel(call(s.vault, alice, key="open"), terms, lock_timeout=10.0,
                                 now=NOW)
    cid = terms.channel_id(DOMAIN)
    with pytest.raises(EnclaveError, match="provider_not_attested"):
        s.vault.bind_tunnel(s.tunnel, cid)  # the attested peer holds s.schnorr, not host_key
    with pytest.raises(EnclaveError, match="unknown_tunnel"):
        s.vault.bind_tunnel("a handle the host made up", cid)
    channel = s.vault.channel(cid)
    assert channel is not None
    fake = ProviderChannel(terms, DOMAIN, s.provider, host_key, ack_timeout=30.0,
                           lock_timeout=5.0)
    exec_ = channel.request(call(s.vault, alice), PRICE, now=clock())
    fake.receive(exec_, now=clock())
    with pytest.raises(ASCError):
        channel.receive(fake.reply(exec_.request_id, b"a result that never opens"), now=clock())
    assert channel.pending_auth() is None and channel.provider_balance == 0


def test_a_restart_without_the_ledger_runs_nothing(setup: Setup) -> None:
    """Review 2, finding 5: the host restarts the code and withholds the ledger (no old
    blob needed), then restores only channel B to replay call X, which paid on A."""
    s = setup
    alice = funded(s)
    a, b = pool_channel(s, alice), pool_channel(s, alice)
    x = call(s.vault, alice)
    pay(s, a, provider_side(s, a), x)  # X paid on A: its nonce is in A's record only
    record_b = s.vault.channel(b.channel_id(DOMAIN)).snapshot()  # type: ignore[union-attr]
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    for refused in (lambda: again.restore(b.channel_id(DOMAIN), record_b),
                    lambda: pool_channel(s.restarted(again), alice),
                    again.export_ledger):
        with pytest.raises(EnclaveError, match="ledger_needed"):
            refused()
    assert again.channel(b.channel_id(DOMAIN)) is None


def test_a_host_declaring_a_first_boot_cannot_run_an_earlier_channel(setup: Setup) -> None:
    """Review 2, finding 5: the host deletes the ledger and declares a first boot: the code
    starts from an empty ledger and refuses every channel record of its earlier life, so
    call X (paid on A) cannot pay again on B."""
    s = setup
    alice = funded(s)
    a, b = pool_channel(s, alice), pool_channel(s, alice)
    x = call(s.vault, alice)
    pay(s, a, provider_side(s, a), x)
    record_b = s.vault.channel(b.channel_id(DOMAIN)).snapshot()  # type: ignore[union-attr]
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN,
                                   first_boot=True)
    with pytest.raises(EnclaveError, match="not_a_first_boot"):
        again.restore(b.channel_id(DOMAIN), record_b)
    assert again.channel(b.channel_id(DOMAIN)) is None
    with pytest.raises(EnclaveError, match="not_this_life"):  # nor B's terms approved again
        again.approve_pool_channel(call(again, alice, key="b-again"), b, lock_timeout=10.0,
                                   now=NOW)


def test_a_far_future_call_of_one_client_makes_no_one_elses_calls_stale(setup: Setup) -> None:
    """Review 2, finding 8: freshness is per client, and a call signed more than the auth
    window after the host's ``now`` is refused."""
    s = setup
    alice, bob = funded(s), funded(s, 5_000)
    terms = pool_channel(s, alice)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    future = call(s.vault, alice, key="future", ts=10**11)
    with pytest.raises(EnclaveError, match="future_call"):
        channel.request(future, PRICE, now=clock())
    bobs = pool_channel(s, bob, deposit=2_000)
    pay(s, bobs, provider_side(s, bobs), call(s.vault, bob))  # bob's current call pays
    assert s.vault.channel(bobs.channel_id(DOMAIN)).provider_balance == PRICE  # type: ignore[union-attr]


def test_each_clients_newest_call_survives_a_restart_in_the_ledger(setup: Setup) -> None:
    """Review 2, finding 5: the ledger keeps each client's newest paid call, so an old
    call is stale after a restart even before the channel that paid it is restored."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    newest = clock() + 50
    pay(s, terms, provider_side(s, terms), call(s.vault, alice, key="new", ts=newest))
    ledger = s.vault.export_ledger()
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(ledger)
    fresh = ChannelTerms(alice.address, again.address, s.provider.address,
                         s.schnorr.public_key, PRICE, again.salt())
    with pytest.raises(EnclaveError, match="stale_call"):
        again.approve_pool_channel(call(again, alice, key="old", ts=newest - 121), fresh,
                                   lock_timeout=10.0, now=NOW)


@pytest.mark.parametrize("raw", [b"[" * 200_000 + b"]" * 200_000, b"[1, 2, 3]",
                                 b'{"url": 1, "url": 2}', b"\xff"])
def test_a_signed_body_that_is_not_a_shallow_json_object_is_refused_cleanly(
        setup: Setup, raw: bytes) -> None:
    """Review 2, finding 7: a deeply nested body (200 000 brackets, which would overflow
    the C stack under py_ecc's recursion limit), a non-object, duplicate keys, non-UTF-8:
    each is refused as ``bad_request`` by every call that reads a body, with no crash."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    fresh = pool_terms(s, alice, PRICE)
    for path, attempt in (
            (INVOKE_PATH, lambda c: channel.request(c, PRICE, now=clock())),
            (INVOKE_PATH, lambda c: s.vault.approve_pool_channel(c, fresh, lock_timeout=10.0,
                                                                   now=NOW))):
        headers = api.sign_request(alice, s.vault.account, "POST", path, raw,
                                   life=s.vault.life_id)
        with pytest.raises(EnclaveError, match="bad_request"):
            attempt(SignedCall.of(headers, "POST", path, raw))
    assert channel.status is Status.OPEN and channel.free == terms.deposit


def test_after_a_declared_first_boot_no_earlier_channel_is_approved_or_restored(
        setup: Setup) -> None:
    """Review 3, finding 1: a host that deletes the ledger row and restarts as a first boot
    cannot bring back an earlier channel, neither by approving its terms again (their salt
    was issued in the earlier life) nor by restoring its latest record, so a call paid in
    that life pays nothing again."""
    s = setup
    alice = Account.create()
    terms = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, 10 * PRICE, s.vault.salt())
    s.vault.approve_wallet_channel(terms, lock_timeout=10.0, now=NOW)
    cid = terms.channel_id(DOMAIN)
    record = s.vault.channel(cid).snapshot()  # type: ignore[union-attr]
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN,
                                   first_boot=True)
    with pytest.raises(EnclaveError, match="not_this_life"):
        again.approve_wallet_channel(terms, lock_timeout=10.0, now=NOW)
    with pytest.raises(EnclaveError, match=r"not_a_first_boot|not_this_life"):
        again.restore(cid, record)
    assert again.channel(cid) is None


def test_a_pool_approval_of_terms_with_a_salt_it_did_not_issue_is_refused(
        setup: Setup) -> None:
    """Review 4, finding 3: terms the enclave would not run (a salt it did not issue) are
    refused, and nothing is recorded."""
    s = setup
    alice = funded(s)
    foreign_salt = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                                s.schnorr.public_key, 10 * PRICE, os.urandom(32))
    with pytest.raises(EnclaveError, match="not_this_life"):
        s.vault.approve_pool_channel(call(s.vault, alice, key="needs-a-channel"), foreign_salt,
                                     lock_timeout=10.0, now=NOW)
    assert s.vault.channel(foreign_salt.channel_id(DOMAIN)) is None


def test_a_retry_signature_held_back_until_the_first_payment_is_pruned_pays_nothing(
        setup: Setup) -> None:
    """Review 4, finding 1: the client signs each retry anew, later; a host that holds a
    retry's signature until the record of the first payment is pruned (two windows behind
    the client's newest call) must not get it paid again. The retry carries the call's
    creation time (kept across retries): created before the horizon, it is refused."""
    s = setup
    alice = funded(s)
    first, second = pool_channel(s, alice), pool_channel(s, alice)
    provider = provider_side(s, first)
    created = clock() - 600
    pay(s, first, provider, call(s.vault, alice, key="lost-answer", ts=created), now=created)
    retry = call(s.vault, alice, key="lost-answer", ts=clock() - 10, created=created)
    # Alice's later calls move her horizon past the first payment, and its record is pruned.
    pay(s, first, provider, call(s.vault, alice, key="later", ts=clock() + 50))
    s.vault.export_ledger()
    channel = s.vault.channel(second.channel_id(DOMAIN))
    assert channel is not None
    with pytest.raises(EnclaveError) as refused:
        channel.request(retry, PRICE, now=clock())
    assert refused.value.reason == api.STALE_CALL
    assert refused.value.detail.startswith("nothing was paid")
    paid = s.vault.channel(first.channel_id(DOMAIN))
    assert paid is not None
    assert (paid.provider_balance, channel.provider_balance) == (2 * PRICE, 0)
    assert channel.status is Status.OPEN and channel.free == 10 * PRICE


def test_a_call_without_its_creation_time_is_an_older_clients_and_pays_nothing(
        setup: Setup) -> None:
    """A client that does not sign ``createdAt`` would leave the once-rule nothing to key
    on: refused with a reason that says so, before any balance moves."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    old = api.InvokeRequest(url="https://api.example/weather", method="GET", headers=(),
                            body=b"", max_price=PRICE, idempotency_key="old-client")
    old_call = signed(s.vault, alice, old.to_json())
    with pytest.raises(EnclaveError) as refused:
        channel.request(old_call, PRICE, now=clock())
    assert refused.value.reason == api.CLIENT_OUTDATED
    fresh = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, PRICE, s.vault.salt())
    with pytest.raises(EnclaveError, match=api.CLIENT_OUTDATED):
        s.vault.approve_pool_channel(old_call, fresh, lock_timeout=10.0, now=NOW)
    assert s.vault.channel(fresh.channel_id(DOMAIN)) is None  # nothing approved
    assert channel.status is Status.OPEN and channel.free == 10 * PRICE


def test_the_call_a_pool_channel_opened_for_pays_there_after_a_slow_open_and_once(
        setup: Setup) -> None:
    """Review 4, finding 7: a pool channel opens for call X (checked fresh at its approval);
    while the chain is slow to mine the open, others' calls and Alice's own move the
    enclave's time more than two windows past X. X still pays on the channel opened for
    it (its deposit was escrowed for it), nowhere else, and once."""
    s = setup
    alice, bob = funded(s), funded(s)
    t0 = clock() - 300
    x = call(s.vault, alice, key="x", ts=t0)
    terms = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, 10 * PRICE, s.vault.salt())
    s.vault.approve_pool_channel(x, terms, lock_timeout=10.0, now=NOW)
    s.vault.bind_tunnel(s.tunnel, terms.channel_id(DOMAIN))
    bobs = pool_channel(s, bob)
    pay(s, bobs, provider_side(s, bobs), call(s.vault, bob, key="meanwhile"))
    other = pool_channel(s, alice)
    pay(s, other, provider_side(s, other), call(s.vault, alice, key="meanwhile"))
    elsewhere = s.vault.channel(other.channel_id(DOMAIN))
    assert elsewhere is not None
    with pytest.raises(EnclaveError, match=api.STALE_CALL):  # not on another channel
        elsewhere.request(x, PRICE, now=clock())
    pay(s, terms, provider_side(s, terms), x)  # on its own channel: paid
    opened = s.vault.channel(terms.channel_id(DOMAIN))
    assert opened is not None and opened.provider_balance == PRICE
    s.vault.export_ledger()  # prunes what it may
    retry = call(s.vault, alice, key="x", ts=clock(), created=t0)
    for channel in (opened, elsewhere):
        with pytest.raises(EnclaveError) as refused:
            channel.request(retry, PRICE, now=clock())
        assert refused.value.reason in ("replayed_call", api.STALE_CALL)
    assert (opened.provider_balance, elsewhere.provider_balance) == (PRICE, PRICE)


def test_after_a_declared_first_boot_a_clients_old_signed_calls_pay_nothing(
        setup: Setup) -> None:
    """Review 4, finding 2: a host deletes the ledger and declares a first boot; the new
    life has no record of paid calls, but every call names the life it was signed for, so
    Alice's old calls (paid, or withheld) pay nothing on new channels, and are refused
    saying the vault lost its ledger."""
    s = setup
    alice = funded(s)
    a = pool_channel(s, alice)
    x = call(s.vault, alice, key="x")
    pay(s, a, provider_side(s, a), x)
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN,
                                   first_boot=True)
    assert again.life_id != s.vault.life_id
    n = s.restarted(again)
    b = pool_channel(n, alice)  # for a call Alice signed for the new life
    channel = again.channel(b.channel_id(DOMAIN))
    assert channel is not None
    for attempt in (lambda: channel.request(x, PRICE, now=clock()),
                    lambda: again.approve_pool_channel(x, ChannelTerms(
                        alice.address, again.address, s.provider.address,
                        s.schnorr.public_key, PRICE, again.salt()), lock_timeout=10.0, now=NOW)):
        with pytest.raises(EnclaveError) as refused:
            attempt()
        assert refused.value.reason == api.WRONG_LIFE
        assert refused.value.detail.startswith("nothing was paid")
        assert "lost its ledger" in refused.value.detail
    assert channel.provider_balance == 0 and channel.free == 10 * PRICE


def test_a_write_off_whose_ledger_change_lost_the_race_is_written_off_again(
        setup: Setup) -> None:
    """Review 4, finding 4: the host reports a pool channel never opened; its change loses
    the compare-and-set to another replica's, so the host loads that ledger and runs the
    change again. The machine is already closed here by the first run: the second run still
    gives the deposit back (once, on the winner's ledger), not ``channel_used``."""
    s = setup
    alice = funded(s, 10 * PRICE)
    terms = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, 4 * PRICE, s.vault.salt())
    cid = terms.channel_id(DOMAIN)
    approval = s.vault.approve_pool_channel(call(s.vault, alice), terms, lock_timeout=10.0,
                                           now=NOW)
    stored = s.vault.export_ledger()
    replica = VaultEnclaveCode.start(s.platform.restore(CODE, s.enclave.export_sealed()),
                                     domain=DOMAIN, network=NETWORK, token=TOKEN)
    replica.restore_ledger(stored)
    other = pool_terms(s, Account.create())  # the replica's change, stored first
    replica.approve_wallet_channel(other, lock_timeout=10.0, now=NOW)
    theirs = replica.export_ledger()
    assert s.vault.open_failed(cid, now=approval.deadline + 1) == 4 * PRICE  # lost: not stored
    s.vault.restore_ledger(theirs)
    assert s.vault.open_failed(cid, now=approval.deadline + 1) == 4 * PRICE  # run again
    assert s.vault.approved_until(other.channel_id(DOMAIN)) == NOW + 300  # theirs is kept
    assert s.vault.open_failed(cid, now=approval.deadline + 2) == 0  # and only once
    channel = s.vault.channel(cid)
    assert channel is not None and channel.status is Status.CLOSED


def test_a_legacy_ledger_gets_a_life_and_exactly_what_restore_ledger_says(
        setup: Setup) -> None:
    """Review 4, finding 8: a ledger sealed by earlier code (no version, freshness, clock,
    wall, approval deadlines or life) restores as the docstring says: a life is drawn then
    and the ledger counts as changed (to be stored first); from then on salts carry its MAC
    (a salt nobody issued is refused), and the legacy record of a channel the ledger
    approved restores, with no approval deadline."""
    s = setup
    alice = Account.create()
    terms = ChannelTerms(alice.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, 10 * PRICE, s.vault.salt())
    s.vault.approve_wallet_channel(terms, lock_timeout=10.0, now=NOW)
    cid = terms.channel_id(DOMAIN)
    code = s.vault._code
    ledger = json.loads(code._kernel.unseal("a402/vault-ledger", s.vault.export_ledger()))
    for gone in ("version", "newest", "clock", "wall", "life"):
        del ledger[gone]
    ledger["channels"] = {k: e[:5] for k, e in ledger["channels"].items()}
    legacy = code._kernel.seal("a402/vault-ledger", json.dumps(ledger).encode())
    label = f"a402/vault-channel/{cid.hex()}"
    record = json_record(code, label, s.vault.channel(cid).snapshot())  # type: ignore[union-attr]
    del record["life"]
    legacy_record = code._kernel.seal(label, json.dumps(record).encode())

    again = VaultEnclaveCode.start(s.platform.restore(CODE, s.enclave.export_sealed()),
                                   domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(legacy)
    assert again.ledger_unsaved and again.ledger_version == 1  # the new life, to be stored
    assert again.life_id not in (s.vault.life_id, life_id(b""))
    assert again.approved_until(cid) == 0
    restored = again.restore(cid, legacy_record)
    assert restored.status is Status.OPEN and restored.owner == address_key(alice.address)
    unissued = ChannelTerms(alice.address, again.address, s.provider.address,
                            s.schnorr.public_key, 10 * PRICE, os.urandom(32))
    with pytest.raises(EnclaveError, match="not_this_life"):
        again.approve_wallet_channel(unissued, lock_timeout=10.0, now=NOW)
    issued = ChannelTerms(alice.address, again.address, s.provider.address,
                          s.schnorr.public_key, 10 * PRICE, again.salt())
    again.approve_wallet_channel(issued, lock_timeout=10.0, now=NOW)
    # The stored ledger (with its life) restores as is: no new life, nothing changed.
    twin = VaultEnclaveCode.start(s.platform.restore(CODE, s.enclave.export_sealed()),
                                  domain=DOMAIN, network=NETWORK, token=TOKEN)
    twin.restore_ledger(again.export_ledger())
    assert twin.life_id == again.life_id and not twin.ledger_unsaved


def test_a_key_paid_with_one_created_at_pays_nothing_with_another_while_its_record_lasts(
        setup: Setup) -> None:
    """Review s8-rev1, F2: a retry of idempotency key "order-42" from a new process that
    lost the first ``createdAt`` signs another; a hostile host plays both signatures, on two
    pool channels, and after a restart that restores the paying channel from its record.
    The key pays once: the second creation time is refused ``replayed_call``, whose message
    says the key was paid (never "nothing was paid")."""
    s = setup
    alice = funded(s)
    first, second = pool_channel(s, alice), pool_channel(s, alice)
    created = clock()
    attempt = call(s.vault, alice, key="order-42", created=created)
    retry = call(s.vault, alice, key="order-42", created=created + 5)
    pay(s, first, provider_side(s, first), attempt)
    channel = s.vault.channel(second.channel_id(DOMAIN))
    assert channel is not None
    with pytest.raises(EnclaveError, match="replayed_call") as refused:
        channel.request(retry, PRICE, now=clock())
    assert "paid already" in refused.value.detail and "nothing was paid" not in str(
        refused.value)
    with pytest.raises(EnclaveError, match="replayed_call"):  # nor a channel opened for it
        s.vault.approve_pool_channel(retry, pool_terms(s, alice), lock_timeout=10.0, now=NOW)
    # After a restart the record of the paying channel brings the key's creation time back.
    records = {t.channel_id(DOMAIN): stored(s.vault.channel(t.channel_id(DOMAIN)))  # type: ignore[arg-type]
               for t in (first, second)}
    ledger = s.vault.export_ledger()
    again = VaultEnclaveCode.start(s.platform.restore(CODE, s.enclave.export_sealed()),
                                   domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(ledger)
    for cid, (record, log) in records.items():
        again.restore(cid, record, log)
    channel = again.channel(second.channel_id(DOMAIN))
    assert channel is not None
    with pytest.raises(EnclaveError, match="replayed_call"):
        channel.request(retry, PRICE, now=clock())
    paid = [again.channel(t.channel_id(DOMAIN)).provider_balance  # type: ignore[union-attr]
            for t in (first, second)]
    assert paid == [PRICE, 0]


def test_a_key_in_flight_on_one_channel_is_not_paid_with_another_created_at_elsewhere(
        setup: Setup) -> None:
    """F2, before σ_U: the key's first creation time is in flight on channel A (LOCKED);
    the host plays a second creation time of the same key on B: refused until A gives the
    call up; then the second may pay, once, and the key is spent."""
    s = setup
    alice = funded(s)
    a, b = pool_channel(s, alice), pool_channel(s, alice)
    created = clock()
    attempt = call(s.vault, alice, key="order-43", created=created)
    retry = call(s.vault, alice, key="order-43", created=created + 3)
    channel_a, channel_b = (s.vault.channel(t.channel_id(DOMAIN)) for t in (a, b))
    assert channel_a is not None and channel_b is not None
    channel_a.request(attempt, PRICE, now=clock())
    with pytest.raises(EnclaveError, match="replayed_call"):
        channel_b.request(retry, PRICE, now=clock())
    channel_a.abandon()  # nothing authorised: the key may pay once
    pay(s, b, provider_side(s, b), retry)
    with pytest.raises(EnclaveError, match="replayed_call"):
        channel_a.request(attempt, PRICE, now=clock())
    assert (channel_a.provider_balance, channel_b.provider_balance) == (0, PRICE)


def test_a_retry_signed_on_a_clock_a_little_behind_its_created_at_is_paid(
        setup: Setup) -> None:
    """Review s8-rev1, F6: the first attempt ran on machine A; the retry is signed on B,
    whose clock is 5 s behind, with A's ``createdAt``: paid (a createdAt up to a window
    after the signature is accepted). One more than a window is refused with its own,
    retryable reason (``created_after_signature``), nothing paid."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    now = clock()
    late = call(s.vault, alice, key="order-7", ts=now, created=now + 5)
    pay(s, terms, provider_side(s, terms), late)
    other = pool_channel(s, alice)
    channel = s.vault.channel(other.channel_id(DOMAIN))
    assert channel is not None
    too_late = call(s.vault, alice, key="order-8", ts=now,
                    created=now + api.DEFAULT_AUTH_WINDOW + 1)
    with pytest.raises(EnclaveError, match=api.CREATED_AFTER_SIGNATURE):
        channel.request(too_late, PRICE, now=now)
    assert channel.provider_balance == 0 and channel.pending_request() is None
    paid = s.vault.channel(terms.channel_id(DOMAIN))
    assert paid is not None and paid.provider_balance == PRICE


def test_a_channel_whose_approving_ledger_change_was_never_stored_is_not_adopted(
        setup: Setup) -> None:
    """Review s8-rev1, F5: the host writes a new pool channel's sealed record inside the
    ledger change, before the ledger is stored; it crashes in between. The restarted
    enclave's ledger never approved the channel: its record is refused (``not_approved``),
    so the enclave neither runs it (no σ_U) nor writes it off; no approval of it ever left
    the vault (the ledger is stored first), so it cannot open on-chain either."""
    s = setup
    alice = funded(s)
    stored = s.vault.export_ledger()  # the ledger row, before the approval
    terms = pool_terms(s, alice)
    approval = s.vault.approve_pool_channel(call(s.vault, alice), terms, lock_timeout=10.0,
                                           now=NOW)
    cid = terms.channel_id(DOMAIN)
    record = s.vault.channel(cid).snapshot()  # type: ignore[union-attr]
    # -- the host dies here, before it stores the ledger --
    again = VaultEnclaveCode.start(s.platform.restore(CODE, s.enclave.export_sealed()),
                                   domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(stored)
    assert again.approved_until(cid) == 0
    with pytest.raises(EnclaveError, match="not_approved"):
        again.restore(cid, record)
    assert again.channel(cid) is None and again.missing(alice.address) == []
    assert again.open_failed(cid, now=approval.deadline + 1) == 0  # nothing to write off


def _restarted(s: Setup) -> VaultEnclaveCode:
    again = VaultEnclaveCode.start(s.platform.restore(CODE, s.enclave.export_sealed()),
                                   domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(s.vault.export_ledger())
    return again


def test_a_channels_record_stays_the_same_size_however_many_calls_it_paid(
        setup: Setup) -> None:
    """Each paid call adds one entry to the channel's log (stored next to the record, in
    the same transaction); the sealed record itself does not grow with the calls."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice, deposit=40 * PRICE)
    provider = provider_side(s, terms)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    sizes, per_call = [], []
    for i in range(30):
        pay(s, terms, provider, call(s.vault, alice, key=f"order-{i}"))
        record, entries = channel.checkpoint()
        sizes.append(len(record))
        per_call.append([e.seq for e in entries])
    assert per_call == [[i] for i in range(30)]  # one entry per paid call, taken once
    assert max(sizes) - min(sizes) <= 8  # (a version number's digits, not the calls)
    assert channel.provider_balance == 30 * PRICE


def test_after_a_restart_no_call_a_channel_paid_pays_again(setup: Setup) -> None:
    """N calls paid, each checkpoint stored as a host does (record + new log entries), the
    code restarted: every one of the N calls, replayed, is refused; a new one pays."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice, deposit=40 * PRICE)
    provider = provider_side(s, terms)
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    calls = [call(s.vault, alice, key=f"order-{i}") for i in range(12)]
    record, log = stored(channel)
    for c in calls:
        pay(s, terms, provider, c)
        record, log = stored(channel, log)
    again = _restarted(s)
    restored = again.restore(cid, record, log)
    for c in calls:
        with pytest.raises(EnclaveError, match="replayed_call"):
            restored.request(c, PRICE, now=clock())
    assert restored.provider_balance == 12 * PRICE and restored.pending_request() is None
    restored.request(call(again, alice, key="order-new"), PRICE, now=clock())
    assert restored.locked == PRICE


def test_a_host_that_leaves_out_or_alters_an_entry_of_the_log_gets_no_channel(
        setup: Setup) -> None:
    """The sealed record names its log's last entry, and each entry the one before: a
    host that withholds an entry (to have that call paid again), changes one, or hands
    another channel's log gets the record refused (``log_incomplete``), not a replay."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice, deposit=40 * PRICE)
    other = pool_channel(s, alice, deposit=40 * PRICE)
    provider = provider_side(s, terms)
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    for i in range(5):
        pay(s, terms, provider, call(s.vault, alice, key=f"order-{i}"))
    pay(s, other, provider_side(s, other), call(s.vault, alice, key="elsewhere"))
    record, log = stored(channel)
    _, other_log = stored(s.vault.channel(other.channel_id(DOMAIN)))  # type: ignore[arg-type]
    entry = json.loads(log[2])
    entry["createdAt"] -= 1
    altered = {**log, 2: json.dumps(entry).encode()}
    without = {k: v for k, v in log.items() if k != 2}
    for bad in (without, altered, {}, other_log, {**log, 4: other_log[0]}):
        again = _restarted(s)
        with pytest.raises(EnclaveError, match="log_incomplete"):
            again.restore(cid, record, bad)
        assert again.channel(cid) is None
        assert cid in again.missing(alice.address)  # its client's calls wait for it
    assert _restarted(s).restore(cid, record, log).provider_balance == 5 * PRICE


def test_a_record_sealed_by_earlier_code_brings_its_paid_calls_into_the_log(
        setup: Setup) -> None:
    """A record of the earlier format lists its consumed calls itself: restored, they stay
    paid, and they become log entries the host stores with the next checkpoint, after
    which the new record (with its log) keeps them paid across another restart."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice, deposit=40 * PRICE)
    provider = provider_side(s, terms)
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    calls = [call(s.vault, alice, key=f"order-{i}") for i in range(3)]
    for c in calls:
        pay(s, terms, provider, c)
    code = s.vault._code
    label = f"a402/vault-channel/{cid.hex()}"
    record = json_record(code, label, channel.snapshot())
    record["format"] = "a402/vault-enclave-channel/v1"
    del record["log"]
    record["consumed"] = [[address_key(alice.address), f"call:{c_at}:order-{i}", c_at]
                          for i, c_at in enumerate(
                              json.loads(c.body)["createdAt"] for c in calls)]
    legacy = code._kernel.seal(label, json.dumps(record).encode())
    again = _restarted(s)
    restored = again.restore(cid, legacy)
    for c in calls:
        with pytest.raises(EnclaveError, match="replayed_call"):
            restored.request(c, PRICE, now=clock())
    new_record, log = stored(restored)
    assert sorted(log) == [0, 1, 2]
    with pytest.raises(EnclaveError, match="log_incomplete"):
        _restarted(s).restore(cid, new_record)
    third = _restarted(s).restore(cid, new_record, log)
    for c in calls:
        with pytest.raises(EnclaveError, match="replayed_call"):
            third.request(c, PRICE, now=clock())
    assert third.provider_balance == 3 * PRICE


def test_a_call_the_api_authenticated_is_recovered_once_and_only_as_signed(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's API check runs in the enclave (``authenticate``), which keeps what it
    recovered: the same call, paying, needs no second recovery. The same headers over
    another body (or another path) are recovered anew, and refused."""
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    recoveries = []
    verify = api.verify_request

    def counted(*args: Any, **kwargs: Any) -> api.Authenticated:
        recoveries.append(args[3:5])
        return verify(*args, **kwargs)

    monkeypatch.setattr(api, "verify_request", counted)
    one = call(s.vault, alice, key="order-1")
    signed = s.vault.authenticate(one, now=clock(), window=api.DEFAULT_AUTH_WINDOW)
    assert address_key(signed.client) == address_key(alice.address)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    channel.request(one, PRICE, now=clock())
    assert len(recoveries) == 1
    channel.abandon()
    body = json.loads(one.body)
    body["maxPrice"] = str(10 * PRICE)
    forged = SignedCall(one.headers, one.method, one.path, json.dumps(body).encode())
    with pytest.raises(EnclaveError, match="bad_signature"):
        channel.request(forged, PRICE, now=clock())
    assert len(recoveries) == 2 and channel.locked == 0
    with pytest.raises(api.AuthError, match="stale_request"):  # the API's own window
        s.vault.authenticate(one, now=clock() + 10 * api.DEFAULT_AUTH_WINDOW,
                             window=api.DEFAULT_AUTH_WINDOW)
