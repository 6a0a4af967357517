"""A Bitcoin channel's parameters and every transaction that spends it (sans-IO).

:class:`ChannelParams` is what the vault and the provider agree on at opening (keys, the
funding coin, the payout scripts, the fee rate) and builds each unsigned close: the key-path
cooperative close (MuSig2 of U and S), the payment-leaf close (both signatures: the
provider's force close, or the cooperative close by two signatures) and the client's refund
(Δ blocks after the funding). The exchange that decides *which* state a close pays is the
ASC state machine (:mod:`a402.asc.machine`) over :mod:`a402.bitcoin.exchange`'s settlement.

Fees: every closing transaction pays ``vsize × fee_rate`` (sizes exact before signing, since
signatures are 64 bytes) out of the client's share; a split that would leave the client's
share below that fee plus the P2TR dust limit, or the provider's below that limit, cannot be
built (:class:`ExchangeError`, with a machine-readable ``reason``).

Vault mode: :func:`vault_settlement` (the vault's aggregated key-path settlement of many
deposits) and :func:`force_settle` (a participant's exit after Δ_long).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from bitcointx.core import CMutableTransaction

from a402.crypto import (
    SecretKey,
)

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
