"""The attestation policy is the verifier's: simulated enclaves only on development
chains, a Nitro root pinned by its fingerprint, and no weaker kind than the policy names."""

from __future__ import annotations

import base64
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from a402.tee import AttestationError, ChannelError, NitroVerifier
from a402.tee.chains import check_backends, require_development_chain
from a402.tee.identity import peer_verifiers
from a402.tee.quote import AWS_NITRO, SIMULATED
from a402.tee.simulated import SimulatedPlatform, SimulatedVerifier

from .conftest import PROVIDER_CODE, VAULT_CODE, policy_for
from .nitro_factory import NitroPKI

REAL_DOCUMENT = Path(__file__).parent / "data" / "nitro_debug_2024-09-17.b64"
PUBLIC = {1: "Ethereum", 8453: "Base", 84532: "Base Sepolia", 11155111: "Sepolia"}
EMBEDDED_CHAIN = 131_277_322_940_537


def pem_file(tmp_path: Path, certificate: x509.Certificate) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("chain_id", PUBLIC, ids=PUBLIC.values())
def test_simulated_attestation_is_refused_on_public_chains_even_when_allowed(
    platform: SimulatedPlatform, chain_id: int
) -> None:
    with pytest.raises(AttestationError) as refused:
        peer_verifiers(platform, [], None, chain_id=chain_id)
    assert refused.value.reason == "simulated_on_public_chain"
    assert f"eip155:{chain_id}" in str(refused.value)
    with pytest.raises(AttestationError):
        check_backends(chain_id, [SIMULATED])
    check_backends(chain_id, [AWS_NITRO])  # a real backend may run anywhere


@pytest.mark.parametrize("chain_id", [31337, 1337, EMBEDDED_CHAIN])
def test_simulated_attestation_is_accepted_on_a_devnet(
    platform: SimulatedPlatform, chain_id: int
) -> None:
    require_development_chain(chain_id)
    (verifier,) = peer_verifiers(platform, [], None, chain_id=chain_id)
    assert isinstance(verifier, SimulatedVerifier) and verifier.allow_simulated


def test_a_nitro_policy_pins_the_aws_root_and_installs_no_simulated_verifier(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    real = base64.b64decode(REAL_DOCUMENT.read_text().strip())
    aws_root = x509.load_der_x509_certificate(cbor2.loads(cbor2.loads(real)[2])["cabundle"][0])
    (verifier,) = peer_verifiers(platform, [], pem_file(tmp_path, aws_root), chain_id=31337)
    assert isinstance(verifier, NitroVerifier)

    other = NitroPKI.generate().root
    with pytest.raises(ValueError, match="fingerprint"):
        peer_verifiers(platform, [], pem_file(tmp_path, other), chain_id=31337)
    # Pinning another root is an explicit choice (a test PKI, a private CA).
    (verifier,) = peer_verifiers(platform, [], pem_file(tmp_path, other), chain_id=31337,
                                 nitro_root_sha256=None)
    assert verifier.kind == AWS_NITRO


def test_a_simulated_peer_cannot_downgrade_a_verifier_whose_policy_names_nitro(
    platform: SimulatedPlatform, tmp_path: Path
) -> None:
    """The provider's policy names Nitro: a vault presenting a simulated quote, even one
    signed by this very platform's root, is refused."""
    pki = NitroPKI.generate()
    nitro_only = peer_verifiers(platform, [], pem_file(tmp_path, pki.root), chain_id=31337,
                                nitro_root_sha256=None)
    vault, provider = platform.launch(VAULT_CODE), platform.launch(PROVIDER_CODE)
    trusting = SimulatedVerifier(platform.root.public_key, allow_simulated=True)
    h_vault, m1 = vault.channel_initiate(policy_for(PROVIDER_CODE), [trusting])
    h_provider, m2 = provider.channel_respond(m1, policy_for(VAULT_CODE), nitro_only)
    m3, _ = vault.channel_finish(h_vault, m2)
    with pytest.raises(ChannelError) as refused:
        provider.channel_accept(h_provider, m3)
    assert refused.value.reason == "unsupported_kind"
