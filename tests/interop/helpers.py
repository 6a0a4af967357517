"""Checks shared by the interop tests, written against the wire format itself."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from tests.interop.official import official_paid_app
from tests.servers import serve

PRICE = 10_000  # 0.01 token units of 6 decimals
PATH = "/weather"


def decode_header(value: str) -> dict[str, Any]:
    """Strict decoding: RFC 4648 standard alphabet with padding, then UTF-8 JSON."""
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as e:  # pragma: no cover - the assertion message is the point
        raise AssertionError(f"not standard base64: {value!r}") from e
    decoded = json.loads(raw.decode("utf-8"))
    assert isinstance(decoded, dict)
    return decoded


@contextmanager
def paid_server(facilitator_url: str, pay_to: str, manifest: Manifest) -> Iterator[str]:
    """The SDK's paid app on a real port; yields the protected resource's URL."""
    with serve(official_paid_app(facilitator_url, pay_to, manifest, PRICE, PATH)) as base:
        yield base + PATH


def assert_mined_settlement(
    chain: Chain, manifest: Manifest, tx_hash: str, gas_payer: str
) -> None:
    assert isinstance(tx_hash, str)
    assert tx_hash.startswith("0x")
    assert len(tx_hash) == 66
    receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    assert receipt["status"] == 1
    assert receipt["from"] == gas_payer
    assert receipt["to"] == manifest.token.address
