"""The ``a402 demo`` walkthrough, one module per act, each in one process on an embedded chain.

- :mod:`a402.demos.exact`: x402 ``exact`` payments through a facilitator (and the driver
  of the whole demo, :func:`a402.demos.exact.run_demo`);
- :mod:`a402.demos.channels`: the same service paid through a vault's Atomic Service Channels;
- :mod:`a402.demos.agents`: paid A2A agents found through on-chain AgentCards;
- :mod:`a402.demos.mandates`: an owner's mandate bounds the agent (a 100x 402 and a
  revoked mandate are refused);
- :mod:`a402.demos.common`: what the exact and channels acts share (the paid weather API,
  its price, paying it with ``exact``).

The top layer with the CLI: it may import every other package, and none imports it.
"""
