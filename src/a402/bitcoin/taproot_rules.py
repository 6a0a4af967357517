"""The BIP-341/342 rules buidl's interpreter leaves out, checked on every P2TR input spent.

buidl (the ledger's independent interpreter) verifies signatures and control blocks but is
looser than Bitcoin Core in ways that matter to a channel close: it accepted a 65-byte
signature whose hash type byte is 0x00 (BIP-341: invalid, and a close carrying it would make
the vault's extraction of ``t`` fail on a transaction no node mines), undefined hash types,
extra witness items left under the result (BIP-342's clean stack), and an annex. This module
re-checks what the ledger must not accept, after buidl has run the input:

* no annex (consensus-valid, but Bitcoin Core's relay policy refuses it);
* every signature is 64 bytes, or 65 with a defined hash type other than 0x00 (consensus);
* key path: that signature is the whole witness (buidl has verified it);
* script path: leaf version 0xc0 (other versions are upgrade hooks Core does not relay); each
  initial stack item at most 520 bytes; the tapscript re-executed for the opcodes channel and
  deposit leaves use (data pushes, small integers, OP_CHECKSIG, OP_CHECKSIGVERIFY,
  OP_CHECKSEQUENCEVERIFY, OP_DROP), any other opcode refused as beyond what this ledger
  judges; a 32-byte key (other sizes are upgrade hooks, non-standard); a non-empty signature
  that does not verify fails the script (BIP-342); the sigops budget (50 + witness size, 50
  per signature checked); and exactly one true item left (clean stack, consensus in tapscript).

The timelock comparison of OP_CHECKSEQUENCEVERIFY stays buidl's and the ledger's BIP-68 check;
here it must only find an operand. Sighashes are buidl's, so this check shares no code with
the library that built and signed the spend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bitcointx.core.script import (
    OP_1,
    OP_1NEGATE,
    OP_16,
    OP_CHECKSEQUENCEVERIFY,
    OP_CHECKSIG,
    OP_CHECKSIGVERIFY,
    OP_DROP,
    OP_PUSHDATA4,
    CScript,
)

from a402.crypto import BIP340

from . import _backend  # noqa: F401  (bitcointx on coincurve's libsecp256k1)

#: Hash types BIP-341 defines for a 65-byte signature (0x00 only as the implicit 64-byte form).
VALID_HASH_TYPES = frozenset({0x01, 0x02, 0x03, 0x81, 0x82, 0x83})
TAPSCRIPT_LEAF_VERSION = 0xC0
MAX_ELEMENT = 520
_ANNEX_TAG = 0x50
_SIGOPS_COST = 50

#: ``sighash(hash_type)`` of the input being checked, with the leaf's ext_flag.
Sighasher = Callable[[int], bytes]


class RuleBroken(ValueError):
    """The input breaks one of the rules above; the message says which."""


def split_signature(signature: bytes) -> tuple[bytes, int]:
    """``(64-byte signature, hash type)`` of a BIP-341 signature, or :class:`RuleBroken`."""
    if len(signature) == 64:
        return signature, 0x00
    if len(signature) == 65 and signature[64] in VALID_HASH_TYPES:
        return signature[:64], signature[64]
    raise RuleBroken(f"a {len(signature)}-byte signature or an undefined hash type")


def check_key_path(stack: Sequence[bytes]) -> None:
    """A key-path witness: no annex, one signature of a valid form."""
    if len(stack) >= 2 and stack[-1][:1] == bytes([_ANNEX_TAG]):
        raise RuleBroken("an annex (non-standard)")
    if len(stack) != 1:
        raise RuleBroken("a key-path witness is one signature")
    split_signature(stack[0])


def check_script_path(stack: Sequence[bytes], sighash: Sighasher) -> None:
    """A script-path witness ``[inputs…, leaf, control block]`` (no annex) run strictly."""
    if len(stack) >= 2 and stack[-1][:1] == bytes([_ANNEX_TAG]):
        raise RuleBroken("an annex (non-standard)")
    if len(stack) < 2:
        raise RuleBroken("a script-path witness needs a leaf and a control block")
    *inputs, leaf, control = stack
    if not control or control[0] & 0xFE != TAPSCRIPT_LEAF_VERSION:
        raise RuleBroken("a leaf version other than 0xc0 (non-standard)")
    if any(len(item) > MAX_ELEMENT for item in inputs):
        raise RuleBroken(f"a witness item over {MAX_ELEMENT} bytes")
    budget = _SIGOPS_COST + _witness_size(stack)
    items = list(inputs)
    for op, data, _ in CScript(leaf).raw_iter():
        if op <= OP_PUSHDATA4:
            assert data is not None
            items.append(bytes(data))
        elif op == OP_1NEGATE or OP_1 <= op <= OP_16:
            items.append(_small(int(op)))
        elif op in (OP_CHECKSIG, OP_CHECKSIGVERIFY):
            if len(items) < 2:
                raise RuleBroken("OP_CHECKSIG on a short stack")
            key, signature = items.pop(), items.pop()
            if len(key) != 32:
                raise RuleBroken("a public key that is not 32 bytes")
            if signature:
                budget -= _SIGOPS_COST
                if budget < 0:
                    raise RuleBroken("the sigops budget is exceeded")
                sig, hash_type = split_signature(signature)
                if not BIP340.verify(key, sighash(hash_type), sig):
                    raise RuleBroken("a non-empty signature that does not verify")
            if op == OP_CHECKSIGVERIFY:
                if not signature:
                    raise RuleBroken("OP_CHECKSIGVERIFY with an empty signature")
            else:
                items.append(b"\x01" if signature else b"")
        elif op == OP_CHECKSEQUENCEVERIFY:
            if not items:
                raise RuleBroken("OP_CHECKSEQUENCEVERIFY on an empty stack")
        elif op == OP_DROP:
            if not items:
                raise RuleBroken("OP_DROP on an empty stack")
            items.pop()
        else:
            raise RuleBroken(f"opcode {op!r} is outside what this ledger judges")
    if len(items) != 1 or not _true(items[0]):
        raise RuleBroken("the stack does not end with exactly one true item (clean stack)")


def _small(n: int) -> bytes:
    value = -1 if n == OP_1NEGATE else n - OP_1 + 1
    return b"\x81" if value == -1 else bytes([value])


def _true(item: bytes) -> bool:
    """Script's CastToBool: any non-zero byte, except a lone sign bit at the end."""
    for i, byte in enumerate(item):
        if byte != 0:
            return not (i == len(item) - 1 and byte == 0x80)
    return False


def _witness_size(stack: Sequence[bytes]) -> int:
    """The serialised size of the witness (count and each item with its length prefix)."""

    def compact(n: int) -> int:
        return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5

    return compact(len(stack)) + sum(compact(len(item)) + len(item) for item in stack)
