"""A provider host's channel records as the store hands them back: the host writes these
bytes and may alter them, so :meth:`Channels._restore` takes only what :meth:`persist`
could have written (this format or the JSON one of earlier code) and refuses anything
else with a ``ValueError`` that says why, before the enclave is asked to restore (the
sealed export inside is the enclave's to check). A record it took must be one the host can
write again: a closing transaction the binary format cannot hold would make every later
persist of the channel fail, and with it every answer on the channel."""

from __future__ import annotations

import json
from typing import Any

import pytest

from a402.provider.a402_channels import Channels

SEALED = b"A4S\x02" + bytes(60)  # (never opened: every record here is refused first)
CLOSE_TX = "0x" + "ab" * 32


def _legacy(**changes: Any) -> bytes:
    record = {"format": "a402/provider-channel-record/v2", "sealed": SEALED.hex(),
              "closingOnChain": False, "forceCloseDue": True, "onchainClosed": False,
              "closeTx": CLOSE_TX}
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def _binary(flags: int, tx: bytes = CLOSE_TX.encode(), size: int | None = None) -> bytes:
    return b"A4PR\x01" + bytes((flags, len(tx) if size is None else size)) + tx + SEALED


@pytest.mark.parametrize("record", [
    pytest.param(_binary(8), id="binary: a flag no code writes"),
    pytest.param(_binary(0x81), id="binary: an unknown high flag with a known one"),
    pytest.param(_binary(1, b"0x\xff"), id="binary: a closing tx not ASCII"),
    pytest.param(_binary(1, size=200), id="binary: a closing tx longer than the record"),
    pytest.param(b"A4PR\x01\x01", id="binary: cut short in the header"),
    pytest.param(_legacy(closeTx=...), id="json: no closeTx"),
    pytest.param(_legacy(onchainClosed=...), id="json: no onchainClosed"),
    pytest.param(_legacy(closeTx=7), id="json: a closing tx that is a number"),
    pytest.param(_legacy(closeTx="0x" + "ab" * 200), id="json: a closing tx too long to rewrite"),
    pytest.param(_legacy(closeTx="0x\u00e9"), id="json: a closing tx not ASCII"),
    pytest.param(_legacy(closingOnChain="false"), id="json: a flag that is a string"),
    pytest.param(_legacy(forceCloseDue=1), id="json: a flag that is a number"),
    pytest.param(_legacy(sealed=12), id="json: a sealed export that is not hex"),
    pytest.param(b"{not json", id="json: not JSON"),
    pytest.param(b"[1, 2]", id="json: not an object"),
    pytest.param(b'{"format": ' + b"[" * 100_000, id="json: nested too deep"),
])
def test_a_host_altered_channel_record_is_refused_with_a_clear_error(record: bytes) -> None:
    channels = Channels(provider_enclave=None, store=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="provider channel record"):
        channels._restore(b"\x01" * 32, record)
