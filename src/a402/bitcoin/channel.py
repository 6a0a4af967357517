"""The A402 exchange on a Bitcoin channel, and every closing transaction (sans-IO).

One paid request (the same four messages as the EVM channel, ``a402.asc.machine``)::

    vault U                                          provider enclave S
    free ≥ δ ──────────────── EXEC(rid, δ) ────────▶ run the request; t, T = t·G
                                                     tx_i = close at provider balance b + δ
                                                     m = BIP-341 sighash of tx_i (payment leaf)
    rebuild tx_i, m; pre-verify σ̂_S ◀── REPLY ────── σ̂_S = pre-sign(S, m, T), EncRes = seal(t, res)
    σ̂_U = pre-sign(U, m, T) ───────── AUTH ────────▶ pre-verify σ̂_U; now holds tx_i's claim
    t·G = T, open EncRes, b += δ ◀─── REVEAL(t) ────

Why the provider cannot be paid without revealing ``t``: the payment leaf needs the vault's
signature on ``tx_i``, and the vault only ever gives an *adaptor pre-signature* ``σ̂_U`` under
the provider's own ``T``. The one way to a valid ``σ_U`` is ``adapt(σ̂_U, t)``, so the
provider's force close (:meth:`ProviderChannel.force_close`) publishes ``σ_U`` in the witness
and :meth:`VaultChannel.on_chain_close` recovers ``t = extract(σ̂_U, σ_U, T)`` from it alone and
opens the sealed result. The provider's own signature in that witness is the completion of its
pre-signature ``σ̂_S`` (the paper's "adaptor-completed signature"), which reveals ``t`` too.

What the result is worth: the transaction cannot commit to the result (the EVM payment
message carries its hash), so that the sealed bytes are the service's answer rests on the
provider's attested enclave, as in the paper; the vault checks only their form and size.

The cooperative close is a key-path spend signed by MuSig2 (BIP-327) of the vault and the
provider (:meth:`VaultChannel.cooperative_proposal`, :meth:`ProviderChannel.cooperative_answer`,
:meth:`VaultChannel.cooperative_finish`): each partially signs only the close of the state it
holds, and the vault verifies the provider's partial signature before adding its own.

What the vault checks before it signs anything: the REPLY's ``σ̂_S`` must pre-verify against
the provider's key, the sighash the *vault* computed from the transaction it built itself, and
``T``; a tampered or mismatched pre-signature raises :class:`ExchangeError` and the channel is
unchanged. The vault never issues a plain signature on a payment-leaf spend except for the
cooperative close of the state it already credited.

A stale client close loses (design): the client's only path alone is the refund leaf, valid
``Δ`` blocks after the funding confirmed. Until then only the vault and the provider together
can spend (key path or payment leaf), and the provider holds the newest state's claim;
:meth:`ProviderChannel.poll` returns its force close
once the chain reaches ``funding height + Δ − margin`` with earnings unclosed. A client spend
that tries earlier is refused (BIP-68); once the provider's close confirms, any client spend is
a double spend. So the provider's close path answers; its duty is to close within Δ. Δ
counts from the funding, so it bounds the channel's life: from ``funding height + Δ`` the
client alone can take the whole output, the provider's unclosed earnings included.

Fees: every closing transaction pays ``vsize × fee_rate`` (sizes exact before signing, since
signatures are 64 bytes) out of the client's share; the vault refuses a payment that would
leave the client's share below that fee plus the P2TR dust limit, or the provider's below
that limit (a first payment under 330 sat); the provider pre-signs only a state paying it
more than its newest claim (an EXEC of zero or a negative amount would replace that claim).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

from bitcointx.core import CMutableTransaction, CTransaction

from a402.crypto import (
    BIP340,
    EncRes,
    PreSignature,
    ResultContext,
    SecretKey,
    adaptor_point,
    generate_adaptor,
    is_adaptor_secret,
    seal,
    sealing,
)
from a402.crypto.errors import CryptoError

from . import musig, signing
from . import transactions as txs
from .scripts import (
    FORCE_SETTLE_LEAF,
    PAYMENT_LEAF,
    REFUND_LEAF,
    ChannelKeys,
    TaprootOutput,
    VaultDepositKeys,
)
from .transactions import Output, Utxo

_DUMMY_SIG = bytes(64)
#: The largest sealed result a vault accepts in a REPLY (before it pre-signs anything).
MAX_SEALED = 4 * 1024 * 1024


class ExchangeError(ValueError):
    """A message or transaction the channel refuses; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# ---------------------------------------------------------------- channel and transactions


@dataclass(frozen=True)
class ChannelParams:
    """Everything both sides agree on at opening: keys, the funding coin, payouts, fee rate."""

    keys: ChannelKeys
    funding: Utxo
    client_payout: bytes
    provider_payout: bytes
    fee_rate: int

    @cached_property
    def output(self) -> TaprootOutput:
        return self.keys.output()

    @property
    def channel_id(self) -> bytes:
        """``SHA-256(txid ‖ vout)`` of the funding outpoint: binds sealed results to it."""
        return hashlib.sha256(
            bytes.fromhex(self.funding.txid) + self.funding.vout.to_bytes(4, "little")
        ).digest()

    def cooperative_close(self, provider_balance: int) -> CMutableTransaction:
        """The unsigned key-path spend at ``provider_balance`` (MuSig2 of U and S)."""
        return self._split(provider_balance, [_DUMMY_SIG], txs.NO_RELATIVE_LOCK)

    def cooperative_key(self) -> musig.KeyAgg:
        """The key-aggregation cache of U and S, tweaked to the output key (BIP-341)."""
        agg = self.keys.cooperative_key()
        agg.taproot_tweak(self.output.merkle_root)
        if agg.xonly() != self.output.output_key:  # pragma: no cover - both follow BIP-341
            raise ExchangeError("key-mismatch", "MuSig2 output key differs from the tree's")
        return agg

    def key_path_sighash(self, tx: CMutableTransaction) -> bytes:
        return txs.sighash(tx, 0, [self.funding])

    def payment_close(self, provider_balance: int) -> CMutableTransaction:
        """The unsigned payment-leaf spend at ``provider_balance`` (cooperative or forced)."""
        leaf, control = self.output.leaf(PAYMENT_LEAF)
        stack = txs.script_path_stack([_DUMMY_SIG, _DUMMY_SIG], leaf, control)
        return self._split(provider_balance, stack, txs.NO_RELATIVE_LOCK)

    def refund(self, provider_balance: int = 0) -> CMutableTransaction:
        """The unsigned refund-leaf spend (client alone, Δ blocks after funding)."""
        leaf, control = self.output.leaf(REFUND_LEAF)
        stack = txs.script_path_stack([_DUMMY_SIG], leaf, control)
        return self._split(provider_balance, stack, self.keys.refund_delay)

    def capacity(self) -> int:
        """The largest provider balance a payment-leaf close can pay (client keeps dust+fee)."""
        fee = self._fee_for(2, PAYMENT_LEAF)
        return self.funding.amount - fee - txs.P2TR_DUST

    def _fee_for(self, n_outputs: int, leaf_name: str) -> int:
        outs = [Output(self.provider_payout, txs.P2TR_DUST)] * (n_outputs - 1)
        outs.append(Output(self.client_payout, txs.P2TR_DUST))
        leaf, control = self.output.leaf(leaf_name)
        n_sigs = 2 if leaf_name == PAYMENT_LEAF else 1
        template = txs.build([self.funding], outs)
        stack = txs.script_path_stack([_DUMMY_SIG] * n_sigs, leaf, control)
        return txs.vsize_with(template, [stack]) * self.fee_rate

    def _split(self, provider: int, stack: list[bytes], sequence: int) -> CMutableTransaction:
        if provider < 0:
            raise ExchangeError("bad-balance", "negative provider balance")
        if 0 < provider < txs.P2TR_DUST:
            raise ExchangeError("below-dust", f"a provider output of {provider} sat is dust")
        if provider > self.funding.amount - txs.P2TR_DUST:
            raise ExchangeError("over-capacity", f"{provider} sat exceeds the channel")
        outs = []
        if provider > 0:
            outs.append(Output(self.provider_payout, provider))
        outs.append(Output(self.client_payout, txs.P2TR_DUST))
        template = txs.build([self.funding], outs, [sequence])
        fee = txs.vsize_with(template, [stack]) * self.fee_rate
        client = self.funding.amount - provider - fee
        if client < txs.P2TR_DUST:
            raise ExchangeError("over-capacity", f"client share {client} sat after fee {fee}")
        outs[-1] = Output(self.client_payout, client)
        return txs.build([self.funding], outs, [sequence])

    def sighash(self, tx: CMutableTransaction, leaf_name: str) -> bytes:
        leaf, _ = self.output.leaf(leaf_name)
        return txs.sighash(tx, 0, [self.funding], leaf)

    def witness(self, tx: CMutableTransaction, leaf_name: str, sigs: list[bytes]) -> bytes:
        """``tx`` with its witness: the leaf's signatures, the leaf, the control block."""
        leaf, control = self.output.leaf(leaf_name)
        signed = tx.clone()
        txs.set_witness(signed, 0, txs.script_path_stack(sigs, leaf, control))
        return bytes(signed.serialize())


def payment_witness_sigs(provider_sig: bytes, vault_sig: bytes) -> list[bytes]:
    """Witness order for ``<U> CHECKSIGVERIFY <S> CHECKSIG``: S's below U's (U's is on top)."""
    return [provider_sig, vault_sig]


def funding_transaction(
    wallet_coin: Utxo,
    wallet_key: SecretKey,
    channel_script_pubkey: bytes,
    deposit: int,
    change_script_pubkey: bytes,
    fee_rate: int,
) -> bytes:
    """The channel's (or deposit's) funding: a BIP-86 wallet coin → channel output + change."""
    outs = [Output(channel_script_pubkey, deposit), Output(change_script_pubkey, txs.P2TR_DUST)]
    template = txs.build([wallet_coin], outs)
    fee = txs.vsize_with(template, [[_DUMMY_SIG]]) * fee_rate
    change = wallet_coin.amount - deposit - fee
    if change < txs.P2TR_DUST:
        raise ExchangeError("insufficient-funds", f"change {change} sat after fee {fee}")
    tx = txs.build([wallet_coin], [outs[0], Output(change_script_pubkey, change)])
    digest = txs.sighash(tx, 0, [wallet_coin])
    txs.set_witness(tx, 0, [signing.sign_key_path(wallet_key, b"", digest)])
    return bytes(tx.serialize())


# ---------------------------------------------------------------- the exchange messages


@dataclass(frozen=True)
class Exec:
    request_id: int
    amount: int
    request: bytes


@dataclass(frozen=True)
class Reply:
    request_id: int
    adaptor: bytes
    presignature: bytes
    sealed: bytes


@dataclass(frozen=True)
class Auth:
    request_id: int
    presignature: bytes


@dataclass(frozen=True)
class Reveal:
    request_id: int
    t: bytes


@dataclass(frozen=True)
class CoopProposal:
    """The vault's cooperative close: the unsigned key-path spend and its MuSig2 nonce."""

    unsigned: bytes
    pubnonce: bytes


@dataclass(frozen=True)
class CoopAnswer:
    """The provider's nonce and partial signature on the proposed close."""

    pubnonce: bytes
    partial_signature: bytes


@dataclass
class _Pending:
    request_id: int
    amount: int
    message: bytes = b""
    adaptor: bytes = b""
    provider_pre: PreSignature | None = None
    vault_pre: PreSignature | None = None
    sealed: bytes = b""


def _presig(value: str | None) -> PreSignature | None:
    return None if value is None else BIP340.presignature_from_bytes(bytes.fromhex(value))


# ---------------------------------------------------------------- the vault's side


@dataclass
class VaultChannel:
    """The vault's view: the credited provider balance and the one request in flight."""

    params: ChannelParams
    key: SecretKey
    provider_balance: int = 0
    next_request_id: int = 0
    pending: _Pending | None = None
    results: dict[int, bytes] = field(default_factory=dict)
    _last_reveal: Reveal | None = None
    _coop: tuple[bytes, bytes, musig.SecretNonce, bytes] | None = None

    def snapshot(self) -> bytes:
        """The channel's state as JSON, to be stored durably before any message it produced
        is sent (an AUTH above all: once σ̂_U is out, only ``t`` settles the request)."""
        pending = None
        if self.pending is not None:
            p = self.pending
            pending = {
                "requestId": p.request_id, "amount": p.amount, "message": p.message.hex(),
                "adaptor": p.adaptor.hex(), "sealed": p.sealed.hex(),
                "providerPre": p.provider_pre.to_bytes().hex() if p.provider_pre else None,
                "vaultPre": p.vault_pre.to_bytes().hex() if p.vault_pre else None,
            }
        last = self._last_reveal
        return json.dumps({
            "format": "a402/bitcoin-vault-channel/v1",
            "providerBalance": self.provider_balance,
            "nextRequestId": self.next_request_id,
            "pending": pending,
            "lastReveal": [last.request_id, last.t.hex(),
                           self.results[last.request_id].hex()] if last else None,
        }).encode()

    @classmethod
    def restore(cls, data: bytes, params: ChannelParams, key: SecretKey) -> VaultChannel:
        """The channel a :meth:`snapshot` recorded (same parameters and key)."""
        doc = json.loads(data)
        if doc.get("format") != "a402/bitcoin-vault-channel/v1":
            raise ExchangeError("bad-snapshot", "not a Bitcoin vault channel snapshot")
        channel = cls(params, key, int(doc["providerBalance"]), int(doc["nextRequestId"]))
        if doc["pending"] is not None:
            p = doc["pending"]
            channel.pending = _Pending(
                int(p["requestId"]), int(p["amount"]), bytes.fromhex(p["message"]),
                bytes.fromhex(p["adaptor"]),
                _presig(p["providerPre"]), _presig(p["vaultPre"]), bytes.fromhex(p["sealed"]),
            )
        if doc["lastReveal"] is not None:
            rid, t, result = doc["lastReveal"]
            channel._last_reveal = Reveal(int(rid), bytes.fromhex(t))
            channel.results[int(rid)] = bytes.fromhex(result)
        return channel

    def request(self, request: bytes, amount: int) -> Exec:
        """Start a paid request of ``amount`` sat (one at a time)."""
        if self.pending is not None:
            raise ExchangeError("request-in-flight", "one request at a time")
        if amount <= 0 or self.provider_balance + amount > self.params.capacity():
            raise ExchangeError("over-capacity", f"{amount} sat does not fit the channel")
        if self.provider_balance + amount < txs.P2TR_DUST:
            raise ExchangeError(
                "below-dust", f"the provider's balance would stay below {txs.P2TR_DUST} sat"
            )
        rid = self.next_request_id
        self.next_request_id += 1
        self.pending = _Pending(rid, amount)
        return Exec(rid, amount, request)

    def on_reply(self, reply: Reply) -> Auth:
        """Check the provider's pre-signature on the vault's own rebuild of tx_i; pre-sign it."""
        pending = self._pending(reply.request_id)
        if pending.vault_pre is not None:
            raise ExchangeError("duplicate-reply", "already authorised")
        if len(reply.sealed) > MAX_SEALED:
            raise ExchangeError("too-large", f"sealed result over {MAX_SEALED} bytes")
        try:
            EncRes.from_bytes(reply.sealed)
        except CryptoError:
            raise ExchangeError("bad-result", "the sealed result is malformed") from None
        tx = self.params.payment_close(self.provider_balance + pending.amount)
        message = self.params.sighash(tx, PAYMENT_LEAF)
        try:
            presig = BIP340.presignature_from_bytes(reply.presignature)
            valid = BIP340.pre_verify(
                self.params.keys.provider, message, reply.adaptor, presig
            )
        except (ValueError, CryptoError):
            valid = False
        if not valid:
            raise ExchangeError(
                "bad-presignature",
                "the provider's pre-signature does not pre-verify on this state's sighash",
            )
        vault_pre = BIP340.pre_sign(self.key, message, reply.adaptor)
        pending.message, pending.adaptor, pending.sealed = message, reply.adaptor, reply.sealed
        pending.provider_pre, pending.vault_pre = presig, vault_pre
        return Auth(reply.request_id, vault_pre.to_bytes())

    def on_reveal(self, reveal: Reveal) -> bytes:
        """Credit the request once ``t·G = T`` and the sealed result opens; return the result.

        A retransmission of the REVEAL that settled the last request returns the same result
        and credits nothing more.
        """
        if reveal == self._last_reveal:
            return self.results[reveal.request_id]
        pending = self._pending(reveal.request_id)
        if pending.vault_pre is None or not is_adaptor_secret(reveal.t, pending.adaptor):
            raise ExchangeError("bad-reveal", "t does not match the adaptor point")
        result = self._settle(pending, reveal.t)
        self._last_reveal = reveal
        return result

    def on_chain_close(self, raw: bytes) -> bytes | None:
        """The provider force-closed: extract ``t`` from the witness alone, open the result.

        Returns the result of the request in flight if this close settled it, else None.
        """

        try:
            tx = CTransaction.deserialize(raw)
        except Exception:  # bitcointx raises several types on truncated or bad bytes
            raise ExchangeError("malformed", "not a transaction") from None
        if not tx.wit.vtxinwit:
            return None
        stack = list(tx.wit.vtxinwit[0].scriptWitness.stack)
        leaf, _ = self.params.output.leaf(PAYMENT_LEAF)
        if len(stack) != 4 or bytes(stack[2]) != bytes(leaf):
            return None
        pending = self.pending
        if pending is None or pending.vault_pre is None:
            return None
        try:
            t = BIP340.extract(pending.vault_pre, bytes(stack[1]), pending.adaptor)
        except CryptoError:
            return None  # not the pending state's close (an older or a cooperative one)
        return self._settle(pending, t)

    def cooperative_proposal(self) -> CoopProposal:
        """Round 1 of the MuSig2 cooperative close of the credited state (key path).

        The secret nonce stays in memory only (never in a snapshot): a vault that restarts
        proposes again with a fresh one.
        """
        if self.pending is not None:
            raise ExchangeError("request-in-flight", "settle or abandon it first")
        tx = self.params.cooperative_close(self.provider_balance)
        message = self.params.key_path_sighash(tx)
        secnonce, pubnonce = musig.nonce_gen(self.key, self.params.cooperative_key(), message)
        self._coop = (bytes(tx.serialize()), message, secnonce, pubnonce)
        return CoopProposal(self._coop[0], pubnonce)

    def cooperative_finish(self, answer: CoopAnswer) -> bytes:
        """Round 2: check the provider's partial signature, add the vault's, aggregate."""
        if self._coop is None:
            raise ExchangeError("no-proposal", "no cooperative close proposed")
        unsigned, message, secnonce, own_nonce = self._coop
        agg = self.params.cooperative_key()
        try:
            aggnonce = musig.nonce_agg([own_nonce, answer.pubnonce])
        except musig.MusigError:
            raise ExchangeError("bad-nonce", "the provider's nonce is malformed") from None
        provider = b"\x02" + self.params.keys.provider
        if not musig.partial_verify(
            answer.partial_signature, answer.pubnonce, provider, aggnonce, message, agg
        ):
            raise ExchangeError("bad-partial-signature", "the provider's partial signature")
        self._coop = None  # the nonce is spent whatever happens next
        own = musig.partial_sign(self.key, secnonce, aggnonce, message, agg)
        signature = musig.partial_sig_agg([own, answer.partial_signature], aggnonce, message, agg)
        tx = CMutableTransaction.deserialize(unsigned)
        txs.set_witness(tx, 0, txs.key_path_stack(signature))
        return bytes(tx.serialize())

    def cooperative_signature(self) -> tuple[bytes, bytes]:
        """The vault's plain signature on the close of the credited state: (unsigned tx, σ_U)."""
        if self.pending is not None:
            raise ExchangeError("request-in-flight", "settle or abandon it first")
        tx = self.params.payment_close(self.provider_balance)
        sig = signing.sign_script_path(self.key, self.params.sighash(tx, PAYMENT_LEAF))
        return bytes(tx.serialize()), sig

    def abandon(self) -> None:
        """Give up a request with no AUTH out (a timed-out EXEC or REPLY)."""
        if self.pending is not None and self.pending.vault_pre is not None:
            raise ExchangeError("authorised", "σ̂_U is out: only t settles this request")
        self.pending = None

    def _pending(self, request_id: int) -> _Pending:
        if self.pending is None or self.pending.request_id != request_id:
            raise ExchangeError("unknown-request", f"request {request_id} is not in flight")
        return self.pending

    def _settle(self, pending: _Pending, t: bytes) -> bytes:
        context = ResultContext(self.params.channel_id, pending.request_id)
        try:
            result = sealing.open(t, pending.sealed, context)
        except CryptoError as exc:
            raise ExchangeError("bad-result", str(exc)) from None
        self.provider_balance += pending.amount
        self.results[pending.request_id] = result
        self.pending = None
        return result


# ---------------------------------------------------------------- the provider's side


@dataclass
class _Claim:
    provider_balance: int
    message: bytes
    t: bytes
    provider_pre: PreSignature
    vault_pre: PreSignature


@dataclass
class ProviderChannel:
    """The provider enclave's view: the newest claimable state and the request in flight."""

    params: ChannelParams
    key: SecretKey
    claim: _Claim | None = None
    _in_flight: tuple[Exec, bytes, bytes, PreSignature] | None = None
    _last: tuple[Auth, Reveal] | None = None
    closed: bool = False

    @property
    def provider_balance(self) -> int:
        return self.claim.provider_balance if self.claim else 0

    def snapshot(self) -> bytes:
        """The provider's claim and request in flight as JSON, to be stored durably before its
        REPLY and its REVEAL are sent (the claim is what it force-closes with; once the vault
        has answered a REPLY with AUTH it cannot abandon that request, so the ``t`` of the
        request in flight must survive a restart too). ``t`` is the enclave's secret: the
        snapshot belongs in the enclave's sealed storage."""
        claim = self.claim
        flight = self._in_flight
        return json.dumps({
            "format": "a402/bitcoin-provider-channel/v1",
            "closed": self.closed,
            "inFlight": None if flight is None else {
                "requestId": flight[0].request_id, "amount": flight[0].amount,
                "request": flight[0].request.hex(), "t": flight[1].hex(),
                "message": flight[2].hex(), "providerPre": flight[3].to_bytes().hex(),
            },
            "claim": None if claim is None else {
                "providerBalance": claim.provider_balance, "message": claim.message.hex(),
                "t": claim.t.hex(), "providerPre": claim.provider_pre.to_bytes().hex(),
                "vaultPre": claim.vault_pre.to_bytes().hex(),
            },
        }).encode()

    @classmethod
    def restore(cls, data: bytes, params: ChannelParams, key: SecretKey) -> ProviderChannel:
        """The channel a :meth:`snapshot` recorded, its request in flight included."""
        doc = json.loads(data)
        if doc.get("format") != "a402/bitcoin-provider-channel/v1":
            raise ExchangeError("bad-snapshot", "not a Bitcoin provider channel snapshot")
        channel = cls(params, key, closed=bool(doc["closed"]))
        c = doc["claim"]
        if c is not None:
            provider_pre, vault_pre = _presig(c["providerPre"]), _presig(c["vaultPre"])
            assert provider_pre is not None and vault_pre is not None
            channel.claim = _Claim(
                int(c["providerBalance"]), bytes.fromhex(c["message"]), bytes.fromhex(c["t"]),
                provider_pre, vault_pre,
            )
        f = doc.get("inFlight")
        if f is not None:
            pre = _presig(f["providerPre"])
            assert pre is not None
            channel._in_flight = (
                Exec(int(f["requestId"]), int(f["amount"]), bytes.fromhex(f["request"])),
                bytes.fromhex(f["t"]), bytes.fromhex(f["message"]), pre,
            )
        return channel

    def on_exec(self, message: Exec, result: bytes) -> Reply:
        """Seal ``result`` under a fresh ``t`` and pre-sign the new state's close under ``T``.

        Only a state paying the provider more than its newest claim is pre-signed: on AUTH it
        replaces that claim, so an EXEC of zero or a negative amount would have the enclave
        give up earnings it holds (or reveal ``t`` for nothing).
        """
        if not isinstance(message.amount, int) or message.amount <= 0:
            raise ExchangeError("bad-amount", f"{message.amount!r} is not a positive amount")
        balance = self.provider_balance + message.amount
        tx = self.params.payment_close(balance)
        digest = self.params.sighash(tx, PAYMENT_LEAF)
        t, adaptor = generate_adaptor()
        presig = BIP340.pre_sign(self.key, digest, adaptor)
        sealed: EncRes = seal(t, result, ResultContext(self.params.channel_id, message.request_id))
        self._in_flight = (message, t, digest, presig)
        return Reply(message.request_id, adaptor, presig.to_bytes(), sealed.to_bytes())

    def on_auth(self, auth: Auth) -> Reveal:
        """Accept σ̂_U only if it pre-verifies on the same sighash under the same T.

        A retransmitted AUTH of the request just revealed gets the same REVEAL again.
        """
        if self._last is not None and self._last[0] == auth:
            return self._last[1]
        if self._in_flight is None or self._in_flight[0].request_id != auth.request_id:
            raise ExchangeError("unknown-request", f"request {auth.request_id} not in flight")
        message, t, digest, own_pre = self._in_flight
        adaptor = BIP340.secret_key(t)  # T's x-only form is not needed; recompute T
        del adaptor

        big_t = adaptor_point(t)
        try:
            vault_pre = BIP340.presignature_from_bytes(auth.presignature)
            ok = BIP340.pre_verify(self.params.keys.vault, digest, big_t, vault_pre)
        except (ValueError, CryptoError):
            ok = False
        if not ok:
            raise ExchangeError("bad-presignature", "the vault's pre-signature does not verify")
        self.claim = _Claim(
            self.provider_balance + message.amount, digest, t, own_pre, vault_pre
        )
        self._in_flight = None
        reveal = Reveal(message.request_id, t)
        self._last = (auth, reveal)
        return reveal

    def force_close(self) -> bytes:
        """The provider's close of its newest state: both pre-signatures completed with t."""
        if self.claim is None:
            raise ExchangeError("nothing-to-claim", "no paid state")
        claim = self.claim
        tx = self.params.payment_close(claim.provider_balance)
        provider_sig = BIP340.adapt(claim.provider_pre, claim.t)
        vault_sig = BIP340.adapt(claim.vault_pre, claim.t)
        return self.params.witness(
            tx, PAYMENT_LEAF, payment_witness_sigs(provider_sig, vault_sig)
        )

    def cooperative_answer(self, proposal: CoopProposal) -> CoopAnswer:
        """Partially sign the vault's key-path close if it pays exactly the newest claim."""
        expected = self.params.cooperative_close(self.provider_balance)
        if proposal.unsigned != bytes(expected.serialize()):
            raise ExchangeError("wrong-state", "the cooperative close is not the newest state")
        tx = CMutableTransaction.deserialize(proposal.unsigned)
        message = self.params.key_path_sighash(tx)
        agg = self.params.cooperative_key()
        secnonce, pubnonce = musig.nonce_gen(self.key, agg, message)
        try:
            aggnonce = musig.nonce_agg([proposal.pubnonce, pubnonce])
        except musig.MusigError:
            raise ExchangeError("bad-nonce", "the vault's nonce is malformed") from None
        return CoopAnswer(pubnonce, musig.partial_sign(self.key, secnonce, aggnonce, message, agg))

    def cooperative_close(self, unsigned: bytes, vault_sig: bytes) -> bytes:
        """Countersign the vault's payment-leaf close (two signatures, for a signer without
        MuSig2) if it pays exactly the newest claim."""
        from bitcointx.core import CMutableTransaction

        expected = self.params.payment_close(self.provider_balance)
        if unsigned != bytes(expected.serialize()):
            raise ExchangeError("wrong-state", "the cooperative close is not the newest state")
        tx = CMutableTransaction.deserialize(unsigned)
        digest = self.params.sighash(tx, PAYMENT_LEAF)
        if not BIP340.verify(self.params.keys.vault, digest, vault_sig):
            raise ExchangeError("bad-signature", "the vault's signature does not verify")
        own = signing.sign_script_path(self.key, digest)
        return self.params.witness(tx, PAYMENT_LEAF, payment_witness_sigs(own, vault_sig))

    def closed_on_chain(self) -> None:
        """The channel output is spent (any path): nothing more to claim or answer."""
        self.closed = True

    def poll(self, height: int, funding_height: int, margin: int) -> bytes | None:
        """The watchtower duty: the force close once the refund is ``margin`` blocks away
        (returned again at every poll until :meth:`closed_on_chain`, to be re-broadcast).

        ``margin`` is the number of blocks the close has to confirm in, 1 ≤ margin < Δ: the
        refund is valid from ``funding height + Δ``, and from then on the client alone can
        spend the whole channel, earnings included.
        """
        if not 1 <= margin < self.params.keys.refund_delay:
            raise ValueError(f"margin must be 1..{self.params.keys.refund_delay - 1} blocks")
        if self.closed or self.claim is None:
            return None
        if height >= funding_height + self.params.keys.refund_delay - margin:
            return self.force_close()
        return None


# ---------------------------------------------------------------- the client's refund


def client_refund(params: ChannelParams, client_key: SecretKey, provider_balance: int = 0) -> bytes:
    """The client's close alone (refund leaf): any split it likes, valid only after Δ."""
    tx = params.refund(provider_balance)
    sig = signing.sign_script_path(client_key, params.sighash(tx, REFUND_LEAF))
    return params.witness(tx, REFUND_LEAF, [sig])


# ---------------------------------------------------------------- vault mode


@dataclass(frozen=True)
class Deposit:
    """A participant's coin in the Liquidity Vault and the keys of its output."""

    utxo: Utxo
    keys: VaultDepositKeys


def vault_settlement(
    deposits: list[Deposit],
    payouts: list[Output],
    vault_key: SecretKey,
    change_script_pubkey: bytes,
    fee_rate: int,
) -> bytes:
    """The vault's aggregated settlement: every deposit by key path, net payouts, one tx.

    ``payouts`` are the providers' earnings and, for each participant staying in the vault,
    its remaining balance as a fresh deposit output (:class:`VaultDepositKeys`), which
    restarts its Δ_long: the vault settles each deposit before its force-settle matures, so
    a participant's exit can only take what the latest settlement left it. Whatever the
    deposits hold beyond the payouts and the fee goes to ``change_script_pubkey``.
    """
    coins = [d.utxo for d in deposits]
    outs = [*payouts, Output(change_script_pubkey, txs.P2TR_DUST)]
    template = txs.build(coins, outs)
    fee = txs.vsize_with(template, [[_DUMMY_SIG]] * len(coins)) * fee_rate
    change = sum(c.amount for c in coins) - sum(p.amount for p in payouts) - fee
    if change < 0:
        raise ExchangeError("insufficient-funds", f"payouts and fee exceed deposits by {-change}")
    if change >= txs.P2TR_DUST:
        final_outs = [*payouts, Output(change_script_pubkey, change)]
    else:
        final_outs = list(payouts)  # a sub-dust remainder goes to the fee
    tx = txs.build(coins, final_outs)
    for i, deposit in enumerate(deposits):
        output = deposit.keys.output()
        digest = txs.sighash(tx, i, coins)
        sig = signing.sign_key_path(vault_key, output.merkle_root, digest)
        txs.set_witness(tx, i, [sig])
    return bytes(tx.serialize())


def force_settle(
    deposit: Deposit, participant_key: SecretKey, payout: bytes, fee_rate: int
) -> bytes:
    """A participant's emergency exit: its whole deposit, Δ_long blocks after it confirmed."""

    output = deposit.keys.output()
    leaf, control = output.leaf(FORCE_SETTLE_LEAF)
    seq = [deposit.keys.force_settle_delay]
    template = txs.build([deposit.utxo], [Output(payout, txs.P2TR_DUST)], seq)
    stack = txs.script_path_stack([_DUMMY_SIG], leaf, control)
    fee = txs.vsize_with(template, [stack]) * fee_rate
    tx = txs.build([deposit.utxo], [Output(payout, deposit.utxo.amount - fee)], seq)
    sig = signing.sign_script_path(participant_key, txs.sighash(tx, 0, [deposit.utxo], leaf))
    txs.set_witness(tx, 0, txs.script_path_stack([sig], leaf, control))
    return bytes(tx.serialize())
