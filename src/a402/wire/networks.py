"""Network identifiers: CAIP-2 (x402 v2) and the legacy v1 names.

v1 peers say ``"base-sepolia"``, v2 peers say ``"eip155:84532"``; the facilitator
and middleware must treat both as the same chain, and the EIP-712 domain needs
the numeric chain id. Everything here is strict on purpose: a network string is
compared for equality elsewhere (``accepted.network == requirements.network``),
so we refuse non-canonical spellings such as ``eip155:084532`` instead of
silently normalising one side.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

from a402.wire.errors import INVALID_NETWORK, WireError

EIP155: Final = "eip155"

# CAIP-2: namespace [-a-z0-9]{3,8}, reference [-_a-zA-Z0-9]{1,32}.
_CAIP2 = re.compile(r"([-a-z0-9]{3,8}):([-_a-zA-Z0-9]{1,32})")
# EVM chain ids are decimal without leading zeros (the canonical CAIP-2 form).
_CHAIN_ID = re.compile(r"[1-9][0-9]{0,77}")
_MAX_CHAIN_ID: Final = 2**256 - 1  # it is a uint256 inside the EIP-712 domain

# Legacy v1 EVM names. The reference notes' table (SDK 2.8.0) plus the entries
# the installed SDK (2.25.0) added; where they disagree (sei-testnet: 713715 in
# the notes, 1328 in the SDK) we follow the SDK, which is the live interop peer.
_V1_EVM: Final = MappingProxyType(
    {
        "ethereum": 1,
        "flare": 14,
        "base": 8453,
        "base-sepolia": 84532,
        "polygon": 137,
        "polygon-amoy": 80002,
        "avalanche": 43114,
        "avalanche-fuji": 43113,
        "abstract": 2741,
        "abstract-testnet": 11124,
        "iotex": 4689,
        "sei": 1329,
        "sei-testnet": 1328,
        "peaq": 3338,
        "story": 1513,
        "educhain": 656476,
        "skale-base-sepolia": 1444673419,
        "megaeth": 4326,
        "monad": 143,
        "monad-testnet": 10143,
        "stable": 988,
        "stable-testnet": 2201,
        "celo": 42220,
    }
)
_V1_OTHER: Final = MappingProxyType(
    {
        "solana": "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp",
        "solana-devnet": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        "solana-testnet": "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z",
    }
)

V1_EVM_CHAIN_IDS: Final = _V1_EVM
_CHAIN_ID_TO_V1: Final = MappingProxyType({cid: name for name, cid in _V1_EVM.items()})
_CAIP2_TO_V1_OTHER: Final = MappingProxyType({caip: name for name, caip in _V1_OTHER.items()})


def parse_caip2(network: str) -> tuple[str, str]:
    """Split a CAIP-2 id into (namespace, reference), rejecting anything else."""
    if not isinstance(network, str):
        raise WireError(INVALID_NETWORK, f"network must be a string, got {type(network).__name__}")
    m = _CAIP2.fullmatch(network)
    if m is None:
        raise WireError(INVALID_NETWORK, f"not a CAIP-2 network id: {network!r}")
    return m.group(1), m.group(2)


def is_caip2(network: str) -> bool:
    return isinstance(network, str) and _CAIP2.fullmatch(network) is not None


def is_evm(network: str) -> bool:
    """True for ``eip155:<id>`` and for legacy EVM names; never raises."""
    try:
        evm_chain_id(network)
    except WireError:
        return False
    return True


def evm_chain_id(network: str) -> int:
    """The numeric chain id of an EVM network given as CAIP-2 or as a v1 name."""
    if isinstance(network, str) and network in _V1_EVM:
        return _V1_EVM[network]
    namespace, reference = parse_caip2(network)
    if namespace != EIP155:
        raise WireError(INVALID_NETWORK, f"not an EVM (eip155) network: {network!r}")
    if _CHAIN_ID.fullmatch(reference) is None:
        raise WireError(INVALID_NETWORK, f"bad eip155 chain id: {network!r}")
    chain_id = int(reference)
    if chain_id > _MAX_CHAIN_ID:
        raise WireError(INVALID_NETWORK, f"chain id out of range: {network!r}")
    return chain_id


def caip2_for_chain_id(chain_id: int) -> str:
    if (
        isinstance(chain_id, bool)
        or not isinstance(chain_id, int)
        or not (0 < chain_id <= _MAX_CHAIN_ID)
    ):
        raise WireError(INVALID_NETWORK, f"bad chain id: {chain_id!r}")
    return f"{EIP155}:{chain_id}"


def to_caip2(network: str) -> str:
    """CAIP-2 form of a v1 name or of an already-CAIP-2 id (validated, unchanged)."""
    if isinstance(network, str):
        if network in _V1_EVM:
            return caip2_for_chain_id(_V1_EVM[network])
        if network in _V1_OTHER:
            return _V1_OTHER[network]
    namespace, _ = parse_caip2(network)
    if namespace == EIP155:
        evm_chain_id(network)  # reject non-canonical chain ids
    return network


#: Chain ids that only development nodes use: anvil and hardhat (31337), ganache and
#: ``geth --dev`` (1337), and py-evm's eth-tester, the embedded chain (131277322940537).
#: Anything else may be, or become, a public network.
LOCAL_CHAIN_IDS: Final = frozenset({31337, 1337, 131_277_322_940_537})


def v1_name(chain_id: int) -> str | None:
    """The legacy v1 name of an EVM chain, or None when v1 never named it."""
    return _CHAIN_ID_TO_V1.get(chain_id)


def to_v1(network: str) -> str:
    """The legacy v1 name for a network given in either form.

    v1 peers only understand names, so a chain v1 never named cannot be spoken
    to in v1 at all; that is an error, not a fallback to the CAIP-2 string.
    """
    if isinstance(network, str) and (network in _V1_EVM or network in _V1_OTHER):
        return network
    namespace, _ = parse_caip2(network)
    name = (
        v1_name(evm_chain_id(network)) if namespace == EIP155 else _CAIP2_TO_V1_OTHER.get(network)
    )
    if name is None:
        raise WireError(INVALID_NETWORK, f"no x402 v1 name for {network!r}")
    return name
