"""python-bitcointx runs on coincurve's libsecp256k1 (no system library needed).

bitcointx loads libsecp256k1 through ctypes; coincurve's compiled extension exports the same
``secp256k1_*`` symbols (schnorrsig and extrakeys included), so bitcointx is pointed at it
before anything in this package touches a key. Imported by every module here.
"""

from __future__ import annotations

import importlib.util

import bitcointx

_spec = importlib.util.find_spec("coincurve._libsecp256k1")
if _spec is None or _spec.origin is None:  # pragma: no cover - coincurve is a dependency
    raise ImportError("coincurve's libsecp256k1 extension is missing")
bitcointx.set_custom_secp256k1_path(_spec.origin)
