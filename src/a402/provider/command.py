"""``a402 gateway --a402``: the gateway also takes A402 channel payments.

    a402 gateway --upstream http://127.0.0.1:8000 --route 'GET /api/*=0.001' \\
        --manifest .a402/devnet.json --facilitator http://127.0.0.1:4021 \\
        --a402 --rpc http://127.0.0.1:8545 --operator-key-file .a402/provider.key \\
        --allow-simulated-attestation --vault-measurement 0x…

The options are declared with the gateway's in :mod:`a402.cli`; this module
checks them and the chain and opens the provider enclave. The 402 then lists
an ``a402`` offer next to ``exact``, with the provider's attestation and key,
and vaults open channels with the gateway. The ASCManager comes from
``--manifest`` or ``--manager``; its token must be the token the gateway
charges in. ``--operator-key-file`` holds the provider's Ethereum account: the
channels' ``provider`` (it is paid, signs states, and pays gas for
``forceClose``/``closeASC``). Enclaves are simulated here (no TEE hardware),
as in ``a402 vault``: the platform lives in ``--platform-file``, the enclave's
sealed identity (its Schnorr key, the channels' ``providerKey``) in
``--identity-file`` — keep both, or the gateway comes back as another enclave
that cannot serve its channels — and vaults' simulated quotes are accepted
only with ``--allow-simulated-attestation``, from ``--trust-root`` (default:
this platform's root), for the ``--vault-measurement`` values given.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from a402.evm.address import address_key
from a402.provider.a402_runtime import A402Config


class GatewayUsageError(Exception):
    """A bad option or combination: ``a402 gateway: <message>``, exit code 2."""


@dataclass(frozen=True)
class A402Gateway:
    """The A402 side of a gateway, ready to serve, and what its operator must be told."""

    config: A402Config
    announcement: dict[str, Any]


def a402_gateway(args: argparse.Namespace, *, token: str, network: str,
                 manifest_contracts: dict[str, str] | None) -> A402Gateway:
    """Check the options and the chain, open the enclave: the gateway's :class:`A402Config`.

    ``token``/``network`` are what the gateway charges in; ``manifest_contracts`` the
    manifest's contracts, if one was given. Raises :class:`GatewayUsageError`.
    """
    from a402.asc_manager import ASCManager
    from a402.chain.node import connect
    from a402.keys import load_key_file
    from a402.provider.a402_store import SqlChannelStore
    from a402.provider.identity import load_platform, provider_enclave
    from a402.tee import (
        AttestationPolicy,
        SealingError,
        measure_package,
    )
    from a402.tee.chains import require_development_chain
    from a402.tee.errors import AttestationError
    from a402.tee.identity import peer_verifiers
    from a402.tee.quote import MEASUREMENT_SIZES

    missing = [flag for flag, value in (("--rpc", args.rpc),
                                        ("--operator-key-file", args.operator_key_file),
                                        ("--vault-measurement", args.vault_measurement))
               if not value]
    if missing:
        raise GatewayUsageError(f"--a402 needs {', '.join(missing)}")
    if not args.allow_simulated_attestation:
        raise GatewayUsageError("the only enclave backend here is simulated; pass "
                                "--allow-simulated-attestation to run it (development only)")
    if args.manager:
        manager = args.manager
    elif manifest_contracts is not None and "ASCManager" in manifest_contracts:
        manager = manifest_contracts["ASCManager"]
    elif manifest_contracts is not None:
        raise GatewayUsageError("the manifest names no ASCManager; give --manager")
    else:
        raise GatewayUsageError("--a402 needs --manager, or a --manifest naming the ASCManager")
    try:
        operator = load_key_file(args.operator_key_file)
        policy = AttestationPolicy(frozenset(_hex(m) for m in args.vault_measurement))
        measurement = _hex(args.measurement) if args.measurement else measure_package()
        roots = [_hex(r) for r in args.trust_root or []]
    except ValueError as e:
        raise GatewayUsageError(str(e)) from None
    if len(measurement) not in MEASUREMENT_SIZES:
        raise GatewayUsageError("--measurement is a 32-, 48- or 64-byte digest (hex)")
    defaults = {f.name: f.default for f in fields(A402Config)}
    ack_timeout = _or(args.ack_timeout, defaults["ack_timeout"])
    lock_timeout = _or(args.lock_timeout, defaults["lock_timeout"])
    if ack_timeout <= 0 or lock_timeout <= 0:
        raise GatewayUsageError("--ack-timeout and --lock-timeout must be positive")

    chain = connect(args.rpc, [operator.key])
    try:
        chain_network = chain.network
        if chain_network != network:
            raise GatewayUsageError(f"{args.rpc} is {chain_network}, but the gateway charges "
                                    f"on {network}")
        if not chain.w3.is_address(manager):
            raise GatewayUsageError(f"{manager} is not an address")
        manager = chain.w3.to_checksum_address(manager)
        if not chain.w3.eth.get_code(manager):
            raise GatewayUsageError(f"no contract at {manager} on {chain_network}")
        escrowed = ASCManager(chain, manager).token
    except GatewayUsageError:
        raise
    except Exception as e:  # unreachable node, not an ASCManager, …
        raise GatewayUsageError(f"cannot use the ASCManager {manager} through {args.rpc}: "
                                f"{type(e).__name__}: {e}") from None
    if address_key(escrowed) != address_key(token):
        raise GatewayUsageError(f"the ASCManager escrows {escrowed}, but the gateway charges "
                                f"in {token}")

    try:
        platform = load_platform(args.platform_file)
    except (OSError, ValueError, KeyError) as e:
        raise GatewayUsageError(f"cannot load the platform file {args.platform_file}: "
                                f"{type(e).__name__}: {e}") from None
    identity = Path(args.identity_file)
    try:
        enclave = provider_enclave(platform, measurement, identity)
    except (SealingError, ValueError) as e:
        raise GatewayUsageError(f"{identity} does not open for measurement "
                                f"0x{measurement.hex()} on this platform ({e}); it was sealed "
                                "by another build or platform") from None
    if enclave.signing_public_key[0] != 2:  # launch makes even-y keys; a restore keeps them
        raise GatewayUsageError(f"{identity} holds a key that is not an EVM Schnorr key")
    try:
        require_development_chain(chain.chain_id)  # this side's enclave is simulated
        verifiers = peer_verifiers(platform, roots, args.nitro_root, chain_id=chain.chain_id)
    except AttestationError as e:
        raise GatewayUsageError(str(e)) from None
    except (OSError, ValueError) as e:
        raise GatewayUsageError(f"--nitro-root {args.nitro_root}: {e}") from None
    if len(roots) > 1:
        print("a402 gateway: only the first --trust-root is used (one verifier per kind)",
              file=sys.stderr)
    config = A402Config(
        enclave=enclave, operator=operator, chain=chain, manager=manager, vault_policy=policy,
        verifiers=verifiers, store=SqlChannelStore(args.channel_db),
        ack_timeout=ack_timeout, lock_timeout=lock_timeout,
    )
    return A402Gateway(config, {
        "provider": operator.address,
        "providerKey": "0x" + enclave.signing_public_key[1:].hex(),
        "ascManager": manager,
        "measurement": "0x" + measurement.hex(),
        "rootPublicKey": platform.root.public_key.hex(),
    })


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _or(value: float | None, default: Any) -> float:
    return float(default if value is None else value)
