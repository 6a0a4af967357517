"""Vault mode's invoker (:mod:`a402.vault.mode_invoke`) in small: the sealed provider
endpoint bound to its channel."""

from __future__ import annotations

import logging
import os

import pytest

from a402.vault.mode_invoke import open_endpoint, seal_endpoint

from .accounts_setup import launch


def test_a_provider_endpoint_blob_moved_to_another_channels_row_is_ignored_as_if_absent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The host swaps two channels' sealed endpoint rows (it cannot read or forge them):
    the enclave's seal binds each to its channel id, so under the other channel the blob
    does not open; it is logged and counts as no stored endpoint (never an error that
    could stop a host that starts). Nor does a blob of the unbound format, or garbage."""
    _, enclave = launch()
    first, second = os.urandom(32), os.urandom(32)
    blob = seal_endpoint(enclave, first, "https://provider.example/.well-known/a402")
    assert open_endpoint(enclave, first, blob) == "https://provider.example/.well-known/a402"
    with caplog.at_level(logging.WARNING, logger="a402.vault.mode"):
        assert open_endpoint(enclave, second, blob) is None  # moved to the other's row
        unbound = enclave.seal("a402/vault-mode-endpoint", b"https://elsewhere.example/")
        assert open_endpoint(enclave, first, unbound) is None
        assert open_endpoint(enclave, first, b"not a sealed blob") is None
    assert sum("is ignored" in r.getMessage() for r in caplog.records) == 3
