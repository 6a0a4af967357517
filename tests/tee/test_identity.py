"""An enclave comes back as itself: the provider's identity file and the vault's record."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from a402.provider.identity import provider_enclave
from a402.tee import EnclaveError, SealingError
from a402.tee.enclave import PAYMENT_AUTHORIZATION
from a402.tee.identity import create_file_once, load_platform

CODE = hashlib.sha384(b"provider code").digest()


def test_the_provider_enclave_is_created_once_and_restored_after(tmp_path: Path) -> None:
    platform = load_platform(tmp_path / "platform.json")
    identity = tmp_path / "sub" / "identity.bin"
    first = provider_enclave(platform, CODE, identity)
    again = provider_enclave(load_platform(tmp_path / "platform.json"), CODE, identity)
    assert again.signing_public_key == first.signing_public_key
    assert first.signing_public_key[0] == 2  # an EVM Schnorr key (even y)
    assert os.stat(identity).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "platform.json").st_mode & 0o777 == 0o600
    with pytest.raises(SealingError):  # another build cannot take the identity over
        provider_enclave(platform, hashlib.sha384(b"other code").digest(), identity)


def test_a_file_is_created_once_and_the_first_writer_wins(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    assert create_file_once(path, b"first") == b"first"
    assert create_file_once(path, b"second") == b"first"
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["blob"]


def test_the_provider_enclave_pre_signs_payments_and_signs_nothing_else(tmp_path: Path
                                                                        ) -> None:
    platform = load_platform(tmp_path / "platform.json")
    identity = tmp_path / "identity.bin"
    provider_enclave(platform, CODE, identity)
    restored = provider_enclave(platform, CODE, identity)  # launched, then restored
    kernel = restored.start(lambda kernel: kernel)  # as the enclave's own code would
    assert kernel.pre_sign(b"\x01" * 32, restored.signing_public_key)
    with pytest.raises(EnclaveError):
        kernel.sign(PAYMENT_AUTHORIZATION, b"\x01" * 32)
