"""Writing and checking the evidence chain of mandated payments (:mod:`a402.mandate.evidence`).

:func:`exact_payment_record` builds the record of one ``exact`` payment, which
the paying client commits with the payment's reservation before the payload is
sent (:mod:`a402.mandate.guard`), and :func:`exact_outcome` the record of what
came back (``kind`` ``outcome``, naming the payment's record as ``of``), written
later; :func:`exact_record` is both in one (records written before outcomes were
separate). :func:`audit` checks every record offline, in chain order, and says
for each what holds and, for the first broken link, which record broke it:

1. the record's hash is recomputed from its stored text, and the stored hash
   column must equal it, as must the stored mandate column the text's mandate
   (``hash_mismatch``);
2. the text is a record of this format whose ``seq`` is its row's and whose
   ``prev`` is the previous record's stored hash (``chain_broken``: a record
   deleted, inserted or reordered; the stored hash is itself checked by 1);
3. the agent's signature over the hash recovers to the record's ``agent``
   (``bad_record_signature``);
4. the mandate it names is in the spend store, signed by its owner, for this
   agent (``bad_mandate``);
5. for ``exact``, the payment payload's EIP-3009 signature recovers to the agent,
   and the authorization pays the record's payee the record's amount; for ``a402``
   (through a vault), the channel receipt's state is signed by the vault the record
   names and by the payee, in the ASCManager's domain (``bad_payment_signature``);
   an outcome record names an earlier payment record of the same agent, mandate and
   reservation (``outcome_unmatched``).

Then the chain as a whole (:func:`audit_chain`): the signed head names the last
record, signed by its agent (``chain_cut``: records cut off the tail, or the
table emptied), and every reservation the spend store marks signed has a record
naming it (``record_missing``).

A record's text is parsed bounded (:mod:`a402.wire.jsonstrict`: size, depth,
duplicate keys), so a record rewritten as deeply nested JSON is named, not a
crash of the auditor.

No node is asked: a settlement transaction is shown, not looked up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from a402.client.records import receipt_header
from a402.evm.address import address_bytes, address_key
from a402.evm.ecdsa import OPENZEPPELIN, recover_address
from a402.exact.eip3009 import Authorization, authorization_digest, domain_from_requirements
from a402.exact.eip3009 import recover_signer as recover_payment_signer
from a402.exact.upto import SCHEME_UPTO, UptoEvmPayload, upto_digest
from a402.mandate.document import MandateError, SignedMandate
from a402.mandate.evidence import (
    FORMAT,
    GENESIS,
    EvidenceHead,
    EvidenceRow,
    head_hash,
    record_hash,
)
from a402.wire import jsonstrict
from a402.wire.errors import WireError
from a402.wire.headers import decode_header
from a402.wire.networks import evm_chain_id
from a402.wire.x402 import PaymentPayload, parse_payment_payload

HASH_MISMATCH: Final = "hash_mismatch"
CHAIN_BROKEN: Final = "chain_broken"
BAD_RECORD_SIGNATURE: Final = "bad_record_signature"
BAD_MANDATE: Final = "bad_mandate"
BAD_PAYMENT_SIGNATURE: Final = "bad_payment_signature"
MALFORMED: Final = "malformed_record"
CHAIN_CUT: Final = "chain_cut"
RECORD_MISSING: Final = "record_missing"
OUTCOME_UNMATCHED: Final = "outcome_unmatched"
OUTCOME: Final = "outcome"
SENDING: Final = "sending"
"""The status of a payment record: committed before its payload was sent; what came
back is in its outcome record, and a payment with none is shown ``unsettled``."""


def sha256_hex(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


def request_hash(request: httpx.Request) -> str:
    """The request as the agent sent it: method, URL and body (headers left out: the
    payment header is recorded on its own)."""
    return sha256_hex(request.method.encode() + b"\x00" + str(request.url).encode() + b"\x00"
                      + request.content)


def exact_record(*, mandate: str, agent: str, request: httpx.Request, header_value: str,
                 amount: int, payee: str, network: str, asset: str,
                 response: httpx.Response | None, scheme: str = "exact") -> dict[str, Any]:
    """The fields of one ``exact`` payment's record (the payload as sent, decoded);
    ``response`` None: the paid attempt got no answer (it may still settle)."""
    settlement = _settlement_of(response)
    return {
        "mandate": mandate, "agent": agent, "scheme": scheme,
        "request": {"method": request.method, "url": str(request.url),
                    "hash": request_hash(request)},
        "payment": {"payload": decode_header(header_value), "amount": str(amount),
                    "payee": payee, "network": network, "asset": asset},
        "settlement": settlement,
        "status": "no_answer" if response is None else response.status_code,
        "result": None if response is None else sha256_hex(response.content),
    }


def exact_payment_record(*, mandate: str, agent: str, request: httpx.Request,
                         header_value: str, amount: int, payee: str, network: str,
                         asset: str, scheme: str = "exact") -> dict[str, Any]:
    """The record of one ``exact`` (or ``upto``, its signed maximum) payment, before it is
    sent (status ``sending``)."""
    return exact_record(mandate=mandate, agent=agent, request=request,
                        header_value=header_value, amount=amount, payee=payee,
                        network=network, asset=asset, response=None,
                        scheme=scheme) | {"status": SENDING}


def exact_outcome(*, mandate: str, agent: str, response: httpx.Response | None,
                  scheme: str = "exact") -> dict[str, Any]:
    """The outcome of an ``exact`` payment (``kind`` and ``of`` are set by the guard):
    the settlement header, the status, the result's hash; ``response`` None: no answer."""
    return {"mandate": mandate, "agent": agent, "scheme": scheme,
            "settlement": _settlement_of(response),
            "status": "no_answer" if response is None else response.status_code,
            "result": None if response is None else sha256_hex(response.content)}


def _settlement_of(response: httpx.Response | None) -> Any:
    """The decoded settlement header of ``response`` (None: none came)."""
    value = None if response is None else receipt_header(response.headers)
    if not value:
        return None
    try:
        return decode_header(value)
    except WireError:
        return {"malformed": value[:512]}


def vault_record(*, mandate: str, agent: str, method: str, url: str, content: bytes,
                 result: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The fields of one call paid through a vault (``a402``): the payment is the vault's
    account of it, the settlement the channel's state co-signed by the vault's enclave and
    the provider (the receipt), in the ASCManager's domain named here."""
    payment = dict(result.payment)
    return {
        "mandate": mandate, "agent": agent, "scheme": "a402",
        "request": {"method": method.upper(), "url": url,
                    "hash": sha256_hex(method.upper().encode() + b"\x00" + url.encode()
                                       + b"\x00" + content),
                    "idempotencyKey": result.idempotency_key},
        "payment": {"amount": str(payment.get("amount")), "payee": payment.get("provider"),
                    "network": payment.get("network"), "asset": payment.get("asset"),
                    "channelId": payment.get("channelId"),
                    "requestId": payment.get("requestId")},
        "settlement": {"receipt": payment.get("receipt"), "vault": info.get("vault"),
                       "chainId": int(info["chainId"]), "ascManager": info.get("ascManager"),
                       "transaction": payment.get("transaction")},
        "status": result.status, "result": sha256_hex(result.content),
    }


def _check_receipt(record: dict[str, Any]) -> str | None:
    """An ``a402`` record: the receipt's state is signed by the vault it names and by the
    payee, in the named ASCManager's domain."""
    from a402.asc.terms import BalanceState, state_signer
    from a402.crypto import PaymentDomain

    try:
        settlement, payment = record["settlement"], record["payment"]
        receipt = settlement["receipt"]
        domain = PaymentDomain(int(settlement["chainId"]), settlement["ascManager"])
        channel = bytes.fromhex(str(receipt["channelId"])[2:])
        state = BalanceState(int(receipt["version"]), int(receipt["clientBalance"]),
                             int(receipt["providerBalance"]), bool(receipt["isFinal"]))
        vault = state_signer(domain, channel, state,
                             bytes.fromhex(receipt["vaultSignature"][2:]))
        provider = state_signer(domain, channel, state,
                                bytes.fromhex(receipt["providerSignature"][2:]))
    except (KeyError, TypeError, ValueError) as e:
        return f"the channel receipt cannot be read: {e}"
    if vault is None or vault != address_bytes(str(settlement["vault"])):
        return "the receipt is not signed by the vault it names"
    if provider is None or provider != address_bytes(str(payment["payee"])):
        return "the receipt is not signed by the payee"
    if str(receipt["channelId"]).lower() != str(payment.get("channelId", "")).lower():
        return "the receipt is for another channel than the payment"
    return None


def a2a_record(*, mandate: str, agent: str, card_url: str, skill: str | None, text: str,
               payload: PaymentPayload, settlement: dict[str, Any] | None, status: str,
               result: str | None) -> dict[str, Any]:
    """The fields of one paid A2A task's record: the request is the task's text sent to
    the agent at ``card_url`` for ``skill``; the result the task's result text."""
    auth = payload.payload.get("authorization", {})
    return {
        "mandate": mandate, "agent": agent, "scheme": "exact",
        "request": {"method": "A2A", "url": card_url, "skill": skill,
                    "hash": sha256_hex(text.encode())},
        "payment": {"payload": json.loads(payload.model_dump_json(by_alias=True,
                                                                  exclude_none=True)),
                    "amount": str(auth.get("value")), "payee": auth.get("to"),
                    "network": payload.accepted.network, "asset": payload.accepted.asset},
        "settlement": settlement, "status": status,
        "result": None if result is None else sha256_hex(result.encode()),
    }


@dataclass
class AuditLine:
    """One record, as checked: ``problems`` empty when every check held."""

    seq: int
    record: dict[str, Any] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def name(self) -> str:
        return f"record #{self.seq}"


def _check_payment(record: dict[str, Any], agent: str) -> str | None:
    payment = record.get("payment")
    if not isinstance(payment, dict):
        return "no payment in the record"
    try:
        payload = parse_payment_payload(payment["payload"])
        if not isinstance(payload, PaymentPayload):
            return "not an x402 v2 payment payload"
        if record.get("scheme") == SCHEME_UPTO:
            return _check_upto(payload, payment, agent)
        auth = Authorization.model_validate(payload.payload["authorization"])
        digest = authorization_digest(domain_from_requirements(payload.accepted), auth)
        signer = recover_payment_signer(digest, payload.payload["signature"])
    except (WireError, KeyError, TypeError, ValueError) as e:
        return f"the payment payload cannot be read: {e}"
    if signer is None or address_key(signer) != address_key(agent):
        return f"the EIP-3009 signature is {signer}'s, not the agent's"
    if int(auth.value) != int(payment["amount"]) or \
            address_key(auth.to) != address_key(payment["payee"]):
        return "the signed authorization pays another amount or payee than recorded"
    return None


def _check_upto(payload: PaymentPayload, payment: dict[str, Any], agent: str) -> str | None:
    """An ``upto`` record: the Permit2 authorization is the agent's, for the recorded
    payee, and its maximum is the recorded amount (what the mandate counted)."""
    try:
        upto = UptoEvmPayload.from_wire(payload.payload, reason="malformed")
        permit = upto.permit2_authorization
        digest = upto_digest(evm_chain_id(payload.accepted.network), permit)
        signer = recover_address(digest, upto.signature_bytes, policy=OPENZEPPELIN)
    except (WireError, KeyError, TypeError, ValueError) as e:
        return f"the payment payload cannot be read: {e}"
    if signer is None or signer != address_bytes(agent):
        return "the Permit2 signature is not the agent's"
    if int(permit.permitted.amount) != int(payment["amount"]) or \
            address_key(permit.witness.to) != address_key(payment["payee"]):
        return "the signed authorization allows another amount or payee than recorded"
    return None


def audit(rows: Sequence[EvidenceRow], mandates: dict[str, SignedMandate | MandateError]
          ) -> list[AuditLine]:
    """Check ``rows`` (the whole chain, in order) against the spend store's ``mandates``
    (hash → the verified document, or why it failed); one line per record."""
    lines: list[AuditLine] = []
    payments: dict[int, dict[str, Any]] = {}  # seq → an earlier payment record
    prev = GENESIS
    for row in rows:
        line = AuditLine(row.seq)
        lines.append(line)
        digest = record_hash(row.record)
        if "0x" + digest.hex() != row.hash:
            line.problems.append((HASH_MISMATCH, "its stored hash is not its text's"))
        try:
            record = jsonstrict.loads_object(row.record)
            if record.get("format") != FORMAT:
                raise ValueError("not an evidence record")
        except (WireError, ValueError) as e:
            line.problems.append((MALFORMED, str(e)[:120]))
            prev = row.hash
            continue
        line.record = record
        if row.mandate != record.get("mandate"):  # the column rows(mandate) selects by
            line.problems.append((HASH_MISMATCH, "its stored mandate column is not its "
                                                 "text's"))
        if record.get("seq") != row.seq or record.get("prev") != prev:
            line.problems.append((CHAIN_BROKEN, f"it does not follow the record before "
                                                f"(prev {str(record.get('prev'))[:18]}…)"))
        # The next record links to this one's stored hash: an altered text fails here
        # (its hash and signature), not again at the next record.
        prev = row.hash
        agent = str(record.get("agent", ""))
        try:
            signature = bytes.fromhex(row.signature[2:])
            signer = recover_address(digest, signature, policy=OPENZEPPELIN)
        except ValueError:
            signer = None
        if signer is None or not agent or signer != address_bytes(agent):
            line.problems.append((BAD_RECORD_SIGNATURE, "the agent's signature does not "
                                                        "cover this text"))
        mandate = record.get("mandate")
        known = mandates.get(str(mandate))
        if isinstance(known, MandateError) or known is None:
            line.problems.append((BAD_MANDATE, f"mandate {str(mandate)[:18]}… is "
                                  + ("not in the spend store" if known is None
                                     else f"invalid ({known.reason})")))
        elif address_key(known.mandate.agent) != address_key(agent or "0x" + "00" * 20):
            line.problems.append((BAD_MANDATE, "the mandate is for another agent"))
        if record.get("kind") == OUTCOME:
            why = _unmatched(record, payments)
            if why is not None:
                line.problems.append((OUTCOME_UNMATCHED, why))
            continue
        payments[row.seq] = record
        if not agent:
            problem: str | None = "no agent"
        elif record.get("scheme") == "a402":
            problem = _check_receipt(record)
        else:
            problem = _check_payment(record, agent)
        if problem is not None:
            line.problems.append((BAD_PAYMENT_SIGNATURE, problem))
    return lines


def _unmatched(outcome: dict[str, Any], payments: dict[int, dict[str, Any]]) -> str | None:
    """Why an outcome record does not belong to the payment record it names (None: it
    does: an earlier one, of the same agent, mandate and reservation)."""
    of = outcome.get("of")
    payment = payments.get(of) if isinstance(of, int) else None
    if payment is None:
        return f"it names record #{of}, which is not an earlier payment record"
    for key in ("agent", "mandate", "reservation"):
        if str(payment.get(key, "")).lower() != str(outcome.get(key, "")).lower():
            return f"its {key} is not that of record #{of}"
    return None


def outcomes_by_payment(lines: Sequence[AuditLine]) -> dict[int, AuditLine]:
    """Payment record seq → the line of its outcome record (the last, if several)."""
    found: dict[int, AuditLine] = {}
    for line in lines:
        of = line.record.get("of")
        if line.record.get("kind") == OUTCOME and isinstance(of, int):
            found[of] = line
    return found


def _nonce_of(record: dict[str, Any]) -> str | None:
    """The EIP-3009 nonce of an ``exact`` record's payment (lowercase), if it has one."""
    payment = record.get("payment")
    payload = payment.get("payload") if isinstance(payment, dict) else None
    inner = payload.get("payload") if isinstance(payload, dict) else None
    permit = inner.get("permit2Authorization") if isinstance(inner, dict) else None
    if isinstance(permit, dict) and isinstance(permit.get("nonce"), str):
        return f"permit2:{permit['nonce']}"  # the upto payment's ref (a402.client.auth)
    auth = inner.get("authorization") if isinstance(inner, dict) else None
    nonce = auth.get("nonce") if isinstance(auth, dict) else None
    return nonce.lower() if isinstance(nonce, str) else None


def audit_chain(lines: Sequence[AuditLine], rows: Sequence[EvidenceRow],
                head: EvidenceHead | None,
                signed_reservations: Sequence[tuple[str, str, str | None]]
                ) -> list[tuple[str, str]]:
    """The chain as a whole (module doc): problems, empty when it holds. ``lines`` are
    :func:`audit`'s for ``rows``; ``signed_reservations`` the spend store's reservations
    marked signed, as (reservation id, mandate hash, payment_ref)."""
    problems: list[tuple[str, str]] = []
    last = rows[-1] if rows else None
    if last is None:
        if head is not None and head.seq != 0:
            problems.append((CHAIN_CUT, f"the signed head names record #{head.seq}, and "
                             "there is no record: the evidence was deleted"))
    elif head is None or head.seq == 0:
        problems.append((CHAIN_CUT, "there is no signed head of the chain: records may "
                         "have been cut off its tail"))
    elif head.seq != last.seq or head.hash.lower() != last.hash.lower():
        problems.append((CHAIN_CUT, f"the signed head names record #{head.seq}, the last "
                         f"one left is #{last.seq}: records were cut off the tail"))
    elif lines and lines[-1].ok:  # (a last record that fails is named on its own)
        agent = str(lines[-1].record.get("agent", ""))
        try:
            signer = recover_address(head_hash(head.seq, head.hash),
                                     bytes.fromhex(head.signature[2:]), policy=OPENZEPPELIN)
        except ValueError:
            signer = None
        if signer is None or not agent or signer != address_bytes(agent):
            problems.append((CHAIN_CUT, "the chain's head is not signed by the agent of "
                             "its last record"))
    named = {str(line.record.get("reservation")) for line in lines
             if line.record.get("reservation") is not None}
    # Records written before they named their reservation: matched by the payment's
    # reference (the EIP-3009 nonce the spend store keeps as ``payment_ref``).
    refs = {_nonce_of(line.record) for line in lines} - {None}
    missing = [(rid, mandate) for rid, mandate, ref in signed_reservations
               if rid not in named and (ref is None or ref.lower() not in refs)]
    if missing:
        listed = ", ".join(f"{rid} (mandate {mandate[:10]}…)" for rid, mandate in missing[:5])
        problems.append((RECORD_MISSING, f"{len(missing)} payment(s) the spend store counts "
                         f"as signed have no record: {listed}"))
    return problems
