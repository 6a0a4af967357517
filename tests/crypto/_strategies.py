"""Hypothesis strategies shared by the crypto tests."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st

from a402.crypto._secp import N, b32

#: Two shared cores: moderate example counts, no per-example deadline.
SETTINGS = settings(max_examples=60, deadline=None)

scalars = st.integers(min_value=1, max_value=N - 1)
secrets32 = scalars.map(b32)
messages32 = st.binary(min_size=32, max_size=32)
aux = st.binary(min_size=32, max_size=32)
