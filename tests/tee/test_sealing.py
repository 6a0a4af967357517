"""Sealed persistence: round trip, binding to label and measurement, tampering, files."""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.tee import SealingError, derive_sealing_key
from a402.tee.sealing import HEADER, SALT_SIZE
from a402.tee.storage import read_sealed, write_sealed

from .conftest import PROVIDER_CODE, VAULT_CODE

SECRET = b"s" * 32
KEY = derive_sealing_key(SECRET, VAULT_CODE, "state")


def test_round_trip_and_fresh_randomness():
    a, b = KEY.seal("channel/1", b"state"), KEY.seal("channel/1", b"state")
    assert a != b  # a fresh salt, hence a fresh key, per blob
    assert KEY.unseal("channel/1", a) == KEY.unseal("channel/1", b) == b"state"
    assert len(a) == len(HEADER) + SALT_SIZE + len(b"state") + 16


def test_wrong_label_fails():
    with pytest.raises(SealingError) as info:
        KEY.unseal("channel/2", KEY.seal("channel/1", b"state"))
    assert info.value.reason == "open_failed"


def test_wrong_measurement_platform_or_purpose_fails():
    blob = KEY.seal("channel/1", b"state")
    for other in (
        derive_sealing_key(SECRET, PROVIDER_CODE, "state"),
        derive_sealing_key(b"t" * 32, VAULT_CODE, "state"),
        derive_sealing_key(SECRET, VAULT_CODE, "identity"),
    ):
        with pytest.raises(SealingError) as info:
            other.unseal("channel/1", blob)
        assert info.value.reason == "open_failed"


@settings(max_examples=60, deadline=None)
@given(data=st.data(), plaintext=st.binary(max_size=256))
def test_any_modification_is_detected(data, plaintext):
    blob = KEY.seal("l", plaintext)
    assert KEY.unseal("l", blob) == plaintext
    at = data.draw(st.integers(0, len(blob) - 1))
    tampered = blob[:at] + bytes([blob[at] ^ data.draw(st.integers(1, 255))]) + blob[at + 1 :]
    with pytest.raises(SealingError):
        KEY.unseal("l", tampered)
    with pytest.raises(SealingError):
        KEY.unseal("l", blob[: data.draw(st.integers(0, len(blob) - 1))])


def test_format_errors_have_reasons():
    blob = KEY.seal("l", b"x")
    with pytest.raises(SealingError) as info:
        KEY.unseal("l", b"A4S\x02" + blob[4:])
    assert info.value.reason == "unsupported_version"
    with pytest.raises(SealingError) as info:
        KEY.unseal("l", b"nope")
    assert info.value.reason == "malformed"
    for label in ("", "line\nbreak", "x" * 256):
        with pytest.raises(SealingError) as info:
            KEY.seal(label, b"x")
        assert info.value.reason == "bad_label"


def test_key_derivation_input_checks_and_repr():
    with pytest.raises(ValueError):
        derive_sealing_key(b"short", VAULT_CODE, "state")
    assert SECRET.hex() not in repr(KEY) and "state" in repr(KEY)


def test_files_are_replaced_atomically_and_private(tmp_path):
    path = tmp_path / "vault.sealed"
    write_sealed(path, KEY.seal("l", b"v1"))
    write_sealed(path, KEY.seal("l", b"v2"))
    assert KEY.unseal("l", read_sealed(path)) == b"v2"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["vault.sealed"]  # no temporary files left behind
