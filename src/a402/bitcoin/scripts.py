"""Taproot outputs of an Atomic Service Channel on Bitcoin (BIP-341/342), via python-bitcointx.

Standard mode (one channel between a client ``C``, its vault ``U`` and a provider ``S``)::

    internal key  MuSig2(U, S) (BIP-327; key path: the cooperative close, one signature)
    leaf "payment"  <U> OP_CHECKSIGVERIFY <S> OP_CHECKSIG              (depth 1)
    leaf "refund"   <Δ> OP_CHECKSEQUENCEVERIFY OP_DROP <C> OP_CHECKSIG  (depth 1)

The key path is the cooperative close: the vault and the provider sign the final state
together (:mod:`a402.bitcoin.musig`, libsecp256k1's MuSig2), 154 vB. The payment leaf is the
provider's force close: it completes the vault's adaptor pre-signature on the latest paid
state with ``t``, so the witness publishes ``s`` and anyone holding the pre-signature learns
``t``. The same leaf can also carry a cooperative close by two separate signatures (204 vB),
for a signer without MuSig2 (:mod:`a402.bitcoin.psbt`).

The refund leaf is the client's force close: valid only ``Δ`` blocks after the funding
output confirmed (BIP-68 relative lock in the input's nSequence, checked by BIP-112
``OP_CHECKSEQUENCEVERIFY``). Δ is the channel's lifetime for unclosed earnings: until it
passes only the payment leaf can spend, so a client can never pre-empt, with an older state
or with a refund, a newer state the provider holds; the provider (its watchtower) closes
with its latest state before Δ.

Vault mode (one deposit of a participant ``P`` into the Liquidity Vault ``U``)::

    internal key  U  (key path: the vault's aggregated settlement, many deposits in one tx)
    leaf "force-settle"  <Δ_long> OP_CHECKSEQUENCEVERIFY OP_DROP <P> OP_CHECKSIG

Keys are 32-byte x-only BIP-340 keys. Each function here is pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitcointx.core.key import XOnlyPubKey, tap_tweak_pubkey
from bitcointx.core.script import (
    OP_CHECKSEQUENCEVERIFY,
    OP_CHECKSIG,
    OP_CHECKSIGVERIFY,
    OP_DROP,
    CScript,
    TaprootScriptTree,
)

from . import _backend  # noqa: F401  (bitcointx on coincurve's libsecp256k1)
from .musig import KeyAgg

#: The BIP-68 ceiling for a block-based relative lock (16 bits, type flag clear).
MAX_CSV_BLOCKS = 0xFFFF

PAYMENT_LEAF = "payment"
REFUND_LEAF = "refund"
FORCE_SETTLE_LEAF = "force-settle"


class ScriptError(ValueError):
    """A key or timelock a script cannot be built from."""


def _xonly(key: bytes, what: str) -> XOnlyPubKey:
    if len(key) != 32:
        raise ScriptError(f"{what} must be a 32-byte x-only key")
    xkey = XOnlyPubKey(key)
    if not xkey.is_fullyvalid():
        raise ScriptError(f"{what} is not the x coordinate of a curve point")
    return xkey


def _delay(blocks: int) -> int:
    if not 1 <= blocks <= MAX_CSV_BLOCKS:
        raise ScriptError(f"relative timelock must be 1..{MAX_CSV_BLOCKS} blocks")
    return blocks


def payment_leaf(vault: bytes, provider: bytes) -> CScript:
    """``<U> OP_CHECKSIGVERIFY <S> OP_CHECKSIG``: both the vault and the provider sign."""
    return CScript(
        [_xonly(vault, "vault key"), OP_CHECKSIGVERIFY, _xonly(provider, "provider key"),
         OP_CHECKSIG],
        name=PAYMENT_LEAF,
    )


def timeout_leaf(blocks: int, key: bytes, name: str) -> CScript:
    """``<Δ> OP_CHECKSEQUENCEVERIFY OP_DROP <K> OP_CHECKSIG``: ``K`` alone, Δ blocks after."""
    return CScript(
        [_delay(blocks), OP_CHECKSEQUENCEVERIFY, OP_DROP, _xonly(key, "timeout key"),
         OP_CHECKSIG],
        name=name,
    )


@dataclass(frozen=True)
class TaprootOutput:
    """A P2TR output: its internal key, script tree, output key and scriptPubKey."""

    tree: TaprootScriptTree
    internal_key: bytes
    has_key_path: bool

    @property
    def output_key(self) -> bytes:
        key = self.tree.output_pubkey
        assert key is not None  # set with the internal key at construction
        return bytes(key)

    @property
    def parity(self) -> int:
        parity = self.tree.parity
        assert parity is not None
        return int(parity)

    @property
    def merkle_root(self) -> bytes:
        return bytes(self.tree.merkle_root)

    @property
    def script_pubkey(self) -> bytes:
        """``OP_1 <32-byte output key>`` (segwit v1)."""
        return b"\x51\x20" + self.output_key

    def leaf(self, name: str) -> tuple[CScript, bytes]:
        """The leaf script named ``name`` and its control block (BIP-341)."""
        found = self.tree.get_script_with_control_block(name)
        if found is None:
            raise KeyError(f"no leaf named {name!r}")
        script, control_block = found
        return script, bytes(control_block)


def _output(leaves: list[CScript], internal_key: bytes, has_key_path: bool) -> TaprootOutput:
    tree = TaprootScriptTree(leaves, internal_pubkey=_xonly(internal_key, "internal key"))
    return TaprootOutput(tree, internal_key, has_key_path)


@dataclass(frozen=True)
class ChannelKeys:
    """The keys and client timelock of one standard-mode channel."""

    vault: bytes
    provider: bytes
    client: bytes
    refund_delay: int

    def output(self) -> TaprootOutput:
        """The channel's funding output: key path = MuSig2(U, S), leaves payment and refund."""
        leaves = [
            payment_leaf(self.vault, self.provider),
            timeout_leaf(self.refund_delay, self.client, REFUND_LEAF),
        ]
        return _output(leaves, self.cooperative_key().xonly(), has_key_path=True)

    def cooperative_key(self) -> KeyAgg:
        """BIP-327 KeyAgg of ``[U, S]`` (in that order), untweaked: the internal key."""
        return KeyAgg.of([b"\x02" + self.vault, b"\x02" + self.provider])


@dataclass(frozen=True)
class VaultDepositKeys:
    """The keys and emergency timelock of one vault-mode deposit."""

    vault: bytes
    participant: bytes
    force_settle_delay: int

    def output(self) -> TaprootOutput:
        """The deposit output: key path = the vault's settlement, one force-settle leaf."""
        leaf = timeout_leaf(self.force_settle_delay, self.participant, FORCE_SETTLE_LEAF)
        return _output([leaf], self.vault, has_key_path=True)


def payout_script_pubkey(internal_key: bytes) -> bytes:
    """A BIP-86-style P2TR payout (key path only; tweak with an empty script tree)."""
    tweaked = tap_tweak_pubkey(_xonly(internal_key, "payout key"))
    if tweaked is None:
        raise ScriptError("payout key cannot be tweaked")
    return b"\x51\x20" + bytes(tweaked[0])
