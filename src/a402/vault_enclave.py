"""The vault enclave's code: the key that moves the vault's money, and what it checks first.

The vault's attested key is the vault: its Ethereum address is every channel's
``vault``, the vault its clients pool with on-chain (``ASCManager.pooled[vault]``),
and the signer of σ_U, channel states, closes, opening approvals and force-close
orders. It holds no tokens and signs no transfer.
It lives in the enclave, and this code (started with
:meth:`VaultEnclaveCode.start`, which hands it the
:class:`~a402.tee.EnclaveKernel`) is the only thing that asks it to sign. The
host's own Ethereum account pays gas and nothing else. The host gets a
:class:`VaultEnclave` and, per channel, an :class:`EnclaveChannel`: the sans-IO
surface of :class:`~a402.asc.VaultChannel`, forwarded into the machine that
runs here.

What each signature requires (the safety argument):

* **σ_U** — only by a channel's own machine, for the REPLY it verified, and only
  for a request bound to a call the *client* signed (:class:`SignedCall`: the
  vault API's headers, method, path and body, verified here against this
  enclave's own CAIP-10 account). The call's ``maxPrice`` must cover the
  amount, the channel must be the signer's (the enclave records each channel's
  owner when it approves it: the channel's on-chain client), and the paid
  request is the one the call names (built here from the
  call). Each ``(client, idempotency key, createdAt)`` pays at most once, and
  while that record lasts the same key with another ``createdAt`` pays nothing
  (``replayed_call``: a retry from a process that lost the first creation time
  signs a new one; see :attr:`VaultEnclaveCode._paid_keys`), nor does it while the
  key is in flight on another channel. A ``createdAt`` up to a window after the
  signature's timestamp is accepted (a retry signed on a clock a little behind),
  whichever of the client's signatures carries it (a client signs every retry
  and the wallet 428 round anew, with a later timestamp, but keeps the call's
  creation time, so keying on the signature's nonce or timestamp would let a
  host keep two signatures of one call and pay both): it is consumed when σ_U
  is signed; a request given up before σ_U (refused, expired, abandoned)
  leaves it unused, so a retry of the same call may pay once. The record of
  consumed calls is pruned by creation time, ``slack`` (the approval lifetime
  plus two windows) behind the client's horizon (its newest call minus twice
  the window), and a call *created* before the horizon is refused
  (``stale_call``), so no pruned call can pay again, however late the host
  plays a retry's signature; only the call a pool channel was approved for
  (checked fresh then) may come that much later, on that channel, so a slow
  open does not make it stale after its deposit was escrowed. A call without
  ``createdAt`` (an older client) is refused (``client_outdated``). A call is
  also refused if signed more than twice the auth window before the enclave's
  wall (the host's ``now`` as verified calls vouch for it: a call the host
  withheld cannot be paid days later), or more than a window after ``now``;
  and a client's calls signed before its horizon too. Consumed keys are kept
  in the logs of the channels that consumed them (one entry per σ_U, hash-chained,
  the chain's head in the channel's sealed record: see *Persistence*), each client's
  newest timestamp in the ledger too, and a client's calls are refused until
  every channel of that client that may hold one is loaded
  (:class:`ChannelsNeeded`). Every call must name this enclave's life
  (:func:`life_id`, signed into the call's text): a call signed for another
  life is refused (``wrong_life``), so a new life — which has no record of
  what an earlier one paid — pays none of the earlier life's calls. σ_U
  also needs the channel's provider key to have been seen here as the
  attested key of a tunnel's peer (see *Tunnel binding*), and a channel the
  ledger has as refunded or settled gets none.
* **Mandates** — a client bound to an owner's mandate gets no request sent (so no
  σ_U) outside it: :meth:`VaultEnclaveCode._mandate` asks the sealed
  :class:`~a402.mandate.enclave.MandateBook` (owner's signature, agent = the
  call's signer, cap, payees, origins, validity, schemes, networks, assets and the
  budget, reserved before EXEC and spent with σ_U), whose docstring states what the
  host can still do (withhold a revocation, within its bounds).
* **Channel states, closes** — only the machine's own: the state after a REVEAL
  whose ``t·G = T`` (paying exactly the charge δ' of the REPLY it authorised, which
  the machine refused unless ``δ' ≤ δ``, the amount the call's ``maxPrice`` and the
  mandate were checked against; a metered route's unused δ − δ' goes back to the
  mandate's budget), and the final state with
  the latest balances.
* **Opening approvals** (the contract's ``A402Open(channelId, deadline)`` for a
  wallet channel, whose client consents on-chain herself, and
  ``A402PoolOpen(channelId, deadline)`` for a pool channel; the contract takes
  neither for the other) — only for terms whose ``vault`` is this enclave; a
  pool-funded channel (``createASCFromPool``, debiting ``pooled[vault][client]``
  on-chain) only for a fresh, unpaid invoke call its client signed (asking for
  pool funding), with that client as the terms' ``client``, at most one channel
  per call and a deposit within what the call allows (:func:`pool_deposit_cap`),
  and never approved again once the host reported it never opened. Each approval lapses
  ``OPEN_APPROVAL_LIFETIME`` seconds after the enclave's clock, and a pool
  channel is written off (:meth:`VaultEnclaveCode.open_failed`) only once that
  clock is past the latest deadline signed for it.
* **No balances, no withdrawals, no permit.** The pool's balances are the
  contract's (``ASCManager.pooled``): created only by tokens arriving, taken out
  only by the client itself (its transaction or its signed order), moved into
  a channel only by this enclave's approval, and back out of it only by the
  channel's signed states. So this code keeps no balance book: nothing the host
  reports (a deposit it invented, a refund) is credited anywhere it could be
  spent, and the contract, not this code, bounds what a pool channel can take
  (a deposit beyond the client's pooled balance does not open).
* **Tunnel binding** (OPEN) — only for a channel held here, over a tunnel whose
  peer, as the enclave verified it in the Noise handshake
  (:meth:`~a402.tee.EnclaveKernel.channel_peer`, not anything the host says),
  is an attested enclave holding the channel's ``providerKey``. That is what
  makes the provider key an enclave's, so that a REPLY's pre-signature comes
  from code that computed the result.
* **Force-close order** — only for the machine's latest co-signed state, as
  ``A402ForceClose(channelId, version, deadline)``, lapsing
  ``FORCE_CLOSE_LIFETIME`` seconds after the enclave's clock.

The enclave's clock is the chain time the host reports with each approval,
order and report of a failed open, kept monotonic (it never goes back, and it
is sealed with the ledger). A host that reports a time too early only makes
its approvals lapse sooner (its opens fail). One that reports a time too late
can have a pool debit given back while the approval is in fact still good,
but only for approvals already signed (every later one is dated from the
later clock), and that costs liquidity, not money: if the channel then opens,
the enclave no longer serves it (no σ_U, no state), and its deposit comes
back whole to the client's pool balance (``pooled[vault][client]``, on-chain)
through the opening-state force close.

Tunnel frames are encrypted and decrypted by the host (the code is started
with ``host_tunnels=True``). That moves no money: every message that can — σ_U,
states, the ACK — is signed here from state this code checked, so the host
reading or writing tunnel plaintext can only drop, delay or garble frames
(which the provider's timeouts and the contract's dispute paths cover), and it
sees ``t`` and the sealed result, which it must deliver to the client anyway.
That holds for the EXEC too, although the host could put another request in it
(same channel, request id and price): the payment message ``m`` commits to
``answer_hash(request, H(result))``, and the channel's machine here rebuilds it
from the request *this code* sent (built from the client's signed call), so the
provider's pre-signature over the answer to a substituted request does not
pre-verify, and no σ_U is signed for it (``bad_presignature``; the machine's
:meth:`~a402.asc.VaultChannel._on_reply`). A garbled EXEC is a dropped one.

Persistence. Everything leaves sealed under the code's own key (the host's
``unseal`` cannot open it), but the entries of the channels' logs (below, bound by a
digest chain to a sealed record instead): each channel's record (its machine, owner, the
signed call in flight, the length and head digest of its log of consumed calls,
and the high-water timestamp that prunes that log), and the ledger (the channels
it approved and their owners, per-client freshness, the clock, the life, and a
version that grows with every change). The host stores the ledger before anything
the enclave approved leaves the vault, by compare-and-set on that version
(:mod:`a402.vault.ledger`: replicas sharing the database serialize their ledger
changes on it), and hands a running
enclave a newer one when another replica stored it; an older one is refused. A
channel's record goes with the host's checkpoint of that channel, before its next
message (no extra write per paid call), and so do the entries its log gained since
the last checkpoint, in the same transaction (:meth:`VaultEnclaveCode.export`): the
record stays the same size however many calls the channel paid, and a record restores
only with every entry of its log that a call still fresh could match (a host that
withholds or alters one gets ``log_incomplete``, not a replay; the entries hold only
what the host relayed anyway, so they are chained, not sealed); a record of a channel
the ledger does not have (its approving change was never stored) is refused
(``not_approved``). Until
the host restores the ledger the code refuses every call on channels and signed
calls, unless it was started as a first boot
(``first_boot``), which starts from an empty ledger and a new *life*: a random
key, sealed in the ledger (which the host stores at once), under which every
channel salt carries a MAC (:meth:`VaultEnclaveCode.salt`), which every channel
record names, and whose public id (:func:`life_id`) every client call is signed
for, so no channel of an earlier life is approved or restored again and no call
signed for it pays: withholding the ledger replays nothing. A
host reporting a pool channel as never opened has it written off only if the
channel runs here untouched (version 0, no request ever made); from then on the
channel is closed here (a restore of any of its records too), so if it opens
after all it pays nothing, and its deposit comes back whole to the client's pool
balance through the opening-state force close (which the client itself may
start).

Trust limits (stated in the README too). The pool is safe from the host: what
the host reports (deposits, refunds, failed opens) moves no money, because the
balances are on-chain. What the host can still do with the pool is deny
service (not open channels, not relay a withdrawal order), and the client then
leaves with ``withdrawFromPool`` on its own.
Sealed state has no rollback protection (:mod:`a402.tee.sealing`): a host that
restores an older ledger or channel record at a restart can replay what that
record had not yet seen; and a host that runs two live instances of one enclave
identity — sharing the ledger row or not — can have each sign σ_U for one signed
call, since the record of paid calls is each instance's (memory, channel records)
and paying changes no ledger: one live instance per identity is the limit, which
the fail-over lease keeps for an honest operator only. A running instance refuses a
ledger older than its own (a version sealed in it, one more with every change),
and instances sharing the database serialize their ledger changes on the row
(:mod:`a402.vault.ledger`).
The attestation policy of the tunnel's handshake (which provider code is
accepted) is the host's configuration. Which provider serves a URL is the
host's choice (it fetches the 402), within the call's ``maxPrice``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from coincurve import PublicKey

from a402 import jsonbytes
from a402.asc import (
    Ack,
    ChannelTerms,
    Close,
    Exec,
    LocalProtocolError,
    PaymentAuthorized,
    Reason,
    Reply,
    RequestAbandoned,
    RequestExpired,
    ResultDelivered,
    Reveal,
    SignedState,
    Status,
    Step,
    VaultChannel,
    expiring_approval,
    force_close_digest,
    open_approval_digest,
    pool_open_approval_digest,
)
from a402.asc import snapshot as _snap
from a402.asc.messages import Auth
from a402.asc.messages import Message as AscMessage
from a402.asc.terms import BalanceState
from a402.crypto import PaymentDomain
from a402.evm.address import address_key, to_checksum
from a402.evm.ecdsa import public_key_address
from a402.exact.eip3009 import Eip712Domain
from a402.mandate.enclave import MandateBook, RegistryRead
from a402.mandate.policy import MandateRefused, ProposedPayment
from a402.tee import (
    CHANNEL_APPROVAL,
    CHANNEL_STATE,
    FORCE_CLOSE,
    TUNNEL_BINDING,
    Enclave,
    EnclaveError,
    EnclaveKernel,
    TeeError,
)
from a402.wire import jsonstrict
from a402.wire import vault_api as api
from a402.wire.a402 import HttpRequest, binding_digest
from a402.wire.errors import WireError

_CHANNEL_FORMAT = "a402/vault-enclave-channel/v2"
#: A channel's record as :meth:`VaultEnclaveCode.export` writes it: binary (the encoding
#: of :mod:`a402.asc.snapshot`), these fields in this order; read as a
#: ``_CHANNEL_FORMAT`` record (JSON, which earlier code wrote and still restores).
_CHANNEL_HEADER = b"A4VC\x03"
_CHANNEL_FIELDS: _snap.Fields = (
    ("owner", "s"), ("funding", "s"),  # (what never changes, first)
    ("life", "raw"), ("channel", "raw"),
    ("call", (("client", "s"), ("once", "s"), ("timestamp", "i"))),
    ("logCount", "i"), ("logHead", "raw"), ("logNewest", "i"), ("attested", "t"),
    ("newest", "i"),
)
#: Records sealed by earlier code: the consumed calls listed in the record itself.
_CHANNEL_FORMAT_V1 = "a402/vault-enclave-channel/v1"
_LOG_GENESIS = b"a402/vault-consumed-log/v1\x00"
_LEDGER_FORMAT = "a402/vault-enclave-ledger/v1"
_LEDGER_LABEL = "a402/vault-ledger"
INVOKE_PATH = api.API_PREFIX + "/invoke"
#: How many authenticated calls the enclave remembers (:meth:`VaultEnclaveCode.authenticate`):
#: enough for the calls in flight; one dropped is only recovered again.
_AUTHENTICATED_KEPT = 4096
#: How long the vault's approval to open a channel stays good (seconds of chain time):
#: long enough to be mined, and the most a failed open's pool debit waits to come back.
OPEN_APPROVAL_LIFETIME = 300
#: A pool channel's deposit is at most this many times its call's ``maxPrice`` when the call
#: names no ``deposit`` (:func:`pool_deposit_cap`): a constant of this code, not the host's
#: configuration, so a host cannot widen what one signed call moves out of the pool.
POOL_DEPOSIT_MULTIPLE = 100
#: How long the vault's order to force-close a channel stays good.
FORCE_CLOSE_LIFETIME = 600

#: Headers that describe one hop, not the request (RFC 9110 §7.6.1), plus those the
#: provider sets itself: never part of the paid request.
_HOP_HEADERS = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
_AUTH_HEADERS = (api.CLIENT_HEADER, api.TIMESTAMP_HEADER, api.NONCE_HEADER,
                 api.SIGNATURE_HEADER, api.LIFE_HEADER)


# ------------------------------------------------------------ what the host passes in


@dataclass(frozen=True, slots=True)
class SignedCall:
    """A client's signed vault API call, exactly as it arrived: the enclave checks it."""

    headers: Mapping[str, str]
    method: str
    path: str
    body: bytes

    @classmethod
    def of(cls, headers: Mapping[str, str], method: str, path: str, body: bytes) -> SignedCall:
        """Keep only the authentication headers (what the signature covers is the rest)."""
        kept = {name: headers[name] for name in _AUTH_HEADERS if name in headers}
        return cls(kept, method.upper(), path, bytes(body))


def request_headers(headers: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a paid request: the call's, without hop-by-hop ones."""
    return tuple((k.lower(), v) for k, v in headers if k.lower() not in _HOP_HEADERS)


def path_and_query(url: str) -> tuple[str, bytes]:
    """The decoded path and the raw query of ``url``, as ASGI would see them."""
    if url.isascii():  # the common case, without httpx's full (and slower) URL model
        split = urlsplit(url)
        return unquote(split.path) or "/", split.query.encode("ascii")
    parsed = httpx.URL(url)  # percent-encodes what a raw URL may not carry
    return parsed.path, parsed.query


def paid_request(call: api.InvokeRequest) -> HttpRequest:
    """The request a call pays for, as the provider receives it in EXEC."""
    return HttpRequest(call.method, *path_and_query(call.url), request_headers(call.headers),
                       call.body)


class ChannelsNeeded(EnclaveError):
    """Restore these channels (their sealed records) first: they may hold nonces this
    client's calls consumed, so the enclave cannot yet tell a replay from a new call."""

    def __init__(self, channel_ids: list[bytes]) -> None:
        super().__init__("channels_needed", f"restore {len(channel_ids)} channel(s) first")
        self.channel_ids = channel_ids


@dataclass(frozen=True, slots=True)
class OpenApproval:
    """The vault's approval to open a channel: its signature over ``A402Open(channelId,
    deadline)`` (a wallet channel) or ``A402PoolOpen(channelId, deadline)`` (a pool
    channel), good until ``deadline`` (chain time, inclusive)."""

    signature: bytes
    deadline: int

    @property
    def calldata(self) -> bytes:
        """What ``createASC``'s ``vaultApproval`` carries: signature ‖ deadline."""
        return expiring_approval(self.signature, self.deadline)


# ------------------------------------------------------------------ inside


class _KernelSigner:
    """A :class:`~a402.asc.terms.DigestSigner` over the kernel (the attested key), for the
    machines this code runs; never handed to the host."""

    __slots__ = ("_kernel", "_purpose", "address")

    def __init__(self, kernel: EnclaveKernel, purpose: str) -> None:
        self._kernel = kernel
        self._purpose = purpose
        self.address = public_key_address(PublicKey(kernel.signing_public_key))

    def sign_digest(self, digest: bytes) -> bytes:
        return self._kernel.sign(self._purpose, digest)


def pool_deposit_cap(invoke: api.InvokeRequest) -> int:
    """The most a pool channel opened for ``invoke`` may escrow: the call's ``deposit`` if it
    names one, else :data:`POOL_DEPOSIT_MULTIPLE` × its ``maxPrice``. The host's choice of
    deposit (:meth:`a402.vault.channels.Channels.deposit_for`) stays within it; the
    enclave refuses to approve more (:meth:`VaultEnclaveCode.approve_pool_channel`)."""
    if invoke.deposit is not None:
        return invoke.deposit
    return POOL_DEPOSIT_MULTIPLE * invoke.max_price


def _once(invoke: api.InvokeRequest) -> str:
    """What makes a paid call one call, for the at-most-once rule: its idempotency key and
    creation time (every signature of the call carries both: the client keeps its
    ``createdAt`` across retries), not the signature's nonce. A call without a creation
    time is an older client's: refused, never paid without the rule."""
    if invoke.created_at is None:
        raise EnclaveError(api.CLIENT_OUTDATED,
                           "nothing was paid: the call has no createdAt (an older client); "
                           "this vault pays only calls whose creation time is signed")
    return f"call:{invoke.created_at}:{invoke.idempotency_key}"


def _key_of(once: str) -> tuple[str, int]:
    """The idempotency key and creation time a :func:`_once` names."""
    parts = once.split(":", 2)
    if len(parts) != 3 or parts[0] != "call" or not parts[1].isdigit():
        return once, -1  # (not a call's: names no key another call could share)
    return parts[2], int(parts[1])


def life_id(life: bytes) -> str:
    """The public name of a vault life (``GET /v1/info``'s ``life``, signed into every
    call): a hash of the life's key, which it does not reveal."""
    return "0x" + hashlib.sha256(b"a402/vault-life\x00" + life).hexdigest()[:32]


@dataclass(slots=True)
class _Binding:
    """The signed call the request in flight pays for: its client, what makes it one
    call (:func:`_once`) and when it was signed."""

    client: str
    once: str
    #: The call's creation time (what the once-rule's record is pruned by).
    timestamp: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of a channel's log of consumed calls, for the host to store with the
    checkpoint that carries it (its bytes are the entry; see :meth:`VaultEnclaveCode.export`)."""

    seq: int
    #: The entry's ``newest`` (see :func:`_log_entry`): the host may use it to read only
    #: recent entries, never to make the enclave accept a shorter log.
    newest: int
    entry: bytes


def _log_digest(channel_id: bytes, entry: bytes) -> bytes:
    """What a log entry's successor (or the sealed record, for the last one) names it by."""
    return hashlib.sha256(_LOG_GENESIS + channel_id + entry).digest()


def _log_entry(seq: int, prev: bytes, client: str | None, once: str, timestamp: int,
               newest: int) -> bytes:
    """The bytes of entry ``seq`` of a channel's consumed-call log: the call (``client``
    only when it is not the channel's owner: a legacy record's), its creation time, the
    digest of entry ``seq - 1`` (the channel's genesis for the first) and ``newest``: the
    newest signature timestamp of the channel's owner when it was consumed, never less
    than the previous entry's. Every call consumed in this entry or before it was signed
    no later than ``newest``, so created no later than ``newest`` plus the window."""
    record: dict[str, Any] = {"seq": seq, "prev": prev.hex(), "once": once,
                              "createdAt": timestamp, "newest": newest}
    if client is not None:
        record["client"] = client
    return jsonbytes.dumps(record)


@dataclass(slots=True)
class _Held:
    channel: VaultChannel
    owner: str
    funding: str
    call: _Binding | None = None
    consumed: dict[tuple[str, str], int] = field(default_factory=dict)
    #: The log of consumed calls (see :meth:`VaultEnclaveCode.export`): how many entries,
    #: the digest of the last one (the genesis digest before the first), its ``newest``,
    #: and the entries not yet handed to the host (:meth:`VaultEnclaveCode.take_log`).
    log_count: int = 0
    log_head: bytes = b""
    log_newest: int = 0
    log_unsaved: list[LogEntry] = field(default_factory=list)
    #: The provider key was seen here as an attested enclave's (a tunnel's peer, verified
    #: in the handshake): σ_U only then.
    attested: bool = False
    #: :meth:`VaultEnclaveCode.open_failed` closed this (untouched) machine: if that
    #: change is lost (another replica stored the ledger first, and the host runs the
    #: change again on theirs), the closed machine is still the untouched one.
    written_off: bool = False
    #: The first fields of the channel's record, which never change (:meth:`export`).
    record_fixed: bytes = b""


@dataclass(slots=True)
class _Entry:
    """The ledger's view of one channel it approved."""

    owner: str
    funding: str
    deposit: int
    settled: int | None = None  # the high-water timestamp when it settled
    refunded: bool = False
    approved_until: int = 0  # the latest deadline of an approval to open it
    #: The call (its :func:`_once`) this pool channel was approved for: checked fresh
    #: then, so its request on this channel gets :attr:`VaultEnclaveCode.slack` more time.
    admit: str | None = None


class VaultEnclaveCode:
    """The vault's channels and the checks on its clients' signed calls, run inside the
    enclave.

    ``domain``: the ASCManager's EIP-712 domain; ``network``: the chain (CAIP-2) the
    vault's account is on; ``token``: the channel token's EIP-712 domain;
    ``auth_window``: the API's signature window;
    ``first_boot``: this vault has never run before (see :meth:`start`).
    """

    def __init__(
        self, kernel: EnclaveKernel, *, domain: PaymentDomain, network: str,
        token: Eip712Domain, auth_window: int = api.DEFAULT_AUTH_WINDOW,
        first_boot: bool = False,
    ) -> None:
        self._kernel = kernel
        self._signer = _KernelSigner(kernel, CHANNEL_STATE)
        self.address = self._signer.address
        self.domain = domain
        self.network = network
        self.account = api.vault_account(network, "0x" + self.address.hex())
        self.token = token
        self.window = auth_window
        #: How much older than the usual horizon a call may be when it comes to pay on
        #: the pool channel approved for it (checked fresh at that approval; the open may
        #: take until the approval's deadline); the record of paid calls keeps that much
        #: more, so the slack pays nothing twice.
        self.slack = OPEN_APPROVAL_LIFETIME + 2 * auth_window
        self._held: dict[bytes, _Held] = {}
        self._channels: dict[bytes, _Entry] = {}
        self._by_owner: dict[str, set[bytes]] = {}
        #: Per client, the newest timestamp of a call it paid with: its calls older than
        #: that minus twice the window are stale (one client's clock moves no one else's).
        self._newest: dict[str, int] = {}
        #: The chain time the host last reported (approvals, orders, failed opens): never back.
        self._clock = 0
        #: The time as far as signed calls vouch for it: the host's ``now`` when a call
        #: came, but never more than a window past that call's own timestamp; it never
        #: goes back. A call the host withheld is refused once it is older than this by
        #: twice the auth window (any client's later call moves it). A host's clock that
        #: jumps ahead moves it no further than the calls do.
        self._wall = 0
        self._consumed: dict[tuple[str, str], int] = {}
        #: Per (client, idempotency key) of a paid call in :attr:`_consumed`: its
        #: ``createdAt``. A call with that key and another creation time is refused while
        #: the record lasts (pruned with it): a retry from a new process that lost the
        #: first ``createdAt`` signs another, and must not pay the key twice.
        self._paid_keys: dict[tuple[str, str], int] = {}
        self._reserved: dict[tuple[str, str], bytes] = {}
        #: The owners' mandates the clients pay under (sealed with the ledger).
        self._mandates = MandateBook()
        #: The ledger's version, sealed with it: one more on its first change after each
        #: export (see :meth:`restore_ledger`); ``_unsaved``: changed since the export.
        self._version = 0
        self._unsaved = False
        #: A ledger was restored, or this is the vault's first boot: until then every call
        #: that reads or moves balances, channels or nonces is refused.
        self._ready = first_boot
        #: Started as a first boot (and no ledger restored since): no channel can predate
        #: it, so a channel record this code sealed in an earlier life is refused.
        self._first_boot = first_boot
        #: This life of the vault: drawn at its first boot, kept in the sealed ledger. A
        #: channel's salt carries a MAC under it (:meth:`salt`), its sealed record names
        #: it, and every client call is signed for its public id (:func:`life_id`), so a
        #: host that deletes the ledger and declares a first boot can neither approve an
        #: earlier life's channel again, nor restore one of its records, nor have a call
        #: signed for the earlier life paid (the new life has no record of what it paid).
        self._life = os.urandom(32) if first_boot else b""
        self._life_name = (b"", life_id(b""))
        #: Calls whose signature this code recovered (:meth:`authenticate`), by digest:
        #: the most recent :data:`_AUTHENTICATED_KEPT`, oldest dropped first.
        self._authenticated: dict[bytes, api.Authenticated] = {}
        #: One call at a time: the host calls from its event loop and from threads.
        self.lock = threading.RLock()

    @classmethod
    def start(
        cls, enclave: Enclave, *, domain: PaymentDomain, network: str, token: Eip712Domain,
        auth_window: int = api.DEFAULT_AUTH_WINDOW, first_boot: bool = False,
    ) -> VaultEnclave:
        """Run this code in ``enclave``; the host gets only the :class:`VaultEnclave`.

        The code refuses every call on balances, channels and signed calls until the host
        restores the ledger (:meth:`VaultEnclave.restore_ledger`), unless ``first_boot``:
        the vault never ran, it starts with an empty ledger. A host that withholds the
        ledger gains nothing: without it nothing runs; declaring a first boot instead
        starts from zero balances, refuses every channel record an earlier life sealed
        (so no channel of the old ledger runs again, with or without the nonces it
        consumed) and every call signed for an earlier life."""
        return enclave.start(lambda kernel: VaultEnclave(cls(
            kernel, domain=domain, network=network, token=token, auth_window=auth_window,
            first_boot=first_boot,
        )), host_tunnels=True)

    @property
    def life_id(self) -> str:
        """This life's public name (:func:`life_id`): every call must be signed for it."""
        if self._life_name[0] != self._life:
            self._life_name = (self._life, life_id(self._life))
        return self._life_name[1]

    def _check_ready(self) -> None:
        if not self._ready:
            raise EnclaveError("ledger_needed",
                               "restore the ledger first (or start the code as a first boot)")

    # ---------------------------------------------------------------- ledger

    def _changed(self) -> None:
        """The ledger changed: its version grows (once until the next export), so the host
        can no longer hand this code back the ledger from before the change."""
        if not self._unsaved:
            self._version += 1
            self._unsaved = True

    @property
    def ledger_version(self) -> int:
        """The version of the ledger held here (sealed in :meth:`export_ledger`)."""
        return self._version

    @property
    def ledger_unsaved(self) -> bool:
        """Whether the ledger changed since it was last exported or restored."""
        return self._unsaved

    def export_ledger(self) -> bytes:
        self._check_ready()  # never an empty ledger over the stored one
        self._prune()
        self._unsaved = False
        record = {
            "format": _LEDGER_FORMAT,
            "version": self._version,
            "channels": {cid.hex(): [e.owner, e.funding, str(e.deposit), e.settled, e.refunded,
                                     e.approved_until, e.admit]
                         for cid, e in self._channels.items()},
            "newest": {k: v for k, v in self._newest.items()},
            "clock": self._clock, "wall": self._wall, "life": self._life.hex(),
            "mandates": self._mandates.to_json(),
        }
        return self._kernel.seal(_LEDGER_LABEL, jsonbytes.dumps(record))

    def restore_ledger(self, blob: bytes) -> None:
        """The ledger from :meth:`export_ledger`, at start-up or whenever the host finds a
        newer one stored (another replica changed it): it replaces this one.

        Refused if its version is lower than the one held here: a host cannot hand a
        running enclave an older ledger (after a restart it can — sealed state has no
        rollback protection). A ledger of the same version is another instance's twin
        of this one only if two instances of this enclave changed it without sharing its
        store (a rollback; see the README). Channels running here that the restored
        ledger does not know were approved in a change that was never stored (its
        approval never left): they are dropped, and approved again if asked again.
        Per-client freshness and the clock only move forward.

        A legacy record (sealed by earlier code) holds less, and gets exactly this:

        * no version: 0 (so a running enclave refuses it once it changed anything);
        * no per-client newest call, enclave clock or wall: none (freshness then comes
          from the calls that follow; every call must name this life anyway);
        * a channel without an approval deadline: 0, so its debit comes back once the
          host reports it unopened (in a finalized block); such an approval carries no
          deadline, and the ASCManager this code approves for refuses one without;
        * no life: one is drawn now and the ledger counts as changed (the host stores
          it before anything else: :meth:`~a402.vault.ledger.Ledger.load`), so from now
          on every salt carries its MAC; the legacy channel records (which name no life)
          of channels this ledger approved restore, no other.
        """
        try:
            record = json.loads(self._kernel.unseal(_LEDGER_LABEL, blob))
            if record.get("format") != _LEDGER_FORMAT:
                raise ValueError("not a vault ledger")
            version = int(record.get("version", 0))
            channels = {bytes.fromhex(cid): _Entry(e[0], e[1], int(e[2]), e[3], bool(e[4]),
                                                   int(e[5]) if len(e) > 5 else 0,
                                                   e[6] if len(e) > 6 else None)
                        for cid, e in record["channels"].items()}
            newest = {k: int(v) for k, v in record.get("newest", {}).items()}
            clock = int(record.get("clock", 0))
            wall = int(record.get("wall", 0))
            life = bytes.fromhex(record.get("life", ""))
            mandates = MandateBook.from_json(record.get("mandates"))
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise EnclaveError("malformed", str(e)) from None
        if version < self._version:
            raise EnclaveError("stale_ledger",
                               f"version {version} is older than the {self._version} held")
        for cid in [cid for cid in self._held if cid not in channels]:
            self.unload(cid)
        self._version, self._unsaved = version, False
        self._channels, self._by_owner = {}, {}
        for cid, entry in channels.items():
            self._enter(cid, entry)
        for client, timestamp in newest.items():
            self._advance(client, timestamp)
        self._clock = max(self._clock, clock)
        self._wall = max(self._wall, wall)
        self._life = life
        self._mandates = mandates
        self._ready, self._first_boot = True, False
        if not life:  # a legacy ledger: this vault's life starts now (see above)
            self._life = os.urandom(32)
            self._changed()

    # --------------------------------------------------------- signed calls

    def _advance(self, client: str, timestamp: int) -> None:
        if timestamp > self._newest.get(client, 0):
            self._newest[client] = timestamp

    def _horizon(self, client: str) -> int:
        """Calls of ``client`` signed before this are stale."""
        return self._newest.get(client, 0) - 2 * self.window

    def _verify(self, call: SignedCall, method: str, path: str, now: float | None = None
                ) -> api.Authenticated:
        """The call's signature (:meth:`_signed`) and its freshness (:meth:`_fresh`)."""
        signed = self._signed(call, method, path)
        self._fresh(signed, now)
        return signed

    def _signed(self, call: SignedCall, method: str, path: str) -> api.Authenticated:
        """The call's signature, for this vault and this life (a call signed for another
        life — before the vault lost its ledger — is refused: the new life has no record
        of what it paid)."""
        if (call.method, call.path) != (method, path):
            raise EnclaveError("wrong_call", f"not a signed {method} {path}")
        try:
            timestamp = int(call.headers[api.TIMESTAMP_HEADER])
        except (KeyError, ValueError):
            raise EnclaveError("unauthenticated", "the call is not signed") from None
        known = self._authenticated.get(self._call_digest(call))
        if known is not None:  # recovered here already (:meth:`authenticate`)
            return known
        try:  # freshness is judged by _fresh, against the newest call seen, not a clock
            return api.verify_request(call.headers, self.account, call.method, call.path,
                                      call.body, life=self.life_id, now=timestamp, window=0)
        except api.AuthError as e:
            raise EnclaveError(e.reason, e.detail) from None

    def _call_digest(self, call: SignedCall) -> bytes:
        """A digest of everything a call's signature check reads: its authentication
        headers, method, path and body, and the life it must be signed for."""
        h = hashlib.sha256(self.life_id.encode())
        for name in _AUTH_HEADERS:
            value = call.headers.get(name)
            h.update(b"\x00-" if value is None else b"\x00+" + value.encode())
        for part in (call.method.encode(), call.path.encode()):
            h.update(len(part).to_bytes(4, "big") + part)
        h.update(call.body)
        return h.digest()

    def authenticate(self, call: SignedCall, now: float, window: int) -> api.Authenticated:
        """The host API's check of a call (:func:`~a402.wire.vault_api.verify_request`:
        signed by the named client for this vault and life, within ``window`` of ``now``;
        :class:`~a402.wire.vault_api.AuthError` otherwise), made here so that the call's
        signature is recovered once per call: the enclave keeps what it recovered, keyed
        by a digest of everything the check read (:meth:`_call_digest`), and its own
        check of the same call (:meth:`_signed`, before it approves or pays anything)
        takes it from there. The memory is the enclave's: the host can neither add to it
        nor change it, so a call it names was verified here, byte for byte."""
        signed = api.verify_request(call.headers, self.account, call.method, call.path,
                                    call.body, life=self.life_id, now=now, window=window)
        self._authenticated[self._call_digest(call)] = signed
        while len(self._authenticated) > _AUTHENTICATED_KEPT:
            del self._authenticated[next(iter(self._authenticated))]
        return signed

    def _fresh(self, signed: api.Authenticated, now: float | None, *,
               created_at: int | None = None, slack: int = 0) -> None:
        """Whether a call is fresh: signed (and, given ``created_at``, created) no earlier
        than its signer's newest call minus twice the window, signed no earlier than
        ``_wall`` minus twice the window, and, given the host's ``now``, not signed more
        than a window in the future (a far-future timestamp would make the client's own
        later calls stale). ``slack``: how much older the call may be (the call a pool
        channel was approved for, on that channel)."""
        horizon = self._horizon(address_key(signed.client)) - slack
        if created_at is not None:
            # A retry signed on another machine whose clock is a little behind the one
            # that created the call is fine: up to a window (pruning is by createdAt, so
            # a later one only keeps the record longer).
            if created_at > signed.timestamp + self.window:
                raise EnclaveError(api.CREATED_AFTER_SIGNATURE, (
                    "nothing was paid by this call: its createdAt is more than the auth "
                    "window after its signature's timestamp (the signing clock is behind); "
                    "retry it once the clock is right"))
            if created_at < horizon:
                raise EnclaveError(api.STALE_CALL, (
                    "nothing was paid by this call: it was created (createdAt) before the "
                    "oldest call the vault's record of paid calls still keeps, so it cannot "
                    "be paid safely. If no earlier attempt was paid (GET /v1/requests/<key>), "
                    "make it again with a new idempotency key"))
        if signed.timestamp < horizon:
            raise EnclaveError(api.STALE_CALL, "nothing was paid: the call was signed too long "
                                               "before the client's newest call")
        if signed.timestamp < self._wall - 2 * self.window - slack:
            raise EnclaveError(api.STALE_CALL, "nothing was paid: the call was signed too long "
                                               "before now")
        if now is not None:
            if signed.timestamp > now + self.window:
                raise EnclaveError("future_call",
                                   "signed more than the auth window ahead of now")
            self._wall = max(self._wall, min(int(now), signed.timestamp + self.window))

    def _body(self, call: SignedCall) -> dict[str, Any]:
        """The signed body: a strict JSON object within :data:`~a402.wire.jsonstrict.
        DEFAULT_LIMITS` (depth, size), measured before any parser recurses on it."""
        try:
            return jsonstrict.loads_object(call.body)
        except WireError as e:
            raise EnclaveError("bad_request", f"the call's body: {e.message}") from None

    def _enter(self, channel_id: bytes, entry: _Entry) -> None:
        self._channels[channel_id] = entry
        self._by_owner.setdefault(entry.owner, set()).add(channel_id)

    def _missing(self, client: str) -> list[bytes]:
        horizon = self._horizon(client) - self.slack
        found = []
        for cid in self._by_owner.get(client, ()):
            e = self._channels[cid]
            if cid not in self._held and (e.settled is None or e.settled >= horizon):
                found.append(cid)
        return sorted(found)

    def _prune(self) -> None:
        """Forget paid calls created before their client's horizon less the slack: no call
        that old is paid again (:meth:`_fresh` refuses it)."""
        self._consumed = {k: t for k, t in self._consumed.items()
                          if t >= self._horizon(k[0]) - self.slack}
        for held in self._held.values():
            held.consumed = {k: t for k, t in held.consumed.items()
                             if t >= self._horizon(k[0]) - self.slack}
        self._paid_keys = {k: t for k, t in self._paid_keys.items()
                           if t >= self._horizon(k[0]) - self.slack}

    def _paid(self, client: str, once: str, channel_id: bytes | None) -> None:
        """Refuse a call that paid already (σ_U signed), is paying on another channel than
        ``channel_id``, or whose idempotency key paid (or is paying) with another
        ``createdAt`` (see :attr:`_paid_keys`). Each message says the key may have been
        paid: never "nothing was paid"."""
        if (client, once) in self._consumed:
            raise EnclaveError(api.REPLAYED_CALL, (
                "this call was paid already (σ_U signed): ask GET /v1/requests/<key> for "
                "its answer; do not make it again with a new key"))
        key, created = _key_of(once)
        paid = self._paid_keys.get((client, key))
        if paid is not None and paid != created:
            raise EnclaveError(api.REPLAYED_CALL, (
                f"this idempotency key was paid already, for the call created at {paid} "
                f"(this one says {created}): it may have been paid; ask GET "
                "/v1/requests/<key> for its answer, and retry it with that createdAt"))
        for (c, other), cid in self._reserved.items():
            if c == client and cid != channel_id and _key_of(other)[0] == key:
                raise EnclaveError(api.REPLAYED_CALL, (
                    "this idempotency key is paying on another channel: it may have been "
                    "paid; ask GET /v1/requests/<key> for its answer"))

    def _consume(self, held: _Held, binding: _Binding, *, log: bool = True) -> None:
        """Record ``binding`` as paid (σ_U signed): here, and, with ``log``, in a new entry
        of the channel's log, which the host stores with the next checkpoint (the sealed
        record names the log's last entry, so it cannot be left out)."""
        k = (binding.client, binding.once)
        held.consumed[k] = self._consumed[k] = binding.timestamp
        key, created = _key_of(binding.once)
        self._paid_keys[(binding.client, key)] = created
        if log:
            channel_id = held.channel.channel_id
            newest = max(self._newest.get(held.owner, 0), held.log_newest)
            entry = _log_entry(held.log_count, held.log_head or _log_digest(channel_id, b""),
                               None if binding.client == held.owner else binding.client,
                               binding.once, binding.timestamp, newest)
            held.log_unsaved.append(LogEntry(held.log_count, newest, entry))
            held.log_count += 1
            held.log_head = _log_digest(channel_id, entry)
            held.log_newest = newest

    def take_log(self, channel_id: bytes) -> list[LogEntry]:
        """The log entries made since the last call, for the host to store in the same
        transaction as the channel's next record (:meth:`export`)."""
        held = self._get(channel_id)
        taken, held.log_unsaved = held.log_unsaved, []
        return taken

    # ---------------------------------------------------------------- channels

    def _get(self, channel_id: bytes) -> _Held:
        held = self._held.get(channel_id)
        if held is None:
            raise EnclaveError("unknown_channel", "this enclave runs no such channel")
        return held

    def salt(self) -> bytes:
        """A salt for new channel terms: 16 random bytes and their MAC under this life's key
        (:meth:`_new_channel` approves no other)."""
        self._check_ready()
        nonce = os.urandom(16)
        return nonce + self._salt_mac(nonce)

    def _salt_mac(self, nonce: bytes) -> bytes:
        return hmac.new(self._life, b"a402/vault-channel-salt" + nonce, hashlib.sha256
                        ).digest()[:16]

    def _check_terms(self, terms: ChannelTerms, lock_timeout: float) -> None:
        """What :meth:`_new_channel` refuses, checked before anything is recorded."""
        if terms.vault != self.address:
            raise EnclaveError("not_our_channel", "the terms name another vault")
        if not hmac.compare_digest(terms.salt[16:], self._salt_mac(terms.salt[:16])):
            raise EnclaveError("not_this_life", "the terms' salt was not issued by this vault")
        if lock_timeout <= 0:
            raise EnclaveError("bad_request", "lock_timeout must be positive")

    def _new_channel(self, terms: ChannelTerms, owner: str, funding: str,
                     lock_timeout: float) -> bytes:
        self._check_terms(terms, lock_timeout)
        channel_id = terms.channel_id(self.domain)
        self._enter(channel_id, _Entry(owner, funding, terms.deposit))
        self._changed()
        self._held[channel_id] = _Held(
            VaultChannel(terms, self.domain, self._signer, lock_timeout=lock_timeout),
            owner, funding)
        return channel_id

    def _tick(self, now: int) -> int:
        """Advance the enclave's clock to the host's ``now`` (chain time); never back."""
        self._clock = max(self._clock, int(now))
        return self._clock

    def _approve_open(self, channel_id: bytes, entry: _Entry, now: int) -> OpenApproval:
        if entry.refunded:
            raise EnclaveError("written_off", "this channel's open failed; its debit came back")
        deadline = self._tick(now) + OPEN_APPROVAL_LIFETIME
        if deadline > entry.approved_until:  # stored before the approval leaves
            entry.approved_until = deadline
            self._changed()
        # A pool channel's approval is of its own type (A402PoolOpen), which only
        # createASCFromPool(Batch) take and which no wallet open's approval stands in for.
        digest = (pool_open_approval_digest if entry.funding == api.POOL
                  else open_approval_digest)(self.domain, channel_id, deadline)
        return OpenApproval(self._kernel.sign(CHANNEL_APPROVAL, digest), deadline)

    def approve_pool_channel(self, call: SignedCall, terms: ChannelTerms, lock_timeout: float,
                             *, now: int) -> OpenApproval:
        """The vault's approval of ``createASCFromPool`` for a pool channel of the client
        who signed ``call`` (the paid call that needs the channel: fresh, for pool funding,
        not paid already), whose terms name that client, good until
        ``OPEN_APPROVAL_LIFETIME`` after ``now`` (chain time), as an A402PoolOpen (which
        ``createASCFromPool`` alone takes). Asked again for the same channel: a fresh
        approval; never after it was written off.

        Safety: without a call of the client's the host cannot move the client's pool
        balance into a channel (:meth:`approve_wallet_channel` signs A402Open, which
        ``createASCFromPool`` refuses). One call — ``(client, idempotencyKey, createdAt)``
        — approves at most ONE pool channel, ever (the ledger keeps which: :attr:`_Entry.
        admit`, also after a write-off), whose deposit is at most :func:`pool_deposit_cap`
        of the call. So a host holding a signed call locks at most that much of the pool,
        once: after the client force-closes that channel (its deposit back in her pool) the
        host cannot lock it again without a new call of hers. The contract debits
        ``pooled[vault][client]`` and refuses a deposit beyond it."""
        self._check_ready()
        signed = self._signed(call, "POST", INVOKE_PATH)
        owner = address_key(signed.client)
        try:
            invoke = api.InvokeRequest.from_json(self._body(call))
        except ValueError as e:
            raise EnclaveError("bad_request", str(e)) from None
        once = _once(invoke)
        self._fresh(signed, None, created_at=invoke.created_at)
        self._paid(owner, once, None)
        if invoke.funding != api.POOL:
            raise EnclaveError("not_a_pool_channel", "the call asks for wallet funding")
        if address_key("0x" + terms.client.hex()) != owner:
            raise EnclaveError("not_your_channel",
                               "a pool channel's client is the client who signed the call")
        self._mandate(signed, invoke, terms, 0, None)
        channel_id = terms.channel_id(self.domain)
        entry = self._channels.get(channel_id)
        if entry is None:
            cap = pool_deposit_cap(invoke)
            if terms.deposit > cap:
                raise EnclaveError("deposit_too_large",
                                   f"nothing was moved: a deposit of {terms.deposit} is more "
                                   f"than the call allows ({cap})")
            if any(self._channels[cid].admit == once and self._channels[cid].funding == api.POOL
                   for cid in self._by_owner.get(owner, ())):
                raise EnclaveError("call_used",
                                   "nothing was moved: this call already approved a pool "
                                   "channel; a new channel needs a new call")
            self._new_channel(terms, owner, api.POOL, lock_timeout)
            self._channels[channel_id].admit = once  # this call was fresh: see request
        elif (entry.owner, entry.funding) != (owner, api.POOL):
            raise EnclaveError("not_your_channel", "approved for another client")
        return self._approve_open(channel_id, self._channels[channel_id], now)

    def approve_wallet_channel(self, terms: ChannelTerms, lock_timeout: float, *, now: int
                               ) -> OpenApproval:
        """The vault's approval of a channel funded from the client's own wallet, good until
        ``OPEN_APPROVAL_LIFETIME`` after ``now`` (chain time)."""
        self._check_ready()
        if terms.client == self.address:
            raise EnclaveError("not_a_wallet_channel", "the client is the vault")
        channel_id = terms.channel_id(self.domain)
        entry = self._channels.get(channel_id)
        if entry is None:
            self._new_channel(terms, address_key("0x" + terms.client.hex()), api.WALLET,
                              lock_timeout)
        elif entry.funding != api.WALLET:
            raise EnclaveError("not_a_wallet_channel", "approved as a pool channel")
        return self._approve_open(channel_id, self._channels[channel_id], now)

    def approved_until(self, channel_id: bytes) -> int:
        """The latest deadline of an approval to open ``channel_id`` (0: none)."""
        entry = self._channels.get(channel_id)
        return 0 if entry is None else entry.approved_until

    def open_failed(self, channel_id: bytes, *, now: int) -> int:
        """The host reports that a pool channel never opened: it is written off, once.
        Returns its deposit (0 for a channel never approved, a wallet channel, one written
        off already, or one whose approval may still open it). Nothing is credited: the
        chain never debited the client's pool balance for a channel that did not open.

        Given back only once the clock, advanced to ``now``, is past every approval's
        deadline (before, the channel could still open), and refused unless the channel
        runs here (restored from its latest record) and is untouched: version 0, no
        request ever made, nothing pending. From then on the channel is closed here for
        good (its ledger entry says refunded, and it is never approved again): no
        request, no σ_U, and a restore brings it back closed, so a channel that opens
        on-chain after all pays nothing off-chain (its deposit comes back to the client's
        pool balance by the opening-state force close)."""
        self._check_ready()
        entry = self._channels.get(channel_id)
        if entry is None or entry.funding != api.POOL or entry.refunded:
            return 0
        if self._tick(now) <= entry.approved_until:
            return 0
        held = self._held.get(channel_id)
        if held is None:
            raise EnclaveError("unknown_channel", "restore the channel before reporting it")
        channel = held.channel
        # Untouched: OPEN as approved, or closed here by this very write-off whose ledger
        # change was lost (another replica stored the ledger first; the host runs the
        # change again on theirs, which does not have it refunded).
        untouched = channel.status is Status.OPEN or (
            channel.status is Status.CLOSED and held.written_off)
        if (channel.version != 0 or channel.next_request_id != 0 or held.call is not None
                or not untouched or channel.locked != 0
                or channel.pending_close() is not None):
            raise EnclaveError("channel_used", "the channel was used: it opened")
        entry.refunded, entry.settled = True, self._newest.get(entry.owner, 0)
        self._changed()
        held.written_off = True
        if channel.status is not Status.CLOSED:
            channel.closed_on_chain()
        return entry.deposit

    def _ended(self, channel_id: bytes) -> bool:
        """Whether the ledger has the channel refunded (never opened) or settled."""
        entry = self._channels.get(channel_id)
        return entry is not None and (entry.refunded or entry.settled is not None)

    def settled(self, channel_id: bytes, client_payout: int) -> int:
        """The host reports the channel settled on-chain: it is closed here for good (no
        request, no σ_U). Returns the client's share the report names for a pool channel,
        at most what the channel's latest state signed here gives the client (0 for a
        wallet channel or a second report): informational only, since the contract itself
        credited the pool balance."""
        self._check_ready()
        entry = self._channels.get(channel_id)
        held = self._get(channel_id)
        if entry is None or entry.refunded:
            return 0
        entry.refunded, entry.settled = True, self._newest.get(entry.owner, 0)
        self._changed()
        held.channel.closed_on_chain()
        if entry.funding != api.POOL:
            return 0
        return min(client_payout, self._client_cap(held))

    def _client_cap(self, held: _Held) -> int:
        channel = held.channel
        final = channel.pending_close()
        return max(channel.state.client_balance,
                   final.state.client_balance if final is not None else 0)

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        """OPEN's signature: this tunnel speaks for ``channel_id`` (held here), only if the
        tunnel's peer — as the enclave verified it in the handshake, not as the host says
        — is an attested enclave whose signing key is the channel's ``providerKey``. Until
        then the channel gets no σ_U: a provider key no enclave attested could pre-sign
        a REPLY whose result never opens."""
        held = self._get(channel_id)
        try:
            peer = self._kernel.channel_peer(handle)
        except TeeError as e:
            raise EnclaveError("unknown_tunnel", str(e)) from None
        if peer.signing_key != b"\x02" + held.channel.terms.provider_key:
            raise EnclaveError("provider_not_attested",
                               "the tunnel's attested peer does not hold the channel's "
                               "provider key")
        held.attested = True
        return self._kernel.sign(
            TUNNEL_BINDING, binding_digest(self._kernel.channel_binding(handle), channel_id))

    def force_close(self, channel_id: bytes, *, now: int) -> tuple[SignedState, bytes]:
        """The latest co-signed state and the vault's order to force-close with it, as
        ``initForceCloseFor`` takes it (signature ‖ deadline), good until
        ``FORCE_CLOSE_LIFETIME`` after ``now`` (chain time)."""
        latest = self._get(channel_id).channel.latest_state()
        deadline = self._tick(now) + FORCE_CLOSE_LIFETIME
        digest = force_close_digest(self.domain, channel_id, latest.state.version, deadline)
        return latest, expiring_approval(self._kernel.sign(FORCE_CLOSE, digest), deadline)

    # -- one channel's machine, for the host's proxy --------------------------------

    def request(self, channel_id: bytes, call: SignedCall, amount: int, now: float) -> Exec:
        """Step ①, for a call the channel's owner signed (see the module docstring)."""
        self._check_ready()
        held = self._get(channel_id)
        if self._ended(channel_id):
            raise EnclaveError("channel_closed", "the channel was refunded or settled")
        signed = self._signed(call, "POST", INVOKE_PATH)
        client = address_key(signed.client)
        if client != held.owner:
            raise EnclaveError("not_your_channel", "the channel serves another client")
        try:
            invoke = api.InvokeRequest.from_json(self._body(call))
        except ValueError as e:
            raise EnclaveError("bad_request", str(e)) from None
        once = _once(invoke)
        # The call this pool channel was opened for was checked fresh at its approval: the
        # open's wait (until the approval's deadline at most) does not make it stale here.
        entry = self._channels.get(channel_id)
        admitted = entry is not None and entry.admit == once
        self._fresh(signed, now, created_at=invoke.created_at,
                    slack=self.slack if admitted else 0)
        key = (client, once)
        self._paid(client, once, channel_id)
        missing = self._missing(client)
        if missing:
            raise ChannelsNeeded(missing)
        if invoke.max_price < amount:
            raise EnclaveError("price_above_maximum",
                               f"{amount} > the call's maximum {invoke.max_price}")
        if held.channel.status is not Status.OPEN:
            # Refused before the mandate book is asked: a call replayed (at any amount) on a
            # channel whose request is in flight must not touch that request's reservation,
            # which still stands for the δ that may yet be σ_U-signed (review S9-V1).
            # (The very refusal the channel machine would give, asked before the book.)
            if held.channel.status is Status.CLOSED:
                raise LocalProtocolError(Reason.CHANNEL_CLOSED)
            raise LocalProtocolError(Reason.REQUEST_IN_FLIGHT,
                                     f"the channel is {held.channel.status}: a request is in "
                                     "flight on it; nothing new was reserved or sent")
        before = self._mandates.reserved.get(f"{client}|{once}")
        book_key = self._mandate(signed, invoke, held.channel.terms, amount, once)
        try:
            exec_ = held.channel.request(paid_request(invoke).encode(), amount, now=now)
        except BaseException:
            # Only what this attempt reserved goes back: a reservation that stood before it
            # (the same call retried at the same amount) is left as it was.
            if book_key is not None and self._mandates.reserved.get(book_key) is not before:
                self._mandates.release(book_key)
                if self._mandates.changed:
                    self._mandates.changed = False
                    self._changed()
            raise
        assert invoke.created_at is not None  # _once refuses a call without it
        held.call = _Binding(client, key[1], invoke.created_at)
        self._reserved[key] = channel_id
        self._advance(client, signed.timestamp)
        return exec_

    def _mandate(self, signed: api.Authenticated, invoke: api.InvokeRequest,
                 terms: ChannelTerms, amount: int, once: str | None) -> str | None:
        """The one mandate check (:mod:`a402.mandate.enclave`): the payment as this code
        sees it (payee = the channel's provider, asset = its token, this chain, scheme
        ``a402``, δ, the call's URL) within the client's mandate, else ``EnclaveError``
        with the ``mandate_*`` reason and nothing reserved or signed. With ``once`` (a
        request about to go out) δ is reserved under the call's key, which it returns."""
        client = address_key(signed.client)
        key = None if once is None else f"{client}|{once}"
        payment = ProposedPayment(
            agent=client, payee="0x" + terms.provider.hex(), network=self.network,
            asset=self.token.verifying_contract, scheme="a402", amount=amount, url=invoke.url)
        try:
            mandate = self._mandates.check(
                agent=client, document=invoke.mandate, confirmation=invoke.mandate_confirmation,
                payment=payment, now=self._wall, signed_at=signed.timestamp, key=key)
        except MandateRefused as e:
            raise EnclaveError(e.reason, f"nothing was paid: {e.detail or e.reason}") from None
        finally:
            if self._mandates.changed:
                self._mandates.changed = False
                self._changed()
        return None if mandate is None else key

    def mandate_read(self, read: RegistryRead) -> None:
        """The host's read of a mandate's registry (see :mod:`a402.mandate.enclave`)."""
        self._mandates.read(read, now=self._wall or None)
        if self._mandates.changed:
            self._mandates.changed = False
            self._changed()

    def _book(self, held: _Held, spent: bool, amount: int | None = None) -> None:
        """σ_U was signed for the call in flight (``spent``, for ``amount``: the charge, at
        most the δ reserved), or it ended without."""
        if held.call is not None:
            key = f"{held.call.client}|{held.call.once}"
            if spent:
                self._mandates.spent(key, amount)
            else:
                self._mandates.release(key)
            if self._mandates.changed:
                self._mandates.changed = False
                self._changed()

    def _release(self, held: _Held) -> None:
        if held.call is not None:
            self._reserved.pop((held.call.client, held.call.once), None)
            held.call = None

    def _after(self, held: _Held, step: Step) -> Step:
        for event in step.events:
            if isinstance(event, PaymentAuthorized) and held.call is not None:
                self._consume(held, held.call)
                self._book(held, spent=True, amount=event.amount)
            elif isinstance(event, RequestExpired | RequestAbandoned | ResultDelivered):
                if isinstance(event, ResultDelivered):
                    self._book(held, spent=True, amount=event.amount)
                self._book(held, spent=False)  # released: given back only if never signed
                self._release(held)
        return step

    def receive(self, channel_id: bytes, message: AscMessage, now: float) -> Step:
        held = self._get(channel_id)
        if isinstance(message, Reply):
            if self._ended(channel_id):
                raise LocalProtocolError(Reason.NOT_ALLOWED, "the channel was refunded or settled")
            if not held.attested:
                raise LocalProtocolError(Reason.NOT_ALLOWED,
                                         "the provider key was not seen attested (no OPEN)")
            call = held.call
            if held.channel.status is Status.LOCKED and call is None:
                raise LocalProtocolError(Reason.NOT_ALLOWED, "no signed call for this request")
            if call is not None and (call.client, call.once) in self._consumed:
                raise LocalProtocolError(Reason.NOT_ALLOWED, "this signed call has paid already")
        return self._after(held, held.channel.receive(message, now=now))

    def poll(self, channel_id: bytes, now: float) -> Step:
        held = self._get(channel_id)
        return self._after(held, held.channel.poll(now=now))

    def abandon(self, channel_id: bytes) -> Step:
        held = self._get(channel_id)
        return self._after(held, held.channel.abandon())

    def close(self, channel_id: bytes) -> Close:
        return self._get(channel_id).channel.close()

    def closed_on_chain(self, channel_id: bytes) -> None:
        held = self._get(channel_id)
        held.channel.closed_on_chain()

    def provider_force_closed(self, channel_id: bytes, request_id: int, signature: bytes
                              ) -> Step:
        held = self._get(channel_id)
        return self._after(held, held.channel.provider_force_closed(request_id, signature))

    # -- persistence --------------------------------------------------------------

    @staticmethod
    def _label(channel_id: bytes) -> str:
        return f"a402/vault-channel/{channel_id.hex()}"

    def export(self, channel_id: bytes) -> bytes:
        """The channel's state, sealed (the host's ``unseal`` cannot open it).

        Its size does not grow with the calls the channel paid: those are in the
        channel's *log* (one entry per σ_U, :meth:`take_log`), which the host stores
        next to the record, in the same transaction. The record names the log's length
        and the digest of its last entry, and every entry the digest of the one before
        (a hash chain from a genesis bound to the channel id), so a host can neither
        leave an entry out nor change one when it hands the log back to :meth:`restore`
        (which then refuses the record): it can only hand back the whole log or have the
        channel not run at all. The entries hold what the host saw anyway (idempotency
        key and creation time of a call it relayed), so they need integrity, not secrecy.
        """
        held = self._get(channel_id)
        call = held.call
        fixed = held.record_fixed
        if not fixed:
            fixed = held.record_fixed = b"".join((
                _CHANNEL_HEADER, _snap.s(held.owner), _snap.s(held.funding)))
        record = b"".join((
            fixed, _snap.b(self._life), _snap.b(held.channel.snapshot(binary=True)),
            _snap.ABSENT if call is None else b"".join((
                _snap.PRESENT, _snap.s(call.client), _snap.s(call.once),
                _snap.i(call.timestamp))),
            _snap.i(held.log_count), _snap.b(held.log_head), _snap.i(held.log_newest),
            _snap.t(held.attested),
            # What prunes the log at a restore: restored with it, so a pruned call stays stale.
            _snap.i(self._newest.get(held.owner, 0)),
        ))
        return self._kernel.seal(self._label(channel_id), record)

    @staticmethod
    def _record(plaintext: bytes) -> dict[str, Any]:
        """An unsealed channel record (binary, or the JSON of earlier code) as the JSON
        record's fields, but ``channel``: the machine's snapshot as bytes."""
        if not plaintext.startswith(_CHANNEL_HEADER[:4]):
            record = json.loads(plaintext)
            if not isinstance(record, dict) or record.get("format") not in (
                    _CHANNEL_FORMAT, _CHANNEL_FORMAT_V1):
                raise ValueError("not a vault channel record")
            channel = record["channel"]
            if not isinstance(channel, str):
                raise ValueError("a vault channel record without its channel")
            record["channel"] = channel.encode()
            return record
        doc = _snap.read(plaintext, _CHANNEL_HEADER, _CHANNEL_FIELDS)
        call = doc["call"]
        return {
            "format": _CHANNEL_FORMAT, "channel": doc["channel"], "owner": doc["owner"],
            "funding": doc["funding"],
            "call": None if call is None else [call["client"], call["once"], call["timestamp"]],
            "log": [doc["logCount"], doc["logHead"].hex(), doc["logNewest"]],
            "attested": doc["attested"], "life": doc["life"].hex(), "newest": doc["newest"],
        }

    def _restore_log(self, held: _Held, channel_id: bytes, count: int, head: bytes,
                     entries: Mapping[int, bytes]) -> None:
        """Load the consumed calls of the log ending at entry ``count - 1`` (digest ``head``),
        from the last entry back to the first one whose ``newest`` shows that it and every
        entry before it were created before the owner's horizon less the slack (calls
        :meth:`_fresh` refuses anyway). An entry missing or not matching its successor's
        digest (or the record's) refuses the record: ``log_incomplete``."""
        cutoff = self._horizon(held.owner) - self.slack
        expect, seq = head, count
        loaded: list[tuple[str, str, int]] = []
        while seq > 0:
            raw = entries.get(seq - 1)
            if raw is None:
                raise EnclaveError("log_incomplete",
                                   f"the channel's log of paid calls lacks entry {seq - 1}")
            if not hmac.compare_digest(_log_digest(channel_id, raw), expect):
                raise EnclaveError("log_incomplete",
                                   f"entry {seq - 1} of the channel's log is not the one sealed")
            try:
                e = json.loads(raw)
                if int(e["seq"]) != seq - 1:
                    raise ValueError("an entry out of place")
                newest = int(e["newest"])
                once, created = str(e["once"]), int(e["createdAt"])
                client = str(e.get("client", held.owner))
                prev = bytes.fromhex(e["prev"])
            except (ValueError, KeyError, TypeError) as err:
                raise EnclaveError("malformed", f"the channel's log: {err}") from None
            if newest + self.window < cutoff:
                break  # this call and every earlier one are stale: nothing to keep
            loaded.append((client, once, created))
            expect, seq = prev, seq - 1
        if seq == 0 and count and not hmac.compare_digest(expect, _log_digest(channel_id, b"")):
            raise EnclaveError("log_incomplete", "the channel's log does not start at its genesis")
        for client, once, created in loaded:
            self._consume(held, _Binding(client, once, created), log=False)
            self._advance(client, created)

    def restore(self, channel_id: bytes, blob: bytes,
                log: Mapping[int, bytes] | None = None) -> None:
        """Run a channel again from :meth:`export` (a no-op if it runs already), with its
        log of consumed calls (``log``: entry bytes by their number, as :meth:`take_log`
        gave them; at least the recent ones, see :meth:`_restore_log`). Refused
        before the ledger is restored, after a first boot for a channel this life of the
        code did not approve (it was sealed by an earlier one, whose ledger is gone), and
        for any channel this ledger does not have (``not_approved``: the host wrote its
        record before the ledger change approving it was stored, then lost that change;
        no approval of it left the vault, so it cannot have opened)."""
        self._check_ready()
        if channel_id in self._held:
            return
        if self._first_boot and channel_id not in self._channels:
            raise EnclaveError("not_a_first_boot",
                               "a channel from before a first boot: restore the ledger")
        if channel_id not in self._channels:
            # Its record was written before the ledger change that approved it was stored
            # (the host crashed between the two, or lost the compare-and-set): this ledger
            # never approved it, so this code adopts it never (no σ_U, no write-off).
            raise EnclaveError("not_approved",
                               "this vault's ledger never approved the channel")
        try:
            record = self._record(self._kernel.unseal(self._label(channel_id), blob))
            channel = VaultChannel.restore(record["channel"], self._signer)
            count, head, log_newest = (
                (int(record["log"][0]), bytes.fromhex(record["log"][1]), int(record["log"][2]))
                if record["format"] == _CHANNEL_FORMAT else (0, b"", 0))
        except (ValueError, KeyError, TypeError) as e:
            raise EnclaveError("malformed", str(e)) from None
        if channel.channel_id != channel_id:
            raise EnclaveError("malformed", "the record is for another channel")
        named = record.get("life", "")
        if named != self._life.hex() and not (named == "" and channel_id in self._channels):
            # (A legacy record names no life: it restores only for a channel this ledger
            # approved, which no first boot's ledger holds.)
            raise EnclaveError("not_this_life",
                               "a channel record from an earlier life of this vault")
        held = _Held(channel, record["owner"], record["funding"],
                     attested=record.get("attested") is True)
        self._advance(held.owner, int(record.get("newest", record.get("highWater", 0))))
        if record["format"] == _CHANNEL_FORMAT:
            self._restore_log(held, channel_id, count, head, log or {})
            held.log_count, held.log_head, held.log_newest = count, head, log_newest
        else:
            # An earlier code's record lists its consumed calls: each goes into the log
            # (entries the host stores with this channel's next record, which names them).
            for client, _, timestamp in record["consumed"]:
                self._advance(client, int(timestamp))
            for client, nonce, timestamp in record["consumed"]:
                self._consume(held, _Binding(client, nonce, int(timestamp)))
        call = record["call"]
        if call is not None:
            held.call = _Binding(call[0], call[1], int(call[2]))
            self._reserved[(call[0], call[1])] = channel_id
            if channel.status is Status.PENDING:  # σ_U was signed: its δ stays spent
                self._book(held, spent=True)
        self._held[channel_id] = held
        if self._ended(channel_id):  # refunded or settled: an older record runs no more
            channel.closed_on_chain()
            self._release(held)

    def forget(self, channel_id: bytes) -> None:
        """Unload a settled channel (its record stays with the host)."""
        held = self._held.get(channel_id)
        if held is not None and held.channel.status is Status.CLOSED:
            self.unload(channel_id)

    def unload(self, channel_id: bytes) -> None:
        """Drop the running machine; it runs again from the record the host restores (the
        host could not store the last one). The nonces it consumed stay consumed."""
        held = self._held.pop(channel_id, None)
        if held is not None:
            self._release(held)

# ------------------------------------------------------------ what the host sees


class EnclaveChannel:
    """One channel's machine as the host sees it: the sans-IO surface of
    :class:`~a402.asc.VaultChannel`, forwarded into the enclave. Signing happens there."""

    __slots__ = ("_code", "channel_id", "domain", "lock_timeout", "terms")

    def __init__(self, code: VaultEnclaveCode, channel_id: bytes) -> None:
        self._code = code
        channel = code._get(channel_id).channel
        self.channel_id = channel_id
        self.terms = channel.terms
        self.domain = channel.domain
        self.lock_timeout = channel.lock_timeout

    @property
    def _machine(self) -> VaultChannel:
        return self._code._get(self.channel_id).channel

    @property
    def owner(self) -> str:
        return self._code._get(self.channel_id).owner

    @property
    def status(self) -> Status:
        return self._machine.status

    @property
    def version(self) -> int:
        return self._machine.version

    @property
    def next_request_id(self) -> int:
        return self._machine.next_request_id

    @property
    def free(self) -> int:
        return self._machine.free

    @property
    def locked(self) -> int:
        return self._machine.locked

    @property
    def provider_balance(self) -> int:
        return self._machine.provider_balance

    @property
    def state(self) -> BalanceState:
        return self._machine.state

    def latest_state(self) -> SignedState:
        return self._machine.latest_state()

    def figures(self) -> tuple[Status, int, int, int, int, int]:
        """``(status, version, next_request_id, free, locked, provider_balance)`` in one
        look: what every checkpoint indexes (the same values as the properties)."""
        m = self._machine
        return m.status, m.version, m.next_request_id, m.free, m.locked, m.provider_balance

    def request(self, call: SignedCall, amount: int, *, now: float) -> Exec:
        with self._code.lock:
            return self._code.request(self.channel_id, call, amount, now)

    def receive(self, message: AscMessage, *, now: float) -> Step:
        with self._code.lock:
            return self._code.receive(self.channel_id, message, now)

    def poll(self, *, now: float) -> Step:
        with self._code.lock:
            return self._code.poll(self.channel_id, now)

    def abandon(self) -> Step:
        with self._code.lock:
            return self._code.abandon(self.channel_id)

    def close(self) -> Close:
        with self._code.lock:
            return self._code.close(self.channel_id)

    def closed_on_chain(self) -> None:
        with self._code.lock:
            self._code.closed_on_chain(self.channel_id)

    def provider_force_closed(self, request_id: int, signature: bytes) -> Step:
        with self._code.lock:
            return self._code.provider_force_closed(self.channel_id, request_id, signature)

    def pending_exec(self) -> Exec | None:
        return self._machine.pending_exec()

    def pending_request(self) -> tuple[int, int, bytes] | None:
        return self._machine.pending_request()

    def pending_reply(self) -> Reply | None:
        return self._machine.pending_reply()

    def pending_auth(self) -> Auth | None:
        return self._machine.pending_auth()

    def pending_close(self) -> Close | None:
        return self._machine.pending_close()

    def last_reveal(self) -> Reveal | None:
        return self._machine.last_reveal()

    def last_ack(self) -> Ack | None:
        return self._machine.last_ack()

    def snapshot(self) -> bytes:
        """The channel's record, sealed for the enclave's code alone."""
        with self._code.lock:
            return self._code.export(self.channel_id)

    def checkpoint(self) -> tuple[bytes, list[LogEntry]]:
        """The channel's record (:meth:`snapshot`) and the entries of its log of consumed
        calls made since the last checkpoint, taken together: the host stores both in one
        transaction (the record names the entries; without them it does not restore)."""
        with self._code.lock:
            return self._code.export(self.channel_id), self._code.take_log(self.channel_id)


class VaultEnclave:
    """The vault enclave as its host sees it, once its code runs.

    Not offered, on purpose: signing a digest, a channel's machine or its keys,
    unsealed records. See the module docstring for what each call checks.
    """

    __slots__ = ("_code",)

    def __init__(self, code: VaultEnclaveCode) -> None:
        self._code = code

    @property
    def address(self) -> bytes:
        """The vault's 20-byte Ethereum address (the attested key's)."""
        return self._code.address

    @property
    def checksum_address(self) -> str:
        return to_checksum(self._code.address)

    @property
    def account(self) -> str:
        """The CAIP-10 account clients sign their calls for."""
        return self._code.account

    def salt(self) -> bytes:
        """The salt of a new channel's terms (the enclave approves no other)."""
        with self._code.lock:
            return self._code.salt()

    @property
    def life_id(self) -> str:
        """This life's public name (``GET /v1/info``'s ``life``): clients sign it into
        every call, and a call for another life is refused (``wrong_life``)."""
        return self._code.life_id

    @property
    def ledger_version(self) -> int:
        """The ledger's version (sealed in it too): one more on every change."""
        return self._code.ledger_version

    @property
    def ledger_unsaved(self) -> bool:
        """Whether the ledger changed since it was last exported (or restored)."""
        return self._code.ledger_unsaved


    def export_ledger(self) -> bytes:
        with self._code.lock:
            return self._code.export_ledger()

    def restore_ledger(self, blob: bytes) -> None:
        with self._code.lock:
            self._code.restore_ledger(blob)

    def approve_pool_channel(self, call: SignedCall, terms: ChannelTerms, lock_timeout: float,
                             *, now: int) -> OpenApproval:
        with self._code.lock:
            return self._code.approve_pool_channel(call, terms, lock_timeout, now=now)

    def approve_wallet_channel(self, terms: ChannelTerms, lock_timeout: float, *, now: int
                               ) -> OpenApproval:
        with self._code.lock:
            return self._code.approve_wallet_channel(terms, lock_timeout, now=now)

    def approved_until(self, channel_id: bytes) -> int:
        with self._code.lock:
            return self._code.approved_until(channel_id)

    def open_failed(self, channel_id: bytes, *, now: int) -> int:
        with self._code.lock:
            return self._code.open_failed(channel_id, now=now)

    def settled(self, channel_id: bytes, client_payout: int) -> int:
        with self._code.lock:
            return self._code.settled(channel_id, client_payout)

    def mandate_read(self, read: RegistryRead) -> None:
        """Hand the enclave a read of a mandate's registry (``isRevoked`` at a block): a
        call under that mandate pays only with a fresh one (:mod:`a402.mandate.enclave`)."""
        with self._code.lock:
            self._code.mandate_read(read)

    def channel(self, channel_id: bytes) -> EnclaveChannel | None:
        if channel_id not in self._code._held:
            return None
        return EnclaveChannel(self._code, channel_id)

    def authenticate(self, call: SignedCall, *, now: float, window: int) -> api.Authenticated:
        """The vault API's check of a signed call (``verify_request``, with the host's
        ``now`` and ``window``), made in the enclave, which then needs no second recovery
        of the signature when the call comes to pay or approve."""
        with self._code.lock:
            return self._code.authenticate(call, now, window)

    def restore(self, channel_id: bytes, blob: bytes,
                log: Mapping[int, bytes] | None = None) -> EnclaveChannel:
        """Run a channel again from its record and its log of consumed calls (entry bytes
        by number, as :meth:`EnclaveChannel.take_log` gave them)."""
        with self._code.lock:
            self._code.restore(channel_id, blob, log)
        return EnclaveChannel(self._code, channel_id)

    def missing(self, client: str) -> list[bytes]:
        """The channels of ``client`` to restore before its next paid call."""
        with self._code.lock:
            return self._code._missing(address_key(client))

    def forget(self, channel_id: bytes) -> None:
        with self._code.lock:
            self._code.forget(channel_id)

    def unload(self, channel_id: bytes) -> None:
        with self._code.lock:
            self._code.unload(channel_id)

    def bind_tunnel(self, handle: str, channel_id: bytes) -> bytes:
        with self._code.lock:
            return self._code.bind_tunnel(handle, channel_id)

    def force_close(self, channel_id: bytes, *, now: int) -> tuple[SignedState, bytes]:
        with self._code.lock:
            return self._code.force_close(channel_id, now=now)



__all__ = [
    "FORCE_CLOSE_LIFETIME",
    "INVOKE_PATH",
    "OPEN_APPROVAL_LIFETIME",
    "ChannelsNeeded",
    "EnclaveChannel",
    "LogEntry",
    "OpenApproval",
    "SignedCall",
    "VaultEnclave",
    "VaultEnclaveCode",
    "life_id",
    "paid_request",
    "path_and_query",
    "request_headers",
]
