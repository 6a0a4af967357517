"""The A402 exchange on a Bitcoin channel: :mod:`a402.asc.machine` over a BIP-341 settlement.

The channel's state machine is the EVM channel's (:class:`a402.asc.VaultChannel`,
:class:`a402.asc.ProviderChannel`: the same messages, encodings, request ids, locks and
replay rules); :class:`BitcoinSettlement` is what changes (:mod:`a402.asc.settlement`)::

    vault U                                          provider enclave S
    free ≥ δ, lock δ ───── EXEC(rid, δ) ───────────▶ run the request; t, T = t·G
                                                     tx_i = payment-leaf close paying S b + δ'
                                                     m = BIP-341 sighash of tx_i
                                                     σ̂_S = pre-sign(S, H_reply(m), T)
    rebuild tx_i and m itself; ◀──── REPLY ───────── EncRes = seal(t, res)
    pre-verify σ̂_S (else nothing is signed)
    σ̂_U = pre-sign(U, m, T) ─────── AUTH ─────────▶ pre-verify σ̂_U; σ_U = adapt(σ̂_U, t):
                                                     tx_i is co-signed, S's newest state
    t·G = T, open EncRes, b += δ' ◀── REVEAL(t, σ_S on H_state(m))

No ACK (``needs_ack`` is false): once the provider holds ``σ̂_U`` and ``t`` it holds the
vault's full signature ``σ_U`` on ``tx_i``, so its state is co-signed at AUTH; the vault
computes the same ``σ_U`` when the REVEAL arrives. Both sides then hold the same
:class:`~a402.asc.SignedState`; :func:`payment_leaf_close` builds ``tx_i``'s witness from it
and a signature the provider makes with its key at close time.

No old state can be closed (the payment leaf has no timelock and nothing revokes a state):
the provider's REPLY pre-signature signs :func:`reply_digest` of ``m`` and its state
signature on a paid state signs :func:`state_digest`, tagged hashes, so neither (nor the
pre-signature completed with the revealed ``t``) is a signature on any close. The vault, and
the host that relays its messages, never hold the provider's on-chain signature on a paid
state; only on the final one (CLOSE_ACK), which is the newest.

Why the provider cannot be paid without revealing ``t``: the payment leaf needs the vault's
signature on ``tx_i``, and the vault gives only ``σ̂_U``, an adaptor pre-signature under the
provider's ``T``. The one way to a valid ``σ_U`` is ``adapt(σ̂_U, t)``, so any close of
``tx_i`` publishes ``σ_U`` in its witness, and :func:`on_chain_close` recovers
``t = extract(σ̂_U, σ_U, T)`` from that witness alone and opens the sealed result (the
machine's :meth:`~a402.asc.VaultChannel.provider_force_closed`). Deliberate deviation from
the paper (documented): the adaptor the vault relies on is on the vault's own signature, not
the provider's — the provider could sign its half afresh, but never the vault's.

What the vault checks before it signs anything: the REPLY's charge must leave both outputs
above dust after the fee (:meth:`BitcoinSettlement.refuse_payment`), and ``σ̂_S`` must
pre-verify against the provider's key, ``T`` and the sighash the *vault* computed from the
close it built itself; otherwise the machine refuses the REPLY (``bad_presignature``) and
the channel is unchanged. The sighash does not commit to ``h = H(result)`` (a transaction
cannot): the vault still refuses a result whose hash is not ``h``, but that the sealed bytes
are the service's answer rests on the provider's attested enclave, as in the paper. Nor does
it commit to the request (the EVM ``m`` does, through its ``answer_hash``): a REPLY to a
request a host rewrote in the EXEC pre-verifies here all the same.

Wire forms (the ASC messages' fixed widths, unchanged): REPLY's 64-byte pre-signature is
``x(R) ‖ ŝ`` of a BIP-340 adaptor pre-signature whose adapted nonce ``R`` has even ``y``
(the provider's pre-signer draws nonces until it does, so nothing is lost); AUTH's 65 bytes
are ``σ̂_U`` as ``R (compressed) ‖ ŝ``; a state signature (REVEAL, CLOSE, CLOSE_ACK) is a
64-byte BIP-340 signature followed by ``0x00``, the SIGHASH_DEFAULT type byte a Taproot
witness omits: on the final state's payment-leaf close (CLOSE, CLOSE_ACK), on
:func:`state_digest` of a paid state's (REVEAL).

Deadlines: Δ_lock stays the machine's clock (seconds, off-chain). The chain's deadline is a
block height: the client's refund leaf is valid ``Δ`` blocks after the funding confirmed, and
:func:`watchtower_close` returns the provider's close of its newest co-signed state once the
chain reaches ``funding height + Δ − margin``. Until then only U and S together can spend,
so a stale client close is refused (BIP-68), and after the provider's close confirms it is a
double spend.

Fees: every close pays ``vsize × fee_rate`` out of the client's share; a payment that would
leave the client's share below that fee plus the P2TR dust limit, or the provider's below
that limit, is refused before EXEC (vault) and on EXEC and REPLY (both sides).

The cooperative close: the machine's CLOSE / CLOSE_ACK co-sign the final state (which is a
payment-leaf close, 204 vB, for a signer without MuSig2); two more rounds,
:class:`CooperativeClose` and :func:`cooperative_answer`, turn that agreed final state into
the 154 vB key-path spend by MuSig2 (BIP-327). Each side partially signs only the close of
the final state it co-signed, and the vault verifies the provider's partial signature
before adding its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from bitcointx.core import CMutableTransaction

from a402.asc import (
    BalanceState,
    DigestSigner,
    ExecuteRequest,
    Message,
    PreSigner,
    ProviderChannel,
    Reason,
    RemoteProtocolError,
    ResultDelivered,
    SignedState,
    Step,
    VaultChannel,
    decode,
)
from a402.crypto import BIP340, PreSignature, SecretKey
from a402.crypto._secp import b32, tagged_hash

from . import musig
from . import transactions as txs
from .channel import ChannelParams, ExchangeError
from .coop_wire import CoopAnswer, CoopProposal
from .scripts import PAYMENT_LEAF
from .spend import ChannelSpend, verify_channel_spend
from .transactions import Utxo

#: SIGHASH_DEFAULT: the type byte after a state signature on the wire, never in a witness.
_DEFAULT = b"\x00"
#: Tags that keep the provider's off-chain signatures from being signatures on a close.
_REPLY_TAG = "A402/bitcoin/reply-presignature"
_STATE_TAG = "A402/bitcoin/paid-state"


def reply_digest(sighash: bytes) -> bytes:
    """What the provider's REPLY pre-signature signs for the close whose sighash is ``m``:
    a tagged hash of it, never ``m`` itself (completed with ``t``, it spends nothing)."""
    return tagged_hash(_REPLY_TAG, sighash)


def state_digest(state: BalanceState, sighash: bytes) -> bytes:
    """What a state signature signs: the close's sighash itself for the final state (the
    newest, agreed by CLOSE / CLOSE_ACK), a tagged hash of it for a paid state."""
    return sighash if state.is_final else tagged_hash(_STATE_TAG, sighash)


def _framed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + bytes(data)


# ---------------------------------------------------------------- keys


class Bip340Signer:
    """A party's BIP-340 key as the machine's :class:`~a402.asc.DigestSigner`.

    ``address`` is the x-only key the channel's leaves name; ``sign_digest`` signs a
    BIP-341 sighash (64 bytes, then the SIGHASH_DEFAULT byte). The vault's also makes
    ``σ̂_U`` (:meth:`pre_sign`).
    """

    __slots__ = ("_key", "address")

    def __init__(self, key: SecretKey) -> None:
        if key.flavour != "bip340":
            raise ValueError("a Bitcoin channel key is a BIP-340 key")
        self._key = key
        self.address = key.public_key

    def sign_digest(self, digest: bytes) -> bytes:
        return BIP340.sign(self._key, digest) + _DEFAULT

    def pre_sign(self, message: bytes, adaptor: bytes) -> PreSignature:
        """``σ̂_U``, deterministic in ``(m, T)``: the nonce is BIP-340's derivation from the
        key, ``T`` and ``m`` with the auxiliary randomness fixed at zero (allowed by BIP-340).

        Why: a vault that sent AUTH and restarted from its LOCKED snapshot signs the same
        REPLY again; the same bytes mean that whichever copy the provider completes on-chain,
        the vault extracts ``t`` (as the EVM vault's RFC 6979 ``σ_U`` does). Safe: a nonce is
        reused only for the identical ``(m, T)``, where it yields the identical ŝ; any other
        message or adaptor point gets another nonce. Hedging only guards fault and
        side-channel attacks, which the enclave threat model excludes.
        """
        return BIP340.pre_sign(self._key, message, adaptor, aux_rand=bytes(32))


class EvenNoncePreSigner:
    """The provider's :class:`~a402.asc.PreSigner`: BIP-340 adaptor pre-signatures on
    :func:`reply_digest` of ``m`` (never ``m`` itself) whose adapted nonce has even ``y``,
    so that REPLY carries them in 64 bytes (about two draws on average; each draw's nonce
    is fresh, and only the one sent is ever used). An enclave's own pre-signer for a
    Bitcoin channel must keep both rules, or the vault refuses its REPLYs."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: SecretKey) -> None:
        if key.flavour != "bip340":
            raise ValueError("the Schnorr key does not match the channel's provider key")
        self._key = key
        self.public_key = key.public_key

    def pre_sign(self, message: bytes, adaptor: bytes) -> PreSignature:
        digest = reply_digest(message)
        for _ in range(256):  # each draw is even with probability 1/2
            presignature = BIP340.pre_sign(self._key, digest, adaptor)
            if presignature.r[0] == 0x02:
                return presignature
        raise RuntimeError("no even adapted nonce in 256 draws")  # pragma: no cover


# ---------------------------------------------------------------- the settlement


class BitcoinSettlement:
    """A Taproot channel's rules for the ASC machine (:class:`a402.asc.settlement.Settlement`).

    A state is the payment-leaf close paying the provider ``provider_balance``; its digest
    is that close's BIP-341 sighash, so ``m`` for a payment is the sighash of the close of
    the state it produces. Only the balances matter to the transaction: states that differ
    only in version (the final state and the last paid one) have the same close.
    """

    needs_ack = False

    def __init__(self, params: ChannelParams) -> None:
        self.params = params
        self.channel_id = params.channel_id
        self.vault = params.keys.vault
        self.provider = params.keys.provider
        self.provider_key = params.keys.provider
        self._sighashes: dict[int, bytes] = {}
        keys, funding = params.keys, params.funding
        self.binding = tagged_hash("A402/bitcoin/channel-params", b"".join((
            keys.vault, keys.provider, keys.client, keys.refund_delay.to_bytes(4, "big"),
            bytes.fromhex(funding.txid), funding.vout.to_bytes(4, "big"),
            funding.amount.to_bytes(8, "big"), _framed(funding.script_pubkey),
            _framed(params.client_payout), _framed(params.provider_payout),
            params.fee_rate.to_bytes(8, "big"),
        )))

    def close_sighash(self, provider_balance: int) -> bytes:
        """The sighash of the payment-leaf close paying the provider ``provider_balance``."""
        digest = self._sighashes.get(provider_balance)
        if digest is None:
            tx = self.params.payment_close(provider_balance)
            digest = self.params.sighash(tx, PAYMENT_LEAF)
            if len(self._sighashes) >= 64:
                self._sighashes.clear()
            self._sighashes[provider_balance] = digest
        return digest

    def opening_state(self) -> BalanceState:
        return BalanceState(0, self.params.funding.amount, 0)

    def refuse_payment(self, state: BalanceState, amount: int) -> tuple[Reason, str] | None:
        balance = state.provider_balance + amount
        if amount <= 0:
            return Reason.INVALID_AMOUNT, "a Bitcoin payment must raise the provider's balance"
        if balance < txs.P2TR_DUST:
            return (Reason.INVALID_AMOUNT,
                    f"below-dust: a provider output of {balance} sat is under {txs.P2TR_DUST}")
        capacity = self.params.capacity()
        if balance > capacity:
            return (Reason.INSUFFICIENT_BALANCE,
                    f"over-capacity: {balance} sat exceeds the {capacity} sat a close can pay")
        return None

    def payment_message(
        self, state: BalanceState, request_id: int, amount: int, result_hash: bytes
    ) -> bytes:
        return self.close_sighash(state.provider_balance + amount)

    def presigner(self, key: SecretKey) -> PreSigner:
        return EvenNoncePreSigner(key)

    def presignature_bytes(self, presignature: PreSignature) -> bytes:
        if presignature.flavour != "bip340" or presignature.r[:1] != b"\x02":
            raise ValueError("only an even-nonce BIP-340 pre-signature travels in 64 bytes")
        return presignature.r[1:] + b32(presignature.s)

    def parse_presignature(self, data: bytes) -> PreSignature:
        if len(data) != 64:
            raise ValueError("a Bitcoin REPLY's pre-signature is 64 bytes: x(R) ‖ ŝ")
        return BIP340.presignature_from_bytes(b"\x02" + bytes(data))

    def pre_verify(self, message: bytes, adaptor: bytes, presignature: PreSignature) -> bool:
        return BIP340.pre_verify(self.provider_key, reply_digest(message), adaptor, presignature)

    def authorize(
        self, signer: DigestSigner, message: bytes, amount: int, presignature: PreSignature,
        adaptor: bytes,
    ) -> bytes:
        if not isinstance(signer, Bip340Signer):
            raise TypeError("a Bitcoin vault signs with a Bip340Signer")
        return signer.pre_sign(message, adaptor).to_bytes()

    def _vault_pre(self, authorization: bytes) -> PreSignature:
        return BIP340.presignature_from_bytes(authorization)

    def authorizes(
        self, message: bytes, amount: int, presignature: PreSignature, adaptor: bytes,
        authorization: bytes,
    ) -> bool:
        try:
            vault_pre = self._vault_pre(authorization)
        except ValueError:
            return False
        return BIP340.pre_verify(self.vault, message, adaptor, vault_pre)

    def completed_authorization(self, authorization: bytes, adaptor_secret: bytes) -> bytes:
        return BIP340.adapt(self._vault_pre(authorization), adaptor_secret) + _DEFAULT

    def sign_state(self, signer: DigestSigner, state: BalanceState) -> bytes:
        return signer.sign_digest(state_digest(state, self.close_sighash(state.provider_balance)))

    def signed_by(self, state: BalanceState, signature: bytes, party: bytes) -> bool:
        if len(signature) != 65 or signature[64:] != _DEFAULT:
            return False
        try:
            digest = self.close_sighash(state.provider_balance)
        except ExchangeError:
            return False
        return BIP340.verify(party, state_digest(state, digest), signature[:64])

    def complete(self, presignature: PreSignature, adaptor_secret: bytes) -> bytes:
        return BIP340.adapt(presignature, adaptor_secret)

    def extract(
        self, presignature: PreSignature, authorization: bytes, adaptor: bytes, completed: bytes
    ) -> bytes:
        return BIP340.extract(self._vault_pre(authorization), completed, adaptor)


# ---------------------------------------------------------------- the two sides


def vault_channel(
    params: ChannelParams, vault_key: SecretKey, *, lock_timeout: float = 30.0
) -> VaultChannel:
    """The vault's side of the channel: the ASC machine over :class:`BitcoinSettlement`."""
    return VaultChannel.over(
        BitcoinSettlement(params), Bip340Signer(vault_key), lock_timeout=lock_timeout
    )


def provider_channel(
    params: ChannelParams, provider_key: SecretKey | PreSigner, signing_key: SecretKey,
    *, lock_timeout: float = 25.0,
) -> ProviderChannel:
    """The provider enclave's side: ``provider_key`` pre-signs (a key or an enclave's
    :class:`~a402.asc.PreSigner`), ``signing_key`` signs states; both are the leaf's key.

    ``lock_timeout`` must end before the vault's (the machine's rule); there is no ACK,
    so the machine's ``ack_timeout`` is unused.
    """
    return ProviderChannel.over(
        BitcoinSettlement(params), Bip340Signer(signing_key), provider_key,
        ack_timeout=lock_timeout, lock_timeout=lock_timeout,
    )


def restore_vault(data: bytes, params: ChannelParams, vault_key: SecretKey) -> VaultChannel:
    """The vault's channel from its :meth:`~a402.asc.VaultChannel.snapshot`."""
    return VaultChannel.restore(data, Bip340Signer(vault_key), settlement=BitcoinSettlement(params))


def restore_provider(data: bytes, params: ChannelParams, key: SecretKey) -> ProviderChannel:
    """The provider's channel from its :meth:`~a402.asc.ProviderChannel.snapshot`."""
    return ProviderChannel.restore(
        data, Bip340Signer(key), key, settlement=BitcoinSettlement(params)
    )


def _wire(message: Message) -> Message:
    return decode(message.encode())


def exchange(
    vault: VaultChannel, provider: ProviderChannel, request: bytes, amount: int, result: bytes,
    *, now: float = 0.0, deliver_reveal: bool = True,
) -> bytes | None:
    """One paid request between two machines in this process, every message through its
    wire bytes; the result the vault opened (None if the REVEAL is not delivered)."""
    exec_ = vault.request(request, amount, now=now)
    step = provider.receive(_wire(exec_), now=now)
    (run,) = (e for e in step.events if isinstance(e, ExecuteRequest))
    reply = provider.reply(run.request_id, result)
    (auth,) = vault.receive(_wire(reply), now=now).send
    (reveal,) = provider.receive(_wire(auth), now=now).send
    if not deliver_reveal:
        return None
    done = vault.receive(_wire(reveal), now=now)
    (delivered,) = (e for e in done.events if isinstance(e, ResultDelivered))
    return delivered.result


# ---------------------------------------------------------------- closes


def payment_leaf_close(
    params: ChannelParams, signed: SignedState, provider_key: SecretKey | None = None
) -> bytes:
    """The payment-leaf spend of a co-signed state: ``tx_i`` with ``[σ_S, σ_U, leaf,
    control]``.

    The final state (CLOSE / CLOSE_ACK) carries both on-chain signatures: either side can
    publish it (the cooperative close by two signatures). A paid state carries the vault's
    ``σ_U`` and only an off-chain provider signature (:func:`state_digest`), so only the
    provider closes it, signing ``tx_i`` now with ``provider_key`` (its force close).

    Safety: the payment leaf has no timelock and no state is ever revoked, so an on-chain
    provider signature on an older state's close would let the vault's side publish that
    close and keep the later earnings; the provider's signature on ``tx_i`` therefore
    exists only when the provider itself closes, or for the final (newest) state.
    """
    state = signed.state
    if state.provider_balance <= 0:
        raise ExchangeError("nothing-to-claim", "the state pays the provider nothing")
    for signature in (signed.vault_signature, signed.provider_signature):
        if len(signature) != 65 or signature[64:] != _DEFAULT:
            raise ExchangeError("bad-signature", "not a co-signed Bitcoin state")
    tx = params.payment_close(state.provider_balance)
    if state.is_final:
        provider_sig = signed.provider_signature[:64]
    elif provider_key is None or provider_key.public_key != params.keys.provider:
        raise ExchangeError(
            "provider-key-needed", "only the provider, with its key, closes a paid state"
        )
    else:
        provider_sig = BIP340.sign(provider_key, params.sighash(tx, PAYMENT_LEAF))
    return params.witness(
        tx, PAYMENT_LEAF, payment_witness_sigs(provider_sig, signed.vault_signature[:64])
    )


def payment_witness_sigs(provider_sig: bytes, vault_sig: bytes) -> list[bytes]:
    """Witness order for ``<U> CHECKSIGVERIFY <S> CHECKSIG``: S's below U's (U's is on top)."""
    return [provider_sig, vault_sig]


class Watchtower:
    """The provider's duty, in block heights: close with its newest co-signed state before
    the client's refund becomes valid.

    :meth:`poll` returns that close once the chain reaches ``funding height + Δ − margin``
    (and again at every poll until :meth:`channel_spent`, to be re-broadcast). ``margin`` is
    the number of blocks the close has to confirm in, 1 ≤ margin < Δ: the refund is valid
    from ``funding height + Δ``, and from then on the client alone can spend the whole
    channel, earnings included. The close is built from the machine's latest state, which
    an agreed final state (CLOSE) does not change: its close is the same transaction.
    """

    def __init__(
        self, provider: ProviderChannel, params: ChannelParams, funding_height: int, margin: int,
        *, key: SecretKey,
    ) -> None:
        delay = params.keys.refund_delay
        if not 1 <= margin < delay:
            raise ValueError(f"margin must be 1..{delay - 1} blocks")
        if key.public_key != params.keys.provider:
            raise ValueError("the watchtower signs with the channel's provider key")
        self.provider, self.params, self._key = provider, params, key
        self.deadline = funding_height + delay - margin
        self.spent = False

    def poll(self, height: int) -> bytes | None:
        signed = self.provider.latest_state()
        if self.spent or signed.state.provider_balance <= 0 or height < self.deadline:
            return None
        return payment_leaf_close(self.params, signed, self._key)

    def channel_spent(self, raw: bytes, spent: Sequence[Utxo] | None = None) -> ChannelSpend:
        """The channel output is spent by ``raw`` (any path): nothing more to close.

        ``raw`` is verified first (:func:`~a402.bitcoin.spend.verify_channel_spend`), as the
        vault's :func:`on_chain_close` does: a host that fed the provider a forged spend would
        otherwise stop its watchtower, and the client's refund would then take the
        provider's earnings once Δ passed. Refused: :class:`ExchangeError`, nothing changes.
        """
        spend = verify_channel_spend(self.params, raw, spent)
        self.spent = True
        self.provider.closed_on_chain()
        return spend


def on_chain_close(
    vault: VaultChannel, params: ChannelParams, raw: bytes, spent: Sequence[Utxo] | None = None
) -> Step:
    """The vault saw the channel output spent by ``raw``: if it is a valid payment-leaf close
    of the request in flight, extract ``t`` from the vault's signature in the witness alone
    and open the result (:class:`~a402.asc.ResultDelivered`, ``on_chain``).

    Nothing is trusted: ``raw`` must pass :func:`~a402.bitcoin.spend.verify_channel_spend`
    first (it spends this channel's funding outpoint by one of its three paths, every
    signature valid over the BIP-341 sighash of ``raw`` itself; ``spent`` are the coins of
    its inputs, needed only if it has others than the channel's). A forged, re-targeted or
    malformed spend is refused with :class:`~a402.bitcoin.channel.ExchangeError` and its
    ``reason`` and changes nothing: the host that feeds the vault its chain view cannot stop
    a channel, or settle its request, with bytes the parties never signed.

    A valid spend closes the channel whatever its path (a close of another state has
    nothing to extract). If ``t`` comes out but the sealed result does not open (or does
    not hash to ``h``), the channel is CLOSED — the chain has paid the provider — and the
    machine's error is raised so that this is reported. That ``raw`` is *confirmed* is the
    caller's to establish (a sans-IO vault cannot): see :mod:`a402.bitcoin.spend`.
    """
    spend = verify_channel_spend(params, raw, spent)
    pending = vault.pending_request()
    if spend.path == "payment" and spend.vault_signature is not None and pending is not None:
        try:
            return vault.provider_force_closed(pending[0], spend.vault_signature)
        except RemoteProtocolError as refused:
            vault.closed_on_chain()
            if refused.reason is not Reason.BAD_COMPLETION:
                raise
            return Step()  # another state's close (an older one): nothing to extract
    vault.closed_on_chain()
    return Step()


# ---------------------------------------------------------------- MuSig2 close


def _final(params: ChannelParams, final: SignedState) -> CMutableTransaction:
    if not final.state.is_final:
        raise ExchangeError("not-final", "only the co-signed final state closes by key path")
    return params.cooperative_close(final.state.provider_balance)


class CooperativeClose:
    """The vault's two MuSig2 rounds for the co-signed final state (the machine's
    :class:`~a402.asc.CloseReady`). The secret nonce stays in memory only: a vault that
    restarts proposes again with a fresh one."""

    def __init__(self, params: ChannelParams, vault_key: SecretKey, final: SignedState) -> None:
        tx = _final(params, final)
        self._params, self._key = params, vault_key
        self._unsigned = bytes(tx.serialize())
        self._message = params.key_path_sighash(tx)
        self._secnonce: musig.SecretNonce | None
        self._secnonce, self._pubnonce = musig.nonce_gen(
            vault_key, params.cooperative_key(), self._message
        )

    def proposal(self) -> CoopProposal:
        """COOP_PROPOSAL (:mod:`a402.bitcoin.coop_wire`): the same bytes until :meth:`finish`."""
        return CoopProposal(self._params.channel_id, self._unsigned, self._pubnonce)

    def finish(self, answer: CoopAnswer) -> bytes:
        """Check the provider's partial signature, add the vault's, aggregate: the spend.

        An answer for another channel or whose partial signature does not verify is refused
        (:class:`ExchangeError`) and the proposal stays open: the vault's secret nonce is
        consumed only by its own partial signature, made after the provider's verified.
        """
        if self._secnonce is None:
            raise ExchangeError("no-proposal", "this proposal's nonce is spent")
        if answer.channel_id != self._params.channel_id:
            raise ExchangeError("wrong-channel", "the answer names another channel")
        agg = self._params.cooperative_key()
        try:
            aggnonce = musig.nonce_agg([self._pubnonce, answer.pubnonce])
        except musig.MusigError:
            raise ExchangeError("bad-nonce", "the provider's nonce is malformed") from None
        provider = b"\x02" + self._params.keys.provider
        if not musig.partial_verify(
            answer.partial_signature, answer.pubnonce, provider, aggnonce, self._message, agg
        ):
            raise ExchangeError("bad-partial-signature", "the provider's partial signature")
        secnonce, self._secnonce = self._secnonce, None  # spent whatever happens next
        own = musig.partial_sign(self._key, secnonce, aggnonce, self._message, agg)
        signature = musig.partial_sig_agg(
            [own, answer.partial_signature], aggnonce, self._message, agg
        )
        tx = CMutableTransaction.deserialize(self._unsigned)
        txs.set_witness(tx, 0, txs.key_path_stack(signature))
        return bytes(tx.serialize())


def cooperative_answer(
    params: ChannelParams, provider_key: SecretKey, final: SignedState, proposal: CoopProposal
) -> CoopAnswer:
    """The provider's round: partially sign the proposal only if it is exactly the key-path
    close of the final state it co-signed."""
    expected = _final(params, final)
    if proposal.channel_id != params.channel_id:
        raise ExchangeError("wrong-channel", "the proposal names another channel")
    if proposal.unsigned != bytes(expected.serialize()):
        raise ExchangeError("wrong-state", "the cooperative close is not the final state")
    message = params.key_path_sighash(expected)
    agg = params.cooperative_key()
    secnonce, pubnonce = musig.nonce_gen(provider_key, agg, message)
    try:
        aggnonce = musig.nonce_agg([proposal.pubnonce, pubnonce])
    except musig.MusigError:
        raise ExchangeError("bad-nonce", "the vault's nonce is malformed") from None
    return CoopAnswer(
        params.channel_id, pubnonce,
        musig.partial_sign(provider_key, secnonce, aggnonce, message, agg),
    )


__all__ = [
    "Bip340Signer",
    "BitcoinSettlement",
    "CoopAnswer",
    "CoopProposal",
    "CooperativeClose",
    "EvenNoncePreSigner",
    "Watchtower",
    "cooperative_answer",
    "exchange",
    "on_chain_close",
    "payment_leaf_close",
    "payment_witness_sigs",
    "provider_channel",
    "reply_digest",
    "restore_provider",
    "restore_vault",
    "state_digest",
    "vault_channel",
]
