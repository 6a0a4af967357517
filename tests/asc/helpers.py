"""Test helpers: fresh funded parties for one channel, revert matching, time travel."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from a402.asc import (
    BalanceState,
    ChannelTerms,
    Message,
    ProviderChannel,
    Reply,
    ResultDelivered,
    Reveal,
    SignedState,
    VaultChannel,
    decode,
    encode,
    sign_channel_open,
    sign_state,
)
from a402.asc_manager import ASCManager
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, transact
from a402.crypto import EVM, EcdsaSigner, SecretKey, generate_adaptor

DISPUTE_WINDOW = 3_600
ETH = 10**18


def selector(signature: str) -> str:
    """The 4-byte selector of a custom error, as hex without 0x."""
    return keccak(signature.encode())[:4].hex()


def reverts_with(error: str) -> Any:
    """``pytest.raises`` for a transaction that reverts with custom error ``error``.

    ``error`` is the signature, e.g. ``"NotAuthorized()"``; the check is on the
    selector in the revert data, so it cannot pass for a different error.
    """
    return pytest.raises(TransactionFailed, match=selector(error))


def balance(token: Any, who: str) -> int:
    return int(token.functions.balanceOf(who).call())


def increase_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    chain.w3.provider.make_request("evm_mine", [])


def fresh_account(chain: Chain, eth: int = ETH) -> LocalAccount:
    account = Account.create()
    transact(chain, chain.accounts[0], {"to": account.address}, value=eth)
    return account


@dataclass
class Parties:
    """One channel's terms and the keys of everyone in it."""

    chain: Chain
    token: Any
    manager: ASCManager
    client: LocalAccount
    vault: LocalAccount
    provider: LocalAccount
    schnorr: SecretKey
    terms: ChannelTerms

    @property
    def cid(self) -> bytes:
        return self.terms.channel_id(self.manager.domain)

    @property
    def vault_signer(self) -> EcdsaSigner:
        return EcdsaSigner(bytes(self.vault.key))

    @property
    def provider_signer(self) -> EcdsaSigner:
        return EcdsaSigner(bytes(self.provider.key))

    @property
    def client_signer(self) -> EcdsaSigner:
        return EcdsaSigner(bytes(self.client.key))

    def open(self) -> Any:
        """Approve and ``createASC`` with the client's consent signature."""
        transact(
            self.chain,
            self.client,
            self.token.functions.approve(self.manager.address, self.terms.deposit),
        )
        consent = sign_channel_open(self.client_signer, self.manager.domain, self.terms)
        return self.manager.create(self.vault, self.terms, consent)

    def signed(self, state: BalanceState) -> SignedState:
        """``state`` with both vault and provider signatures."""
        domain, cid = self.manager.domain, self.cid
        return SignedState(
            state,
            sign_state(self.vault_signer, domain, cid, state),
            sign_state(self.provider_signer, domain, cid, state),
        )

    def payouts(self) -> tuple[int, int]:
        return balance(self.token, self.client.address), balance(self.token, self.provider.address)


def make_parties(
    chain: Chain, token: Any, manager: ASCManager, deposit: int, *, client_funds: int | None = None
) -> Parties:
    client, vault, provider = (fresh_account(chain) for _ in range(3))
    funds = deposit if client_funds is None else client_funds
    if funds:
        transact(chain, chain.accounts[0], token.functions.mint(client.address, funds))
    schnorr = EVM.generate_key()
    terms = ChannelTerms(
        client=client.address,
        vault=vault.address,
        provider=provider.address,
        provider_key=schnorr.public_key,
        deposit=deposit,
        salt=os.urandom(32),
    )
    return Parties(chain, token, manager, client, vault, provider, schnorr, terms)


# --------------------------------------------------------------- state machines


def machines(
    p: Parties, *, lock_timeout: float = 30.0, ack_timeout: float = 10.0
) -> tuple[VaultChannel, ProviderChannel]:
    """Both ends of ``p``'s channel, in the manager's domain."""
    vault = VaultChannel(p.terms, p.manager.domain, p.vault_signer, lock_timeout=lock_timeout)
    provider = ProviderChannel(
        p.terms,
        p.manager.domain,
        p.provider_signer,
        p.schnorr,
        ack_timeout=ack_timeout,
        lock_timeout=lock_timeout - 1,
    )
    return vault, provider


def wire(message: Message) -> Message:
    """Through the canonical encoding and back, as the transport would carry it."""
    return decode(encode(message))


def pay(
    vault: VaultChannel, provider: ProviderChannel, amount: int, result: bytes, now: float = 0.0
) -> bytes:
    """One complete paid request; returns the result the vault delivered."""
    exec_ = vault.request(b"request for " + result, amount, now=now)
    provider.receive(wire(exec_), now=now)
    auth = vault.receive(wire(provider.reply(exec_.request_id, result)), now=now).send[0]
    reveal = provider.receive(wire(auth), now=now).send[0]
    step = vault.receive(wire(reveal), now=now)
    provider.receive(wire(step.send[0]), now=now)
    delivered = step.events[0]
    assert isinstance(delivered, ResultDelivered)
    return delivered.result


def authorise(
    vault: VaultChannel,
    provider: ProviderChannel,
    amount: int,
    result: bytes,
    t: bytes,
    now: float = 0.0,
) -> tuple[Reply, Reveal]:
    """A request up to AUTH: the provider holds σ_U and has produced REVEAL, which the
    test keeps from the vault for now (as if the vault never acknowledged)."""
    exec_ = vault.request(b"request", amount, now=now)
    provider.receive(wire(exec_), now=now)
    reply = provider.reply(exec_.request_id, result, adaptor_secret=t)
    auth = vault.receive(wire(reply), now=now).send[0]
    reveal = provider.receive(wire(auth), now=now).send[0]
    assert isinstance(reveal, Reveal)
    return reply, reveal


def acknowledge(vault: VaultChannel, provider: ProviderChannel, reveal: Reveal) -> None:
    """Deliver a held-back REVEAL and its ACK."""
    ack = vault.receive(wire(reveal), now=0).send[0]
    provider.receive(wire(ack), now=0)


# --------------------------------------------------------------- the four exits

PAID = 300_000  # what each exit below pays the provider out of the channel's deposit


def final_state(p: Parties) -> SignedState:
    deposit = p.terms.deposit
    return p.signed(BalanceState(1, deposit - PAID, PAID, True))


def cooperative(p: Parties) -> None:
    p.manager.close(p.vault, p.terms, final_state(p))


def batched(p: Parties) -> None:
    p.manager.close_batch(p.vault, [(p.terms, final_state(p))])


def client_force_close(p: Parties) -> None:
    state = BalanceState(1, p.terms.deposit - PAID, PAID)
    p.manager.init_force_close(p.client, p.terms, p.signed(state))
    increase_time(p.chain, DISPUTE_WINDOW)
    p.manager.final_force_close(p.vault, p.terms)


def provider_force_close(p: Parties) -> None:
    """PAID - 50,000 paid through the channel and a 50,000 payment claimed on-chain."""
    vault, provider = machines(p)
    pay(vault, provider, PAID - 50_000, b"one")
    authorise(vault, provider, 50_000, b"two", generate_adaptor()[0])
    p.manager.force_close(p.provider, p.terms, provider.claim())


EXITS: dict[str, Callable[[Parties], None]] = {
    "closeASC": cooperative,
    "closeASCBatch": batched,
    "finalForceClose": client_force_close,
    "forceClose": provider_force_close,
}
