"""``a402 vault``: run the Liquidity Vault service.

    a402 vault --rpc http://127.0.0.1:8545 --key-file .a402/vault.key \\
        --manifest .a402/devnet.json --db sqlite:///vault.db --port 4030 \\
        --allow-simulated-attestation --provider-measurement 0x…

The chain and ASCManager come from ``--manifest`` (``a402 devnet`` writes one)
or ``--manager``. The key file holds the vault's Ethereum key: it pays gas,
holds pooled deposits and signs for every channel. Enclaves are simulated
here (no TEE hardware): the vault's platform lives in ``--platform-file``
(created on first start; keep it), and providers' simulated quotes are
accepted only with ``--allow-simulated-attestation``, from the roots given
by ``--trust-root`` (default: this platform's own root), and only for the
code measurements given by ``--provider-measurement``.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_PLATFORM = ".a402/vault-platform.json"


def add_vault_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    parser.add_argument("--network", help="CAIP-2 id the chain must have, e.g. eip155:84532")
    parser.add_argument("--key-file", required=True,
                        help="file holding the vault's key (hex): gas, pooled deposits, channels")
    parser.add_argument("--manifest", help="devnet manifest naming the ASCManager")
    parser.add_argument("--manager", help="ASCManager address (instead of --manifest)")
    parser.add_argument("--db", default="sqlite:///a402-vault.db",
                        help="SQLAlchemy URL of the vault's database (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4030)
    parser.add_argument("--platform-file", default=DEFAULT_PLATFORM,
                        help="the simulated enclave platform (created if missing; keep it: "
                             "sealed state opens only on the same platform)")
    parser.add_argument("--measurement", help="this vault's code measurement (hex; default: "
                                              "the measured a402 package)")
    parser.add_argument("--allow-simulated-attestation", action="store_true",
                        help="accept simulated enclave quotes (INSECURE: development only)")
    parser.add_argument("--trust-root", action="append", default=[], metavar="HEX",
                        help="simulation root public key whose quotes are accepted "
                             "(repeatable; default: this vault's own platform root)")
    parser.add_argument("--nitro-root", metavar="PEM",
                        help="accept AWS Nitro provider enclaves chaining to this root (the "
                             "AWS root, checked by its fingerprint), and no simulated ones")
    parser.add_argument("--provider-measurement", action="append", required=True,
                        metavar="HEX", help="provider enclave code measurement to accept "
                                            "(repeatable)")
    parser.add_argument("--lock-timeout", type=float, default=30.0,
                        help="Δ_lock in seconds (raised above the provider's own lock)")
    parser.add_argument("--pending-escalation", type=float, default=600.0,
                        help="seconds a PENDING payment waits for the provider before the "
                             "vault force-closes the channel")
    parser.add_argument("--deposit-multiple", type=int, default=100,
                        help="a new pooled channel escrows this many times the price")
    parser.add_argument("--min-deposit", type=int, default=0, help="atomic units")
    parser.add_argument("--max-deposit", type=int, help="atomic units")
    parser.add_argument("--chain-timeout", type=float, default=30.0,
                        help="seconds a call waits for a transaction to be mined")
    parser.add_argument("--allow-private-targets", action="store_true",
                        help="also pay URLs on loopback, private and link-local addresses "
                             "(development: every party on one machine)")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between watchtower/recovery rounds")


def run_vault(args: argparse.Namespace) -> int:
    from a402 import serving
    from a402.chain.deploy import Manifest
    from a402.chain.node import connect
    from a402.keys import load_key_file
    from a402.tee import (
        AttestationPolicy,
        measure_package,
    )
    from a402.tee.chains import require_development_chain
    from a402.tee.errors import AttestationError
    from a402.tee.identity import peer_verifiers
    from a402.vault.app import create_app
    from a402.vault.identity import load_platform, vault_enclave
    from a402.vault.service import VaultConfig, VaultService
    from a402.vault.store import VaultBusy, VaultStore

    def fail(message: str) -> int:
        print(f"a402 vault: {message}", file=sys.stderr)
        return 2

    if not args.allow_simulated_attestation:
        return fail("the only enclave backend here is simulated; pass "
                    "--allow-simulated-attestation to run it (development only)")
    if args.manager:
        manager = args.manager
    elif args.manifest:
        contracts = Manifest.load(args.manifest).contracts
        if "ASCManager" not in contracts:
            return fail(f"{args.manifest} names no ASCManager; give --manager")
        manager = contracts["ASCManager"]
    else:
        return fail("give --manifest or --manager")
    try:
        account = load_key_file(args.key_file)
        policy = AttestationPolicy(frozenset(
            bytes.fromhex(m.removeprefix("0x")) for m in args.provider_measurement))
    except ValueError as e:
        return fail(str(e))
    chain = connect(args.rpc, [account.key])
    if args.network and args.network != chain.network:
        return fail(f"{args.rpc} is {chain.network}, not {args.network}")
    store = VaultStore(args.db)
    try:
        store.claim_for(account.address)
        store.lock_for(account.address)
    except ValueError as e:
        return fail(str(e))
    except VaultBusy as e:
        return fail(str(e))
    platform = load_platform(args.platform_file)
    measurement = (bytes.fromhex(args.measurement.removeprefix("0x")) if args.measurement
                   else measure_package())
    enclave = vault_enclave(platform, measurement, store)
    roots = [bytes.fromhex(r.removeprefix("0x")) for r in args.trust_root]
    try:
        require_development_chain(chain.chain_id)  # this vault's enclave is simulated
        verifiers = peer_verifiers(platform, roots, args.nitro_root, chain_id=chain.chain_id)
    except AttestationError as e:
        return fail(str(e))
    except (OSError, ValueError) as e:
        return fail(f"--nitro-root {args.nitro_root}: {e}")
    if len(roots) > 1:
        print("a402 vault: only the first --trust-root is used (one verifier per kind)",
              file=sys.stderr)
    service = VaultService(VaultConfig(
        chain=chain, account=account, manager=manager, store=store, enclave=enclave,
        verifiers=verifiers, provider_policy=policy, lock_timeout=args.lock_timeout,
        pending_escalation=args.pending_escalation, deposit_multiple=args.deposit_multiple,
        min_deposit=args.min_deposit, max_deposit=args.max_deposit,
        chain_timeout=args.chain_timeout, poll_interval=args.poll_interval,
        allow_private_targets=args.allow_private_targets,
    ))
    print(json.dumps({
        "vault": f"http://{args.host}:{args.port}", "address": account.address,
        "network": chain.network, "ascManager": service.manager.address,
        "measurement": "0x" + measurement.hex(),
        "rootPublicKey": platform.root.public_key.hex(),
    }), file=sys.stderr, flush=True)
    serving.run(create_app(service), host=args.host, port=args.port)
    return 0
