"""A vault-mode enclave (simulated) with an attested provider enclave, for the tests of
:mod:`a402.vault_accounts`: the provider's side is driven directly by its machine."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from coincurve import PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from a402.asc import Auth, ProviderChannel
from a402.chain.node import Chain
from a402.chain.receipts import block_receipts_trie, trie_proof
from a402.chain.tx import transact
from a402.crypto import EVM, EcdsaSigner, PaymentDomain
from a402.crypto.vault_messages import (
    ClaimRecord,
    claim_key,
    fold_claim,
)
from a402.evm.address import to_checksum
from a402.evm.ecdsa import public_key_address
from a402.evm.receipts import header_rlp
from a402.tee import PROVIDER_PURPOSES, AttestationPolicy
from a402.tee.simulated import SimulatedEnclave, SimulatedPlatform, SimulatedVerifier
from a402.vault.landing import land
from a402.vault_accounts import Changed, SignedSettlement, VaultAccounts, VaultAccountsCode
from a402.vault_contract import A402Vault
from a402.vault_enclave import INVOKE_PATH, SignedCall
from a402.wire import vault_api as api

from .helpers import SETTLE_WINDOW, funded, remember

CODE = hashlib.sha384(b"a402 vault-mode enclave code tests").digest()
PROVIDER_CODE = hashlib.sha384(b"a402 provider enclave code tests (vault mode)").digest()
NETWORK = "eip155:31337"
PRICE = 1_000


def clock() -> int:
    return int(time.time())


@dataclass
class Provider:
    """A provider participant: its Ethereum key (signs states) and attested Schnorr key."""

    signer: EcdsaSigner
    schnorr: Any
    tunnel: str

    @property
    def address(self) -> str:
        return to_checksum("0x" + self.signer.address.hex())


@dataclass
class VaultMode:
    platform: SimulatedPlatform
    enclave: Any
    vault: Any  # VaultAccounts, or its PlayedChain
    domain: PaymentDomain
    #: Each participant's deposits and the claim chain as the contract keeps them (the tests
    #: play the chain's part).
    chain_deposits: dict[str, int] = field(default_factory=dict)
    chain_claims: int = 0
    providers: list[Provider] = field(default_factory=list)
    #: Each client's last channel's provider: whom its next call names (``payTo``).
    payees: dict[str, str] = field(default_factory=dict)

    def deposit(self, participant: str, amount: int) -> int:
        """A deposit mined on the (played) chain, reported by the host; returns the
        participant's total."""
        key = participant.lower()
        self.chain_deposits[key] = self.chain_deposits.get(key, 0) + amount
        assert self.vault.credit_deposit(participant, amount, self.chain_deposits[key])
        return self.chain_deposits[key]

    def claim(self, cid: bytes, request_id: int, signature: bytes, deadline: int) -> Changed:
        """A provider's claim mined on the (played) chain, reported by the host."""
        self.chain_claims = fold_claim(self.chain_claims, claim_key(cid, request_id), deadline)
        return self.vault.claim_landed(cid, request_id, signature, deadline=deadline,
                                       state_after=self.chain_claims)

    def provider(self) -> Provider:
        schnorr = EVM.secret_key(EVM.generate_key().to_bytes())
        other = SimulatedEnclave(self.platform, PROVIDER_CODE, schnorr.to_bytes(),
                                 X25519PrivateKey.generate(), PROVIDER_PURPOSES)
        verifier = SimulatedVerifier(self.platform.root.public_key, allow_simulated=True)
        handle, first = self.enclave.channel_initiate(
            AttestationPolicy(frozenset({PROVIDER_CODE})), [verifier])
        theirs, second = other.channel_respond(first, AttestationPolicy(frozenset({CODE})),
                                               [verifier])
        third, _ = self.enclave.channel_finish(handle, second)
        other.channel_accept(theirs, third)
        p = Provider(EcdsaSigner(os.urandom(32)), schnorr, handle)
        remember(p.signer, p.address)
        self.providers.append(p)
        return p

    def open(self, client: LocalAccount, provider: Provider, capacity: int = 10 * PRICE
             ) -> tuple[bytes, ProviderChannel]:
        cid, _ = self.vault.open_channel(client.address, provider.address,
                                         provider.schnorr.public_key, capacity,
                                         lock_timeout=10.0)
        self.vault.bind_tunnel(provider.tunnel, cid)
        self.payees[client.address.lower()] = provider.address
        terms = self.vault.terms(cid)
        return cid, ProviderChannel(terms, self.domain, provider.signer, provider.schnorr,
                                    ack_timeout=30.0, lock_timeout=10.0)

    def call(self, client: LocalAccount, *, key: str, max_price: int = PRICE,
             ts: float | None = None, life: str | None = None,
             pay_to: str | bytes | None = None) -> SignedCall:
        """``client``'s signed call, naming ``pay_to`` (by default the provider of the
        client's last channel) as its payee."""
        if isinstance(pay_to, bytes):
            pay_to = to_checksum(pay_to)
        invoke = api.InvokeRequest(url="https://api.example/weather", method="GET",
                                   headers=(), body=b"", max_price=max_price,
                                   idempotency_key=key,
                                   pay_to=pay_to or self.payees.get(client.address.lower()))
        raw = json.dumps(invoke.to_json()).encode()
        headers = api.sign_request(client, self.vault.account, "POST", INVOKE_PATH, raw,
                                   life=life or self.vault.life_id, now=ts)
        return SignedCall.of(headers, "POST", INVOKE_PATH, raw)

    def pay(self, cid: bytes, provider: ProviderChannel, call: SignedCall, amount: int = PRICE,
            *, reveal: bool = True, now: float | None = None) -> Changed:
        """One paid request; returns the outcome of the REPLY (σ_U, the pending record, the
        client's statement). With ``reveal=False`` the provider's REVEAL is lost."""
        now = clock() if now is None else now
        exec_ = self.vault.request(cid, call, amount, now)
        provider.receive(exec_, now=now)
        reply = provider.reply(exec_.request_id, b"the result")
        authorized: Changed = self.vault.receive(cid, reply, now)
        (auth,) = authorized.step.send
        assert isinstance(auth, Auth)
        reveal_msg = provider.receive(auth, now=now).send[0]
        if reveal:
            acked: Changed = self.vault.receive(cid, reveal_msg, now)
            provider.receive(acked.step.send[0], now=now)
        return authorized


def launch() -> tuple[SimulatedPlatform, Any]:
    """A simulated platform and the vault enclave on it (its key is the vault's)."""
    platform = SimulatedPlatform.generate()
    return platform, platform.launch(CODE)


def enclave_address(enclave: Any) -> str:
    return to_checksum(public_key_address(PublicKey(enclave.signing_public_key)))


class PlayedChain:
    """The vault's accounts as their host sees them, on a chain the tests play: every
    settlement lands as soon as it is signed (reported at once, :meth:`VaultAccounts.
    chain_epoch`). On anvil the :class:`Host` reports what actually landed instead."""

    def __init__(self, vault: VaultAccounts) -> None:
        self._vault = vault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        settled = self._vault.settle(*args, **kwargs)
        self._vault.chain_epoch(settled.settlement.epoch)
        return settled


def vault_mode(domain: PaymentDomain, launched: tuple[SimulatedPlatform, Any] | None = None,
               *, played: bool = True, token: str | None = None) -> VaultMode:
    """The vault-mode code started (first boot) in a launched enclave, for ``domain``;
    ``played``: on a chain the tests play (settlements land when signed); ``token``: whose
    plain transfers it reads."""
    platform, enclave = launched or launch()
    vault = VaultAccountsCode.start(enclave, domain=domain, network=NETWORK, first_boot=True,
                                    token=token)
    return VaultMode(platform, enclave, PlayedChain(vault) if played else vault, domain)


def client() -> LocalAccount:
    account = Account.create()
    return remember(account, account.address)


class Host:
    """The vault's host: reports deposits, submits settlements (it holds no key)."""

    def __init__(self, chain: Chain, token: Any) -> None:
        self.chain, self.token = chain, token
        self.gas = funded(chain, token)
        self.vm: VaultMode
        self.vault: A402Vault
        #: The participants' signed pull intents, by pull id (what the host holds).
        self.intents: dict[int, bytes] = {}

    def start(self) -> Host:
        self.vm = vault_mode_for(self)
        return self

    def report_deposits(self) -> None:
        for participant, amount, total in self.vault.deposits():
            self.vm.vault.credit_deposit(participant, amount, total)

    def deposit(self, participant: str, amount: int) -> None:
        depositor = funded(self.chain, self.token, amount)
        transact(self.chain, depositor, self.token.functions.approve(self.vault.address, amount))
        self.vault.deposit(depositor, participant, amount)

    def submit(self, signed: SignedSettlement) -> Any:
        """Land ``signed`` (each pull with the intent the host holds, else 65 zero bytes:
        skipped) and tell the enclave what the chain has now, as the host does."""
        receipt = land(self.vault, self.gas, signed, self.intents.get)
        self.vm.vault.chain_epoch(self.vault.last_epoch())
        return receipt

    def report_pulls(self) -> None:
        """The chain's word on every pull of a landed settlement, as the host reports it."""
        for pull in self.vm.vault.pulls_sent(self.vault.last_epoch()):
            self.vm.vault.pull_landed(pull, self.vault.pulled(pull))

    def report_transfers(self, *transfers: Any) -> int:
        """The headers after the last one the enclave read (from the first transfer's block,
        none read yet) to the block before the newest, with the receipt proofs of
        ``transfers`` (their receipts), as the host hands them."""
        tip = self.vm.vault.transfer_tip
        first = min(int(t["blockNumber"]) for t in transfers) if tip is None else tip[0] + 1
        last = int(self.chain.w3.eth.block_number) - 1
        headers = [header_rlp(self.chain.w3.eth.get_block(n)) for n in range(first, last + 1)]
        receipts = []
        for t in transfers:
            _, trie = block_receipts_trie(self.chain, int(t["blockNumber"]))
            index = int(t["transactionIndex"])
            receipts.append((int(t["blockNumber"]), index, trie_proof(trie, index)))
        return int(self.vm.vault.read_transfers(headers, receipts))

    def report_claim(self, cid: bytes, request_id: int, signature: bytes) -> Any:
        """The latest ``PaymentClaimed`` of the chain, reported (it is the chain's last)."""
        record, after = self.vault.chain_records()[-1]
        assert isinstance(record, ClaimRecord)
        return self.vm.vault.claim_landed(cid, request_id, signature,
                                          deadline=record.deadline, state_after=after)


def vault_mode_for(host: Host) -> VaultMode:
    """Deploy A402Vault whose vault key is a fresh simulated enclave's, then start the
    vault-mode code in that enclave for the deployed contract's domain."""
    launched = launch()
    host.vault = A402Vault.deploy(host.chain, host.chain.accounts[0], host.token.address,
                                  enclave_address(launched[1]), SETTLE_WINDOW)
    return vault_mode(host.vault.domain, launched, played=False, token=host.token.address)
