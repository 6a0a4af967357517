"""Raw JSON-RPC for hot paths, with one error model for every backend.

web3.py's formatting layers cost more than the call itself on loopback; the
facilitator's verify path calls the provider directly. Backends disagree on
how a revert comes back (anvil: an ``error`` object; eth-tester: an
exception), so both become ``Reverted``, and a node that cannot be reached
becomes ``ChainUnavailable``, which callers answer with "retry later".
"""

from __future__ import annotations

from typing import Any

import httpx
import requests
from eth_tester.exceptions import TransactionFailed as TesterTransactionFailed

from a402.chain.node import Chain


class ChainUnavailable(Exception):
    """The RPC node did not answer; nothing can be known about the chain now."""


class Reverted(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RpcError(Exception):
    """The node answered with an error that is not a revert."""


_clients: dict[str, httpx.Client] = {}


def _http(url: str) -> httpx.Client:
    """One keep-alive connection pool per node URL, shared by all threads."""
    client = _clients.get(url)
    if client is None:
        client = _clients.setdefault(url, httpx.Client(timeout=30.0))
    return client


def rpc(chain: Chain, method: str, params: list[Any]) -> Any:
    try:
        if chain.rpc_url:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            response = _http(chain.rpc_url).post(chain.rpc_url, json=body).json()
        else:
            response = chain.w3.provider.make_request(method, params)  # type: ignore[arg-type]
    except (httpx.TransportError, requests.ConnectionError, requests.Timeout, ConnectionError,
            TimeoutError) as e:
        raise ChainUnavailable(f"{method}: {e}") from e
    except TesterTransactionFailed as e:
        raise Reverted(_strip(str(e))) from e
    if "error" in response:
        error = response["error"]
        message = str(error.get("message", error))
        if error.get("code") == 3 or "revert" in message:
            raise Reverted(_strip(message))
        raise RpcError(message)
    return response["result"]


def as_int(value: Any) -> int:
    """A JSON-RPC quantity; eth-tester hands back ints where nodes send hex strings."""
    return value if isinstance(value, int) else int(value, 16)


def _strip(message: str) -> str:
    return message.removeprefix("execution reverted: ").removeprefix("execution reverted").strip()
