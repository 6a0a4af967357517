"""MuSig2 (BIP-327) through libsecp256k1's ``musig`` module, as coincurve builds it.

coincurve ships libsecp256k1 with the upstream ``musig`` module compiled in (its extension
exports ``secp256k1_musig_*``) but has no Python API for it, and no maintained Python binding
installs here. This module is that binding, over ctypes, and nothing more: key aggregation,
the BIP-341 x-only tweak, nonce generation and aggregation, partial signing and verification,
and aggregation into one BIP-340 signature are all libsecp256k1's. The opaque structures are
byte buffers of the sizes the library's header fixes.

Nonce safety (BIP-327): a :class:`SecretNonce` is used once: libsecp256k1 zeroes it when it
signs, and it is never serialised or stored (a process that dies between the two rounds starts
again with fresh nonces). ``nonce_gen`` is given 32 fresh random bytes, the signer's secret key,
the message and the key-aggregation cache, so a failed random source still does not repeat a
nonce for another message or key set.
"""

from __future__ import annotations

import ctypes
import importlib.util
import secrets
from dataclasses import dataclass

from a402.crypto import BIP340, SecretKey

from .signing import tweak as tap_tweak

_KEYAGG_CACHE = 197
_SECNONCE = 132
_PUBNONCE = 132
_AGGNONCE = 132
_SESSION = 133
_PARTIAL_SIG = 36
_PUBKEY = 64
_XONLY = 64
_KEYPAIR = 96
_CONTEXT_NONE = 1
_COMPRESSED = 258


class MusigError(ValueError):
    """libsecp256k1 refused an input (a malformed or invalid key, nonce or partial signature)."""


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
_ON_ILLEGAL = _CALLBACK(lambda message, data: None)


def _load() -> tuple[ctypes.CDLL, int]:
    spec = importlib.util.find_spec("coincurve._libsecp256k1")
    if spec is None or spec.origin is None:  # pragma: no cover - coincurve is a dependency
        raise ImportError("coincurve's libsecp256k1 extension is missing")
    lib = ctypes.CDLL(spec.origin)
    if not hasattr(lib, "secp256k1_musig_pubkey_agg"):  # pragma: no cover
        raise ImportError("this libsecp256k1 has no musig module")
    lib.secp256k1_context_create.restype = ctypes.c_void_p
    lib.secp256k1_context_create.argtypes = [ctypes.c_uint]
    ctx = lib.secp256k1_context_create(_CONTEXT_NONE)
    # An illegal argument (a consumed secret nonce, say) makes the call return 0 instead of
    # aborting the process, libsecp256k1's default.
    lib.secp256k1_context_set_illegal_callback.argtypes = [ctypes.c_void_p, _CALLBACK,
                                                           ctypes.c_void_p]
    lib.secp256k1_context_set_illegal_callback(ctx, _ON_ILLEGAL, None)
    lib.secp256k1_context_randomize.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    if not lib.secp256k1_context_randomize(ctx, secrets.token_bytes(32)):  # pragma: no cover
        raise ImportError("libsecp256k1 context randomisation failed")
    p, buf = ctypes.c_void_p, ctypes.c_char_p
    arrays = ctypes.POINTER(ctypes.c_char_p)
    sigs: dict[str, list[object]] = {
        "secp256k1_ec_pubkey_parse": [p, buf, buf, ctypes.c_size_t],
        "secp256k1_ec_pubkey_serialize": [p, buf, ctypes.POINTER(ctypes.c_size_t), buf,
                                          ctypes.c_uint],
        "secp256k1_xonly_pubkey_serialize": [p, buf, buf],
        "secp256k1_keypair_create": [p, buf, buf],
        "secp256k1_musig_pubkey_agg": [p, buf, buf, arrays, ctypes.c_size_t],
        "secp256k1_musig_pubkey_get": [p, buf, buf],
        "secp256k1_musig_pubkey_xonly_tweak_add": [p, buf, buf, buf],
        "secp256k1_musig_pubkey_ec_tweak_add": [p, buf, buf, buf],
        "secp256k1_musig_nonce_gen": [p, buf, buf, buf, buf, buf, buf, buf, buf],
        "secp256k1_musig_pubnonce_parse": [p, buf, buf],
        "secp256k1_musig_pubnonce_serialize": [p, buf, buf],
        "secp256k1_musig_aggnonce_parse": [p, buf, buf],
        "secp256k1_musig_aggnonce_serialize": [p, buf, buf],
        "secp256k1_musig_nonce_agg": [p, buf, arrays, ctypes.c_size_t],
        "secp256k1_musig_nonce_process": [p, buf, buf, buf, buf],
        "secp256k1_musig_partial_sign": [p, buf, buf, buf, buf, buf],
        "secp256k1_musig_partial_sig_verify": [p, buf, buf, buf, buf, buf],
        "secp256k1_musig_partial_sig_parse": [p, buf, buf],
        "secp256k1_musig_partial_sig_serialize": [p, buf, buf],
        "secp256k1_musig_partial_sig_agg": [p, buf, buf, arrays, ctypes.c_size_t],
    }
    missing = [name for name in sigs if not hasattr(lib, name)]
    if missing:  # pragma: no cover - coincurve's build exports them all
        raise ImportError(f"this libsecp256k1 lacks {', '.join(missing)}")
    for name, argtypes in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return lib, ctx


_LIB, _CTX = _load()


def _sized(data: bytes, size: int, what: str) -> bytes:
    """``data`` if it has exactly the length libsecp256k1 will read from its pointer.

    The library reads fixed lengths through ``const unsigned char *`` (no length argument);
    a shorter buffer would be read past its end, so every length is checked first.
    """
    if not isinstance(data, bytes) or len(data) != size:
        raise MusigError(f"{what} must be {size} bytes")
    return data


def _call(name: str, *args: object) -> None:
    if getattr(_LIB, name)(_CTX, *args) != 1:
        raise MusigError(f"{name} refused its input")


def _array(buffers: list[ctypes.Array[ctypes.c_char]]) -> ctypes.Array[ctypes.c_char_p]:
    return (ctypes.c_char_p * len(buffers))(*[ctypes.cast(b, ctypes.c_char_p) for b in buffers])


def _pubkey(compressed: bytes) -> ctypes.Array[ctypes.c_char]:
    out = ctypes.create_string_buffer(_PUBKEY)
    _call("secp256k1_ec_pubkey_parse", out, compressed, len(compressed))
    return out


def _serialize_pubkey(pubkey: ctypes.Array[ctypes.c_char]) -> bytes:
    out = ctypes.create_string_buffer(33)
    size = ctypes.c_size_t(33)
    _call("secp256k1_ec_pubkey_serialize", out, ctypes.byref(size), pubkey, _COMPRESSED)
    return out.raw


@dataclass
class KeyAgg:
    """An aggregated key and its cache (with any tweaks applied, in order)."""

    cache: ctypes.Array[ctypes.c_char]
    pubkeys: list[bytes]

    @classmethod
    def of(cls, pubkeys: list[bytes]) -> KeyAgg:
        """KeyAgg of 33-byte compressed keys, in the order given (BIP-327 is order-sensitive)."""
        parsed = [_pubkey(k) for k in pubkeys]
        cache = ctypes.create_string_buffer(_KEYAGG_CACHE)
        _call("secp256k1_musig_pubkey_agg", None, cache, _array(parsed), len(parsed))
        return cls(cache, list(pubkeys))

    def public_key(self) -> bytes:
        """The (tweaked) aggregate key, 33-byte compressed."""
        out = ctypes.create_string_buffer(_PUBKEY)
        _call("secp256k1_musig_pubkey_get", out, self.cache)
        return _serialize_pubkey(out)

    def xonly(self) -> bytes:
        return self.public_key()[1:]

    def tweak(self, tweak32: bytes, *, xonly: bool) -> None:
        """Apply a BIP-327 tweak (x-only as BIP-341 does, or plain)."""
        name = "secp256k1_musig_pubkey_xonly_tweak_add" if xonly else (
            "secp256k1_musig_pubkey_ec_tweak_add")
        _call(name, None, self.cache, _sized(tweak32, 32, "a tweak"))

    def taproot_tweak(self, merkle_root: bytes) -> None:
        """BIP-341's tweak of the aggregate as internal key: the output key of the P2TR."""
        self.tweak(tap_tweak(self.xonly(), merkle_root).to_bytes(32, "big"), xonly=True)


@dataclass
class SecretNonce:
    """One signer's secret nonce: used once, never stored (libsecp256k1 zeroes it on use)."""

    buffer: ctypes.Array[ctypes.c_char]
    used: bool = False


def nonce_gen(key: SecretKey, agg: KeyAgg, message: bytes) -> tuple[SecretNonce, bytes]:
    """A fresh nonce pair for signing ``message`` under ``agg``: (secret, 66-byte public)."""
    secnonce = ctypes.create_string_buffer(_SECNONCE)
    pubnonce = ctypes.create_string_buffer(_PUBNONCE)
    secrand = ctypes.create_string_buffer(secrets.token_bytes(32), 32)
    pubkey = _pubkey(b"\x02" + key.public_key)
    _call("secp256k1_musig_nonce_gen", secnonce, pubnonce, secrand, key.to_bytes(), pubkey,
          _sized(message, 32, "the message"), agg.cache, None)
    out = ctypes.create_string_buffer(66)
    _call("secp256k1_musig_pubnonce_serialize", out, pubnonce)
    return SecretNonce(secnonce), out.raw


_SERIALISED = {"pubnonce": 66, "aggnonce": 66, "partial_sig": 32}


def _parse(kind: str, data: bytes, size: int) -> ctypes.Array[ctypes.c_char]:
    out = ctypes.create_string_buffer(size)
    _call(f"secp256k1_musig_{kind}_parse", out, _sized(data, _SERIALISED[kind], f"a {kind}"))
    return out


def check_pubnonce(data: bytes) -> None:
    """Refuse (:class:`MusigError`) anything but a 66-byte public nonce of two valid points."""
    _parse("pubnonce", data, _PUBNONCE)


def check_partial_signature(data: bytes) -> None:
    """Refuse (:class:`MusigError`) anything but a 32-byte partial signature below ``n``."""
    _parse("partial_sig", data, _PARTIAL_SIG)


def nonce_agg(pubnonces: list[bytes]) -> bytes:
    """The 66-byte aggregate of the signers' public nonces."""
    parsed = [_parse("pubnonce", n, _PUBNONCE) for n in pubnonces]
    agg = ctypes.create_string_buffer(_AGGNONCE)
    _call("secp256k1_musig_nonce_agg", agg, _array(parsed), len(parsed))
    out = ctypes.create_string_buffer(66)
    _call("secp256k1_musig_aggnonce_serialize", out, agg)
    return out.raw


def _session(aggnonce: bytes, message: bytes, agg: KeyAgg) -> ctypes.Array[ctypes.c_char]:
    session = ctypes.create_string_buffer(_SESSION)
    _call("secp256k1_musig_nonce_process", session, _parse("aggnonce", aggnonce, _AGGNONCE),
          _sized(message, 32, "the message"), agg.cache)
    return session


def partial_sign(
    key: SecretKey, secnonce: SecretNonce, aggnonce: bytes, message: bytes, agg: KeyAgg
) -> bytes:
    """This signer's 32-byte partial signature (its secret nonce is consumed)."""
    if secnonce.used:
        raise MusigError("this secret nonce has already signed")
    secnonce.used = True
    keypair = ctypes.create_string_buffer(_KEYPAIR)
    _call("secp256k1_keypair_create", keypair, key.to_bytes())
    psig = ctypes.create_string_buffer(_PARTIAL_SIG)
    _call("secp256k1_musig_partial_sign", psig, secnonce.buffer, keypair, agg.cache,
          _session(aggnonce, message, agg))
    out = ctypes.create_string_buffer(32)
    _call("secp256k1_musig_partial_sig_serialize", out, psig)
    return out.raw


def partial_verify(
    psig: bytes, pubnonce: bytes, pubkey: bytes, aggnonce: bytes, message: bytes, agg: KeyAgg
) -> bool:
    """Whether ``psig`` is the signer ``pubkey``'s (33-byte) valid partial signature."""
    try:
        parsed = _parse("partial_sig", psig, _PARTIAL_SIG)
        _call("secp256k1_musig_partial_sig_verify", parsed,
              _parse("pubnonce", pubnonce, _PUBNONCE), _pubkey(pubkey), agg.cache,
              _session(aggnonce, message, agg))
    except MusigError:
        return False
    return True


def partial_sig_agg(psigs: list[bytes], aggnonce: bytes, message: bytes, agg: KeyAgg) -> bytes:
    """The 64-byte BIP-340 signature by the (tweaked) aggregate key."""
    parsed = [_parse("partial_sig", s, _PARTIAL_SIG) for s in psigs]
    out = ctypes.create_string_buffer(64)
    _call("secp256k1_musig_partial_sig_agg", out, _session(aggnonce, message, agg),
          _array(parsed), len(parsed))
    signature = out.raw
    if not BIP340.verify(agg.xonly(), message, signature):  # pragma: no cover - lib guarantees
        raise MusigError("the aggregate signature does not verify")
    return signature
