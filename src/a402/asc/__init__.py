"""Atomic Service Channels, standard mode: terms, messages and the channel state machine.

Pure and sans-IO, like h11: :mod:`a402.asc.machine` turns (message, time) into
(state change, messages to send, events), :mod:`a402.asc.messages` is the one
canonical wire encoding, :mod:`a402.asc.terms` computes channel ids and state
digests exactly as ``ASCManager.sol`` does. The contract bindings
(:mod:`a402.asc_manager`) do I/O and are not imported here.
"""

from .errors import ASCError, LocalProtocolError, MessageError, Reason, RemoteProtocolError
from .machine import (
    CloseReady,
    Event,
    ExecuteRequest,
    ForceCloseClaim,
    ForceCloseDue,
    KeyPreSigner,
    PaymentAcknowledged,
    PaymentAuthorized,
    PreSigner,
    ProviderChannel,
    RequestAbandoned,
    RequestExpired,
    ResultDelivered,
    SignedState,
    Status,
    Step,
    VaultChannel,
)
from .messages import (
    Ack,
    Auth,
    Close,
    CloseAck,
    Exec,
    Message,
    MessageType,
    Reply,
    Reveal,
    decode,
    encode,
)
from .snapshot import SnapshotError
from .terms import (
    BalanceState,
    ChannelTerms,
    DigestSigner,
    expiring_approval,
    force_close_digest,
    open_approval_digest,
    sign_channel_open,
    sign_open_approval,
    sign_state,
    state_signer,
)

__all__ = [
    "ASCError",
    "Ack",
    "Auth",
    "BalanceState",
    "ChannelTerms",
    "Close",
    "CloseAck",
    "CloseReady",
    "DigestSigner",
    "Event",
    "Exec",
    "ExecuteRequest",
    "ForceCloseClaim",
    "ForceCloseDue",
    "KeyPreSigner",
    "LocalProtocolError",
    "Message",
    "MessageError",
    "MessageType",
    "PaymentAcknowledged",
    "PaymentAuthorized",
    "PreSigner",
    "ProviderChannel",
    "Reason",
    "RemoteProtocolError",
    "Reply",
    "RequestAbandoned",
    "RequestExpired",
    "ResultDelivered",
    "Reveal",
    "SignedState",
    "SnapshotError",
    "Status",
    "Step",
    "VaultChannel",
    "decode",
    "encode",
    "expiring_approval",
    "force_close_digest",
    "open_approval_digest",
    "sign_channel_open",
    "sign_open_approval",
    "sign_state",
    "state_signer",
]
