"""Opening a mandate file for a payer: the document, its chain, its guard (``a402 pay
--mandate`` and ``a402 mandate``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from a402.chain.locate import ChainNotFound, connect_checked, load_manifest
from a402.mandate.document import MandateError, SignedMandate, load_signed

DEFAULT_SPEND_DB: Final = "sqlite:///.a402/{chain_id}/mandates.db"
"""Where spending under mandates is recorded unless ``--spend-db`` says otherwise: a
file that outlives every ``a402 pay``, so a budget spans invocations, in the folder of
the chain the mandate's registry is on (``{chain_id}``), so two chains' spending never
mixes."""
LEGACY_SPEND_DB: Final = "sqlite:///.a402/mandates.db"
"""Where the default used to be (one file for every chain). If it exists and the
per-chain file does not, it is still used, with a warning: moving the default must not
make a budget start again from zero."""


def spend_db_for(url: str, chain_id: int, *, warn: Any = None) -> str:
    """The spend store URL for a mandate on ``chain_id``: ``{chain_id}`` filled in and the
    folder made (:func:`a402.settings.chain_data_url`); the legacy file if only it exists."""
    from a402.settings import chain_data_url

    expanded = chain_data_url(url, chain_id, legacy=LEGACY_SPEND_DB
                              if url == DEFAULT_SPEND_DB else None, warn=warn)
    if expanded.startswith("sqlite:///"):
        Path(expanded[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return expanded


def spend_dbs_found(url: str) -> list[str]:
    """The spend stores ``url`` names for a command that has no mandate to say the chain
    (``a402 audit``, ``a402 mandate list``): with ``{chain_id}`` in it, every such SQLite
    file that exists (one per chain), and the legacy file if it exists; else ``url``."""
    prefix = "sqlite:///"
    if "{chain_id}" not in url or not url.startswith(prefix):
        return [url]
    pattern = url[len(prefix):].replace("{chain_id}", "*")
    base = Path(pattern)
    found = sorted(base.parent.parent.glob(f"{base.parent.name}/{base.name}"))
    urls = [prefix + str(p) for p in found]
    if url == DEFAULT_SPEND_DB and Path(LEGACY_SPEND_DB[len(prefix):]).exists():
        urls.append(LEGACY_SPEND_DB)
    return urls


class UsageError(Exception):
    """A bad mandate file or argument: the message says which."""


def read_mandate(path: str, *, registry: str | None = None) -> SignedMandate:
    """An a402 mandate (EIP-712 JSON) or an AP2 open payment mandate (SD-JWT, see
    :mod:`a402.mandate.ap2`; ``registry`` if it names no ``a402_registry``)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read mandate {path}: {e.strerror or e}") from None
    try:
        from a402.mandate.ap2 import load_sd_jwt, looks_like_sd_jwt

        if looks_like_sd_jwt(text):
            return load_sd_jwt(text, registry=registry)
        return load_signed(text)
    except MandateError as e:
        raise UsageError(f"mandate {path} refused ({e.reason}): {e.message}") from None


def manifest_or_none(path: str) -> Any:
    if not Path(path).exists():
        return None
    try:
        return load_manifest(path)
    except ChainNotFound as e:
        raise UsageError(str(e)) from None


def mandate_chain(signed: SignedMandate, rpc: str | None, manifest_path: str) -> Any:
    """A connected chain for the mandate's registry: ``rpc``, else the manifest's rpcUrl
    when the manifest is for the mandate's chain. Raises ChainNotFound."""
    manifest = manifest_or_none(manifest_path)
    url = rpc
    if url is None and manifest is not None and manifest.chain_id == signed.domain.chain_id:
        url = manifest.rpc_url
    if not url:
        raise ChainNotFound(f"no RPC URL for chain {signed.domain.chain_id}, where the "
                            "mandate's registry is: give --mandate-rpc / --rpc")
    chain = connect_checked(url, None)
    if chain.chain_id != signed.domain.chain_id:
        raise ChainNotFound(f"{url} is chain {chain.chain_id}; the mandate's registry is on "
                            f"chain {signed.domain.chain_id}")
    return chain


def open_guard(path: str, agent: str, *, spend_db: str, rpc: str | None,
               manifest_path: str, confirmation: str | None = None) -> Any:
    """The :class:`MandateGuard` ``a402 pay --mandate`` pays under. UsageError for a bad
    file or a mandate for another key; ChainNotFound when its registry cannot be read
    (a mandate whose revocation cannot be checked does not pay)."""
    from a402.mandate.guard import MandateGuard
    from a402.mandate.policy import MandateRefused
    from a402.mandate.registry import RevocationCheck, RevocationUnknown
    from a402.mandate.spend import SpendStore

    signed = read_mandate(path)
    chain = mandate_chain(signed, rpc, manifest_path)
    try:
        revocation = RevocationCheck.for_mandate(chain, signed)
    except RevocationUnknown as e:
        raise ChainNotFound(str(e)) from None
    try:
        spend_db = spend_db_for(spend_db, signed.domain.chain_id, warn=_warn)
        store = SpendStore(spend_db)
    except Exception as e:  # a bad URL, an unreachable database, a missing driver
        raise UsageError(f"cannot open the spend store {spend_db}: {type(e).__name__}: {e}"
                         ) from None
    try:
        confirm = None
        if confirmation is not None:
            owner_says = read_confirmation(confirmation)
            confirm = lambda _payment: owner_says  # noqa: E731 - decide checks its terms
        return MandateGuard(signed, agent=agent, store=store, revocation=revocation,
                            confirm=confirm)
    except MandateRefused as e:
        store.close()
        raise UsageError(f"mandate {path} refused ({e.reason}): {e.detail}") from None


def _warn(message: str) -> None:
    import sys

    print(f"a402: {message}", file=sys.stderr)


def read_confirmation(path: str) -> Any:
    from a402.mandate.document import Confirmation

    try:
        return Confirmation.from_json(json.loads(Path(path).read_text()))
    except OSError as e:
        raise UsageError(f"cannot read confirmation {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        reason = getattr(e, "reason", "mandate_invalid")
        raise UsageError(f"confirmation {path} refused ({reason}): {e}") from None
