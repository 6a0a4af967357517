"""EVM addresses: one parse, one EIP-55 checksum, one comparison (pure).

An address is 20 bytes. On the wire and in configuration it travels as ``0x`` and
40 hex digits in any case; the EIP-55 mixed case is presentation (a typo check for
humans), never identity. So:

* :func:`is_address` accepts ``0x`` + 40 hex digits in any case;
* :func:`address_bytes` gives the 20 bytes, which are what is signed and compared
  on-chain;
* :func:`to_checksum` gives the EIP-55 form, for everything a402 shows or sends;
* :func:`address_key` is the one form addresses are compared, keyed and stored
  by (lowercase), and :func:`same_address` compares two addresses by their bytes.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, TypeGuard

from a402.evm.keccak import keccak256

#: The size of an address in bytes.
ADDRESS_SIZE: Final = 20


def is_address(value: object) -> TypeGuard[str]:
    """0x + 40 hex digits, any case: the checksum is presentation, the bytes are the identity."""
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        return False
    try:
        bytes.fromhex(value[2:])
    except ValueError:
        return False
    return True


def address_bytes(address: str | bytes) -> bytes:
    """20 raw bytes from a hex address (``0x``/``0X`` prefix optional) or from bytes.

    :class:`ValueError` for anything else. The checksum case is ignored: the bytes
    are what is signed.
    """
    if isinstance(address, str):
        text = address[2:] if address[:2] in ("0x", "0X") else address
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"not a hex address: {address!r:.60}") from None
    else:
        raw = bytes(address)
    if len(raw) != ADDRESS_SIZE:
        raise ValueError("an address is 20 bytes")
    return raw


def to_checksum(address: bytes | str) -> str:
    """EIP-55 form of 20 bytes or of a ``0x`` address, with our fast keccak (eth_utils'
    version validates its input at ~100 µs a call, ten times the work).

    A string must pass :func:`is_address`; :class:`ValueError` otherwise.
    """
    if isinstance(address, str) and not is_address(address):
        raise ValueError(f"not an EVM address: {address!r:.60}")
    return _eip55(address_bytes(address).hex())


@lru_cache(maxsize=1 << 16)
def _eip55(hex_addr: str) -> str:
    """Cached per address: an indexer page or a vault's clients repeat the same few."""
    digest = keccak256(hex_addr.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if c > "9" and digest[i] >= "8" else c for i, c in enumerate(hex_addr)
    )


def address_key(address: str) -> str:
    """The form addresses are compared, keyed and stored by: lowercase.

    Exactly ``str.lower`` (so any text keeps the meaning ``.lower()`` gave it); named
    so that a lowered address reads as one, not as case folding of some text.
    """
    return address.lower()


def same_address(a: str, b: str) -> bool:
    """Both are addresses (:func:`is_address`) and name the same 20 bytes, in any case."""
    return is_address(a) and is_address(b) and a.lower() == b.lower()
