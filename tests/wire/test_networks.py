from __future__ import annotations

import pytest
from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS

from a402.wire.errors import INVALID_NETWORK, WireError
from a402.wire.networks import (
    caip2_for_chain_id,
    evm_chain_id,
    is_evm,
    parse_caip2,
    to_caip2,
    to_v1,
    v1_name,
)


def test_parse_caip2() -> None:
    assert parse_caip2("eip155:84532") == ("eip155", "84532")
    assert parse_caip2("solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1") == (
        "solana",
        "EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
    )


@pytest.mark.parametrize(
    "bad", ["", "eip155", ":1", "eip155:", "EIP155:1", "eip155:1:2", "ab:1", "eip155: 1", 8453]
)
def test_parse_caip2_rejects(bad: object) -> None:
    with pytest.raises(WireError) as exc:
        parse_caip2(bad)  # type: ignore[arg-type]
    assert exc.value.reason == INVALID_NETWORK


@pytest.mark.parametrize(
    ("network", "chain_id"),
    [("eip155:8453", 8453), ("base", 8453), ("base-sepolia", 84532), ("eip155:1", 1)],
)
def test_evm_chain_id_accepts_both_forms(network: str, chain_id: int) -> None:
    assert evm_chain_id(network) == chain_id


@pytest.mark.parametrize(
    "bad",
    [
        "eip155:084532",  # non-canonical: would defeat string equality elsewhere
        "eip155:0",
        "eip155:-1",
        "eip155:0x14a34",
        "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        "solana",
        "not-a-chain",
    ],
)
def test_evm_chain_id_rejects(bad: str) -> None:
    with pytest.raises(WireError) as exc:
        evm_chain_id(bad)
    assert exc.value.reason == INVALID_NETWORK
    assert not is_evm(bad)


def test_every_official_v1_evm_name_maps_to_the_same_chain_id() -> None:
    for name, chain_id in V1_NETWORK_CHAIN_IDS.items():
        assert evm_chain_id(name) == chain_id, name
        assert to_caip2(name) == f"eip155:{chain_id}"
        assert v1_name(chain_id) == name
        assert to_v1(f"eip155:{chain_id}") == name


def test_to_caip2() -> None:
    assert to_caip2("base-sepolia") == "eip155:84532"
    assert to_caip2("eip155:84532") == "eip155:84532"
    assert to_caip2("solana-devnet") == "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
    assert to_caip2("sepa:eu") == "sepa:eu"
    # CAIP-2 caps namespaces at 8 characters; "CAIP-2-like" ids are not CAIP-2.
    with pytest.raises(WireError):
        to_caip2("cloudflare:402")
    with pytest.raises(WireError):
        to_caip2("eip155:007")
    with pytest.raises(WireError):
        to_caip2("nowhere")


def test_to_v1() -> None:
    assert to_v1("eip155:8453") == "base"
    assert to_v1("base") == "base"
    assert to_v1("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp") == "solana"
    assert v1_name(31337) is None
    with pytest.raises(WireError) as exc:
        to_v1("eip155:31337")  # anvil: v1 never named it
    assert exc.value.reason == INVALID_NETWORK


def test_caip2_for_chain_id() -> None:
    assert caip2_for_chain_id(31337) == "eip155:31337"
    for bad in (0, -1, True, 2**256, "1"):
        with pytest.raises(WireError):
            caip2_for_chain_id(bad)  # type: ignore[arg-type]
