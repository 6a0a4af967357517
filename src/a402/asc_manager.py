"""Typed bindings for ``ASCManager.sol`` (does I/O; not imported by :mod:`a402.asc`).

Thin on purpose: each method is one contract call built from the pure types of
:mod:`a402.asc` (terms, states, claims), sent with :func:`a402.chain.tx.transact`.
Reading the provider's completed signature back — from the transaction's
calldata or from the ``ProviderForceClosed`` log — is here too, because that
is how the vault learns ``t`` when the provider settles on-chain.

A layer of its own (README, "Layout"): above :mod:`a402.asc`, whose pure types it
sends, and :mod:`a402.chain`, whose transactions send them; below the vault and the
provider, which drive it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

from eth_abi import decode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, Hash32
from hexbytes import HexBytes
from web3.contract import Contract
from web3.exceptions import BlockNotFound, Web3RPCError
from web3.logs import DISCARD
from web3.types import TxReceipt

from a402.asc.machine import ForceCloseClaim, SignedState
from a402.asc.terms import (
    BalanceState,
    ChannelTerms,
    expiring_approval,
    pool_deposit_nonce,
    pool_withdrawal_digest,
)
from a402.chain.node import Chain
from a402.chain.tx import contract_at, deploy_contract, transact
from a402.crypto import PaymentDomain
from a402.evm.address import to_checksum
from a402.evm.eip3009 import ReceiveAuthorization, sign_receive_authorization
from a402.evm.keccak import keccak256
from a402.evm.permit import permit_digest


class OnChainStatus(IntEnum):
    NONE = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


#: The block tags a decision that must outlive a reorg is read at, best first.
FINAL_TAGS: tuple[Literal["finalized", "safe"], ...] = ("finalized", "safe")


@dataclass(frozen=True, slots=True)
class OnChainChannel:
    """``ASCManager.channel(cid)``: while CLOSING, the recorded state and its deadline."""

    status: OnChainStatus
    deadline: int
    version: int
    provider_balance: int


@dataclass(frozen=True, slots=True)
class PoolDepositAuthorization:
    """A payer's EIP-3009 ``receiveWithAuthorization`` crediting ``client``'s pool balance with
    ``vault`` by ``amount`` (nonce: :func:`a402.asc.pool_deposit_nonce` of these and ``salt``)."""

    vault: str
    client: str
    payer: str
    amount: int
    salt: bytes
    authorization: ReceiveAuthorization


@dataclass(frozen=True, slots=True)
class PublishedSignature:
    """A provider force-close as the vault reads it: the request and ``e ‖ s``."""

    channel_id: bytes
    request_id: int
    signature: bytes


def terms_tuple(terms: ChannelTerms) -> tuple[str, str, str, bytes, int, bytes]:
    """The contract's ``Channel`` tuple."""
    return (
        to_checksum(terms.client),
        to_checksum(terms.vault),
        to_checksum(terms.provider),
        terms.provider_key,
        terms.deposit,
        terms.salt,
    )


_TERMS_FIELDS = ("client", "vault", "provider", "providerKey", "deposit", "salt")
_PAYMENT_FIELDS = ("requestId", "amount", "resultHash", "e", "s")


def _approval(signature: bytes, deadline: int) -> bytes:
    """The contract's ``signature ‖ deadline`` (:func:`a402.asc.expiring_approval`) for a
    vault signature, or empty for none (the vault sends). A signature that is not 65 bytes
    still goes, with its deadline, for the contract to refuse (``BadSignature``)."""
    if not signature:
        return b""
    if len(signature) == 65:
        return expiring_approval(signature, deadline)
    return signature + deadline.to_bytes(32, "big")


def _shown(kind: str, value: Any) -> str:
    """A decoded error argument as it reads best: addresses checksummed, bytes in hex."""
    if kind == "address":
        return to_checksum(str(value))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _fields(value: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """A decoded struct as a tuple, whether web3 gave a tuple or a name → value mapping."""
    if isinstance(value, dict):
        return tuple(value[name] for name in names)
    return tuple(value)


class ASCManager:
    """One deployed ``ASCManager``: its domain, its token, and its entry points."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract: Contract = contract_at(chain, "ASCManager", address)
        self.address: ChecksumAddress = self.contract.address
        self.domain = PaymentDomain(chain.chain_id, self.address)
        self.token: str = self.contract.functions.token().call()
        self.dispute_window: int = int(self.contract.functions.disputeWindow().call())

    @classmethod
    def deploy(
        cls, chain: Chain, account: LocalAccount, token: str, dispute_window: int
    ) -> ASCManager:
        contract = deploy_contract(chain, account, "ASCManager", token, dispute_window)
        return cls(chain, contract.address)

    # -- open ----------------------------------------------------------------

    def create(
        self,
        sender: LocalAccount,
        terms: ChannelTerms,
        client_signature: bytes = b"",
        vault_signature: bytes = b"",
        vault_deadline: int = 0,
    ) -> TxReceipt:
        """``createASC``: the client approved the manager (an allowance) and consents.

        The vault approves by being ``sender`` or with ``vault_signature``, its ECDSA
        signature over A402Open(channel id, ``vault_deadline``)
        (:func:`a402.asc.sign_open_approval` with the vault's key), so a gas payer that is
        not the vault may send it until the deadline. ``client_signature`` is the client's
        consent, over the channel id (:func:`a402.asc.sign_channel_open`); neither is needed
        from a party that sends, and the client's is not needed when the client is the vault.
        """
        call = self.contract.functions.createASC(
            terms_tuple(terms), client_signature, _approval(vault_signature, vault_deadline)
        )
        return transact(self.chain, sender, call)

    def create_batch(
        self,
        sender: LocalAccount,
        terms_list: Sequence[ChannelTerms],
        client_signatures: Sequence[bytes] | None = None,
        vault_signatures: Sequence[bytes] | None = None,
        vault_deadlines: Sequence[int] | None = None,
    ) -> TxReceipt:
        """``createASCBatch``: open every channel in one transaction.

        ``client_signatures[i]`` is the client's consent to ``terms_list[i]`` (over the
        channel id) and ``vault_signatures[i]`` the vault's approval of it, until
        ``vault_deadlines[i]`` (as for :meth:`create`); by default none, which suits a vault
        opening channels from its own pool (client == vault == sender). A member whose
        approval is missing is skipped (``NotAuthorized()``; ``BadSignature(vault)`` for a
        signature not the vault's, ``ApprovalExpired(deadline)`` for one lapsed), the others
        open; so is one whose client wallet's EIP-1271 check fails within its gas stipend.
        Deposits move with one ``transferFrom`` per run of consecutive channels of the same
        client, so group the terms by client.
        """
        n = len(terms_list)
        consents = [b""] * n if client_signatures is None else list(client_signatures)
        signatures = [b""] * n if vault_signatures is None else list(vault_signatures)
        deadlines = [0] * len(signatures) if vault_deadlines is None else list(vault_deadlines)
        if len(deadlines) != len(signatures):
            raise ValueError("one vault deadline per vault signature")
        approvals = [
            _approval(sig, deadline) for sig, deadline in zip(signatures, deadlines, strict=True)
        ]
        call = self.contract.functions.createASCBatch(
            [terms_tuple(terms) for terms in terms_list], consents, approvals
        )
        return transact(self.chain, sender, call)

    def sign_receive_authorization(
        self,
        client: LocalAccount,
        terms: ChannelTerms,
        *,
        token_name: str,
        token_version: str,
        valid_after: int,
        valid_before: int,
    ) -> ReceiveAuthorization:
        """The client's EIP-3009 authorization to move the deposit into this channel."""
        return sign_receive_authorization(
            client, token_name=token_name, token_version=token_version,
            chain_id=self.chain.chain_id, token=self.token, to=self.address,
            value=terms.deposit, valid_after=valid_after, valid_before=valid_before,
            nonce=terms.channel_id(self.domain))

    def create_with_authorization(
        self,
        sender: LocalAccount,
        terms: ChannelTerms,
        auth: ReceiveAuthorization,
        vault_signature: bytes = b"",
        vault_deadline: int = 0,
    ) -> TxReceipt:
        """``createASCWithAuthorization``: the deposit moves by EIP-3009, nonce = channel id.

        The vault approves by being ``sender`` or with ``vault_signature`` until
        ``vault_deadline``, as for :meth:`create`; when the client is the vault, its
        authorization is that approval (and lapses at its ``valid_before``).
        """
        call = self.contract.functions.createASCWithAuthorization(
            terms_tuple(terms), auth.valid_after, auth.valid_before, auth.v, auth.r, auth.s,
            _approval(vault_signature, vault_deadline),
        )
        return transact(self.chain, sender, call)

    # -- the pool -----------------------------------------------------------------

    def pooled(self, vault: str, client: str, block: int | None = None) -> int:
        """``client``'s pool balance with ``vault``: what it can take out on-chain now (or as
        of block number ``block``)."""
        return int(self.contract.functions.pooled(to_checksum(vault), to_checksum(client))
                   .call(block_identifier="latest" if block is None else block))

    def deposit_to_pool(
        self, sender: LocalAccount, vault: str, client: str, amount: int
    ) -> TxReceipt:
        """``depositToPool``: credit ``client`` with ``vault`` by ``amount``, pulled from
        ``sender`` (which approved the manager)."""
        call = self.contract.functions.depositToPool(
            to_checksum(vault), to_checksum(client), amount)
        return transact(self.chain, sender, call)

    def sign_pool_deposit(
        self, payer: LocalAccount, vault: str, client: str, amount: int, salt: bytes, *,
        token_name: str, token_version: str, valid_after: int, valid_before: int,
    ) -> PoolDepositAuthorization:
        """``payer``'s EIP-3009 authorization of a pool deposit, for anyone to relay with
        :meth:`deposit_to_pool_with_authorization`."""
        return sign_pool_deposit(
            payer, chain_id=self.chain.chain_id, token=self.token, manager=self.address,
            domain=self.domain, vault=vault, client=client, amount=amount, salt=salt,
            token_name=token_name, token_version=token_version, valid_after=valid_after,
            valid_before=valid_before)

    def deposit_to_pool_with_authorization(
        self, sender: LocalAccount, auth: PoolDepositAuthorization
    ) -> TxReceipt:
        """``depositToPoolWithAuthorization`` (``sender`` only pays gas)."""
        return transact(self.chain, sender, self.pool_deposit_call(auth))

    def pool_deposit_call(self, auth: PoolDepositAuthorization) -> Any:
        """The unsent ``depositToPoolWithAuthorization`` call (for a journal to send)."""
        return self.contract.functions.depositToPoolWithAuthorization(
            to_checksum(auth.vault), to_checksum(auth.client), to_checksum(auth.payer),
            auth.amount, auth.salt, auth.authorization.as_tuple())

    def create_from_pool(
        self, sender: LocalAccount, terms: ChannelTerms, vault_signature: bytes = b"",
        vault_deadline: int = 0,
    ) -> TxReceipt:
        """``createASCFromPool``: open ``terms`` by debiting the client's pool balance with
        the vault; the vault approves by sending or with ``vault_signature`` until
        ``vault_deadline``: its signature over A402PoolOpen(channel id, deadline)
        (:func:`a402.asc.sign_pool_open_approval`), never an A402Open (that approves
        wallet opens only)."""
        return transact(self.chain, sender, self.create_from_pool_call(
            [terms], [vault_signature], [vault_deadline], batch=False))

    def create_from_pool_batch(
        self, sender: LocalAccount, terms_list: Sequence[ChannelTerms],
        vault_signatures: Sequence[bytes] | None = None,
        vault_deadlines: Sequence[int] | None = None,
    ) -> TxReceipt:
        """``createASCFromPoolBatch``: each member as :meth:`create_from_pool`; one that cannot
        open (no approval, its client's pool balance short, …) is skipped
        (:meth:`skipped`), the others open."""
        n = len(terms_list)
        signatures = [b""] * n if vault_signatures is None else list(vault_signatures)
        deadlines = [0] * n if vault_deadlines is None else list(vault_deadlines)
        return transact(self.chain, sender, self.create_from_pool_call(
            terms_list, signatures, deadlines, batch=True))

    def create_from_pool_call(
        self, terms_list: Sequence[ChannelTerms], vault_signatures: Sequence[bytes],
        vault_deadlines: Sequence[int], *, batch: bool,
    ) -> Any:
        """The unsent ``createASCFromPool`` (one member, ``batch`` False) or
        ``createASCFromPoolBatch`` call."""
        approvals = [_approval(sig, deadline)
                     for sig, deadline in zip(vault_signatures, vault_deadlines, strict=True)]
        if not batch:
            if len(terms_list) != 1:
                raise ValueError("createASCFromPool opens one channel")
            return self.contract.functions.createASCFromPool(
                terms_tuple(terms_list[0]), approvals[0])
        return self.contract.functions.createASCFromPoolBatch(
            [terms_tuple(terms) for terms in terms_list], approvals)

    def pool_funded(self, channel_id: bytes) -> bool:
        """Whether the channel was opened from the pool (its exits credit the pool)."""
        return bool(self.contract.functions.poolFunded(channel_id).call())

    def withdraw_from_pool(
        self, owner: LocalAccount, vault: str, to: str, amount: int
    ) -> TxReceipt:
        """``withdrawFromPool``: ``owner`` takes ``amount`` of its pool balance with ``vault``
        out to ``to``: the exit that needs nothing of the vault."""
        call = self.contract.functions.withdrawFromPool(
            to_checksum(vault), to_checksum(to), amount)
        return transact(self.chain, owner, call)

    def pool_withdrawal_nonce(self, owner: str) -> int:
        """The nonce ``owner``'s next signed pool withdrawal order must carry."""
        return int(self.contract.functions.poolWithdrawalNonces(to_checksum(owner)).call())

    def pool_withdrawal_order(
        self, owner: LocalAccount, vault: str, to: str, amount: int, deadline: int, *,
        nonce: int | None = None,
    ) -> tuple[int, bytes]:
        """``owner``'s signed A402PoolWithdrawal order and the nonce it carries (the owner's
        next, read from the manager when not given)."""
        if nonce is None:
            nonce = self.pool_withdrawal_nonce(owner.address)
        digest = pool_withdrawal_digest(self.domain, vault, owner.address, to, amount, nonce,
                                        deadline)
        return nonce, bytes(owner.unsafe_sign_hash(Hash32(digest)).signature)

    def withdraw_from_pool_for(
        self, sender: LocalAccount, vault: str, owner: str, to: str, amount: int, nonce: int,
        deadline: int, signature: bytes,
    ) -> TxReceipt:
        """Relay ``owner``'s signed pool withdrawal order (``sender`` only pays gas)."""
        return transact(self.chain, sender, self.pool_withdrawal_call(
            vault, owner, to, amount, nonce, deadline, signature))

    def pool_withdrawal_call(
        self, vault: str, owner: str, to: str, amount: int, nonce: int, deadline: int,
        signature: bytes,
    ) -> Any:
        """The unsent ``withdrawFromPoolWithSignature`` call (for a journal to send)."""
        return self.contract.functions.withdrawFromPoolWithSignature(
            to_checksum(vault), to_checksum(owner), to_checksum(to), amount, nonce, deadline,
            signature)

    # -- allowances by signature (EIP-2612) --------------------------------------

    def permit_digest(
        self, owner: str, value: int, deadline: int, *, token_name: str, token_version: str
    ) -> bytes:
        """The digest ``owner`` signs to let this manager pull ``value`` of its tokens.

        For a vault key that never sends transactions: it signs this (plain ECDSA) and its
        gas payer submits :meth:`permit`, so pool channels (client == vault) can draw on the
        vault's balance. The nonce is the token's current one for ``owner``.
        """
        nonce = int(self._token().functions.nonces(to_checksum(owner)).call())
        return permit_digest(
            token_name=token_name, token_version=token_version, chain_id=self.chain.chain_id,
            token=self.token, owner=owner, spender=self.address, value=value, nonce=nonce,
            deadline=deadline,
        )

    def permit(
        self, sender: LocalAccount, owner: str, value: int, deadline: int, signature: bytes
    ) -> TxReceipt:
        """Submit ``owner``'s EIP-2612 permit for this manager (``sender`` only pays gas)."""
        if len(signature) != 65:
            raise ValueError("a permit signature is 65 bytes (r ‖ s ‖ v)")
        v = signature[64] if signature[64] >= 27 else signature[64] + 27
        call = self._token().functions.permit(
            to_checksum(owner), self.address, value, deadline, v, signature[:32], signature[32:64]
        )
        return transact(self.chain, sender, call)

    def _token(self) -> Contract:
        # TestUSDC's ABI has USDC's permit and nonces, the two calls made here.
        return contract_at(self.chain, "TestUSDC", self.token)

    # -- close ---------------------------------------------------------------

    def close(self, sender: LocalAccount, terms: ChannelTerms, signed: SignedState) -> TxReceipt:
        return transact(self.chain, sender, self._with_state("closeASC", terms, signed))

    def close_batch(
        self, sender: LocalAccount, items: Sequence[tuple[ChannelTerms, SignedState]]
    ) -> TxReceipt:
        """``closeASCBatch``: close every channel with its final state in one transaction.

        ``sender`` must be a party of every channel. Payouts move with one ``transfer`` per run
        of consecutive equal clients and one per run of consecutive equal providers.
        """
        call = self.contract.functions.closeASCBatch(
            [terms_tuple(terms) for terms, _ in items],
            [signed.state.as_tuple() for _, signed in items],
            [signed.vault_signature for _, signed in items],
            [signed.provider_signature for _, signed in items],
        )
        return transact(self.chain, sender, call)

    def init_force_close(
        self, sender: LocalAccount, terms: ChannelTerms, signed: SignedState
    ) -> TxReceipt:
        return transact(self.chain, sender, self._with_state("initForceClose", terms, signed))

    def init_force_close_for(
        self,
        sender: LocalAccount,
        terms: ChannelTerms,
        signed_state: SignedState,
        vault_signature: bytes,
        *,
        deadline: int,
    ) -> TxReceipt:
        """``initForceCloseFor``: start a force close at the vault's request, sent by anyone.

        ``vault_signature`` is the vault's ECDSA signature over
        :func:`a402.asc.force_close_digest` (channel id, ``signed_state``'s version,
        ``deadline``), good until ``deadline``; ``signed_state`` carries the vault's and the
        provider's state signatures as for :meth:`init_force_close` (``sender`` only pays gas).
        """
        call = self.contract.functions.initForceCloseFor(
            terms_tuple(terms),
            signed_state.state.as_tuple(),
            signed_state.vault_signature,
            signed_state.provider_signature,
            _approval(vault_signature, deadline),
        )
        return transact(self.chain, sender, call)

    def challenge(
        self, sender: LocalAccount, terms: ChannelTerms, signed: SignedState
    ) -> TxReceipt:
        return transact(self.chain, sender, self._with_state("challengeForceClose", terms, signed))

    def final_force_close(self, sender: LocalAccount, terms: ChannelTerms) -> TxReceipt:
        return transact(
            self.chain, sender, self.contract.functions.finalForceClose(terms_tuple(terms))
        )

    def force_close(
        self, provider: LocalAccount, terms: ChannelTerms, claim: ForceCloseClaim
    ) -> TxReceipt:
        """The provider's claim: latest state + pending payment; publishes ``e ‖ s``."""
        call = self.contract.functions.forceClose(
            terms_tuple(terms),
            claim.state.as_tuple(),
            claim.vault_signature,
            claim.payment_tuple(),
            claim.authorization,
        )
        return transact(self.chain, provider, call)

    def _with_state(self, name: str, terms: ChannelTerms, signed: SignedState) -> Any:
        return getattr(self.contract.functions, name)(
            terms_tuple(terms),
            signed.state.as_tuple(),
            signed.vault_signature,
            signed.provider_signature,
        )

    # -- reading ---------------------------------------------------------------

    def channel(self, channel_id: bytes, block: int | None = None) -> OnChainChannel:
        """The channel's on-chain record, as of block number ``block`` (the latest: None)."""
        status, deadline, version, provider_balance = self.contract.functions.channel(
            channel_id
        ).call(block_identifier="latest" if block is None else block)
        return OnChainChannel(OnChainStatus(status), deadline, version, provider_balance)

    def channel_at_head(self, channel_id: bytes) -> tuple[OnChainChannel, int]:
        """The channel's record and the timestamp of the same block, read together: a
        channel NONE in a block stamped after an approval's deadline can never open."""
        head = self.chain.w3.eth.get_block("latest")
        return self.channel(channel_id, int(head["number"])), int(head["timestamp"])

    def channel_at_final(self, channel_id: bytes) -> tuple[OnChainChannel, int, str]:
        """The channel's record and the timestamp of the same block, read at the chain's
        ``finalized`` block (no reorg undoes what it says), or its ``safe`` block on a node
        that does not know that tag, or the latest on one that knows neither; and the tag
        it was read at. A dev chain (anvil) knows both: it finalizes a fixed number of
        blocks behind its head (:func:`~a402.chain.node.start_anvil` starts it two behind)."""
        for tag in FINAL_TAGS:
            try:
                block = self.chain.w3.eth.get_block(tag)
            except (Web3RPCError, BlockNotFound, ValueError):
                continue  # a node without this tag: the next one
            return (self.channel(channel_id, int(block["number"])), int(block["timestamp"]),
                    tag)
        head, stamped = self.channel_at_head(channel_id)
        return head, stamped, "latest"

    def final_time(self) -> tuple[int, str]:
        """The timestamp of the chain's ``finalized`` block (no reorg undoes it), or its
        ``safe`` block on a node that does not know that tag, or the latest on one that
        knows neither; and the tag it was read at. Reads no state at that block (no
        archive node needed)."""
        for tag in FINAL_TAGS:
            try:
                block = self.chain.w3.eth.get_block(tag)
            except (Web3RPCError, BlockNotFound, ValueError):
                continue  # a node without this tag: the next one
            return int(block["timestamp"]), tag
        return self.chain_time(), "latest"

    def chain_time(self) -> int:
        """The latest block's timestamp: the clock the contract's deadlines are read on."""
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    def signatures_from_logs(self, receipt: TxReceipt) -> list[PublishedSignature]:
        """``(e, s)`` from the ``ProviderForceClosed`` logs of a receipt.

        Works however the claim reached the manager (a wallet, a relayer, a
        multicall), because the manager itself logs it.
        """
        return [
            PublishedSignature(
                bytes(args["channelId"]),
                int(args["requestId"]),
                bytes(args["e"]) + int(args["s"]).to_bytes(32, "big"),
            )
            for args in self.events("ProviderForceClosed", receipt)
        ]

    def signature_from_calldata(self, tx_hash: bytes | str) -> PublishedSignature:
        """``(e, s)`` from a ``forceClose`` transaction's own calldata."""
        tx = self.chain.w3.eth.get_transaction(HexBytes(tx_hash))
        function, args = self.contract.decode_function_input(tx["input"])
        if function.fn_name != "forceClose":
            raise ValueError(f"transaction calls {function.fn_name}, not forceClose")
        terms, payment = _fields(args["c"], _TERMS_FIELDS), _fields(args["p"], _PAYMENT_FIELDS)
        channel_id = self.contract.functions.channelId(terms).call()
        return PublishedSignature(
            bytes(channel_id),
            int(payment[0]),
            bytes(payment[3]) + int(payment[4]).to_bytes(32, "big"),
        )

    def events(self, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The arguments of this manager's ``name`` events in ``receipt`` (other logs ignored)."""
        found = getattr(self.contract.events, name)().process_receipt(receipt, errors=DISCARD)
        return [dict(ev["args"]) for ev in found if ev["address"] == self.address]

    def state_digest(self, channel_id: bytes, state: BalanceState) -> bytes:
        return bytes(self.contract.functions.stateDigest(channel_id, state.as_tuple()).call())

    def open_approval_digest(self, channel_id: bytes, deadline: int) -> bytes:
        """The contract's own ``openApprovalDigest`` (:func:`a402.asc.open_approval_digest`)."""
        return bytes(self.contract.functions.openApprovalDigest(channel_id, deadline).call())

    def pool_open_approval_digest(self, channel_id: bytes, deadline: int) -> bytes:
        """The contract's own ``poolOpenApprovalDigest``
        (:func:`a402.asc.pool_open_approval_digest`)."""
        return bytes(self.contract.functions.poolOpenApprovalDigest(channel_id, deadline).call())

    def force_close_digest(self, channel_id: bytes, version: int, deadline: int) -> bytes:
        """The contract's own ``forceCloseDigest`` (:func:`a402.asc.force_close_digest`)."""
        return bytes(
            self.contract.functions.forceCloseDigest(channel_id, version, deadline).call()
        )

    def skipped(self, receipt: TxReceipt) -> dict[int, bytes]:
        """The members a batch skipped, by index: the encoded error each one's single call
        would have reverted with (its 4-byte selector first)."""
        return {int(args["index"]): bytes(args["reason"])
                for args in self.events("BatchMemberSkipped", receipt)}

    def explain(self, reason: str) -> str:
        """A revert reason as a person reads it: ``0x5a8f…`` (a custom error's encoding, as
        nodes return it) becomes ``DisputeWindowOpen(deadline=1733331000)``; any other text
        (a token's ``require`` message) is returned as it is."""
        data = reason.strip()
        if not data.startswith("0x") or len(data) < 10:
            return reason
        try:
            raw = bytes.fromhex(data[2:])
        except ValueError:
            return reason
        for entry in self.contract.abi:
            item: dict[str, Any] = dict(entry)
            if item.get("type") != "error":
                continue
            inputs: list[dict[str, Any]] = [dict(i) for i in item.get("inputs", ())]
            name = str(item["name"])
            signature = f"{name}({','.join(str(i['type']) for i in inputs)})"
            if keccak256(signature.encode())[:4] != raw[:4]:
                continue
            try:
                values = decode([str(i["type"]) for i in inputs], raw[4:])
            except Exception:
                return f"{name}(…)"
            shown = ", ".join(f"{i['name']}={_shown(str(i['type']), v)}"
                              for i, v in zip(inputs, values, strict=True))
            return f"{name}({shown})"
        return reason

    # -- payouts the token refused ---------------------------------------------

    def owed(self, account: str) -> int:
        """What the manager owes ``account``: payouts its token refused when they were due."""
        return int(self.contract.functions.owed(account).call())

    def withdraw(self, owner: LocalAccount, to: str) -> TxReceipt:
        """Take everything owed to ``owner`` to ``to`` (any address, e.g. when ``owner``'s
        own is blocklisted)."""
        return transact(self.chain, owner, self.contract.functions.withdraw(to))

    def withdrawal_order(self, owner: LocalAccount, to: str, amount: int, deadline: int,
                         *, nonce: int | None = None) -> bytes:
        """``owner``'s signature ordering ``amount`` of what it is owed paid to ``to``, for
        anyone to submit with :meth:`withdraw_for` before ``deadline``. ``nonce``: the
        owner's next (read from the manager when not given)."""
        if nonce is None:
            nonce = self.withdrawal_nonce(owner.address)
        digest = bytes(self.contract.functions.withdrawalDigest(
            owner.address, to, amount, nonce, deadline).call())
        return bytes(owner.unsafe_sign_hash(Hash32(digest)).signature)

    def withdrawal_nonce(self, owner: str) -> int:
        """The nonce ``owner``'s next signed withdrawal order must carry."""
        return int(self.contract.functions.withdrawalNonces(owner).call())

    def withdraw_for(self, sender: LocalAccount, owner: str, to: str, amount: int,
                     deadline: int, order: bytes) -> TxReceipt:
        """Submit ``owner``'s signed withdrawal order (``sender`` only pays the gas)."""
        call = self.contract.functions.withdrawWithSignature(owner, to, amount, deadline, order)
        return transact(self.chain, sender, call)


def sign_pool_deposit(
    payer: LocalAccount, *, chain_id: int, token: str, manager: str, domain: PaymentDomain,
    vault: str, client: str, amount: int, salt: bytes, token_name: str, token_version: str,
    valid_after: int, valid_before: int,
) -> PoolDepositAuthorization:
    """``payer``'s EIP-3009 ``receiveWithAuthorization`` to ``manager`` (the only contract
    that can use it) whose nonce is :func:`a402.asc.pool_deposit_nonce`: a pool deposit of
    ``amount`` crediting ``client`` with ``vault``, and nothing else."""
    return PoolDepositAuthorization(
        to_checksum(vault), to_checksum(client), payer.address, amount, salt,
        sign_receive_authorization(
            payer, token_name=token_name, token_version=token_version, chain_id=chain_id,
            token=token, to=manager, value=amount, valid_after=valid_after,
            valid_before=valid_before,
            nonce=pool_deposit_nonce(domain, vault, client, amount, salt)))
