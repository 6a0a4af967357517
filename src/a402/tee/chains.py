"""Which chains an enclave backend may hold money on: the verifier decides, not the peer.

A simulated enclave proves nothing (its "attestation root" is a key its operator
holds, see :mod:`a402.tee.simulated`), so a402 runs one, or believes one, only on a
development chain: a chain id in :data:`~a402.wire.networks.LOCAL_CHAIN_IDS`. On any
other chain id, public mainnet or testnet alike, it is refused whatever the flags
say, because there the channels escrow tokens someone may value. A devnet that
borrows a public chain's id (``a402 devnet --chain-id 84532``) is refused too: from
a chain id alone no one can tell it from the public chain.
"""

from __future__ import annotations

from collections.abc import Iterable

from a402.wire.networks import LOCAL_CHAIN_IDS, v1_name

from .errors import AttestationError
from .quote import SIMULATED


def require_development_chain(chain_id: int) -> None:
    """Raise :class:`AttestationError` (``simulated_on_public_chain``) unless
    ``chain_id`` is a development chain's."""
    if chain_id in LOCAL_CHAIN_IDS:
        return
    name = v1_name(chain_id)
    which = f"eip155:{chain_id} ({name})" if name else f"eip155:{chain_id}"
    raise AttestationError(
        "simulated_on_public_chain",
        f"simulated enclaves are refused on {which}: they prove nothing, so they run only "
        f"on development chain ids ({', '.join(map(str, sorted(LOCAL_CHAIN_IDS)))})")


def check_backends(chain_id: int, kinds: Iterable[str]) -> None:
    """Refuse to run on ``chain_id`` with any simulated backend among ``kinds`` (this
    side's enclave and the kinds its verifiers accept)."""
    if SIMULATED in set(kinds):
        require_development_chain(chain_id)
