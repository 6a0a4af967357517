"""``MandateRegistry`` on-chain: revoke a mandate, and ask whether one is revoked, per block.

Revocation is the owner's brake: once the revocation's block exists, no payer
that checks here pays under the mandate again. :class:`RevocationCheck` keeps
that promise "within one block" at one JSON-RPC round trip per payment: the
answer for a mandate is cached *for the block it was read at*, and every check
asks the node for its latest block, either alone (``eth_blockNumber``, when the
cache is likely to answer) or together with the answer (one ``eth_call`` whose
code returns ``block.number`` and ``isRevoked`` from the same execution, when
blocks come as fast as payments), so the block that carries a revocation
invalidates every cached "not revoked". The cache is bounded (``max_entries``
mandates, least recently used evicted) and only ever holds answers for the
latest block seen.

Failing closed: if the node cannot be asked (down, wrong chain, no registry at
the address), :meth:`RevocationCheck.revoked` raises :class:`RevocationUnknown`
and the payer refuses (``mandate_revocation_unknown``): a brake that cannot be
read is treated as pulled.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections import OrderedDict
from typing import Any, Final
from urllib.parse import urlsplit

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3.types import RPCEndpoint, TxReceipt

from a402.chain.node import Chain
from a402.chain.tx import contract_at, transact
from a402.evm.address import address_bytes, to_checksum
from a402.evm.keccak import keccak256
from a402.mandate.document import SignedMandate

MANDATE_REVOCATION_UNKNOWN: Final = "mandate_revocation_unknown"
_IS_REVOKED: Final = keccak256(b"isRevoked(address,bytes32)")[:4]


class RevocationUnknown(Exception):
    """The registry could not be read: treat the mandate as revoked."""

    reason = MANDATE_REVOCATION_UNKNOWN


class MandateRegistry:
    """A thin binding of the ``MandateRegistry`` contract at ``address`` on ``chain``."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = to_checksum(address)
        self.contract = contract_at(chain, "MandateRegistry", self.address)

    def revoke(self, owner: LocalAccount, mandate_hash: bytes) -> TxReceipt:
        """The owner revokes, paying the gas."""
        return transact(self.chain, owner, self.contract.functions.revoke(mandate_hash))

    def revoke_by_sig(self, relayer: LocalAccount, owner: str, mandate_hash: bytes,
                      signature: bytes) -> TxReceipt:
        """Anyone relays the owner's signed ``Revocation`` (see ``revocation_digest``)."""
        call = self.contract.functions.revokeBySig(to_checksum(owner), mandate_hash, signature)
        return transact(self.chain, relayer, call)

    def is_revoked(self, owner: str, mandate_hash: bytes, block: int | None = None) -> bool:
        """As of ``block`` (None: the latest): one raw ``eth_call`` (the calldata built
        here, the answer read as the ABI's one ``bool`` word), without web3's contract
        machinery, which costs several times the node's own answer on every payment.
        Raises ``ValueError`` for an error or an answer that is not one word (no
        contract at the address)."""
        if self.chain.rpc_url is None:  # the in-process chain answers web3's calls only
            call = self.contract.functions.isRevoked(to_checksum(owner), mandate_hash)
            return bool(call.call(block_identifier="latest" if block is None else block))
        data = _IS_REVOKED + bytes(12) + address_bytes(owner) + mandate_hash
        answer = self.chain.w3.provider.make_request(
            RPCEndpoint("eth_call"),
            [{"to": self.address, "data": "0x" + data.hex()},
             "latest" if block is None else hex(block)])
        if "error" in answer or not isinstance(answer.get("result"), str):
            raise ValueError(f"eth_call failed: {str(answer.get('error'))[:200]}")
        word = bytes.fromhex(answer["result"][2:])
        if len(word) != 32 or int.from_bytes(word, "big") > 1:
            raise ValueError("isRevoked did not answer one bool (is a registry there?)")
        return word[-1] == 1

    def revoked_at(self, owner: str, mandate_hash: bytes) -> int:
        """The block of the revocation, 0 if none."""
        return int(self.contract.functions.revokedAt(to_checksum(owner), mandate_hash).call())

    def domain_separator(self) -> bytes:
        return bytes(HexBytes(self.contract.functions.domainSeparator().call()))


class JsonRpc:
    """A minimal JSON-RPC client over HTTP(S) keep-alive, one connection per thread.

    The registry check is on every payment's path, and web3's provider costs about
    ten times the node's own answer in Python (its middleware, its session, its
    JSON handling), time that also holds the GIL the payer's other threads need.
    Only reads go through here (``eth_blockNumber``, ``eth_call``): a request that
    fails on a kept-alive connection the server closed is sent once more on a new
    one, which a read allows. Any other failure raises (the check then fails
    closed)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname is None \
                or parts.username is not None:
            raise ValueError("only plain http(s) URLs without credentials")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = kind(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def call(self, method: str, params: list[Any]) -> Any:
        """The ``result`` of ``method``; ``ValueError`` for a JSON-RPC error."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
            except BaseException:
                conn.close()
                self._local.conn = None
                raise
        if response.status != 200:
            raise ValueError(f"{method}: HTTP {response.status}")
        answer = json.loads(raw)
        if not isinstance(answer, dict) or "error" in answer or "result" not in answer:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise ValueError(f"{method} failed: {str(error)[:200]}")
        return answer["result"]


class RevocationCheck:
    """Is a mandate revoked, as of the node's latest block? Cached per block (module doc)."""

    def __init__(self, registry: MandateRegistry, *, max_entries: int = 4096) -> None:
        self.registry = registry
        self.max_entries = max_entries
        self._block = -1
        self._answers: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()
        self._moving = False  # the last read found a newer block: expect another
        self._rpc: JsonRpc | None = None
        if registry.chain.rpc_url is not None:
            with contextlib.suppress(ValueError):  # (credentials in the URL: web3's path)
                self._rpc = JsonRpc(registry.chain.rpc_url)
        self.reads = 0
        """How many ``isRevoked`` calls reached the node (the cache's misses)."""

    @classmethod
    def for_mandate(cls, chain: Chain, signed: SignedMandate) -> RevocationCheck:
        """A check against the registry the mandate names, on a node of its chain."""
        try:
            chain_id = chain.chain_id
        except Exception as e:
            raise RevocationUnknown(f"the node did not answer: {type(e).__name__}") from e
        if chain_id != signed.domain.chain_id:
            raise RevocationUnknown(f"the node is chain {chain_id}, the mandate's registry "
                                    f"is on chain {signed.domain.chain_id}")
        return cls(MandateRegistry(chain, signed.domain.registry))

    @classmethod
    def from_rpc(cls, rpc_url: str, signed: SignedMandate) -> RevocationCheck:
        """:meth:`for_mandate` on the node at ``rpc_url``."""
        from a402.chain.node import connect

        return cls.for_mandate(connect(rpc_url), signed)

    def revoked(self, signed: SignedMandate) -> bool:
        """True once the owner's revocation is in the latest block; RevocationUnknown if
        the registry cannot be read.

        One round trip per check, whichever way the chain moves: while blocks come
        slower than payments, ``eth_blockNumber`` alone answers from the cache; once a
        check finds the block moved, the next ones go straight to one ``eth_call``
        that returns the block number *and* ``isRevoked`` from the same execution
        (:func:`_read_at_latest`), until a read finds the block unchanged again. The
        cache only ever holds answers read at the block they are filed under."""
        if to_checksum(signed.domain.registry) != self.registry.address:
            raise RevocationUnknown("the mandate names another registry than this check's")
        chain = self.registry.chain
        if chain.rpc_url is not None:
            with self._lock:
                cached = not self._moving and signed.hash in self._answers
            if not cached:
                return self._read_latest(signed)
        try:
            block = (_block_number(chain) if self._rpc is None
                     else int(self._rpc.call("eth_blockNumber", []), 16))
        except Exception as e:
            raise RevocationUnknown(f"eth_blockNumber failed: {type(e).__name__}") from e
        with self._lock:
            moved = block > self._block
            if moved:
                self._block = block
                self._answers.clear()
            if block == self._block and signed.hash in self._answers:
                self._answers.move_to_end(signed.hash)
                return self._answers[signed.hash]
        if chain.rpc_url is not None:
            return self._read_latest(signed, moved=moved)
        try:
            answer = self.registry.is_revoked(signed.mandate.owner, signed.hash, block)
        except Exception as e:
            raise RevocationUnknown(f"isRevoked failed: {type(e).__name__}: {e}") from e
        self._file(signed, block, answer)
        return answer

    def _read_latest(self, signed: SignedMandate, *, moved: bool | None = None) -> bool:
        """One probe (:func:`_read_at_latest`); ``moved``: the block just moved (else:
        whether it did is judged from the probe's block)."""
        try:
            block, answer = _read_at_latest(self.registry, signed.mandate.owner, signed.hash,
                                            self._rpc)
        except Exception as e:
            raise RevocationUnknown(f"isRevoked failed: {type(e).__name__}: {e}") from e
        with self._lock:
            self._moving = (self._block >= 0 and block != self._block) if moved is None \
                else moved
        self._file(signed, block, answer)
        return answer

    def _file(self, signed: SignedMandate, block: int, answer: bool) -> None:
        """Cache ``answer``, read at ``block`` (a newer block than the cache's empties it)."""
        with self._lock:
            self.reads += 1
            if block > self._block:
                self._block = block
                self._answers.clear()
            if block == self._block:
                self._answers[signed.hash] = answer
                while len(self._answers) > self.max_entries:
                    self._answers.popitem(last=False)


def _read_at_latest(registry: MandateRegistry, owner: str, mandate_hash: bytes,
                    rpc: JsonRpc | None = None) -> tuple[int, bool]:
    """``(block, isRevoked)`` from one ``eth_call`` at ``latest``: the call carries no
    ``to`` but creation code (:func:`_probe_code`) that calls the registry and returns
    ``block.number`` with its answer, so both come from the same execution on the same
    state, never a block number from one moment and an answer from another. Raises
    ``ValueError`` for an error, a failed call or an answer that is not one bool (no
    registry at the address)."""
    params: list[Any] = [
        {"data": "0x" + _probe_code(registry.address, owner, mandate_hash).hex()}, "latest"]
    if rpc is not None:
        result = rpc.call("eth_call", params)
    else:
        answer = registry.chain.w3.provider.make_request(RPCEndpoint("eth_call"), params)
        if "error" in answer:
            raise ValueError(f"eth_call failed: {str(answer.get('error'))[:200]}")
        result = answer.get("result")
    if not isinstance(result, str):
        raise ValueError("eth_call answered no data")
    out = bytes.fromhex(result[2:])
    if len(out) != 128:
        raise ValueError("the registry probe answered an unexpected length")
    block, word, success, size = (int.from_bytes(out[i:i + 32], "big") for i in range(0, 128, 32))
    if success != 1 or size != 32 or word > 1:
        raise ValueError("isRevoked did not answer one bool (is a registry there?)")
    return block, word == 1


def _probe_code(registry: str, owner: str, mandate_hash: bytes) -> bytes:
    """EVM creation code: STATICCALL ``registry.isRevoked(owner, hash)`` and RETURN four
    words: ``block.number``, the answer's word, the call's success flag, the answer's
    size (checked by the caller: an address without code "succeeds" with no answer)."""
    data = _IS_REVOKED + bytes(12) + address_bytes(owner) + mandate_hash  # 68 bytes
    words = (data[:32], data[32:64], data[64:].ljust(32, b"\0"))
    code = b"".join(b"\x7f" + w + b"\x60" + bytes([o]) + b"\x52"  # PUSH32 w PUSH1 o MSTORE
                    for w, o in zip(words, (0x00, 0x20, 0x40), strict=True))
    code += (b"\x60\x20\x60\x80\x60\x44\x60\x00"  # retSize, retOffset, argsSize, argsOffset
             + b"\x73" + address_bytes(registry)  # PUSH20 registry
             + b"\x5a\xfa"  # GAS STATICCALL -> success
             + b"\x60\xa0\x52"  # mem[0xa0] = success
             + b"\x3d\x60\xc0\x52"  # mem[0xc0] = RETURNDATASIZE
             + b"\x43\x60\x60\x52"  # mem[0x60] = NUMBER
             + b"\x60\x80\x60\x60\xf3")  # RETURN mem[0x60:0xe0]
    return code


def _block_number(chain: Chain) -> int:
    """The latest block: one raw ``eth_blockNumber`` over JSON-RPC (web3's path costs
    several times the node's answer), web3's on the in-process chain."""
    if chain.rpc_url is None:
        return int(chain.w3.eth.block_number)
    return int(chain.w3.provider.make_request(RPCEndpoint("eth_blockNumber"), [])["result"], 16)
