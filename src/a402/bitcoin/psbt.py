"""Channel spends as PSBTs (BIP-174 with BIP-371's Taproot fields), through embit.

A close through the payment leaf carries two signatures, possibly made on different machines
or by an external signer without MuSig2 (the key-path close needs BIP-373's MuSig2 fields, which
embit does not have): :func:`to_psbt` writes the unsigned close with everything a signer
needs (the spent output, the tapscript leaf and its control block, the internal key and
merkle root) and the signatures gathered so far (PSBT_IN_TAP_SCRIPT_SIG, keyed by x-only
key and leaf hash);
:func:`finalize` checks that a PSBT spends this channel's output through this channel's leaf,
verifies every signature on the sighash it computes itself, and writes the final witness.
"""

from __future__ import annotations

from collections.abc import Mapping

from bitcointx.core import CMutableTransaction
from embit.ec import PublicKey as EmbitPublicKey
from embit.psbt import PSBT
from embit.script import Script as EmbitScript
from embit.transaction import Transaction as EmbitTransaction
from embit.transaction import TransactionOutput

from a402.crypto import BIP340

from . import transactions as txs
from .channel import ChannelParams, ExchangeError
from .scripts import PAYMENT_LEAF

_LEAF_VERSION = b"\xc0"


def to_psbt(
    params: ChannelParams, tx: CMutableTransaction, leaf_name: str, sigs: Mapping[bytes, bytes]
) -> str:
    """The base64 PSBT of ``tx`` spending the channel output by ``leaf_name``, with ``sigs``."""
    leaf, control = params.output.leaf(leaf_name)
    psbt = PSBT(EmbitTransaction.parse(bytes(tx.serialize())))
    scope = psbt.inputs[0]
    scope.witness_utxo = TransactionOutput(
        params.funding.amount, EmbitScript(params.funding.script_pubkey)
    )
    scope.taproot_internal_key = EmbitPublicKey.from_xonly(params.output.internal_key)
    scope.taproot_merkle_root = params.output.merkle_root
    scope.taproot_scripts[control] = bytes(leaf) + _LEAF_VERSION
    leaf_hash = txs.leaf_hash(leaf)
    for key, sig in sigs.items():
        scope.taproot_sigs[(EmbitPublicKey.from_xonly(key), leaf_hash)] = sig
    return str(psbt.to_string())


def signatures(
    params: ChannelParams, encoded: str, leaf_name: str
) -> tuple[bytes, dict[bytes, bytes]]:
    """The unsigned transaction and the valid leaf signatures of a PSBT for this channel.

    Refused (:class:`ExchangeError` ``bad-psbt``): a PSBT that does not parse, spends another
    output, carries another leaf or control block, or holds a signature that does not verify.
    """
    try:
        psbt = PSBT.from_string(encoded)
    except Exception:  # embit raises several types on malformed input
        raise ExchangeError("bad-psbt", "does not parse") from None
    leaf, control = params.output.leaf(leaf_name)
    if len(psbt.inputs) != 1:
        raise ExchangeError("bad-psbt", "a channel spend has one input")
    scope = psbt.inputs[0]
    outpoint = (scope.txid.hex() if scope.txid else None, scope.vout)
    if outpoint != (params.funding.txid, params.funding.vout):
        raise ExchangeError("bad-psbt", "spends another output")
    if dict(scope.taproot_scripts) != {control: bytes(leaf) + _LEAF_VERSION}:
        raise ExchangeError("bad-psbt", "not this channel's leaf and control block")
    raw = bytes(psbt.tx.serialize())
    tx = CMutableTransaction.deserialize(raw)
    digest = params.sighash(tx, leaf_name)
    found: dict[bytes, bytes] = {}
    leaf_hash = txs.leaf_hash(leaf)
    for (pub, h), sig in scope.taproot_sigs.items():
        key = bytes(pub.xonly())
        if h != leaf_hash or not BIP340.verify(key, digest, bytes(sig)):
            raise ExchangeError("bad-psbt", "a signature does not verify on this spend")
        found[key] = bytes(sig)
    return raw, found


def finalize(params: ChannelParams, encoded: str) -> bytes:
    """The signed payment-leaf spend, once the PSBT holds the vault's and the provider's."""
    raw, found = signatures(params, encoded, PAYMENT_LEAF)
    vault, provider = params.keys.vault, params.keys.provider
    if vault not in found or provider not in found:
        raise ExchangeError("bad-psbt", "the vault's and the provider's signatures are needed")
    tx = CMutableTransaction.deserialize(raw)
    return params.witness(tx, PAYMENT_LEAF, [found[provider], found[vault]])
