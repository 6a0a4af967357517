"""The vault host's share of mandate enforcement: reading the registry for the enclave.

The vault enclave decides (:mod:`a402.mandate.enclave`); it has no chain, so before
a call that carries a mandate the host reads the mandate's ``MandateRegistry``
(``isRevoked`` at the latest block, with that block's timestamp) and hands the
answer in (:meth:`~a402.vault_enclave.VaultEnclave.mandate_read`). A read that
fails is not handed in: the enclave then has no fresh read and refuses the call
(``mandate_revocation_unknown``), which is the safe side. Nothing here can make
the enclave pay more: a host that skips or fakes this read can at most hide a
revocation, which the enclave's docstring states as its limit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from web3.types import RPCEndpoint

from a402.chain.node import Chain
from a402.mandate.document import MandateError, load_signed
from a402.mandate.enclave import RegistryRead
from a402.mandate.registry import MandateRegistry
from a402.vault_enclave import VaultEnclave

log = logging.getLogger(__name__)


def read_registry(chain: Chain, vault: VaultEnclave, document: dict[str, Any]) -> bool:
    """Read the registry ``document`` names on ``chain`` and hand it to ``vault``: True if
    a read was handed in (blocking)."""
    try:
        signed = load_signed(document)
    except MandateError:
        return False  # the enclave refuses it with the reason
    try:
        if chain.chain_id != signed.domain.chain_id:
            log.warning("mandate %s is for chain %s, this vault's is %s: not read",
                        signed.hash_hex, signed.domain.chain_id, chain.chain_id)
            return False
        block = chain.w3.provider.make_request(RPCEndpoint("eth_getBlockByNumber"),
                                               ["latest", False])["result"]
        number, timestamp = int(block["number"], 16), int(block["timestamp"], 16)
        registry = MandateRegistry(chain, signed.domain.registry)
        revoked = registry.is_revoked(signed.mandate.owner, signed.hash, number)
    except Exception as e:  # the enclave then has no fresh read: it refuses
        log.warning("mandate %s: the registry could not be read (%s: %s)",
                    signed.hash_hex, type(e).__name__, e)
        return False
    vault.mandate_read(RegistryRead(signed.hash, number, timestamp, revoked))
    return True


async def aread_registry(chain: Chain, vault: VaultEnclave, document: dict[str, Any]) -> bool:
    return await asyncio.to_thread(read_registry, chain, vault, document)
