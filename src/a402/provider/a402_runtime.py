"""The provider's A402 runtime: its parts, built and wired, and the facts it advertises.

A402 makes a payment final only if the request ran in the provider's attested
enclave and its result reached the payer. The channels' state machines run in
the provider enclave's code (:mod:`a402.provider_enclave`): it decrypts every
frame, builds every result, draws ``t``, seals, pre-signs and encrypts every
answer. This host relays ciphertext, runs the paid requests the enclave hands
it, stores what the enclave seals, and pays gas; it has no call that
pre-signs anything. Its parts, one job each:

===============================================  ==========================================
:mod:`~a402.provider.a402_tunnels`               the vault tunnels: handshakes, ids, eviction
:mod:`~a402.provider.a402_driver`                one frame in, one answer out: the enclave
                                                 driven in a straight line
:mod:`~a402.provider.a402_execute`               a paid request run against the service
:mod:`~a402.provider.a402_channels`              the channels in memory, sealed in the store
:mod:`~a402.provider.a402_watch`                 the on-chain side: claims, challenges,
                                                 closes, and the watcher that sends them
:mod:`~a402.provider.a402_app`                   the HTTP endpoint (POST and stream) that
                                                 carries frames to the driver
:mod:`~a402.provider.a402_offer`                 the ``a402`` entry of a 402's ``accepts``
===============================================  ==========================================

What carries the frames is a transport (:mod:`a402.wire.transport`): the
HTTP endpoint, or an :class:`~a402.wire.transport.InMemoryTransport` over
the runtime's :attr:`ProviderRuntime.driver` (its ``handle_frame``).

Trust split: the enclave holds the attested Schnorr key and runs the channel
machines (it makes every pre-signature, for results it sealed itself); the
provider's Ethereum account (``operator``) signs channel states (passed into
the enclave's code as a signer) and sends ``forceClose``. A host that misused
the operator key could only sign states that pay the provider *less*; what
makes a payment atomic — the pre-signature — never leaves the enclave. In the
simulated backend the enclave's code runs in the host process (no isolation);
a hardware backend runs the same code inside the enclave.

Seams for tests: :attr:`ProviderRuntime.enclave_code` names the enclave's code
(a deliberately faulty *enclave* is a subclass of
:class:`~a402.provider_enclave.ProviderEnclaveCode`), and
:attr:`ProviderRuntime.driver_cls` the driver (a *malicious host* rewriting
the frames it relays is a subclass of :class:`~a402.provider.a402_driver.FrameDriver`).
"""

from __future__ import annotations

from typing import ClassVar

from starlette.types import ASGIApp

from a402.asc_manager import ASCManager
from a402.crypto import EcdsaSigner
from a402.metering import MeterRule
from a402.provider.a402_channels import Channels
from a402.provider.a402_config import A402Config
from a402.provider.a402_driver import FrameDriver
from a402.provider.a402_execute import Executor
from a402.provider.a402_tunnels import Tunnels
from a402.provider.a402_watch import ChannelWatcher, OnChain
from a402.provider.routes import RouteTable
from a402.provider_enclave import ProviderEnclave, ProviderEnclaveCode, VaultModeDomain
from a402.tee.chains import check_backends
from a402.vault_contract import A402Vault
from a402.wire.a402 import PricedRoute, ProviderInfo, provider_user_data

_MAX_NONCE = 64
#: The share of the provider's lock a paid request may take (the rest: answer and store).
_EXECUTION_SHARE = 0.8


class ProviderRuntime:
    """Serves the A402 exchange for one provider; owned by
    :class:`~a402.provider.a402_payments.A402Payments`.

    ``app`` is what a paid request runs against, ``routes`` prices it,
    ``token``/``network`` are what the middleware charges in (checked against
    the ASCManager's token and the chain). Builds, in order: the enclave's code
    (started in the enclave), the channels, the tunnels, the on-chain side, the
    executor and the frame driver.
    """

    enclave_code: ClassVar[type[ProviderEnclaveCode]] = ProviderEnclaveCode
    driver_cls: ClassVar[type[FrameDriver]] = FrameDriver

    def __init__(
        self, config: A402Config, *, app: ASGIApp, routes: RouteTable, token: str, network: str
    ) -> None:
        self.config = config
        self.routes = routes
        self.enclave = config.enclave
        self.manager = ASCManager(config.chain, config.manager)
        self.domain = self.manager.domain
        check_backends(self.domain.chain_id,
                       [config.enclave.kind, *(v.kind for v in config.verifiers)])
        if self.manager.token.lower() != token.lower():
            raise ValueError(f"the ASCManager escrows {self.manager.token}, not {token}")
        if config.chain.network != network:
            raise ValueError(f"the ASCManager is on {config.chain.network}, not {network}")
        timeouts = config.timeouts
        if timeouts.lock_timeout <= 0 or timeouts.ack_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.network = network
        #: The A402Vault whose vault-mode channels are admitted too (None: standard only).
        self.vault_contract: A402Vault | None = None
        vault_mode = None
        if config.vault_contract is not None:
            self.vault_contract = A402Vault(config.chain, config.vault_contract)
            if self.vault_contract.token.lower() != token.lower():
                raise ValueError(f"the A402Vault pools {self.vault_contract.token}, not {token}")
            vault_mode = VaultModeDomain(self.vault_contract.domain, bytes.fromhex(
                self.vault_contract.vault_signer.removeprefix("0x")),
                pinned_ledger=lambda: self.onchain.pinned_ledger(),
                landed_epoch=lambda: self.onchain.landed_epoch())
        self.operator = config.operator
        self.signer = EcdsaSigner(bytes(config.operator.key))
        self.provider_enclave: ProviderEnclave = self.enclave_code.start(
            config.enclave, domain=self.domain, signer=self.signer, price=self._price,
            closing=lambda channel_id: self.channels.closing(channel_id), clock=config.clock,
            ack_timeout=timeouts.ack_timeout, lock_timeout=timeouts.lock_timeout,
            vault_mode=vault_mode, meter=self._meter,
        )
        self.channels = Channels(self.provider_enclave, config.store)
        self.tunnels = Tunnels(config, self.provider_enclave)
        self.onchain = OnChain(self.manager, self.operator, self.provider_enclave, self.channels,
                               self.vault_contract)
        self.driver = self.driver_cls(
            self.provider_enclave, tunnels=self.tunnels, channels=self.channels,
            executor=Executor(app, budget=timeouts.lock_timeout * _EXECUTION_SHARE,
                              meter=self._meter),
            chain_status=self.onchain.status, clock=config.clock,
            read_ledger=self.onchain.read_ledger if self.vault_contract is not None else None,
            read_epoch=self.onchain.read_epoch if self.vault_contract is not None else None,
        )

    def _price(self, method: str, path: str) -> int | None:
        match = self.routes.match(method, path)
        return None if match is None else match.amount

    def _meter(self, method: str, path: str) -> MeterRule | None:
        match = self.routes.match(method, path)
        return None if match is None else match.route.meter

    def watcher(self) -> ChannelWatcher:
        """A new watcher over this runtime's channels (started by its owner)."""
        return ChannelWatcher(self.onchain, self.channels,
                              watching=lambda: self.config.watching, clock=self.config.clock)

    # ------------------------------------------------------------------ facts

    @property
    def provider_address(self) -> bytes:
        return self.signer.address

    @property
    def provider_key(self) -> bytes:
        return self.provider_enclave.provider_key

    def info(self, nonce: bytes) -> ProviderInfo:
        """``GET …/info``: attestation evidence made for ``nonce``, bound to our address."""
        if len(nonce) > _MAX_NONCE:
            raise ValueError(f"the nonce is at most {_MAX_NONCE} bytes")
        user_data = provider_user_data(
            self.domain.chain_id, self.domain.verifying_contract, self.provider_address
        )
        return ProviderInfo(
            network=self.network,
            chain_id=self.domain.chain_id,
            asc_manager=self.domain.verifying_contract,
            token=bytes.fromhex(self.manager.token[2:]),
            dispute_window=self.manager.dispute_window,
            provider=self.provider_address,
            provider_key=self.provider_key,
            attestation_kind=self.enclave.kind,
            evidence=self.enclave.quote(nonce, user_data),
            nonce=bytes(nonce),
            lock_timeout=self.config.timeouts.lock_timeout,
            ack_timeout=self.config.timeouts.ack_timeout,
            routes=tuple(PricedRoute(r.pattern.text, r.amount) for r in self.routes.routes),
        )


__all__ = ["ProviderRuntime"]
