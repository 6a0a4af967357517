"""Sealed persistence: round trip, binding to label and measurement, tampering, files."""

from __future__ import annotations

import os
import signal
import stat

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from a402.tee import SealingError, derive_sealing_key, sealing
from a402.tee.sealing import HEADER, NONCE_SIZE, SALT_SIZE
from a402.tee.storage import read_sealed, write_sealed

from .conftest import PROVIDER_CODE, VAULT_CODE

SECRET = b"s" * 32
KEY = derive_sealing_key(SECRET, VAULT_CODE, "state")


def test_round_trip_and_fresh_randomness():
    a, b = KEY.seal("channel/1", b"state"), KEY.seal("channel/1", b"state")
    assert a != b  # a fresh nonce per blob
    assert KEY.unseal("channel/1", a) == KEY.unseal("channel/1", b) == b"state"
    assert len(a) == len(HEADER) + SALT_SIZE + NONCE_SIZE + len(b"state") + 16


def _sealed_v1(key: sealing.SealingKey, secret: bytes, label: str, plaintext: bytes) -> bytes:
    """A blob as version 1 sealed it (a key per blob), built here from its specification."""
    salt = os.urandom(SALT_SIZE)
    sealing_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"A402/seal/v1",
                       info=b"A402/seal/v1/key" + len(b"state").to_bytes(2, "big") + b"state"
                       + len(VAULT_CODE).to_bytes(2, "big") + VAULT_CODE).derive(secret)
    blob_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                    info=b"A402/seal/v1/blob").derive(sealing_key)
    header = b"A4S\x01"
    ad = header + len(VAULT_CODE).to_bytes(2, "big") + VAULT_CODE \
        + len(label).to_bytes(2, "big") + label.encode()
    return header + salt + ChaCha20Poly1305(blob_key).encrypt(bytes(12), plaintext, ad)


def test_a_blob_sealed_by_version_1_still_opens_and_only_under_its_label():
    """Stores written before version 2 restore: their blobs open; their next seal is v2."""
    old = _sealed_v1(KEY, SECRET, "channel/1", b"old state")
    assert KEY.unseal("channel/1", old) == b"old state"
    with pytest.raises(SealingError) as info:
        KEY.unseal("channel/2", old)
    assert info.value.reason == "open_failed"
    # Nor can a host relabel a v1 blob as v2 (or the reverse): the version is in the AD.
    with pytest.raises(SealingError):
        KEY.unseal("channel/1", b"A4S\x02" + old[4:])
    fresh = KEY.seal("channel/1", b"state")
    with pytest.raises(SealingError):
        KEY.unseal("channel/1", b"A4S\x01" + fresh[4:])


def test_nonces_never_repeat_and_a_forked_child_draws_its_own_epoch(monkeypatch):
    """Within an epoch the nonce is a counter; a child after ``fork`` (here: the generation
    bump that ``os.register_at_fork`` makes in it) seals under a new epoch key."""
    key = derive_sealing_key(SECRET, VAULT_CODE, "state")
    blobs = [key.seal("l", b"x") for _ in range(50)]
    salts = {b[4:4 + SALT_SIZE] for b in blobs}
    nonces = [b[4 + SALT_SIZE:4 + SALT_SIZE + NONCE_SIZE] for b in blobs]
    assert len(salts) == 1 and len(set(nonces)) == 50
    monkeypatch.setattr(sealing, "_generation", sealing._generation + 1)
    child = key.seal("l", b"x")
    assert child[4:4 + SALT_SIZE] not in salts
    assert all(key.unseal("l", b) == b"x" for b in [*blobs, child])
    monkeypatch.setattr(sealing, "EPOCH_BLOBS", 3)  # an epoch used up: a new one
    again = [key.seal("l", b"x") for _ in range(6)]
    pairs = {b[4:4 + SALT_SIZE + NONCE_SIZE] for b in again}  # (epoch salt, nonce)
    assert len(pairs) == 6 and len({p[:SALT_SIZE] for p in pairs}) >= 3
    assert all(int.from_bytes(p[SALT_SIZE:], "big") < 3 for p in pairs)


def test_wrong_label_fails():
    with pytest.raises(SealingError) as info:
        KEY.unseal("channel/2", KEY.seal("channel/1", b"state"))
    assert info.value.reason == "open_failed"


def test_each_label_binds_its_blobs_however_many_labels_were_sealed_under(monkeypatch):
    # The seal keeps each label's associated data made (a label per channel): past the
    # limit it starts again, and a blob still opens under its own label alone.
    monkeypatch.setattr(sealing, "_LABELS_KEPT", 3)
    key = derive_sealing_key(SECRET, VAULT_CODE, "state")
    blobs = {f"channel/{n}": key.seal(f"channel/{n}", b"%d" % n) for n in range(8)}
    blobs.update({label: key.seal(label, label.encode()) for label in list(blobs)[:2]})
    for label, blob in blobs.items():
        assert key.unseal(label, blob) in (label.encode(), label.split("/")[1].encode())
        with pytest.raises(SealingError, match="open_failed"):
            key.unseal(label + "0", blob)
    with pytest.raises(SealingError, match="bad_label"):  # (checked when first made)
        key.seal("bad\nlabel", b"x")
    with pytest.raises(SealingError, match="bad_label"):
        key.seal("bad\nlabel", b"x")


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
        KEY.unseal("l", b"A4S\x03" + blob[4:])
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


def test_a_blob_handed_back_as_anything_but_bytes_is_refused_not_allocated():
    """A host can store an integer or text where a blob belongs (SQLite keeps a value's own
    type); ``bytes(n)`` of an integer would allocate ``n`` bytes. Refused as malformed."""
    for hostile in (10**13, "A4S\x02" + "x" * 60, None, 3.5, [1, 2]):
        with pytest.raises(SealingError) as info:
            KEY.unseal("l", hostile)  # type: ignore[arg-type]
        assert info.value.reason == "malformed"
    blob = KEY.seal("l", b"x")
    assert KEY.unseal("l", memoryview(blob)) == KEY.unseal("l", bytearray(blob)) == b"x"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_held_the_key_seals_under_its_own_epoch():
    """A real ``fork`` while the key's lock is held (by another thread, here the test
    itself, mid-epoch-draw): the child, which has no such thread, still seals (a new epoch,
    not a wait for ever on a lock nobody will release), and under a salt the parent
    never uses, so no (key, nonce) pair is shared with the parent."""
    key = derive_sealing_key(SECRET, VAULT_CODE, "state")
    parent = key.seal("l", b"parent")
    read, write = os.pipe()
    with key._lock:
        pid = os.fork()
        if pid == 0:  # the child: answer through the pipe, never return into pytest
            try:
                signal.alarm(20)  # a deadlocked child dies instead of hanging the run
                os.write(write, key.seal("l", b"child"))
            finally:
                os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    child = b"".join(chunks)
    assert os.waitstatus_to_exitcode(status) == 0 and child, "the forked child did not seal"
    assert child[4:4 + SALT_SIZE] != parent[4:4 + SALT_SIZE]
    assert key.unseal("l", child) == b"child"
    again = key.seal("l", b"parent")  # the parent goes on under its own epoch
    assert again[4:4 + SALT_SIZE] == parent[4:4 + SALT_SIZE]
