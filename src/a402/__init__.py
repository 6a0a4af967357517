"""a402: agents paying for services over HTTP, x402-compatible, with payments bound to execution.

The public API lives at the package roots, each listing it in ``__all__``:

- :mod:`a402.client`: paying (``paying_client``, ``X402Auth``, ``Wallet``, ``Budget``,
  ``PaymentRefused``; through a vault, ``vault_paying_client``, ``VaultClient``);
- :mod:`a402.provider`: charging (``PaymentMiddleware``, ``TokenInfo``,
  ``create_gateway``, ``A402Config``);
- :mod:`a402.facilitator`: settling (``Facilitator``, ``create_app``, ``FacilitatorClient``);
- :mod:`a402.vault`: the Liquidity Vault (``VaultService``, ``VaultConfig``, ``create_app``);
- :mod:`a402.agents`: paid A2A agents (``PaidAgent``, ``PayingAgentClient``, ``discover``).

This root re-exports none of them: every ``a402.*`` module imports this package
first, so anything imported here would be imported by every layer, against the
layer order (``lint-imports``).
"""

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

__all__ = ["__version__"]

#: The recursion limit a402's processes keep. py_ecc (imported by web3 and eth-account)
#: raises the interpreter's limit to 100,000 when it is imported; with that limit,
#: ``json.loads`` of a body nested 90,000 deep overflows the C stack and the whole process
#: dies of a segmentation fault instead of raising ``RecursionError``: one hostile body (or
#: one hostile upstream's answer) would kill a vault, a facilitator or a paying agent
#: wherever a parser is reached before a402's own depth checks (SDKs, ``response.json()``).
#: 12,288 is py-evm's own need (1,024 nested calls) and leaves the C stack ample room.
RECURSION_LIMIT = 12_288


def _cap_recursion() -> None:
    if sys.getrecursionlimit() > RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)


class _CapAfterPyEcc(importlib.abc.MetaPathFinder):
    """Lower the limit again right after py_ecc's import raised it, whenever (and by
    whichever library) py_ecc is first imported."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "py_ecc":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            try:
                execute(module)
            finally:
                _cap_recursion()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_cap_recursion()
if not any(isinstance(finder, _CapAfterPyEcc) for finder in sys.meta_path):
    sys.meta_path.insert(0, _CapAfterPyEcc())
