"""A UTXO ledger that validates spends without a node: the stand-in for Bitcoin Core here.

No ``bitcoind`` can be installed on these machines, so a spend is checked as strictly as the
installable tools allow, all before the ledger changes:

* **size**: at most Bitcoin Core's standard weight (400,000), checked before parsing;
* **serialisation**: the raw transaction must re-serialise byte for byte through two further
  independent parsers (``buidl`` and ``embit``), besides python-bitcointx which built it;
* **inputs**: every outpoint exists and is unspent (a double spend, or a stale close after the
  channel was closed, is refused);
* **amounts**: outputs at most the inputs, none below P2TR dust, fee rate ≥ 1 sat/vB;
* **nLockTime** (Core's ``IsFinalTx``): a height lock must be below the block's height unless
  every input's nSequence is final;
* **BIP-68 relative locks** (consensus, version ≥ 2): an input whose nSequence holds a block
  lock ``n`` may be mined only at a height ≥ its coin's height + ``n``; the ledger applies a
  transaction at an explicit ``height`` (sans-IO: the caller is the clock);
* **scripts**: each input is executed by ``buidl``'s script interpreter, a pure-Python
  implementation independent of the code that built the spend. It verifies key-path spends
  (BIP-340 over its own BIP-341 sighash) and script-path spends (control block → output key
  and parity, then the tapscript with OP_CHECKSIG / OP_CHECKSIGVERIFY / OP_CHECKSIGADD and
  BIP-112 OP_CHECKSEQUENCEVERIFY against the input's nSequence).

* **BIP-341/342 rules buidl leaves out** (:mod:`.taproot_rules`): signature encodings and
  hash types (a 65-byte signature with type 0x00 is invalid), clean stack, the sigops budget,
  no annex and leaf version 0xc0 (relay policy), re-checked on every P2TR input; a tapscript
  using opcodes beyond those of the channel and deposit leaves is refused.

What it does **not** do (and a node would): MINIMALIF and OP_SUCCESS handling (no leaf here
has OP_IF or an OP_SUCCESS opcode; the strict re-check refuses both), minimal pushes, block
validity, mempool policy beyond the checks above (RBF, package and ancestor limits, fee
estimation). Time-based relative locks are refused.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import buidl.script
import buidl.tx
from bitcointx.core import CTransaction
from embit.transaction import Transaction as EmbitTransaction

from . import (
    _backend,  # noqa: F401  (bitcointx on coincurve's libsecp256k1)
    taproot_rules,
)
from .transactions import P2TR_DUST, Utxo

#: Bitcoin Core's standardness ceiling on a transaction's weight (MAX_STANDARD_TX_WEIGHT).
MAX_WEIGHT = 400_000
_DISABLE_FLAG = 1 << 31
_TYPE_FLAG = 1 << 22
_VALUE_MASK = 0xFFFF
_SEQUENCE_FINAL = 0xFFFFFFFF
_LOCKTIME_THRESHOLD = 500_000_000


class Refused(Exception):
    """The ledger refused a transaction; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Coin:
    """An unspent output and the height of the block that confirmed it."""

    utxo: Utxo
    height: int


@dataclass(frozen=True)
class Accepted:
    """A transaction the ledger applied: its id, fee, vsize and the coins it spent."""

    txid: str
    fee: int
    vsize: int
    spent: tuple[Coin, ...]


class Ledger:
    """Unspent outputs by outpoint, with confirmation heights."""

    def __init__(self) -> None:
        self._coins: dict[tuple[str, int], Coin] = {}
        self.transactions: dict[str, bytes] = {}

    def credit(self, utxo: Utxo, height: int) -> None:
        """Record an output created outside the channel (a wallet's coin, for a funding)."""
        self._coins[(utxo.txid, utxo.vout)] = Coin(utxo, height)

    def coin(self, txid: str, vout: int) -> Coin | None:
        return self._coins.get((txid, vout))

    def check(self, raw: bytes, height: int) -> Accepted:
        """Validate ``raw`` as if mined at ``height``; raise :class:`Refused`, change nothing."""
        tx = _parse_and_cross_check(raw)
        coins: list[Coin] = []
        for txin in tx.vin:
            key = (bytes(txin.prevout.hash[::-1]).hex(), int(txin.prevout.n))
            coin = self._coins.get(key)
            if coin is None:
                raise Refused("missing-or-spent", f"input {key[0]}:{key[1]} is not unspent")
            if key in ((c.utxo.txid, c.utxo.vout) for c in coins):
                raise Refused("duplicate-input", f"{key[0]}:{key[1]} spent twice")
            coins.append(coin)
        total_in = sum(c.utxo.amount for c in coins)
        total_out = sum(int(o.nValue) for o in tx.vout)
        if total_out > total_in:
            raise Refused("outputs-exceed-inputs", f"{total_out} > {total_in}")
        for out in tx.vout:
            if int(out.nValue) < P2TR_DUST:
                raise Refused("dust", f"output of {int(out.nValue)} sat")
        vsize = int(tx.get_virtual_size())
        fee = total_in - total_out
        if fee < vsize:
            raise Refused("fee-too-low", f"{fee} sat for {vsize} vB")
        _check_final(tx, height)
        for i, (txin, coin) in enumerate(zip(tx.vin, coins, strict=True)):
            _check_relative_lock(tx.nVersion, int(txin.nSequence), coin, height, i)
        _run_scripts(raw, coins)
        return Accepted(bytes(tx.GetTxid()[::-1]).hex(), fee, vsize, tuple(coins))

    def apply(self, raw: bytes, height: int) -> Accepted:
        """Validate and apply ``raw`` mined at ``height``: inputs spent, outputs created."""
        accepted = self.check(raw, height)
        tx = CTransaction.deserialize(raw)
        for coin in accepted.spent:
            del self._coins[(coin.utxo.txid, coin.utxo.vout)]
        for n, out in enumerate(tx.vout):
            utxo = Utxo(accepted.txid, n, int(out.nValue), bytes(out.scriptPubKey))
            self._coins[(accepted.txid, n)] = Coin(utxo, height)
        self.transactions[accepted.txid] = raw
        return accepted


def _parse_and_cross_check(raw: bytes) -> CTransaction:
    if len(raw) > MAX_WEIGHT:  # weight ≥ size: refused before any parser reads it
        raise Refused("too-large", f"{len(raw)} bytes")
    try:
        tx = CTransaction.deserialize(raw)
        other = buidl.tx.Tx.parse(io.BytesIO(raw), network="regtest")
        third = EmbitTransaction.parse(raw)
    except Exception as exc:  # any parser's complaint is a malformed transaction
        raise Refused("malformed", f"does not parse: {exc}") from None
    if tx.serialize() != raw or other.serialize() != raw or third.serialize() != raw:
        raise Refused("malformed", "re-serialisation differs between libraries")
    if 3 * len(tx.serialize(include_witness=False)) + len(raw) > MAX_WEIGHT:
        raise Refused("too-large", "weight above the standard limit")
    return tx


def _check_final(tx: CTransaction, height: int) -> None:
    """Bitcoin Core's ``IsFinalTx`` for a block at ``height``: nLockTime 0, or a height lock
    below ``height``, or every input's nSequence final (a time lock needs a clock: refused)."""
    locktime = int(tx.nLockTime)
    if locktime == 0 or all(int(txin.nSequence) == _SEQUENCE_FINAL for txin in tx.vin):
        return
    if locktime >= _LOCKTIME_THRESHOLD:
        raise Refused("time-lock-unsupported", "nLockTime is a time")
    if locktime >= height:
        raise Refused("non-final", f"nLockTime {locktime} not below height {height}")


def _check_relative_lock(version: int, sequence: int, coin: Coin, height: int, i: int) -> None:
    if version < 2 or sequence & _DISABLE_FLAG:
        return
    if sequence & _TYPE_FLAG:
        raise Refused("time-lock-unsupported", f"input {i}: time-based relative lock")
    required = sequence & _VALUE_MASK
    age = height - coin.height
    if age < required:
        raise Refused(
            "non-BIP68-final",
            f"input {i}: {required} blocks required after height {coin.height}, {age} passed",
        )


def _run_scripts(raw: bytes, coins: list[Coin]) -> None:
    tx = buidl.tx.Tx.parse(io.BytesIO(raw), network="regtest")
    for txin, coin in zip(tx.tx_ins, coins, strict=True):
        script = coin.utxo.script_pubkey
        txin._value = coin.utxo.amount
        txin._script_pubkey = buidl.script.Script.parse(
            io.BytesIO(bytes([len(script)]) + script)
        )
    for i in range(len(coins)):
        noise = io.StringIO()
        try:
            with contextlib.redirect_stdout(noise):
                ok = tx.verify_input(i)
        except Exception as exc:  # the interpreter raises on some malformed stacks
            raise Refused("script-failed", f"input {i}: {exc!r}") from None
        if not ok:
            detail = noise.getvalue().strip() or "evaluated to false"
            raise Refused("script-failed", f"input {i}: {detail}")
        _check_taproot_rules(tx, i, coins[i])


def _check_taproot_rules(tx: buidl.tx.Tx, i: int, coin: Coin) -> None:
    """BIP-341/342 rules buidl leaves out (:mod:`.taproot_rules`), for a P2TR input."""
    spk = coin.utxo.script_pubkey
    if len(spk) != 34 or spk[:2] != b"\x51\x20":
        return
    stack = [bytes(item) for item in tx.tx_ins[i].witness.items]

    def sighash(hash_type: int) -> bytes:
        return bytes(tx.sig_hash_bip341(i, ext_flag=1, hash_type=hash_type))

    try:
        if len(stack) == 1 or (len(stack) == 2 and stack[-1][:1] == b"\x50"):
            taproot_rules.check_key_path(stack)
        else:
            taproot_rules.check_script_path(stack, sighash)
    except taproot_rules.RuleBroken as exc:
        raise Refused("script-failed", f"input {i}: {exc}") from None
    except Exception as exc:  # buidl's sighash refuses some hash types (SINGLE, no output)
        raise Refused("script-failed", f"input {i}: {exc!r}") from None
