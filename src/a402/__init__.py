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

__version__ = "0.1.0"

__all__ = ["__version__"]
