"""Atomic Service Channels on Bitcoin: Taproot outputs, their spends, the adaptor exchange.

* :mod:`.scripts` — the channel's and the vault deposit's P2TR outputs (leaves, control blocks);
* :mod:`.transactions` — unsigned spends, BIP-341 sighashes, witnesses, sizes (python-bitcointx);
* :mod:`.signing` — BIP-340 signatures and key-path tweaks with the project's Schnorr code;
* :mod:`.validate` — a UTXO ledger that validates spends without a node (buidl's interpreter,
  BIP-68, amounts, cross-library serialisation);
* :mod:`.channel` — the channel's parameters and every closing transaction;
* :mod:`.exchange` — the A402 exchange: the ASC state machine (:mod:`a402.asc.machine`) over a
  BIP-341 settlement (the sighash as ``m``, BIP-340 adaptor signatures, no ACK), the
  provider's close, the vault's extraction of ``t``, the watchtower, the MuSig2 close;
* :mod:`.psbt` — a channel spend as a PSBT (BIP-174/371, embit) between its signers;
* :mod:`.costs` — every lifecycle run and sized (the demo and `bench/bitcoin.py`).
"""
