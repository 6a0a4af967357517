"""Deploying the development stack and describing it in a manifest.

The manifest is what every other command needs to find a chain: its CAIP-2 id,
the contract addresses, the token's EIP-712 domain, and funded development
accounts with their roles. It is plain JSON so non-Python tools can read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from a402.chain.create2 import ensure_transfer_prover
from a402.chain.node import Chain
from a402.chain.tx import contract_at, deploy_contract, transact
from a402.chain.upto_settle import install_upto_contracts, is_anvil
from a402.evm.address import to_checksum

DEFAULT_TOKEN_NAME = "USD Coin"
DEFAULT_TOKEN_VERSION = "2"
DEV_DISPUTE_WINDOW = 600
"""The dev ASCManager's dispute window, in seconds: long enough to watch, short to wait out."""
ROLES = ("deployer", "facilitator", "provider")
"""Roles of the first dev accounts; every later account is a funded client."""


@dataclass(frozen=True)
class TokenInfo:
    address: str
    name: str
    symbol: str
    version: str
    decimals: int

    def eip712_extra(self) -> dict[str, str]:
        """The ``extra`` an x402 requirement carries so clients can sign."""
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class DevAccount:
    role: str
    address: str
    private_key: str


@dataclass(frozen=True)
class Manifest:
    network: str
    chain_id: int
    token: TokenInfo
    contracts: dict[str, str]
    accounts: list[DevAccount] = field(default_factory=list)
    rpc_url: str | None = None

    def account(self, role: str, index: int = 0) -> DevAccount:
        matches = [a for a in self.accounts if a.role == role]
        if len(matches) <= index:
            raise KeyError(f"manifest has no {role} account #{index}")
        return matches[index]

    def to_json(self) -> str:
        data = asdict(self)
        data["chainId"] = data.pop("chain_id")
        data["rpcUrl"] = data.pop("rpc_url")
        data["accounts"] = [
            {"role": a.role, "address": a.address, "privateKey": a.private_key}
            for a in self.accounts
        ]
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        return cls(
            network=data["network"],
            chain_id=int(data["chainId"]),
            token=TokenInfo(**data["token"]),
            contracts=dict(data["contracts"]),
            accounts=[
                DevAccount(a["role"], a["address"], a["privateKey"]) for a in data["accounts"]
            ],
            rpc_url=data.get("rpcUrl"),
        )

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        return cls.from_json(Path(path).read_text())


def deploy_dev_stack(
    chain: Chain,
    *,
    token_name: str = DEFAULT_TOKEN_NAME,
    token_symbol: str = "USDC",
    token_version: str = DEFAULT_TOKEN_VERSION,
    client_funds: int = 1_000 * 10**6,
    asc_manager: bool = False,
    dispute_window: int = DEV_DISPUTE_WINDOW,
    vault_signer: str | None = None,
    settle_window: int = DEV_DISPUTE_WINDOW,
) -> Manifest:
    """Deploy TestUSDC and fund every client account with ``client_funds`` units.

    A ``MandateRegistry`` is always deployed too (``contracts["MandateRegistry"]``):
    the domain mandates are signed in and where their owners revoke them.

    With ``asc_manager``, also an ``ASCManager`` for that token (A402 channels, the
    vault), listed in ``contracts`` as ``"ASCManager"``. With ``vault_signer`` (the
    address of the vault enclave's key), also an ``A402Vault`` (vault mode: pooled
    deposits, aggregated settlements, force-settle after ``settle_window`` seconds)
    listed as ``"A402Vault"``; the other keys of the manifest are unchanged.

    On anvil, also ``Permit2`` and ``UptoPermit2Proxy`` (x402 ``upto``), placed at the
    fixed addresses the x402 SDKs sign for (see :mod:`a402.chain.upto_settle`).
    """
    if len(chain.accounts) < len(ROLES) + 1:
        raise ValueError(f"need at least {len(ROLES) + 1} funded accounts to deploy the dev stack")
    deployer = chain.accounts[0]
    token = deploy_contract(chain, deployer, "TestUSDC", token_name, token_symbol, token_version,
                            deployer.address)
    clients = chain.accounts[len(ROLES):]
    for client in clients:
        transact(chain, deployer, token.functions.mint(client.address, client_funds))
    contracts: dict[str, str] = {"TestUSDC": token.address}
    # Where owners revoke the mandates they sign (a402.mandate): cheap, so always there.
    contracts["MandateRegistry"] = deploy_contract(chain, deployer, "MandateRegistry").address
    if asc_manager:
        manager = deploy_contract(chain, deployer, "ASCManager", token.address, dispute_window)
        contracts["ASCManager"] = manager.address
    if is_anvil(chain):
        # x402 `upto`: Permit2 and the upto proxy, at the addresses the SDKs sign for.
        contracts.update(install_upto_contracts(chain))
    if vault_signer is not None:
        vault = deploy_contract(chain, deployer, "A402Vault", token.address,
                                to_checksum(vault_signer), settle_window,
                                ensure_transfer_prover(chain, deployer))
        contracts["A402Vault"] = vault.address
    return Manifest(
        network=chain.network,
        chain_id=chain.chain_id,
        token=TokenInfo(token.address, token_name, token_symbol, token_version, 6),
        contracts=contracts,
        accounts=[_dev(role, a) for role, a in zip(ROLES, chain.accounts, strict=False)]
        + [_dev("client", a) for a in clients],
        rpc_url=chain.rpc_url,
    )


def _dev(role: str, account: LocalAccount) -> DevAccount:
    return DevAccount(role, account.address, HexBytes(account.key).to_0x_hex())


def token_balance(chain: Chain, token: str, owner: str) -> int:
    return int(contract_at(chain, "TestUSDC", token).functions.balanceOf(owner).call())
