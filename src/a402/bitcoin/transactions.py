"""Transactions spending channel and vault outputs: built, sighashed and sized with bitcointx.

Every spend here is version 2 (BIP-68 needs it), locktime 0, SIGHASH_DEFAULT (the signature
commits to every input's outpoint, amount and scriptPubKey and to every output, BIP-341), so a
64-byte signature, and its size is therefore known before signing: :func:`vsize_with` sizes a
transaction with placeholder witness items of the final lengths, which is how fees are fixed
before anything is signed. Nothing here signs; :mod:`a402.bitcoin.signing` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bitcointx.core import (
    CMutableTransaction,
    CMutableTxIn,
    CMutableTxInWitness,
    CMutableTxOut,
    CoreCoinParams,
    COutPoint,
    CTxOut,
)
from bitcointx.core.script import (
    CScript,
    CScriptWitness,
    SignatureHashSchnorr,
)
from bitcointx.core.serialize import BytesSerializer

from . import _backend  # noqa: F401  (bitcointx on coincurve's libsecp256k1)

#: nSequence of an input with no relative lock (BIP-68 disable flag set, RBF signalled).
NO_RELATIVE_LOCK = 0xFFFFFFFD
#: The dust limit of a P2TR output at Bitcoin Core's default relay policy (sat).
P2TR_DUST = 330
#: The largest amount (sat): 21 M BTC.
MAX_MONEY = 21_000_000 * 100_000_000


class TransactionError(ValueError):
    """A transaction that cannot be built as asked (amounts, fee, dust)."""


@dataclass(frozen=True)
class Utxo:
    """An unspent output: outpoint (txid in display order, hex), amount and scriptPubKey."""

    txid: str
    vout: int
    amount: int
    script_pubkey: bytes

    def outpoint(self) -> COutPoint:
        return COutPoint(bytes.fromhex(self.txid)[::-1], self.vout)

    def txout(self) -> CTxOut:
        return CTxOut(self.amount, CScript(self.script_pubkey))


@dataclass(frozen=True)
class Output:
    """A new output: scriptPubKey and amount (sat)."""

    script_pubkey: bytes
    amount: int


def build(
    spent: Sequence[Utxo], outputs: Sequence[Output], sequences: Sequence[int] | None = None
) -> CMutableTransaction:
    """An unsigned version-2 transaction spending ``spent`` into ``outputs``."""
    if not spent or not outputs:
        raise TransactionError("a transaction needs inputs and outputs")
    seqs = list(sequences) if sequences is not None else [NO_RELATIVE_LOCK] * len(spent)
    if len(seqs) != len(spent):
        raise TransactionError("one nSequence per input")
    for out in outputs:
        if not P2TR_DUST <= out.amount <= MAX_MONEY:
            raise TransactionError(f"output of {out.amount} sat is dust or out of range")
    if sum(o.amount for o in outputs) > sum(u.amount for u in spent):
        raise TransactionError("outputs exceed inputs")
    vin = [CMutableTxIn(u.outpoint(), nSequence=s) for u, s in zip(spent, seqs, strict=True)]
    vout = [CMutableTxOut(o.amount, CScript(o.script_pubkey)) for o in outputs]
    return CMutableTransaction(vin, vout, nLockTime=0, nVersion=2)


def sighash(
    tx: CMutableTransaction,
    index: int,
    spent: Sequence[Utxo],
    leaf: CScript | None = None,
) -> bytes:
    """The BIP-341 signature hash (SIGHASH_DEFAULT) of input ``index``.

    ``leaf`` given: a script-path spend of that tapscript leaf (ext_flag 1, BIP-342);
    otherwise a key-path spend.
    """
    txouts = [u.txout() for u in spent]
    if leaf is None:
        return bytes(SignatureHashSchnorr(tx, index, txouts))
    return bytes(leaf.sighash_schnorr(tx, index, txouts))


def leaf_hash(leaf: CScript) -> bytes:
    """The tapleaf hash of a tapscript leaf (version 0xc0, BIP-341)."""
    return bytes(CoreCoinParams.tapleaf_hasher(bytes([0xC0]) + BytesSerializer.serialize(leaf)))


def set_witness(tx: CMutableTransaction, index: int, stack: Sequence[bytes]) -> None:
    """Put ``stack`` (bottom first, as serialised) as input ``index``'s witness."""
    tx.wit.vtxinwit[index] = CMutableTxInWitness(CScriptWitness(list(stack)))


def key_path_stack(signature: bytes) -> list[bytes]:
    """A key-path witness: the 64-byte signature alone."""
    return [signature]


def script_path_stack(items: Sequence[bytes], leaf: CScript, control_block: bytes) -> list[bytes]:
    """A script-path witness: the leaf's inputs, the leaf script, the control block."""
    return [*items, bytes(leaf), control_block]


def vsize(tx: CMutableTransaction) -> int:
    """Virtual size in vB: ceil(weight / 4), from the serialised transaction."""
    return int(tx.get_virtual_size())


def weight(tx: CMutableTransaction) -> int:
    """BIP-141 weight: 3 × stripped size + total size."""
    stripped = len(tx.serialize(include_witness=False))
    return 3 * stripped + len(tx.serialize())


def vsize_with(tx: CMutableTransaction, stacks: Sequence[Sequence[bytes]]) -> int:
    """The vsize ``tx`` will have once each input carries a witness shaped like ``stacks``."""
    sized = tx.clone()
    for i, stack in enumerate(stacks):
        set_witness(sized, i, stack)
    return vsize(sized)


def txid(tx: CMutableTransaction) -> str:
    """The transaction id in display order (hex)."""
    return bytes(tx.GetTxid()[::-1]).hex()
