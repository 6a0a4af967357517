"""MandateRegistry on anvil: the owner's revocation stops payment within one block."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from a402.chain.deploy import Manifest
from a402.chain.node import Chain
from a402.chain.tx import TransactionFailed, transact
from a402.crypto.authorization import EcdsaSigner
from a402.mandate import Domain, revocation_digest, sign_mandate
from a402.mandate.registry import MandateRegistry, RevocationCheck, RevocationUnknown
from tests.mandate.helpers import Keys, make_mandate
from tests.servers import dead_url

pytestmark = pytest.mark.anvil


class Funded(Keys):
    """Keys whose owner is one of anvil's funded accounts (it pays gas to revoke)."""

    def __init__(self, chain: Chain, index: int) -> None:
        super().__init__()
        self.owner = chain.accounts[index]
        self.owner_signer = EcdsaSigner(bytes(self.owner.key))


def _signed(keys: Keys, manifest: Manifest, **kw):
    domain = Domain(manifest.chain_id, manifest.contracts["MandateRegistry"])
    return sign_mandate(make_mandate(keys, networks=(manifest.network,),
                                     assets=(manifest.token.address,), **kw),
                        domain, keys.owner_signer.sign_digest)


def test_the_registry_signs_in_the_domain_python_computes(anvil_chain: Chain,
                                                           dev_stack: Manifest) -> None:
    registry = MandateRegistry(anvil_chain, dev_stack.contracts["MandateRegistry"])
    domain = Domain(dev_stack.chain_id, registry.address)
    assert registry.domain_separator() == domain.separator()


def test_a_revocation_by_the_owner_stops_the_mandate_in_the_next_block(
    anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    keys = Funded(anvil_chain, -1)
    signed = _signed(keys, dev_stack)
    check = RevocationCheck.for_mandate(anvil_chain, signed)
    assert check.revoked(signed) is False
    assert check.revoked(signed) is False
    assert check.reads == 1  # the same block answers from the cache
    registry = check.registry
    receipt = registry.revoke(keys.owner, signed.hash)
    assert anvil_chain.w3.eth.block_number >= receipt["blockNumber"]
    assert check.revoked(signed) is True  # the revocation's block is the latest: no stale "no"
    assert check.reads == 2
    assert registry.revoked_at(keys.owner.address, signed.hash) == receipt["blockNumber"]
    registry.revoke(keys.owner, signed.hash)  # again: harmless, the first block stays
    assert registry.revoked_at(keys.owner.address, signed.hash) == receipt["blockNumber"]


def test_an_owner_without_gas_signs_a_revocation_that_anyone_relays(
    anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    keys = Keys()  # a fresh owner: no ETH at all
    signed = _signed(keys, dev_stack)
    registry = MandateRegistry(anvil_chain, dev_stack.contracts["MandateRegistry"])
    signature = keys.owner_signer.sign_digest(revocation_digest(signed.hash, signed.domain))
    relayer = anvil_chain.accounts[-2]
    registry.revoke_by_sig(relayer, keys.owner.address, signed.hash, signature)
    assert registry.is_revoked(keys.owner.address, signed.hash)
    assert not registry.is_revoked(relayer.address, signed.hash)


def test_a_stranger_cannot_revoke_someone_elses_mandate(anvil_chain: Chain,
                                                         dev_stack: Manifest) -> None:
    keys = Keys()
    signed = _signed(keys, dev_stack)
    registry = MandateRegistry(anvil_chain, dev_stack.contracts["MandateRegistry"])
    stranger = anvil_chain.accounts[-2]
    registry.revoke(stranger, signed.hash)  # files it under the stranger's own address
    forged = EcdsaSigner(bytes(Account.create().key)).sign_digest(
        revocation_digest(signed.hash, signed.domain))
    with pytest.raises(TransactionFailed):
        transact(anvil_chain, stranger, registry.contract.functions.revokeBySig(
            keys.owner.address, signed.hash, forged))
    assert RevocationCheck(registry).revoked(signed) is False


def test_an_unreadable_registry_counts_as_revoked(anvil_chain: Chain,
                                                   dev_stack: Manifest) -> None:
    signed = _signed(Keys(), dev_stack)
    dead = Chain(Web3(Web3.HTTPProvider(dead_url(),
                                        request_kwargs={"timeout": 2})), [])
    with pytest.raises(RevocationUnknown):
        RevocationCheck.for_mandate(dead, signed)
    check = RevocationCheck(MandateRegistry(dead, signed.domain.registry))
    with pytest.raises(RevocationUnknown) as e:
        check.revoked(signed)
    assert e.value.reason == "mandate_revocation_unknown"
    over_http = Chain(dead.w3, [], rpc_url=dead_url())
    with pytest.raises(RevocationUnknown, match="isRevoked failed"):
        RevocationCheck(MandateRegistry(over_http, signed.domain.registry)).revoked(signed)
    other_chain = _signed(Keys(), dev_stack)
    object.__setattr__(other_chain.domain, "chain_id", 1)
    with pytest.raises(RevocationUnknown):
        RevocationCheck.for_mandate(anvil_chain, other_chain)


def _count_round_trips(check: RevocationCheck) -> list[str]:
    """The check's requests to the node, by method, in order."""
    calls: list[str] = []
    rpc = check._rpc
    assert rpc is not None  # an http node: the check's own JSON-RPC client
    call = rpc.call

    def counted(method, params):  # type: ignore[no-untyped-def]
        calls.append(str(method))
        return call(method, params)

    rpc.call = counted  # type: ignore[method-assign]
    return calls


def test_while_every_payment_sees_a_new_block_each_check_is_one_round_trip_and_sees_a_revocation(
    anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    assert anvil_chain.rpc_url is not None
    keys = Funded(anvil_chain, -1)
    signed = _signed(keys, dev_stack)
    check = RevocationCheck.for_mandate(anvil_chain, signed)
    calls = _count_round_trips(check)
    assert check.revoked(signed) is False  # first read: the probe (block and answer)
    anvil_chain.w3.provider.make_request("evm_mine", [])
    assert check.revoked(signed) is False  # block moved: blockNumber, then the probe
    checks_before = len(calls)
    for _ in range(3):  # blocks keep coming: the probe alone, one call per check
        anvil_chain.w3.provider.make_request("evm_mine", [])
        mined = len(calls)
        assert check.revoked(signed) is False
        assert calls[mined:] == ["eth_call"]
    assert checks_before == 3  # probe, then blockNumber + probe
    check.registry.revoke(keys.owner, signed.hash)  # its own block, the latest
    assert check.revoked(signed) is True
    assert check.revoked(signed) is True  # a probe that finds the block unchanged...
    assert calls[-1] == "eth_call"
    assert check.revoked(signed) is True  # ...lets the cache answer after blockNumber
    assert calls[-1] == "eth_blockNumber"


def test_a_mandate_naming_an_address_without_a_registry_counts_as_revoked(
    anvil_chain: Chain, dev_stack: Manifest,
) -> None:
    assert anvil_chain.rpc_url is not None
    keys = Keys()
    nowhere = Account.create().address
    signed = sign_mandate(make_mandate(keys, networks=(dev_stack.network,),
                                       assets=(dev_stack.token.address,)),
                          Domain(dev_stack.chain_id, nowhere), keys.owner_signer.sign_digest)
    check = RevocationCheck(MandateRegistry(anvil_chain, nowhere))
    with pytest.raises(RevocationUnknown, match="is a registry there"):
        check.revoked(signed)
    assert check.reads == 0


def test_a_reservation_made_while_the_registry_says_revoked_is_given_back_and_refused(
    anvil_chain: Chain, dev_stack: Manifest, tmp_path,
) -> None:
    from a402.mandate.guard import MandateGuard
    from a402.mandate.policy import MandateRefused, ProposedPayment
    from a402.mandate.spend import RELEASED, RESERVED, SpendStore

    keys = Funded(anvil_chain, -1)
    signed = _signed(keys, dev_stack)
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = MandateGuard(signed, agent=keys.agent.address, store=store,
                         revocation=RevocationCheck.for_mandate(anvil_chain, signed))
    payment = ProposedPayment(agent=keys.agent.address, payee=Account.create().address,
                              network=dev_stack.network, asset=dev_stack.token.address,
                              scheme="exact", amount=700, url="https://api.example.com/x")
    held = guard.reserve(payment)  # registry says not revoked: reserved, may be signed
    assert store.spent(signed).total == 700
    guard.release(held)
    guard.revocation.registry.revoke(keys.owner, signed.hash)  # type: ignore[union-attr]
    with pytest.raises(MandateRefused) as e:
        guard.reserve(payment)  # the store reserved meanwhile; the brake takes it back
    assert e.value.reason == "mandate_revoked"
    assert store.spent(signed).total == 0
    assert store.count(signed, RESERVED) == 0
    assert store.count(signed, RELEASED) == 2
    store.close()


def test_a_payer_queued_behind_others_past_its_read_is_stopped_by_a_revocation_meanwhile(
    anvil_chain: Chain, dev_stack: Manifest, tmp_path,
) -> None:
    """The one-commit path reads the registry when the payment is admitted and awaits it
    at the commit. A payer that then waits for the write lock (other payers of the
    process commit first) would commit on a "not revoked" read however old; the owner's
    revocation, mined while it waited, must stop it and leave nothing written."""
    import threading
    import time

    from a402.client.wallet import Wallet
    from a402.mandate.evidence import EvidenceLog
    from a402.mandate.guard import PREFETCH_MAX_AGE, MandateGuard
    from a402.mandate.policy import MandateRefused, ProposedPayment
    from a402.mandate.spend import SIGNED, SpendStore

    keys = Funded(anvil_chain, -1)
    signed = _signed(keys, dev_stack)
    store = SpendStore(f"sqlite:///{tmp_path / 'spend.db'}")
    guard = MandateGuard(signed, agent=keys.agent.address, store=store,
                         revocation=RevocationCheck.for_mandate(anvil_chain, signed))
    wallet = Wallet(bytes(keys.agent.key))
    payment = ProposedPayment(agent=keys.agent.address, payee=Account.create().address,
                              network=dev_stack.network, asset=dev_stack.token.address,
                              scheme="exact", amount=700, url="https://api.example.com/x")
    admitted = guard.admit(payment)
    assert admitted.read is not None and admitted.read.result() is False  # read: standing
    outcome: list[object] = []

    def pay() -> None:
        try:
            guard.commit(admitted, {"mandate": guard.mandate_hash, "agent": wallet.address},
                         wallet.sign_evidence)
            outcome.append("paid")
        except MandateRefused as e:
            outcome.append(e.reason)

    with store.writer:  # other payers of this process are committing
        payer = threading.Thread(target=pay)
        payer.start()
        guard.revocation.registry.revoke(keys.owner, signed.hash)  # type: ignore[union-attr]
        time.sleep(PREFETCH_MAX_AGE + 0.2)
    payer.join()
    assert outcome == ["mandate_revoked"]
    assert store.spent(signed).total == 0 and store.count(signed, SIGNED) == 0
    assert EvidenceLog(store.engine).rows(signed.hash_hex) == []
    store.close()
