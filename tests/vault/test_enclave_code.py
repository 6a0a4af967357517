"""The vault enclave's code against a hostile host (no chain: the signatures themselves).

The host here holds everything a vault host has — the :class:`SimulatedEnclave`
object, the :class:`VaultEnclave` boundary, every sealed blob, every signed call
it ever received — but not the kernel or the sealing keys. Each test tries to
make the enclave sign something the protocol would not, and checks it does not.
(:mod:`tests.vault.test_host_cannot_move_money` does the same on anvil, with
balances.)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
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
)
from a402.asc.errors import ASCError
from a402.crypto import EVM, EcdsaSigner, PaymentDomain
from a402.crypto.authorization import recover_signer
from a402.evm.address import address_key
from a402.exact.eip3009 import Eip712Domain
from a402.tee import Enclave, EnclaveError, SealingError, SimulatedPlatform
from a402.vault_enclave import (
    FORCE_CLOSE_LIFETIME,
    INVOKE_PATH,
    OPEN_APPROVAL_LIFETIME,
    WITHDRAW_PATH,
    ChannelsNeeded,
    SignedCall,
    VaultEnclave,
    VaultEnclaveCode,
    paid_request,
)
from a402.wire import vault_api as api

CODE = hashlib.sha384(b"a402 vault enclave code tests").digest()
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


@pytest.fixture
def setup() -> Setup:
    platform = SimulatedPlatform.generate()
    enclave = platform.launch(CODE)
    vault = VaultEnclaveCode.start(enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    return Setup(platform, enclave, vault, EcdsaSigner(os.urandom(32)), EVM.generate_key())


def signed(vault: VaultEnclave, client: LocalAccount, body: dict[str, Any], *,
           path: str = INVOKE_PATH, ts: float | None = None) -> SignedCall:
    raw = json.dumps(body).encode()
    headers = api.sign_request(client, vault.account, "POST", path, raw, now=ts)
    return SignedCall.of(headers, "POST", path, raw)


def call(vault: VaultEnclave, client: LocalAccount, *, max_price: int = PRICE,
         key: str = "k1", ts: float | None = None) -> SignedCall:
    invoke = api.InvokeRequest(url="https://api.example/weather", method="GET", headers=(),
                               body=b"", max_price=max_price, idempotency_key=key)
    return signed(vault, client, invoke.to_json(), ts=ts)


def pool_channel(s: Setup, client: LocalAccount, deposit: int = 10 * PRICE) -> ChannelTerms:
    terms = ChannelTerms(s.vault.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, deposit, os.urandom(32))
    s.vault.approve_pool_channel(client.address, terms, lock_timeout=10.0, now=NOW)
    return terms


def provider_side(s: Setup, terms: ChannelTerms) -> ProviderChannel:
    return ProviderChannel(terms, DOMAIN, s.provider, s.schnorr, ack_timeout=30.0,
                           lock_timeout=5.0)


def funded(s: Setup, amount: int = 100 * PRICE) -> LocalAccount:
    client = Account.create()
    s.vault.credit_deposit(f"0x{os.urandom(32).hex()}:0", client.address, amount)
    return client


def pay(s: Setup, terms: ChannelTerms, provider: ProviderChannel, signed_call: SignedCall,
        now: float = 0.0) -> Auth:
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
            channel.request(wrong, PRICE, now=0)
        assert refused.value.reason == "not_your_channel"
    good = call(s.vault, alice)
    # a tampered body, another path, a missing signature
    forged = SignedCall(good.headers, "POST", INVOKE_PATH, good.body.replace(b"1000", b"9000"))
    with pytest.raises(EnclaveError, match="bad_signature"):
        channel.request(forged, PRICE, now=0)
    with pytest.raises(EnclaveError, match="wrong_call"):
        channel.request(SignedCall(good.headers, "POST", WITHDRAW_PATH, good.body), PRICE, now=0)
    with pytest.raises(EnclaveError, match="unauthenticated"):
        channel.request(SignedCall({}, "POST", INVOKE_PATH, good.body), PRICE, now=0)
    # signed for another vault (another account string)
    other = api.sign_request(alice, "eip155:1:0x" + "11" * 20, "POST", INVOKE_PATH, good.body)
    with pytest.raises(EnclaveError, match="bad_signature"):
        channel.request(SignedCall.of(other, "POST", INVOKE_PATH, good.body), PRICE, now=0)
    # more than the client's maximum
    with pytest.raises(EnclaveError, match="price_above_maximum"):
        channel.request(good, PRICE + 1, now=0)
    assert channel.status is Status.OPEN and channel.free == terms.deposit
    # the good call pays: the request is the one the call names
    exec_ = channel.request(good, PRICE, now=0)
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
            channel.request(one, PRICE, now=1)
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
    channel.request(one, PRICE, now=0)
    with pytest.raises(EnclaveError, match="replayed_call"):  # in flight on the first
        elsewhere.request(one, PRICE, now=0)
    channel.abandon()  # nothing was authorised
    provider = provider_side(s, other)
    pay(s, other, provider, one, now=1)
    with pytest.raises(EnclaveError, match="replayed_call"):
        channel.request(one, PRICE, now=2)


def test_a_host_cannot_get_sigma_u_for_a_request_no_call_started(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    provider = provider_side(s, terms)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    exec_ = channel.request(call(s.vault, alice), PRICE, now=0)
    provider.receive(exec_, now=0)
    reply = provider.reply(exec_.request_id, b"result")
    channel.abandon()
    with pytest.raises(ASCError):  # the machine refuses a REPLY nobody waits for
        channel.receive(reply, now=0)
    assert channel.pending_auth() is None


def test_after_a_restart_a_clients_calls_wait_for_its_channels(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    one = call(s.vault, alice)
    pay(s, terms, provider_side(s, terms), one)
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    record, ledger = channel.snapshot(), s.vault.export_ledger()
    # the host restarts the code and "forgets" the channel that consumed the nonce
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    with pytest.raises(EnclaveError, match="restarted"):  # the old code signs nothing more
        s.vault.permit("0x" + MANAGER.hex(), 1, 0, 2**63)
    again.restore_ledger(ledger)
    fresh = pool_channel(Setup(s.platform, s.enclave, again, s.provider, s.schnorr), alice)
    replay = again.channel(fresh.channel_id(DOMAIN))
    assert replay is not None
    with pytest.raises(ChannelsNeeded) as needed:
        replay.request(one, PRICE, now=0)
    assert needed.value.channel_ids == [cid]
    again.restore(cid, record)
    with pytest.raises(EnclaveError, match="replayed_call"):
        replay.request(one, PRICE, now=0)


def test_old_calls_are_refused_so_the_replay_set_stays_bounded(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    pay(s, terms, provider_side(s, terms), call(s.vault, alice, ts=10_000))
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    with pytest.raises(EnclaveError, match="stale_call"):
        channel.request(call(s.vault, alice, key="old", ts=10_000 - 121), PRICE, now=1)


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


def test_no_pool_channel_beyond_the_clients_balance(setup: Setup) -> None:
    s = setup
    alice = funded(s, 5 * PRICE)
    pool_channel(s, alice, deposit=3 * PRICE)
    with pytest.raises(EnclaveError, match="insufficient_balance"):
        pool_channel(s, alice, deposit=3 * PRICE)
    assert s.vault.balance(alice.address) == 2 * PRICE
    foreign = ChannelTerms(s.vault.address, "0x" + "22" * 20, s.provider.address,
                           s.schnorr.public_key, PRICE, os.urandom(32))
    with pytest.raises(EnclaveError, match="not_our_channel"):
        s.vault.approve_pool_channel(alice.address, foreign, lock_timeout=10.0, now=NOW)


def test_deposits_count_once_and_refunds_at_most_the_signed_state(setup: Setup) -> None:
    s = setup
    alice = Account.create()
    assert s.vault.credit_deposit("0xabc:1", alice.address, 5_000)
    assert not s.vault.credit_deposit("0xabc:1", alice.address, 5_000)
    terms = pool_channel(s, alice, deposit=4_000)
    pay(s, terms, provider_side(s, terms), call(s.vault, alice))
    cid = terms.channel_id(DOMAIN)
    assert s.vault.settled(cid, 4_000) == 3_000  # the host claims the whole deposit back
    assert s.vault.settled(cid, 3_000) == 0  # once
    assert s.vault.balance(alice.address) == 1_000 + 3_000


def test_withdrawals_only_as_signed_and_within_the_balance(setup: Setup) -> None:
    s = setup
    alice, bob = funded(s, 5_000), funded(s, 5_000)
    too_much = signed(s.vault, alice, {"amount": "5001", "idempotencyKey": "w"},
                      path=WITHDRAW_PATH)
    with pytest.raises(EnclaveError, match="insufficient_balance"):
        s.vault.withdraw(too_much, now=0)
    ok = signed(s.vault, alice, {"amount": "3000", "idempotencyKey": "w"}, path=WITHDRAW_PATH)
    first = s.vault.withdraw(ok, now=0)
    again = s.vault.withdraw(ok, now=100)  # the host asks again: the same transfer
    assert (first.nonce, first.value, first.to) == (again.nonce, 3000, address_key(alice.address))
    assert s.vault.balance(alice.address) == 2_000 and s.vault.balance(bob.address) == 5_000
    changed = signed(s.vault, alice, {"amount": "1000", "idempotencyKey": "w"},
                     path=WITHDRAW_PATH)
    with pytest.raises(EnclaveError, match="idempotency_key_reused"):
        s.vault.withdraw(changed, now=0)
    # the host relabels alice's call as bob's, or as an invoke: the signature fails
    relabelled = SignedCall({**ok.headers, api.CLIENT_HEADER: bob.address}, ok.method, ok.path,
                            ok.body)
    with pytest.raises(EnclaveError, match="bad_signature"):
        s.vault.withdraw(relabelled, now=0)
    with pytest.raises(EnclaveError, match="wrong_call"):
        s.vault.withdraw(SignedCall(ok.headers, "POST", INVOKE_PATH, ok.body), now=0)


def test_a_permit_only_to_the_manager(setup: Setup) -> None:
    s = setup
    with pytest.raises(EnclaveError, match="spender_not_allowed"):
        s.vault.permit("0x" + "33" * 20, 2**256 - 1, 0, 2**63)
    assert len(s.vault.permit("0x" + MANAGER.hex(), 2**256 - 1, 0, 2**63)) == 65


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


def test_an_open_approval_lapses_and_a_pool_debit_comes_back_only_after_it_has(
    setup: Setup,
) -> None:
    """Review F1/F2: a failed open's approval stays usable until its deadline, so the debit
    may come back only after it (the host's word that the chain shows the id unopened is
    not enough before), and a channel whose debit came back is never approved again."""
    s = setup
    alice = funded(s, 10 * PRICE)
    terms = ChannelTerms(s.vault.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, 4 * PRICE, os.urandom(32))
    cid = terms.channel_id(DOMAIN)
    approval = s.vault.approve_pool_channel(alice.address, terms, lock_timeout=10.0, now=NOW)
    assert approval.deadline == NOW + OPEN_APPROVAL_LIFETIME == s.vault.approved_until(cid)
    assert recover_signer(open_approval_digest(DOMAIN, cid, approval.deadline),
                          approval.signature) == s.vault.address
    assert approval.calldata == approval.signature + approval.deadline.to_bytes(32, "big")
    assert s.vault.balance(alice.address) == 6 * PRICE
    # Asked again (a retry): a fresh deadline, the deposit debited once.
    again = s.vault.approve_pool_channel(alice.address, terms, lock_timeout=10.0, now=NOW + 10)
    assert again.deadline == NOW + 10 + OPEN_APPROVAL_LIFETIME == s.vault.approved_until(cid)
    assert s.vault.balance(alice.address) == 6 * PRICE
    # Up to the last approval's deadline, nothing comes back, whatever the host says.
    assert s.vault.open_failed(cid, now=again.deadline) == 0
    assert s.vault.balance(alice.address) == 6 * PRICE
    # Past it, once.
    assert s.vault.open_failed(cid, now=again.deadline + 1) == 4 * PRICE
    assert s.vault.open_failed(cid, now=again.deadline + 2) == 0
    assert s.vault.balance(alice.address) == 10 * PRICE
    with pytest.raises(EnclaveError, match="written_off"):
        s.vault.approve_pool_channel(alice.address, terms, lock_timeout=10.0, now=NOW + 1_000)
    assert s.vault.balance(alice.address) == 10 * PRICE


def test_the_enclaves_clock_never_goes_back(setup: Setup) -> None:
    """A host that once reported a later time cannot then date an approval earlier (and so
    get its debit back sooner): deadlines follow the latest time it ever reported."""
    s = setup
    alice = funded(s, 10 * PRICE)
    first = ChannelTerms(s.vault.address, s.vault.address, s.provider.address,
                         s.schnorr.public_key, PRICE, os.urandom(32))
    s.vault.approve_pool_channel(alice.address, first, lock_timeout=10.0, now=NOW + 5_000)
    second = ChannelTerms(s.vault.address, s.vault.address, s.provider.address,
                          s.schnorr.public_key, PRICE, os.urandom(32))
    approval = s.vault.approve_pool_channel(alice.address, second, lock_timeout=10.0, now=NOW)
    assert approval.deadline == NOW + 5_000 + OPEN_APPROVAL_LIFETIME
    assert s.vault.open_failed(second.channel_id(DOMAIN), now=NOW) == 0


def test_the_machine_signs_only_its_own_states(setup: Setup) -> None:
    s = setup
    alice = funded(s)
    terms = pool_channel(s, alice)
    provider = provider_side(s, terms)
    channel = s.vault.channel(terms.channel_id(DOMAIN))
    assert channel is not None
    exec_ = channel.request(call(s.vault, alice), PRICE, now=0)
    provider.receive(exec_, now=0)
    (auth,) = channel.receive(provider.reply(exec_.request_id, b"r"), now=0).send
    reveal = provider.receive(auth, now=0).send[0]
    greedy = type(reveal)(reveal.channel_id, reveal.request_id, reveal.adaptor_secret,
                          reveal.state.pay(reveal.state.client_balance, reveal.state.version),
                          reveal.signature)
    with pytest.raises(Exception) as refused:
        channel.receive(greedy, now=0)
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
    first = call(s.vault, alice, key="first", ts=10_000)
    pay(s, terms, provider, first)
    ledger = s.vault.export_ledger()  # an older ledger: it knows only the first call
    pay(s, terms, provider, call(s.vault, alice, key="later", ts=10_200))
    cid = terms.channel_id(DOMAIN)
    channel = s.vault.channel(cid)
    assert channel is not None
    record = channel.snapshot()  # "first" is pruned from it: older than 10 200 − 2 × 60
    again = VaultEnclaveCode.start(s.enclave, domain=DOMAIN, network=NETWORK, token=TOKEN)
    again.restore_ledger(ledger)
    restored = again.restore(cid, record)
    with pytest.raises(EnclaveError, match="stale_call"):
        restored.request(first, PRICE, now=0)
