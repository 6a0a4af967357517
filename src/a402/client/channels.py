"""A key's channels on an ASCManager, read from the chain, and the client's own way out.

Listing needs nothing but the chain: every channel announced itself with
``ChannelOpened(channelId, client, provider, …)`` (client and provider indexed), which
carries its full terms, and ``channel(id)`` gives its status now; a closed channel's
payouts are in its close event. So a client sees its channels even when its vault is
gone.

A client whose channel was funded from its own wallet (``funding=wallet``) or from its
pool balance with its vault (``funding=pool``, ``createASCFromPool``: its exits credit
the client's share back to that balance) — the client in the terms is the client
itself either way — also has a way out that does not depend on the vault:
:func:`start_force_close` sends ``initForceClose`` with the opening state (version 0:
the whole deposit to the client), which needs no signature because the open made it
(for a pool channel, the payout goes back into the client's pool balance). The safety
argument, both ways:

* for the client: nothing the vault does or fails to do can hold the deposit; after the
  dispute window anyone may call ``finalForceClose`` (:func:`finish_force_close`) and
  the recorded state is paid out.
* for the provider: version 0 says it earned nothing, which is false once it has been
  paid; so during the window it (or the vault's watchtower) answers with a newer state
  both co-signed (``challengeForceClose``), or with its pending payment and σ_U
  (``forceClose``, which pays out at once). The client can therefore take back only
  what it has not spent, and must expect the payout to follow the newest state the
  provider holds, not version 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.types import TxReceipt

from a402.asc.machine import SignedState
from a402.asc.terms import BalanceState, ChannelTerms
from a402.asc_manager import ASCManager, OnChainChannel, OnChainStatus
from a402.chain.rpc import node_errors
from a402.evm.address import same_address, to_checksum

CLOSE_EVENTS: Final = ("ChannelClosed", "ForceCloseFinalized", "ProviderForceClosed")
"""The events that end a channel, each with its client and provider payouts."""


class ChannelError(Exception):
    """Nothing moved, for the reason given (``reason``: a short machine name)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ChannelView:
    """One channel as the chain records it, seen by one of its parties."""

    channel_id: bytes
    terms: ChannelTerms
    role: str
    """``client``, ``provider`` (or ``vault``, ``none``): the viewer's part in it."""
    onchain: OnChainChannel
    opened_block: int
    opened_tx: str
    payouts: tuple[int, int] | None = None
    """Once closed: what the close paid (or credited) to the client and the provider."""
    closed_by: str | None = None
    """The event that closed it (one of :data:`CLOSE_EVENTS`)."""
    credited: dict[str, int] = field(default_factory=dict)
    """Once closed: payouts the token refused, by receiver (``owed`` until withdrawn)."""
    pool_funded: bool = False
    """Opened from the client's pool balance (``createASCFromPool``)."""

    @property
    def id_hex(self) -> str:
        return "0x" + self.channel_id.hex()

    @property
    def status(self) -> OnChainStatus:
        return self.onchain.status

    @property
    def funding(self) -> str:
        """``pool`` when the client's pool balance with its vault funded it (or, for a
        channel opened by ``createASC`` with the vault as its client, the vault's own
        tokens), ``wallet`` when the client's own wallet did."""
        pooled = self.pool_funded or self.terms.client == self.terms.vault
        return "pool" if pooled else "wallet"

    @property
    def client(self) -> str:
        return to_checksum(self.terms.client)

    @property
    def provider(self) -> str:
        return to_checksum(self.terms.provider)

    @property
    def vault(self) -> str:
        return to_checksum(self.terms.vault)

    def to_json(self, show: Any = str) -> dict[str, Any]:
        """JSON-ready; ``show`` formats atomic amounts (default: as integers in strings)."""
        out: dict[str, Any] = {
            "channelId": self.id_hex, "role": self.role, "status": self.status.name.lower(),
            "funding": self.funding, "client": self.client, "provider": self.provider,
            "vault": self.vault, "deposit": show(self.terms.deposit),
            "depositAtomic": str(self.terms.deposit), "openedBlock": self.opened_block,
            "openedTx": self.opened_tx,
        }
        if self.status == OnChainStatus.CLOSING:
            out["closing"] = {"version": self.onchain.version,
                              "clientBalance": show(self.terms.deposit
                                                    - self.onchain.provider_balance),
                              "providerBalance": show(self.onchain.provider_balance),
                              "disputeWindowEnds": self.onchain.deadline}
        if self.payouts is not None:
            out["closed"] = {"by": self.closed_by, "client": show(self.payouts[0]),
                             "provider": show(self.payouts[1]),
                             "credited": {who: show(v) for who, v in self.credited.items()}}
        return out


def list_channels(manager: ASCManager, address: str, *, from_block: int = 0
                  ) -> list[ChannelView]:
    """Every channel of ``manager`` in which ``address`` is the client or the provider,
    oldest first, each with its status now (and its payouts, once closed)."""
    account = _topic(address)
    opened = manager.contract.events.ChannelOpened
    logs: list[Any] = []
    with node_errors("eth_getLogs"):
        for topics in ([opened.topic, None, account], [opened.topic, None, None, account]):
            logs += manager.chain.w3.eth.get_logs({
                "address": manager.address, "fromBlock": from_block, "toBlock": "latest",
                "topics": topics})
    seen: dict[bytes, ChannelView] = {}
    for log in sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"])):
        view = _view(manager, opened().process_log(log), address)
        seen.setdefault(view.channel_id, view)
    return _with_closes(manager, list(seen.values()), from_block)


def find_channel(manager: ASCManager, channel_id: bytes, viewer: str, *, from_block: int = 0
                 ) -> ChannelView:
    """The channel ``channel_id`` of ``manager``; :class:`ChannelError` (``unknown_channel``)
    if the manager never opened it."""
    opened = manager.contract.events.ChannelOpened
    with node_errors("eth_getLogs"):
        logs = manager.chain.w3.eth.get_logs({
            "address": manager.address, "fromBlock": from_block, "toBlock": "latest",
            "topics": [opened.topic, "0x" + channel_id.hex()]})
    if not logs:
        raise ChannelError("unknown_channel", f"ASCManager {manager.address} on "
                                              f"{manager.chain.network} has no channel "
                                              f"0x{channel_id.hex()}")
    view = _view(manager, opened().process_log(logs[0]), viewer)
    return _with_closes(manager, [view], from_block)[0]


def parse_channel_id(text: str) -> bytes:
    """A channel id as typed: ``0x`` and 64 hex digits; ValueError otherwise."""
    raw = text.strip().removeprefix("0x")
    if len(raw) != 64:
        raise ValueError(f"a channel id is 0x and 64 hex digits, not {text!r:.80}")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise ValueError(f"a channel id is 0x and 64 hex digits, not {text!r:.80}") from None


@dataclass(frozen=True)
class ForceCloseStarted:
    """``initForceClose`` landed: the recorded state and when the window ends."""

    channel: ChannelView
    receipt: TxReceipt
    version: int
    client_balance: int
    provider_balance: int
    deadline: int


@dataclass(frozen=True)
class ForceCloseFinished:
    """``finalForceClose`` landed: what each party was paid, and what was credited."""

    channel: ChannelView
    receipt: TxReceipt
    version: int
    client_payout: int
    provider_payout: int
    credited: dict[str, int]


def start_force_close(manager: ASCManager, client: LocalAccount, channel: ChannelView
                      ) -> ForceCloseStarted:
    """As the channel's client, start its force-close with the opening state (version 0,
    the whole deposit back): see the module doc for what the provider may still do."""
    if not same_address(client.address, channel.client):
        raise ChannelError("not_client", f"{client.address} is not the client of "
                                         f"{channel.id_hex} (its client is {channel.client})")
    if channel.status != OnChainStatus.OPEN:
        raise ChannelError("not_open", f"{channel.id_hex} is {channel.status.name.lower()}, "
                                       "not open")
    opening = SignedState(BalanceState(0, channel.terms.deposit, 0), b"", b"")
    receipt = manager.init_force_close(client, channel.terms, opening)
    (event,) = manager.events("ForceCloseInitiated", receipt)
    return ForceCloseStarted(channel, receipt, int(event["version"]),
                             int(event["clientBalance"]), int(event["providerBalance"]),
                             int(event["deadline"]))


def finish_force_close(manager: ASCManager, sender: LocalAccount, channel: ChannelView,
                       now: int) -> ForceCloseFinished:
    """Pay out a force-closed channel once its window has passed (anyone may send this;
    the outcome is fixed, only its timing is left). ``now`` is the chain's time."""
    if channel.status != OnChainStatus.CLOSING:
        raise ChannelError("not_closing", f"{channel.id_hex} is "
                                          f"{channel.status.name.lower()}, not closing")
    if now < channel.onchain.deadline:
        raise ChannelError("window_open", f"the dispute window of {channel.id_hex} ends at "
                                          f"{channel.onchain.deadline} (chain time)")
    receipt = manager.final_force_close(sender, channel.terms)
    (event,) = manager.events("ForceCloseFinalized", receipt)
    credited = {to_checksum(e["account"]): int(e["amount"])
                for e in manager.events("PayoutCredited", receipt)}
    return ForceCloseFinished(channel, receipt, int(event["version"]),
                              int(event["clientPayout"]), int(event["providerPayout"]),
                              credited)


# ------------------------------------------------------------------------ reading


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + to_checksum(address)[2:].lower()


def _view(manager: ASCManager, event: Any, viewer: str) -> ChannelView:
    args = event["args"]
    terms = ChannelTerms(client=args["client"], vault=args["vault"], provider=args["provider"],
                         provider_key=bytes(args["providerKey"]), deposit=int(args["deposit"]),
                         salt=bytes(args["salt"]))
    channel_id = bytes(args["channelId"])
    with node_errors("channel"):
        onchain = manager.channel(channel_id)
        pool_funded = manager.pool_funded(channel_id)
    role = next((name for name in ("client", "provider", "vault")
                 if same_address(viewer, args[name])), "none")
    return ChannelView(channel_id, terms, role, onchain, int(event["blockNumber"]),
                       HexBytes(event["transactionHash"]).to_0x_hex(), pool_funded=pool_funded)


def _with_closes(manager: ASCManager, views: list[ChannelView], from_block: int
                 ) -> list[ChannelView]:
    """``views`` with the payouts of those that are closed, from their close events and
    the ``PayoutCredited`` events of the same transactions."""
    closed = [v for v in views if v.status == OnChainStatus.CLOSED]
    if not closed:
        return views
    events = {name: getattr(manager.contract.events, name) for name in CLOSE_EVENTS}
    ids = ["0x" + v.channel_id.hex() for v in closed]
    with node_errors("eth_getLogs"):
        logs = manager.chain.w3.eth.get_logs({
            "address": manager.address, "fromBlock": from_block, "toBlock": "latest",
            "topics": [[e.topic for e in events.values()], ids]})
    found: dict[bytes, tuple[str, tuple[int, int], dict[str, int]]] = {}
    for log in logs:
        name = next(n for n, e in events.items() if HexBytes(log["topics"][0]) == HexBytes(
            e.topic))
        args = events[name]().process_log(log)["args"]
        with node_errors("eth_getTransactionReceipt"):
            receipt = manager.chain.w3.eth.get_transaction_receipt(log["transactionHash"])
        credited = {to_checksum(e["account"]): int(e["amount"])
                    for e in manager.events("PayoutCredited", receipt)}
        payouts = (int(args["clientPayout"]), int(args["providerPayout"]))
        found[bytes(args["channelId"])] = (name, payouts, credited)
    out = []
    for view in views:
        if view.channel_id in found:
            name, payouts, credited = found[view.channel_id]
            # A batch credits a run of channels at once: what this channel owed a party
            # whose transfer in that transaction was refused is its own payout.
            refused = {who: paid for who, paid in zip((view.client, view.provider), payouts,
                                                     strict=True) if paid and who in credited}
            view = replace(view, payouts=payouts, closed_by=name, credited=refused)
        out.append(view)
    return out
