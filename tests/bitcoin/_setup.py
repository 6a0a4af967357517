"""A funded channel on a fresh ledger, for the Bitcoin tests and the demo's shape."""

from __future__ import annotations

from dataclasses import dataclass

from a402.asc import CloseReady, ProviderChannel, SignedState, VaultChannel
from a402.bitcoin.channel import ChannelParams, funding_transaction
from a402.bitcoin.exchange import exchange, provider_channel, vault_channel
from a402.bitcoin.scripts import ChannelKeys, payout_script_pubkey
from a402.bitcoin.transactions import Utxo
from a402.bitcoin.validate import Ledger
from a402.crypto import BIP340, SecretKey

FUNDING_HEIGHT = 101
REFUND_DELAY = 144
FEE_RATE = 10
DEPOSIT = 500_000


@dataclass
class Setup:
    ledger: Ledger
    params: ChannelParams
    vault: VaultChannel
    provider: ProviderChannel
    client_key: SecretKey
    vault_key: SecretKey
    provider_key: SecretKey


def open_channel(deposit: int = DEPOSIT) -> Setup:
    vault_key, provider_key, client_key, wallet_key = (BIP340.generate_key() for _ in range(4))
    keys = ChannelKeys(
        vault_key.public_key, provider_key.public_key, client_key.public_key, REFUND_DELAY
    )
    ledger = Ledger()
    wallet_spk = payout_script_pubkey(wallet_key.public_key)
    coin = Utxo("ab" * 32, 1, 2_000_000, wallet_spk)
    ledger.credit(coin, FUNDING_HEIGHT - 10)
    raw = funding_transaction(
        coin, wallet_key, keys.output().script_pubkey, deposit, wallet_spk, FEE_RATE
    )
    funding = ledger.apply(raw, FUNDING_HEIGHT)
    params = ChannelParams(
        keys,
        Utxo(funding.txid, 0, deposit, keys.output().script_pubkey),
        payout_script_pubkey(client_key.public_key),
        payout_script_pubkey(provider_key.public_key),
        FEE_RATE,
    )
    return Setup(
        ledger,
        params,
        vault_channel(params, vault_key),
        provider_channel(params, provider_key, provider_key),
        client_key,
        vault_key,
        provider_key,
    )


def pay(setup: Setup, amount: int, result: bytes, *, reveal: bool = True) -> bytes | None:
    """One request through the ASC machines (EXEC, REPLY, AUTH, REVEAL as wire bytes); the
    vault's result if the REVEAL is delivered."""
    return exchange(setup.vault, setup.provider, b"GET /weather", amount, result,
                    deliver_reveal=reveal)


def agree_final(setup: Setup) -> tuple[SignedState, SignedState]:
    """The machine's CLOSE / CLOSE_ACK: the final state as the vault and the provider hold it."""
    close = setup.vault.close()
    provider_step = setup.provider.receive(close, now=0.0)
    (close_ack,) = provider_step.send
    (vault_ready,) = setup.vault.receive(close_ack, now=0.0).events
    (provider_ready,) = provider_step.events
    assert isinstance(vault_ready, CloseReady) and isinstance(provider_ready, CloseReady)
    return vault_ready.signed, provider_ready.signed


def outputs(raw: bytes) -> dict[bytes, int]:
    from bitcointx.core import CTransaction

    tx = CTransaction.deserialize(raw)
    return {bytes(o.scriptPubKey): int(o.nValue) for o in tx.vout}
