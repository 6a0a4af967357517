"""Whether bytes the host says spent a channel are a valid spend of it (sans-IO, pure).

The vault's chain watch (:func:`a402.bitcoin.exchange.on_chain_close`) acts on a
transaction its untrusted host hands it: it closes the channel and, for the provider's
force close, extracts ``t`` from the vault's signature in the witness. Before this check
any bytes spending the funding outpoint stopped the channel (a denial of service by the
host). :func:`verify_channel_spend` accepts a transaction only if a node would accept its
spend of the channel output, as far as signatures and the channel's scripts decide:

* **bounded and canonical**: at most 400,000 bytes (Bitcoin Core's standard weight, which
  no valid standard transaction's size exceeds) before anything parses it; it must parse
  and re-serialise byte for byte (no trailing bytes, one encoding);
* **this channel**: exactly one input spends the funding outpoint of ``params``;
* **the sighash of this very transaction** (BIP-341, with ``ext_flag`` and the tapleaf hash
  for a script path, BIP-342): it commits to every input's amount and scriptPubKey, so a
  transaction with other inputs needs their coins (``spent``, in input order); coins that
  lie only make the signature check fail;
* **one of the channel's three paths, signatures verified (BIP-340)**: the key path by the
  MuSig2 output key (the cooperative close); the payment leaf with the exact leaf script and
  control block of this channel, the vault's and the provider's signatures (the force close,
  or the cooperative close by two signatures); the refund leaf with the client's signature
  and an nSequence that satisfies its ``OP_CHECKSEQUENCEVERIFY`` (BIP-68/112: version ≥ 2,
  a block lock of at least Δ). Signatures are 64 bytes or 65 with a defined hash type
  (:func:`a402.bitcoin.taproot_rules.split_signature`); an empty or invalid one fails the
  leaf, as in BIP-342.

Anything else is refused with :class:`~a402.bitcoin.channel.ExchangeError` and a
machine-readable ``reason`` (:data:`REASONS`), and the caller changes nothing.

Safety argument: a spend passes only if it carries valid signatures of the keys that must
authorise that path, over the transaction's own sighash; the host holds none of those keys.
What it relays (AUTH's pre-signature ``σ̂_U``, REVEAL's ``t`` and tagged state signature)
completes no signature on a close but the final state's, which the vault agreed to. So a
forged, re-targeted or tampered spend is refused, and one that passes is a close the parties
authorised. What this cannot decide, sans-IO: that the transaction was *mined*. Signatures
make a spend valid, not confirmed; a runtime must feed this only transactions it has
confirmed (its own node, or a header chain and a Merkle proof). An annex (consensus-valid,
not relayed by Bitcoin Core, and absent from every spend this package builds or signs) is
refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bitcointx.core import CTransaction
from bitcointx.core.script import CScript, SIGHASH_Type, SignatureHashSchnorr

from a402.crypto import BIP340

from . import _backend  # noqa: F401  (bitcointx on coincurve's libsecp256k1)
from .channel import ChannelParams, ExchangeError
from .scripts import PAYMENT_LEAF, REFUND_LEAF
from .taproot_rules import split_signature
from .transactions import Utxo

#: Bitcoin Core's MAX_STANDARD_TX_WEIGHT: no standard transaction is larger in bytes.
MAX_TX_BYTES = 400_000
_ANNEX_TAG = 0x50
_DISABLE_FLAG = 1 << 31
_TYPE_FLAG = 1 << 22
_VALUE_MASK = 0xFFFF

#: Every ``reason`` :func:`verify_channel_spend` refuses with.
REASONS = frozenset({
    "too-large", "malformed", "not-this-channel", "coins-needed", "coin-mismatch",
    "no-witness", "annex", "unknown-path", "bad-signature", "timelock",
})

Path = Literal["key", "payment", "refund"]


@dataclass(frozen=True)
class ChannelSpend:
    """A verified spend of the channel: which path, and the vault's signature on the payment
    leaf (the completion of ``σ̂_U`` if this is the provider's force close)."""

    txid: str
    path: Path
    vault_signature: bytes | None


def verify_channel_spend(
    params: ChannelParams, raw: bytes, spent: Sequence[Utxo] | None = None
) -> ChannelSpend:
    """The verified spend of ``params``' channel output by ``raw`` (see the module's rules).

    ``spent``: the coins ``raw``'s inputs spend, in order, needed only when ``raw`` has more
    inputs than the channel's (every close this package builds has one).
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ExchangeError("malformed", "a transaction is bytes")
    raw = bytes(raw)
    if len(raw) > MAX_TX_BYTES:
        raise ExchangeError("too-large", f"{len(raw)} bytes exceed {MAX_TX_BYTES}")
    try:
        tx = CTransaction.deserialize(raw)
        canonical = bytes(tx.serialize()) == raw
    except Exception:  # bitcointx raises several types on truncated or bad bytes
        raise ExchangeError("malformed", "not a transaction") from None
    if not canonical:
        raise ExchangeError("malformed", "not the transaction's one serialisation")
    funding = params.funding
    spends = [
        i for i, txin in enumerate(tx.vin)
        if bytes(txin.prevout.hash[::-1]).hex() == funding.txid and txin.prevout.n == funding.vout
    ]
    if len(spends) != 1:
        raise ExchangeError("not-this-channel", "the transaction does not spend the channel")
    index = spends[0]
    coins = _coins(tx, index, funding, spent)
    witnesses = tx.wit.vtxinwit
    stack = (
        [bytes(item) for item in witnesses[index].scriptWitness.stack]
        if index < len(witnesses) else []
    )
    if not stack:
        raise ExchangeError("no-witness", "the channel input carries no witness")
    if len(stack) >= 2 and stack[-1][:1] == bytes([_ANNEX_TAG]):
        raise ExchangeError("annex", "a witness with an annex (not relayed; none is signed)")
    txid = bytes(tx.GetTxid()[::-1]).hex()
    txouts = [coin.txout() for coin in coins]

    def verified(key: bytes, signature: bytes, leaf: CScript | None, what: str) -> bytes:
        try:
            sig, hash_type = split_signature(signature)
            kind = SIGHASH_Type(hash_type) if hash_type else None  # None: SIGHASH_DEFAULT
            if leaf is None:
                digest = SignatureHashSchnorr(tx, index, txouts, hashtype=kind)
            else:
                digest = leaf.sighash_schnorr(tx, index, txouts, hashtype=kind)
        except Exception as exc:  # RuleBroken; bitcointx refuses SIGHASH_SINGLE, no output
            raise ExchangeError("bad-signature", f"{what}: {exc}") from None
        if not BIP340.verify(key, bytes(digest), sig):
            raise ExchangeError("bad-signature", f"{what} does not verify on this transaction")
        return sig

    if len(stack) == 1:
        verified(params.output.output_key, stack[0], None, "the key-path signature")
        return ChannelSpend(txid, "key", None)
    *inputs, leaf_bytes, control = stack
    output = params.output
    payment, payment_control = output.leaf(PAYMENT_LEAF)
    refund, refund_control = output.leaf(REFUND_LEAF)
    keys = params.keys
    if (leaf_bytes, control) == (bytes(payment), payment_control):
        if len(inputs) != 2:
            raise ExchangeError("bad-signature", "the payment leaf takes two signatures")
        provider_sig, vault_sig = inputs  # <U> CHECKSIGVERIFY <S> CHECKSIG: U's on top
        vault = verified(keys.vault, vault_sig, payment, "the vault's signature")
        verified(keys.provider, provider_sig, payment, "the provider's signature")
        return ChannelSpend(txid, "payment", vault)
    if (leaf_bytes, control) == (bytes(refund), refund_control):
        if len(inputs) != 1:
            raise ExchangeError("bad-signature", "the refund leaf takes one signature")
        _check_refund_lock(tx.nVersion, int(tx.vin[index].nSequence), keys.refund_delay)
        verified(keys.client, inputs[0], refund, "the client's signature")
        return ChannelSpend(txid, "refund", None)
    raise ExchangeError("unknown-path", "not a leaf and control block of this channel")


def _coins(
    tx: CTransaction, index: int, funding: Utxo, spent: Sequence[Utxo] | None
) -> list[Utxo]:
    if spent is None:
        if len(tx.vin) != 1:
            raise ExchangeError(
                "coins-needed", f"{len(tx.vin)} inputs: the sighash needs every spent coin"
            )
        return [funding]
    coins = list(spent)
    if len(coins) != len(tx.vin):
        raise ExchangeError("coin-mismatch", "one spent coin per input")
    for txin, coin in zip(tx.vin, coins, strict=True):
        if (bytes(txin.prevout.hash[::-1]).hex(), int(txin.prevout.n)) != (coin.txid, coin.vout):
            raise ExchangeError("coin-mismatch", "a spent coin is not its input's outpoint")
    if coins[index] != funding:
        raise ExchangeError("coin-mismatch", "the channel's coin is not the funding output")
    return coins


def _check_refund_lock(version: int, sequence: int, delay: int) -> None:
    """BIP-112's ``OP_CHECKSEQUENCEVERIFY`` with operand ``delay`` (a block lock)."""
    if version < 2 or sequence & _DISABLE_FLAG or sequence & _TYPE_FLAG:
        raise ExchangeError("timelock", "the refund input carries no block-based relative lock")
    if sequence & _VALUE_MASK < delay:
        raise ExchangeError(
            "timelock", f"a relative lock of {sequence & _VALUE_MASK} blocks, {delay} required"
        )


__all__ = ["MAX_TX_BYTES", "REASONS", "ChannelSpend", "verify_channel_spend"]
