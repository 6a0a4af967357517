"""Raw JSON-RPC for hot paths, with one error model for every backend.

web3.py's formatting layers cost more than the call itself on loopback; the
facilitator's verify path calls the provider directly. Backends disagree on
how a revert comes back (anvil: an ``error`` object; eth-tester: an
exception), so both become ``Reverted``, and a node that cannot be reached
becomes ``ChainUnavailable``, which callers answer with "retry later".

"Cannot be reached" is every way of not getting an answer: a refused or
dropped connection, a timeout, an HTTP error page from a proxy, a body that is
not JSON-RPC. ``node_errors`` applies the same model to calls made through
web3.py, so no transport exception of any library escapes this package.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import requests
from eth_tester.exceptions import TransactionFailed as TesterTransactionFailed
from web3.exceptions import BadResponseFormat, TransactionNotFound, Web3RPCError

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


_TRANSPORT_ERRORS = (
    httpx.TransportError,       # refused, reset, timed out (our raw client)
    requests.RequestException,  # the same through web3's HTTPProvider, and HTTP error pages
    ConnectionError, TimeoutError,
    json.JSONDecodeError,       # a body that is not JSON (a proxy's error page)
    BadResponseFormat,          # JSON, but not a JSON-RPC response
)


@contextmanager
def node_errors(what: str) -> Iterator[None]:
    """Map the ways a call through web3.py can fail to this module's error model.

    No answer (transport, timeout, a body that is not JSON-RPC) raises
    ``ChainUnavailable``; a JSON-RPC error from the node raises ``RpcError``,
    except ``TransactionNotFound``, which is an answer and passes through, as do
    reverts (web3's ``ContractLogicError``), which callers interpret.
    """
    try:
        yield
    except _TRANSPORT_ERRORS as e:
        raise ChainUnavailable(f"{what}: {e}") from e
    except TransactionNotFound:
        raise
    except Web3RPCError as e:
        raise RpcError(f"{what}: {e.message or e}") from e


def rpc(chain: Chain, method: str, params: list[Any]) -> Any:
    try:
        with node_errors(method):
            if chain.rpc_url:
                body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
                response = _http(chain.rpc_url).post(chain.rpc_url, json=body).json()
            else:
                response = chain.w3.provider.make_request(method, params)  # type: ignore[arg-type]
    except TesterTransactionFailed as e:
        raise Reverted(_strip(str(e))) from e
    if not isinstance(response, dict) or ("result" not in response and "error" not in response):
        raise ChainUnavailable(f"{method}: the node's answer is not a JSON-RPC response")
    if "error" in response:
        error = response["error"]
        message = str(error.get("message", error) if isinstance(error, dict) else error)
        if (isinstance(error, dict) and error.get("code") == 3) or "revert" in message:
            raise Reverted(_strip(message))
        raise RpcError(message)
    return response["result"]


def as_int(value: Any) -> int:
    """A JSON-RPC quantity; eth-tester hands back ints where nodes send hex strings."""
    return value if isinstance(value, int) else int(value, 16)


def _strip(message: str) -> str:
    return message.removeprefix("execution reverted: ").removeprefix("execution reverted").strip()
