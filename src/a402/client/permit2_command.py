"""``a402 permit2``: show or set the wallet's ERC-20 allowance to Permit2, which x402
``upto`` payments draw on (:mod:`a402.client.permit2`).

``a402 permit2 show --key-file F`` reads the allowance; ``a402 permit2 approve
--key-file F [--amount N]`` sends the one ``approve(Permit2, N)`` transaction (gas paid
by the wallet; default: unlimited, as the x402 SDKs' wallets ask). The token is the
manifest's (``--manifest``), or ``--token`` on any chain given by ``--rpc``.

Safety: the allowance alone moves nothing. Each upto payment still needs the payer's
signature naming its maximum, payee, facilitator and deadline; the allowance is the
ceiling of what all those signatures together can move. ``--amount`` bounds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Final, TextIO

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
PROG: Final = "a402 permit2"


def add_permit2_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("show", "approve"),
                        help="show: read the allowance; approve: set it (a transaction)")
    parser.add_argument("--key-file", required=True, metavar="F",
                        help="file holding the payer's hex private key (mode 600)")
    parser.add_argument("--token", default=None, metavar="ADDRESS",
                        help="the ERC-20 token (default: the manifest's)")
    parser.add_argument("--manifest", default=".a402/devnet.json", metavar="PATH",
                        help="devnet manifest naming the chain and token "
                             "(default: %(default)s; not read with --rpc and --token)")
    parser.add_argument("--rpc", default=None, metavar="URL",
                        help="JSON-RPC URL of the chain (default: the manifest's)")
    parser.add_argument("--amount", default=None, metavar="ATOMIC_UNITS",
                        help="the allowance to set, in atomic units (default: unlimited)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run_permit2(args: argparse.Namespace, *, out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    from a402.chain.locate import ChainNotFound, connect_checked, load_manifest
    from a402.chain.rpc import ChainUnavailable, RpcError
    from a402.chain.upto_settle import permit2_allowance
    from a402.client.pay import read_key_file
    from a402.client.permit2 import UNLIMITED, approve_permit2
    from a402.evm.address import is_address, to_checksum

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr

    def fail(code: int, message: str) -> int:
        print(f"{PROG}: {message}", file=err)
        return code

    try:
        key = read_key_file(args.key_file)
        amount = UNLIMITED
        if args.amount is not None:
            if not str(args.amount).isdigit() or int(args.amount) >= 2**256:
                raise ValueError(f"--amount {args.amount!r} is not a uint256 of atomic units")
            amount = int(args.amount)
        if args.token is not None and not is_address(args.token):
            raise ValueError(f"--token {args.token!r} is not an address")
        manifest = None if (args.rpc and args.token) else load_manifest(args.manifest)
        token = to_checksum(args.token or (manifest.token.address if manifest else ""))
        url = args.rpc or (manifest.rpc_url if manifest else None)
        if not url:
            raise ValueError(f"{args.manifest} names no rpcUrl; give --rpc")
    except (OSError, ValueError, ChainNotFound) as e:
        return fail(EXIT_USAGE, f"nothing was sent: {e}")
    try:
        chain = connect_checked(url, manifest if args.rpc is None else None)
        from eth_account import Account

        owner = Account.from_key(key).address
        before = permit2_allowance(chain, token, owner)
        tx = ""
        if args.action == "approve":
            tx = approve_permit2(url, key, token, amount)
        after = permit2_allowance(chain, token, owner)
    except (ChainNotFound, ChainUnavailable, RpcError) as e:
        return fail(EXIT_FAILED, f"the chain did not answer ({e}); if approve was asked, "
                                 "read the allowance again with `a402 permit2 show`")
    result = {"owner": owner, "token": token, "allowanceBefore": str(before),
              "allowance": str(after), "unlimited": after == UNLIMITED, "transaction": tx}
    if args.json:
        print(json.dumps(result), file=out)
    else:
        shown = "unlimited" if after == UNLIMITED else str(after)
        what = (f"approved in {tx}" if tx else "unchanged (already set)") \
            if args.action == "approve" else "read"
        print(f"Permit2 allowance of {owner} for token {token}: {shown} ({what})", file=out)
    return EXIT_OK


__all__ = ["add_permit2_arguments", "run_permit2"]
