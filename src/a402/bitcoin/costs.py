"""One run of every Bitcoin lifecycle, validated on a fresh ledger, with its sizes (paper Table 2).

:func:`run_lifecycles` opens a standard channel, pays ``requests`` requests through the A402
exchange (the ASC state machine of :mod:`a402.asc.machine` on both sides, every message
through its wire bytes: :mod:`a402.bitcoin.exchange`), and closes it each of the three ways
(on copies of the ledger, so each close spends the same channel output); opens a vault
deposit and settles it, and force-settles one; and builds the paper's x402-style model (per
request: an escrow transaction from the client, a finalising transaction to the provider)
with P2TR key-path coins. Every transaction is applied to a
:class:`~a402.bitcoin.validate.Ledger` (so validated as it describes) before it is counted;
sizes come from the serialised bytes. Keys are fresh per run: the hex differs between
runs, the sizes do not.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from bitcointx.core import CTransaction

from a402.asc import CloseReady
from a402.crypto import BIP340, SecretKey

from . import coop_wire, signing
from . import transactions as txs
from .channel import (
    ChannelParams,
    Deposit,
    ExchangeError,
    client_refund,
    force_settle,
    funding_transaction,
    vault_settlement,
)
from .exchange import (
    CooperativeClose,
    cooperative_answer,
    exchange,
    payment_leaf_close,
    provider_channel,
    vault_channel,
)
from .scripts import ChannelKeys, VaultDepositKeys, payout_script_pubkey
from .transactions import Output, Utxo
from .validate import Ledger

FEE_RATE = 10  # sat/vB, as the paper's Table 2
BTC_USD = 50_000  # as the paper's Table 2
REFUND_DELAY = 144
FORCE_SETTLE_DELAY = 4_320

#: Paper Table 2 (total vB): the figures compared against.
PAPER_VB = {
    "U.createASC": 153,
    "U.closeASC": 155,
    "U.closeASC (2-of-2 leaf)": 155,
    "standard lifecycle": 308,
    "S.forceClose": 208,
    "C.forceClose": 192,
    "U.initVault": 153,
    "U.settleVault": 155,
    "vault lifecycle": 308,
    "C/S.forceSettle": 192,
    "x402 tx1 (escrow)": 153,
    "x402 tx2 (finalise)": 138,
    "x402 per request": 291,
}
PAPER_X402_100 = 29_100


@dataclass(frozen=True)
class Measured:
    """A validated transaction's sizes: base (stripped bytes), witness vB, total vB, fee."""

    name: str
    raw: bytes
    fee: int

    @property
    def base(self) -> int:
        return len(CTransaction.deserialize(self.raw).serialize(include_witness=False))

    @property
    def witness_vb(self) -> float:
        return (len(self.raw) - self.base) / 4

    @property
    def vsize(self) -> int:
        return math.ceil((3 * self.base + len(self.raw)) / 4)

    def usd(self, fee_rate: int = FEE_RATE) -> float:
        return self.vsize * fee_rate * BTC_USD / 100_000_000


@dataclass(frozen=True)
class Lifecycles:
    """Every measured transaction, the requests paid, and the vault's final balance."""

    transactions: dict[str, Measured]
    requests: int
    provider_balance: int
    results_opened: int

    def vb(self, name: str) -> int:
        return self.transactions[name].vsize


def _wallet(ledger: Ledger, tag: int, amount: int) -> tuple[Utxo, SecretKey, bytes]:
    key = BIP340.generate_key()
    spk = payout_script_pubkey(key.public_key)
    coin = Utxo(f"{tag:064x}", 0, amount, spk)
    ledger.credit(coin, 1)
    return coin, key, spk


def run_lifecycles(requests: int = 100, price: int = 1_000) -> Lifecycles:
    """Run and validate every lifecycle; raises if any transaction is refused."""
    ledger = Ledger()
    measured: dict[str, Measured] = {}
    vault_key, provider_key, client_key = (BIP340.generate_key() for _ in range(3))

    # Standard mode: open, pay `requests` through the adaptor exchange, close three ways.
    keys = ChannelKeys(
        vault_key.public_key, provider_key.public_key, client_key.public_key, REFUND_DELAY
    )
    coin, wallet_key, wallet_spk = _wallet(ledger, 1, 5_000_000)
    deposit = requests * price + 100_000
    raw = funding_transaction(
        coin, wallet_key, keys.output().script_pubkey, deposit, wallet_spk, FEE_RATE
    )
    funded = ledger.apply(raw, 100)
    measured["U.createASC"] = Measured("U.createASC", raw, funded.fee)
    params = ChannelParams(
        keys,
        Utxo(funded.txid, 0, deposit, keys.output().script_pubkey),
        payout_script_pubkey(client_key.public_key),
        payout_script_pubkey(provider_key.public_key),
        FEE_RATE,
    )
    vault = vault_channel(params, vault_key)
    provider = provider_channel(params, provider_key, provider_key)
    opened = 0
    for i in range(requests):
        result = b'{"forecast": %d}' % i
        if exchange(vault, provider, b"GET /weather?city=%d" % i, price, result) == result:
            opened += 1
    if vault.latest_state() != provider.latest_state():
        raise ExchangeError("diverged", "vault and provider disagree on the co-signed state")
    # The provider's force close: its newest co-signed state, built before the final one.
    force_close = payment_leaf_close(params, provider.latest_state(), provider_key)

    # The machine's CLOSE / CLOSE_ACK co-sign the final state; MuSig2 signs its key path.
    final_close = vault.close()
    (close_ack,) = provider.receive(final_close, now=0.0).send
    (ready,) = vault.receive(close_ack, now=0.0).events
    assert isinstance(ready, CloseReady)
    musig_close = CooperativeClose(params, vault_key, ready.signed)
    # Both MuSig2 messages through their wire bytes (a402.bitcoin.coop_wire).
    proposal = coop_wire.decode_proposal(musig_close.proposal().encode())
    answer = coop_wire.decode_answer(
        cooperative_answer(params, provider_key, ready.signed, proposal).encode()
    )
    closes: list[tuple[str, bytes, int]] = [
        ("U.closeASC", musig_close.finish(answer), 101),
        # The same close by the payment leaf's two signatures (a signer without MuSig2).
        ("U.closeASC (2-of-2 leaf)", payment_leaf_close(params, ready.signed), 101),
        ("S.forceClose", force_close, 101),
        # The client's close pays the provider what the vault credited (1-in/2-out, as
        # the paper's); the refund leaf would let it pay any split after Δ.
        ("C.forceClose", client_refund(params, client_key, vault.provider_balance),
         100 + REFUND_DELAY),
    ]
    for name, close, height in closes:
        accepted = copy.deepcopy(ledger).apply(close, height)
        measured[name] = Measured(name, close, accepted.fee)

    # Vault mode: one deposit, the vault's settlement (key path), a participant's force-settle.
    participant = BIP340.generate_key()
    dkeys = VaultDepositKeys(vault_key.public_key, participant.public_key, FORCE_SETTLE_DELAY)
    coin, wallet_key, wallet_spk = _wallet(ledger, 2, 5_000_000)
    raw = funding_transaction(
        coin, wallet_key, dkeys.output().script_pubkey, deposit, wallet_spk, FEE_RATE
    )
    funded = ledger.apply(raw, 100)
    measured["U.initVault"] = Measured("U.initVault", raw, funded.fee)
    dep = Deposit(Utxo(funded.txid, 0, deposit, dkeys.output().script_pubkey), dkeys)
    payouts = [Output(params.provider_payout, requests * price)]
    settle = vault_settlement(
        [dep], payouts, vault_key, payout_script_pubkey(participant.public_key), FEE_RATE
    )
    accepted = copy.deepcopy(ledger).apply(settle, 101)
    measured["U.settleVault"] = Measured("U.settleVault", settle, accepted.fee)
    exit_ = force_settle(dep, participant, payout_script_pubkey(participant.public_key), FEE_RATE)
    accepted = copy.deepcopy(ledger).apply(exit_, 100 + FORCE_SETTLE_DELAY)
    measured["C/S.forceSettle"] = Measured("C/S.forceSettle", exit_, accepted.fee)

    # The paper's x402-style model, per request: client → facilitator escrow, then → provider.
    coin, client_wallet, client_spk = _wallet(ledger, 3, 1_000_000)
    facilitator = BIP340.generate_key()
    escrow_spk = payout_script_pubkey(facilitator.public_key)
    tx1 = txs.build([coin], [Output(escrow_spk, 20_000), Output(client_spk, txs.P2TR_DUST)])
    fee1 = txs.vsize_with(tx1, [[bytes(64)]]) * FEE_RATE
    tx1 = txs.build(
        [coin], [Output(escrow_spk, 20_000), Output(client_spk, coin.amount - 20_000 - fee1)]
    )
    sig1 = signing.sign_key_path(client_wallet, b"", txs.sighash(tx1, 0, [coin]))
    txs.set_witness(tx1, 0, [sig1])
    raw1 = bytes(tx1.serialize())
    a1 = ledger.apply(raw1, 100)
    measured["x402 tx1 (escrow)"] = Measured("x402 tx1 (escrow)", raw1, a1.fee)
    escrow = Utxo(a1.txid, 0, 20_000, escrow_spk)
    tx2 = txs.build([escrow], [Output(params.provider_payout, txs.P2TR_DUST)])
    fee2 = txs.vsize_with(tx2, [[bytes(64)]]) * FEE_RATE
    tx2 = txs.build([escrow], [Output(params.provider_payout, escrow.amount - fee2)])
    sig2 = signing.sign_key_path(facilitator, b"", txs.sighash(tx2, 0, [escrow]))
    txs.set_witness(tx2, 0, [sig2])
    raw2 = bytes(tx2.serialize())
    a2 = ledger.apply(raw2, 101)
    measured["x402 tx2 (finalise)"] = Measured("x402 tx2 (finalise)", raw2, a2.fee)

    return Lifecycles(measured, requests, vault.provider_balance, opened)
