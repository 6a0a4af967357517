"""Finding the chain and the ASCManager a command works on, the one way the account
commands do it.

A manifest (``--manifest``, default ``.a402/devnet.json``, as ``a402 devnet`` writes it)
names the chain's RPC URL and id, the token and the contracts; ``--rpc`` and
``--manager`` override it, and together they need no manifest at all (a public chain).
The node must answer, must be the chain the manifest is for (a key never signs for
another chain) and must hold code at the manager's address (a restarted devnet has
none): each failure is a :class:`ChainNotFound` with a sentence a user can act on,
never a traceback. Importing this module loads no chain code (a command's parser
imports it for :class:`ChainFlags`); opening a site does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from a402.settings import setting

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from a402.chain.deploy import Manifest
    from a402.chain.node import Chain

DEFAULT_MANIFEST: Final = ".a402/devnet.json"


class ChainNotFound(Exception):
    """No usable chain or manager: the message says which and what to do."""


class ChainUnreachable(ChainNotFound):
    """The node named did not answer (not running, wrong URL, down)."""


@dataclass(frozen=True, kw_only=True)
class ChainFlags:
    """Which chain and ASCManager: a devnet manifest, or --rpc and --manager (a public
    chain needs no manifest)."""

    manifest: str = setting(DEFAULT_MANIFEST, metavar="PATH",
                            help="manifest naming the chain and contracts (default: %(default)s)")
    rpc: str | None = setting(None, metavar="URL",
                              help="JSON-RPC URL of the chain (default: the manifest's rpcUrl)")
    manager: str | None = setting(None, metavar="ADDRESS",
                                  help="ASCManager address (default: the manifest's)")


@dataclass(frozen=True)
class ManagerSite:
    """A reachable chain and the address of the ASCManager on it."""

    chain: Chain
    manager: str
    manifest: Manifest | None


def open_manager_site(flags: ChainFlags, keys: tuple[LocalAccount, ...] = ()) -> ManagerSite:
    """The chain and manager ``flags`` name, checked; raises :class:`ChainNotFound`
    (:class:`ChainUnreachable` when the node does not answer)."""
    from a402.chain.rpc import ChainUnavailable, RpcError, node_errors
    from a402.evm.address import to_checksum

    manifest = None
    if not (flags.rpc and flags.manager):
        manifest = load_manifest(flags.manifest)
    url = flags.rpc or (manifest.rpc_url if manifest else None)
    if not url:
        raise ChainNotFound(f"{flags.manifest} names no rpcUrl; give --rpc")
    if flags.manager:
        try:
            manager = to_checksum(flags.manager)
        except ValueError:
            raise ChainNotFound(f"--manager: not an address: {flags.manager!r}") from None
    else:
        assert manifest is not None
        if "ASCManager" not in manifest.contracts:
            raise ChainNotFound(f"{flags.manifest} names no ASCManager; give --manager")
        manager = manifest.contracts["ASCManager"]
    chain = connect_checked(url, manifest, keys)
    try:
        with node_errors("eth_getCode"):
            code = chain.w3.eth.get_code(manager)  # type: ignore[arg-type]
    except (ChainUnavailable, RpcError) as e:
        raise ChainUnreachable(f"cannot reach the chain at {url} ({e}); is it running?"
                               ) from None
    if not code:
        raise ChainNotFound(f"no ASCManager at {manager} on {chain.network} (a restarted "
                            "devnet? start `a402 devnet` again, or give --manager)")
    return ManagerSite(chain, manager, manifest)


def connect_checked(url: str, manifest: Manifest | None,
                    keys: tuple[LocalAccount, ...] = ()) -> Chain:
    """The chain at ``url`` with ``keys``, once it has answered and, given a manifest, is
    the chain the manifest is for; raises :class:`ChainNotFound` (or
    :class:`ChainUnreachable`)."""
    from a402.chain.node import connect
    from a402.chain.rpc import ChainUnavailable, RpcError, node_errors

    chain = connect(url, [k.key for k in keys])
    try:
        with node_errors("eth_chainId"):
            chain_id = chain.chain_id
    except (ChainUnavailable, RpcError) as e:
        raise ChainUnreachable(f"cannot reach the chain at {url} ({e}); is it running?"
                               ) from None
    if manifest is not None and chain_id != manifest.chain_id:
        raise ChainNotFound(f"{url} is chain {chain_id}, the manifest is for "
                            f"{manifest.chain_id}")
    return chain


def load_manifest(path: str | Path) -> Manifest:
    """The manifest at ``path``; raises :class:`ChainNotFound` saying why not."""
    from a402.chain.deploy import Manifest

    try:
        return Manifest.load(path)
    except OSError as e:
        raise ChainNotFound(f"cannot read the manifest {path}: {e.strerror or e} "
                            "(start `a402 devnet`, or give --manifest)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ChainNotFound(f"{path} is not an a402 manifest: {e!r}") from None
