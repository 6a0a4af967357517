"""The vault-mode watchtower: a stale force-settle is answered with the enclave's latest
statement before its dispute window closes (A402 paper §4.3, footnote 2).

A participant leaves ``A402Vault`` with ``initForceSettle`` and a statement the enclave
signed; inside ``settleWindow`` anyone may replace it with a newer one
(``challengeForceSettle``: higher nonce, epoch not lower). A participant who spent since
its statement (paid a provider, had a payout) could otherwise leave with money it no
longer has, out of everybody else's. :meth:`VaultWatchtower.poll` reads the contract's
``ForceSettleInitiated``/``ForceSettleChallenged`` events since its last poll, reports
each to the enclave (:meth:`~a402.vault_accounts.VaultAccountsCode.exiting`: nothing
moves that participant's money any more, and the answer is its latest statement), and
sends the challenge when the recorded nonce is older.

The latest statement may name a settlement that was signed but has not landed yet (a
statement is usable only with ``epoch ≤ lastEpoch``): the watchtower first lands those
settlements itself (they are signed; anyone may send them, with the claims mined since
as their tail; after a replacement, the one that follows the chain's last epoch), then
challenges. What it decides is pure (:func:`answer_needed`); the
rest is reading events and sending two kinds of transactions.

Every force-settle it has seen stays watched until it is over or its window closes: each
poll checks it again, so a failed answer (an RPC error, a settlement that could not land
yet) is retried, and a newer statement signed later is still sent (review S9-2).

Limits: it must run (poll) within every dispute window; if the settlements it needs
cannot land (a host that lied about a deposit or a claim), it cannot answer with statements that
name them, and says so in :attr:`Answer.refused`. A deposit mined in front of its
settlement cannot stop it (the contract checks deposits per participant, monotonically).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from a402.chain.tx import TransactionFailed
from a402.crypto.vault_messages import BalanceStatement
from a402.tee import EnclaveError
from a402.vault_accounts import SignedStatement, VaultAccounts
from a402.vault_contract import A402Vault, AccountStatus, RecordedForceSettle

from .landing import land


def answer_needed(recorded: RecordedForceSettle, latest: BalanceStatement, *, now: int
                  ) -> bool:
    """Whether ``latest`` beats the recorded force-settle: newer (higher nonce, epoch not
    lower), for the same lane, and the window still open."""
    return (latest.nonce > recorded.nonce and latest.epoch >= recorded.epoch
            and latest.index == recorded.index and now < recorded.deadline)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the watchtower did about one participant's force-settle."""

    participant: str
    recorded_nonce: int
    answered_nonce: int | None = None
    landed: tuple[int, ...] = ()  # settlements it had to land first
    tx_hash: str | None = None
    refused: str | None = None
    closed: bool = False  # the force-settle is over or its window closed: no longer watched


@dataclass
class VaultWatchtower:
    """Answers stale force-settles on ``vault`` with ``accounts``' latest statements;
    ``sender`` pays the gas (it moves no money: the challenge pays nobody now)."""

    vault: A402Vault
    accounts: VaultAccounts
    sender: LocalAccount
    from_block: int = 0
    answered: dict[str, int] = field(default_factory=dict)
    #: Force-settles seen and still open (status SETTLING, window not closed): each poll
    #: checks them again, so one failed answer (an RPC error, a settlement that could not
    #: land yet) is retried at the next poll, and a statement the enclave signs later (a
    #: payment credited to an exiting provider) still answers (review S9-2).
    watching: dict[str, None] = field(default_factory=dict)
    #: Participants whose exit the enclave was told of (:meth:`VaultAccounts.exiting`).
    reported: set[str] = field(default_factory=set)

    def poll(self) -> list[Answer]:
        """Handle the force-settles started or challenged since the last poll, and check
        again every one still open. Returns an answer for each force-settle seen for the
        first time and for each it acted on or failed to act on (an open one with nothing
        to answer is not repeated)."""
        head = int(self.vault.chain.w3.eth.block_number)
        new: list[str] = []
        if head >= self.from_block:
            for name in ("ForceSettleInitiated", "ForceSettleChallenged"):
                logs = getattr(self.vault.contract.events, name)().get_logs(
                    from_block=self.from_block, to_block=head)
                for log in logs:
                    participant = str(log["args"]["participant"])
                    if participant not in new:
                        new.append(participant)
            self.from_block = head + 1
        for participant in new:
            self.watching[participant] = None
        out = []
        for participant in list(self.watching):
            answer = self._answer(participant)
            if answer.closed:
                self.watching.pop(participant, None)
            if participant in new or answer.tx_hash is not None or answer.refused is not None:
                out.append(answer)
        return out

    def _answer(self, participant: str) -> Answer:
        recorded = self.vault.force_settle(participant)
        try:
            latest: SignedStatement | None
            if participant in self.reported:
                latest = self.accounts.statement(participant)
            else:
                latest = self.accounts.exiting(participant)
                self.reported.add(participant)
        except EnclaveError as e:
            return Answer(participant, recorded.nonce, refused=str(e))
        if self.vault.status(participant) is not AccountStatus.SETTLING:
            return Answer(participant, recorded.nonce, refused="not force-settling",
                          closed=True)
        if latest is None:
            return Answer(participant, recorded.nonce, refused="no statement signed")
        now = int(self.vault.chain.w3.eth.get_block("latest")["timestamp"])
        if now >= recorded.deadline:
            return Answer(participant, recorded.nonce, closed=True)
        if not answer_needed(recorded, latest.statement, now=now):
            return Answer(participant, recorded.nonce)
        landed: list[int] = []
        try:
            while self.vault.last_epoch() < latest.statement.epoch:
                signed = self.accounts.settlement_after(self.vault.last_epoch())
                land(self.vault, self.sender, signed)
                landed.append(signed.epoch)
            receipt = self.vault.challenge_force_settle(self.sender, latest.statement,
                                                        latest.signature)
        except (TransactionFailed, ValueError) as e:
            return Answer(participant, recorded.nonce, landed=tuple(landed), refused=str(e))
        self.answered[participant] = latest.statement.nonce
        return Answer(participant, recorded.nonce, latest.statement.nonce, tuple(landed),
                      _hex(receipt["transactionHash"]))


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes | bytearray) else str(value)


__all__ = ["Answer", "VaultWatchtower", "answer_needed"]
